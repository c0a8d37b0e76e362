"""Regression tests for the defects found by review (issue 9), one test (or a few) per defect.

Each of these failed on the code before the fix (see the issue's note for the failure of each); the generic checks
that would have caught them now live in the matrix too (every element moves in every dtype, ``lr=0`` freezes).
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import optimlab
from optimlab.core import kernels, ops

needs_compiler = pytest.mark.skipif(not kernels.enabled(), reason="no C compiler: compiled kernels are off")


# -- 1. float16/bfloat16 SGD on CPU: torch's fused SGD kernel leaves elements unwritten ------------------------------
@pytest.mark.parametrize("name", ["sgd", "sgdm", "nesterov", "sgdw"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_sgd_updates_every_element(name, dtype):
    """torch 2.13's ``_fused_sgd_`` on CPU does not write back float16/bfloat16 elements of full SIMD chunks (16 of
    24 elements never move); the default path must not pick it, and each step must equal the list path's."""
    p = torch.nn.Parameter(torch.ones(24, dtype=dtype))
    opt = optimlab.create_optimizer(name, [p], lr=0.1)
    for _ in range(2):
        p.grad = torch.full_like(p, 0.5)
        opt.step()
    assert (p != 1).all(), f"{int((p == 1).sum())} of 24 elements never moved"


def test_low_precision_sgd_with_fused_true_warns_and_is_correct(monkeypatch):
    """``fused=True`` asks for torch's fused kernel; on CPU in float16/bfloat16 that kernel drops updates, so the step
    runs on the list path instead, with a warning once (per process: an earlier test may have had it)."""
    from optimlab.algorithms import sgd

    monkeypatch.setattr(sgd, "_warned_fused_sgd", [])
    p = torch.nn.Parameter(torch.ones(24, dtype=torch.bfloat16))
    opt = optimlab.SGD([p], lr=0.1, momentum=0.9, fused=True)
    p.grad = torch.full_like(p, 0.5)
    with pytest.warns(RuntimeWarning, match="fused SGD kernel"):
        opt.step()
    assert (p != 1).all()


# -- 2. the kernel cache: folders other users can write, and libraries planted in it ---------------------------------
@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """An empty kernel cache in a private folder, and a process-wide kernel table and warnings as in a new process."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPTIMLAB_KERNEL_CACHE", str(cache))
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setattr(kernels, "_warned", set(), raising=False)
    monkeypatch.setattr(kernels, "_cache_verdicts", {}, raising=False)
    return cache


def _add_kernel(lists):
    return kernels.run(lambda p, g: ops.add_(p, g, alpha=-0.5), lists)


def _lists():
    return [[torch.ones(10)], [torch.full((10,), 2.0)]]


@needs_compiler
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_cache_folder_writable_by_others_is_refused(fresh_cache, mode):
    fresh_cache.mkdir()
    fresh_cache.chmod(mode)
    lists = _lists()
    with pytest.warns(RuntimeWarning, match="writable by"):
        assert _add_kernel(lists) is False  # nothing compiled or loaded: the caller runs the rule eagerly
    assert torch.equal(lists[0][0], torch.ones(10))
    assert not list(fresh_cache.glob("*.so"))


@needs_compiler
def test_cache_folder_owned_by_another_user_is_refused(fresh_cache, monkeypatch):
    fresh_cache.mkdir(mode=0o700)
    owner = fresh_cache.stat().st_uid
    monkeypatch.setattr(kernels, "_uid", lambda: owner + 4242, raising=False)
    with pytest.warns(RuntimeWarning, match="owned by"):
        assert _add_kernel(_lists()) is False


@needs_compiler
def test_new_cache_folder_is_private(fresh_cache, monkeypatch):
    """The folder and the folders created above it are private whatever the umask (a umask of 002 would otherwise
    make them group-writable, and the cache would refuse itself)."""
    nested = fresh_cache / "optimlab" / "kernels"
    monkeypatch.setenv("OPTIMLAB_KERNEL_CACHE", str(nested))
    old = os.umask(0o002)
    try:
        assert _add_kernel(_lists()) is not False
    finally:
        os.umask(old)
    for folder in (fresh_cache, fresh_cache / "optimlab", nested):
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, folder


_PLANTED = r"""
#include <stdio.h>
#include <stdint.h>
__attribute__((constructor)) static void planted(void) { FILE* f = fopen("%s", "w"); if (f) fclose(f); }
void optimlab_kernel(int64_t a, const void* b, const void* c, const void* d, const void* e, void* f, int64_t g,
                     int64_t h) {}
"""

_STEP_IN_A_NEW_PROCESS = textwrap.dedent("""
    import json, warnings, torch
    from optimlab.core import kernels, ops
    lists = [[torch.ones(10)], [torch.full((10,), 2.0)]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ran = [kernels.run(lambda p, g: ops.add_(p, g, alpha=-0.5), lists) is not False for _ in range(2)]
    print(json.dumps({"ran": ran, "p": lists[0][0].tolist(), "stats": kernels.stats(),
                      "warnings": [str(w.message) for w in caught if "optimlab" in str(w.message)]}))
""")


def _step_in_a_new_process(cache: Path) -> dict:
    """Two kernel runs (p -= 0.5 g, p = 1, g = 2) in a new interpreter: a library loaded there is really loaded
    (dlopen in this process would return the library it already mapped under the same name)."""
    env = dict(os.environ, OPTIMLAB_KERNEL_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", _STEP_IN_A_NEW_PROCESS], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _replace(path: Path, data: bytes) -> None:
    """Put other bytes at ``path`` as a new file (what another process writing the cache would do)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@needs_compiler
def test_a_planted_library_is_never_loaded(fresh_cache, tmp_path):
    """Replace a cached kernel by another library of the same name: the next process must not load it (its
    constructor would run in the training process, and its kernel does nothing), and the step is still computed."""
    first = _step_in_a_new_process(fresh_cache)
    assert first["ran"] == [True, True] and first["stats"]["compiled"] == 1
    (so,) = fresh_cache.glob("optimlab_*.so")
    marker = tmp_path / "constructor-ran"
    src = tmp_path / "planted.c"
    src.write_text(_PLANTED % marker)
    subprocess.run([*kernels.compiler(), "-shared", "-fPIC", "-o", str(tmp_path / "planted.so"), str(src)],
                   check=True)
    _replace(so, (tmp_path / "planted.so").read_bytes())
    second = _step_in_a_new_process(fresh_cache)
    assert not marker.exists(), "the planted library was loaded"
    assert second["p"] == [-1.0] * 10, "the steps did nothing"
    assert any("does not match" in w for w in second["warnings"]), second["warnings"]


# -- 3. a damaged cached library is rebuilt, with one warning that says what happened -------------------------------
@needs_compiler
def test_a_damaged_cached_library_is_rebuilt_once(fresh_cache):
    assert _step_in_a_new_process(fresh_cache)["stats"]["compiled"] == 1
    (so,) = fresh_cache.glob("optimlab_*.so")
    _replace(so, so.read_bytes()[:100])  # truncated, e.g. a disk that filled up or a copy interrupted
    damaged = _step_in_a_new_process(fresh_cache)
    assert damaged["ran"] == [True, True], damaged
    assert damaged["stats"]["compiled"] == 1 and damaged["p"] == [-1.0] * 10
    assert len(damaged["warnings"]) == 1 and "rebuilt" in damaged["warnings"][0], damaged["warnings"]
    again = _step_in_a_new_process(fresh_cache)  # the rebuilt library loads silently
    assert again["ran"] == [True, True] and again["stats"]["compiled"] == 0 and not again["warnings"]


# -- also checked: CC="ccache gcc" and a hanging compiler -----------------------------------------------------------
def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fresh_compiler(monkeypatch, fresh_cache):
    monkeypatch.setattr(kernels, "_compiler", None)
    monkeypatch.setattr(kernels, "_compiler_id", None)
    monkeypatch.setattr(kernels, "_compiler_hung", False, raising=False)
    return monkeypatch


@needs_compiler
def test_a_compiler_launcher_is_keyed_by_the_compiler_it_runs(fresh_compiler, tmp_path):
    """``CC="ccache gcc"``: the cache key must change when gcc changes, so the compiler is identified by what
    ``ccache gcc --version`` prints (gcc's version), not by ``ccache --version``."""
    real = kernels.compiler()[0]
    fresh_compiler.setattr(kernels, "_compiler", None)
    fresh_compiler.setattr(kernels, "_compiler_id", None)
    launcher = _script(tmp_path / "fakeccache",
                       'case "$1" in -*) echo "fakeccache version 4.8"; exit 0;; esac\nexec "$@"\n')
    fresh_compiler.setenv("CC", f"{launcher} {real}")
    assert kernels.compiler() == [str(launcher), real]
    real_version = subprocess.run([real, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert "fakeccache" not in kernels._compiler_id and real_version in kernels._compiler_id
    assert _add_kernel(_lists()) is not False  # and it compiles through the launcher


def test_a_hanging_compiler_does_not_block_the_step(fresh_compiler, tmp_path):
    """One bounded wait (the compiler and its children are killed), one warning, then no more compiler calls in this
    process: every later step runs the eager path at once."""
    calls = tmp_path / "calls"
    cc = _script(tmp_path / "hangcc", f'if [ "$1" = --version ]; then echo hangcc 1.0; exit 0; fi\n'
                 f'echo call >> {calls}\nsleep 600\n')
    fresh_compiler.setenv("CC", str(cc))
    fresh_compiler.setattr(kernels, "COMPILE_TIMEOUT_S", 1.0, raising=False)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(50, generator=gen)), torch.nn.Parameter(torch.randn(7, generator=gen))]
    opts = [optimlab.NAdam(params, lr=0.01), optimlab.RMSprop(params, lr=0.01)]  # two different kernels
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="did not finish"):
        for _ in range(3):
            for opt in opts:
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen)
                opt.step()
    assert time.monotonic() - start < 20, "the step waited for the compiler more than once, or unboundedly"
    assert calls.read_text().count("call") == 1


# -- 4. torch's schedulers take the lr current at their creation ------------------------------------------------------
@pytest.mark.parametrize("name", ["adam", "sgd", "adabound", "lamb"])
@pytest.mark.parametrize("scheduler", ["LambdaLR", "ScheduleLR"])
def test_a_scheduler_created_after_an_lr_change_keeps_the_current_lr(name, scheduler):
    p = torch.nn.Parameter(torch.ones(3))
    opt = optimlab.create_optimizer(name, [p], lr=0.1)
    opt.param_groups[0]["lr"] = 0.01
    if scheduler == "LambdaLR":
        torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    else:
        optimlab.schedules.ScheduleLR(opt, lambda step: 1.0)
    assert opt.param_groups[0]["lr"] == 0.01
    assert opt.param_groups[0]["initial_lr"] == 0.01


def _adabound_displacement(t: int, lr: float, scale: float, g: float, final_lr: float = 0.1,
                           gamma: float = 1e-3) -> float:
    """AdaBound's step under a constant gradient ``g``: ``m_t = (1 - b1^t) g``, ``v_t = (1 - b2^t) g^2``, so the
    rate is ``lr / ((1 - b1^t) |g|)``, clipped into bounds that scale with ``final_lr * scale``."""
    rate = lr / ((1 - 0.9**t) * abs(g))
    lo, hi = final_lr * scale * (1 - 1 / (gamma * t + 1)), final_lr * scale * (1 + 1 / (gamma * t))
    return min(max(rate, lo), hi) * (1 - 0.9**t) * abs(g)


def test_adabound_bounds_follow_the_schedulers_base_lr():
    """The bounds scale with ``lr / base``, where base is the scheduler's base lr (the lr when it was created) or,
    without a scheduler, the lr at construction; a run resumed from a checkpoint keeps the same base."""
    g = -1e-4  # a small steady gradient: the upper bound clips every step here
    x = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = optimlab.AdaBound([x], lr=1.0, eps=1e-30)
    x.grad = torch.full_like(x, g)
    # no scheduler: a manual lr change scales the bounds by lr / (lr at construction)
    opt.param_groups[0]["lr"] = 0.5
    opt.step()
    expected = _adabound_displacement(1, 0.5, 0.5, g)
    torch.testing.assert_close(x.detach(), torch.full_like(x, expected), rtol=1e-12, atol=0)
    # a scheduler created now takes the current lr as its base: a factor of 1 leaves the lr alone, the bounds unscaled
    opt.param_groups[0]["lr"] = 0.25
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
    assert opt.param_groups[0]["lr"] == 0.25
    checkpoint = copy.deepcopy(opt.state_dict())  # state_dict() holds the live state tensors
    at_checkpoint = x.detach().clone()
    opt.step()
    expected += _adabound_displacement(2, 0.25, 1.0, g)
    torch.testing.assert_close(x.detach(), torch.full_like(x, expected), rtol=1e-12, atol=0)
    # resume: a fresh optimizer built with another lr continues from the saved base
    y = torch.nn.Parameter(at_checkpoint.clone())
    resumed = optimlab.AdaBound([y], lr=3.0, eps=1e-30)
    resumed.load_state_dict(checkpoint)
    y.grad = x.grad.clone()
    resumed.step()
    torch.testing.assert_close(y, x, rtol=1e-12, atol=0)
    # the scheduler halves the lr: the bounds halve with it
    sched.step()
    opt.step()
    expected += _adabound_displacement(3, 0.125, 0.5, g)
    torch.testing.assert_close(x.detach(), torch.full_like(x, expected), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["adamw", "sgdw"])
def test_schedule_decay_follows_the_schedulers_base_lr(name):
    """``decay_scale="schedule"`` decays by ``(lr / base) * weight_decay``: base is the scheduler's base lr, or the lr
    at construction when there is no scheduler (zero gradients: the step is the decay alone)."""
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = optimlab.create_optimizer(name, [p], lr=0.1, weight_decay=0.1, decay_scale="schedule")
    p.grad = torch.zeros_like(p)
    opt.param_groups[0]["lr"] = 0.05  # manual change, no scheduler: eta = 0.05 / 0.1
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full_like(p, 1 - 0.5 * 0.1), rtol=1e-14, atol=0)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)  # its base is the current lr: eta = 1
    assert opt.param_groups[0]["lr"] == 0.05
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full_like(p, (1 - 0.05) * (1 - 0.1)), rtol=1e-14, atol=0)


# -- 5. lr_find restores the wrappers' own state ---------------------------------------------------------------------
def _stacks():
    def adam(model):
        return optimlab.Adam(model.parameters(), lr=1e-3)

    return {
        "lookahead": lambda m: optimlab.Lookahead(adam(m), k=2, pullback="pullback"),
        "noise": lambda m: optimlab.GradientNoise(adam(m), eta=0.1, seed=3),
        "swa": lambda m: optimlab.SWA(adam(m), start=0, every=1),
        "ema": lambda m: optimlab.EMA(adam(m), decay=0.9),
        "noise+lookahead+swa": lambda m: optimlab.GradientNoise(optimlab.Lookahead(optimlab.SWA(
            torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), start=1), k=3), eta=0.01, seed=1),
    }


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("stack", list(_stacks()))
def test_lr_find_restores_everything_the_state_dict_holds(stack):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = _stacks()[stack](model)
    data = [(torch.randn(8, 4), torch.randn(8, 2)) for _ in range(4)]
    for x, y in data[:3]:  # some state: slow weights, counters, averages, the noise generator advanced
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    before = copy.deepcopy(opt.state_dict())
    optimlab.lr_find(model, opt, torch.nn.functional.mse_loss, data, num_steps=9, start_lr=1e-4, end_lr=1.0)
    after = opt.state_dict()
    assert _equal(after, before)
    # and the run continues exactly as one that never ran lr_find
    twin_model = copy.deepcopy(model)
    twin = _stacks()[stack](twin_model)
    twin.load_state_dict(copy.deepcopy(before))
    for o, m in ((opt, model), (twin, twin_model)):
        for x, y in data:
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for a, b in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(a, b)


# -- also checked: global step hooks fire once per step through wrappers --------------------------------------------
@pytest.mark.parametrize("stack", list(_stacks()))
def test_global_step_hooks_fire_once_per_step_through_wrappers(stack):
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    model = torch.nn.Linear(3, 2)
    opt = _stacks()[stack](model)
    seen = []
    handles = [register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("pre", o))),
               register_optimizer_step_post_hook(lambda o, a, k: seen.append(("post", o)))]
    local = []
    inner = opt
    while isinstance(inner, optimlab.OptimizerWrapper):
        inner = inner.optimizer
    inner.register_step_pre_hook(lambda o, a, k: local.append("inner"))
    try:
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    finally:
        for h in handles:
            h.remove()
    assert seen == [("pre", opt), ("post", opt)]  # once, for the optimizer the user stepped
    assert local == ["inner"]  # the inner optimizer's own hooks still fire


# -- 6. lr=0 freezes a group: see test_every_optimizer.py::test_zero_lr_freezes_the_group (every optimizer and config)


# -- 7. a parameter listed twice: warned about, then stepped once per occurrence, in order, as torch does -----------
TORCH_EQUIVALENT = {"sgdm": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
                    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam,
                    "radam": torch.optim.RAdam}


@pytest.mark.parametrize("name", list(TORCH_EQUIVALENT))
@pytest.mark.parametrize("foreach", [False, True])
def test_a_parameter_listed_twice_is_stepped_twice_in_order(name, foreach):
    """``[a, b, a]``: warned about (torch's warning), then ``a`` takes two updates per step, one after the other, as
    in torch's for-loop; the reference is torch's optimizer on ``[a]`` stepped twice and on ``[b]`` once. (torch's
    own SGD differs on the first step only: each occurrence starts its momentum buffer from the gradient.)"""
    preset = dict(optimlab.OPTIMIZERS[name].preset)
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(300, 7, generator=gen, dtype=torch.float64), torch.randn(9, generator=gen, dtype=torch.float64)]
    grads = [[torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in init] for _ in range(4)]
    a, b = (torch.nn.Parameter(t.clone()) for t in init)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = optimlab.create_optimizer(name, [a, b, a], lr=0.01, foreach=foreach)
    ta, tb = (torch.nn.Parameter(t.clone()) for t in init)
    ref_a, ref_b = (TORCH_EQUIVALENT[name]([t], lr=0.01, foreach=False, **preset) for t in (ta, tb))
    for g in grads:
        a.grad, b.grad, ta.grad, tb.grad = g[0].clone(), g[1].clone(), g[0].clone(), g[1].clone()
        opt.step()
        ref_a.step()
        ref_b.step()
        ref_a.step()
    torch.testing.assert_close(a, ta, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b, tb, rtol=1e-12, atol=1e-14)
    for key, value in ref_a.state[ta].items():
        torch.testing.assert_close(opt.state[a][key], value, rtol=1e-12, atol=1e-14, msg=key)


@needs_compiler
@pytest.mark.parametrize("name", ["nadam", "lamb", "swats", "sgdw"])
def test_a_parameter_listed_twice_is_deterministic_on_the_compiled_path(name):
    """Run the compiled path repeatedly on a parameter listed twice (large enough to be split across threads):
    the results are identical every time and equal the plain loop's."""
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(600_000, generator=gen)
    grads = [torch.randn(600_000, generator=gen) for _ in range(3)]
    outs = []
    for foreach in (True, True, True, False):
        a = torch.nn.Parameter(init.clone())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimlab.create_optimizer(name, [a, a], lr=0.01, foreach=foreach)
        for g in grads:
            a.grad = g
            opt.step()
        outs.append(a.detach().clone())
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    torch.testing.assert_close(outs[0], outs[3], rtol=1e-5, atol=1e-6)


# -- 8. SWATS keeps its dot products (the switching criterion) in float64 on every path -------------------------------
@pytest.mark.parametrize("path", ["plain", "blocked", "compiled"])
def test_swats_criterion_sees_the_same_float64_dot_products_on_every_path(path, monkeypatch):
    from optimlab.algorithms import swats as swats_module
    from optimlab.core import tiling

    if path == "compiled" and not kernels.enabled():
        pytest.skip("no C compiler")
    if path == "blocked":
        monkeypatch.setattr(kernels, "_enabled", False)
        monkeypatch.setattr(tiling, "DEFAULT_BLOCK_ELEMS", 1 << 12)
        monkeypatch.setattr(tiling, "MIN_BLOCKED_ELEMS", 0)
    seen = []
    real = swats_module.SWATS._maybe_switch

    def spy(self, pp, pg, s, h):
        seen.append((list(pp), list(pg)))
        return real(self, pp, pg, s, h)

    monkeypatch.setattr(swats_module.SWATS, "_maybe_switch", spy)
    gen = torch.Generator().manual_seed(2)
    p = torch.nn.Parameter(torch.randn(200_000, generator=gen))
    opt = optimlab.SWATS([p], lr=1e-3, foreach=path != "plain")
    g = torch.randn(200_000, generator=gen)
    p.grad = g
    opt.step()
    # the reference: Adam's first step computed in float32 with the rule's own operations, its dot products summed
    # in float64 (the compiled loop may contract a multiply-add, so its elements can differ by an ulp: 1e-8)
    m = torch.zeros_like(g).lerp_(g, 0.1)
    v = torch.zeros_like(g).mul_(0.999).addcmul_(g, g, value=0.001)
    step = torch.div(m, v.sqrt().add_(1e-9)).mul_(-1e-3 * 0.001**0.5 / 0.1)
    pp = torch.sum(step * step, dtype=torch.float64).item()
    pg = torch.sum(step * g, dtype=torch.float64).item()
    assert seen, "the criterion was not evaluated"
    got_pp, got_pg = seen[0][0][0], seen[0][1][0]
    assert abs(got_pp - pp) <= 1e-8 * abs(pp) and abs(got_pg - pg) <= 1e-8 * abs(pg)
    # and the float64 counters follow their float64 recurrence exactly, with no rounding through float32
    for _ in range(3):
        p.grad = torch.randn(200_000, generator=gen)
        opt.step()
    ema = 0.0
    for pps, pgs in seen:
        ema = ema * 0.999 + (1 - 0.999) * (pps[0] / -pgs[0])
    state = opt.state[p]
    assert state["sgd_lr_ema"].dtype == torch.float64
    assert float(state["sgd_lr_ema"]) == pytest.approx(ema, rel=1e-15, abs=0)


# -- also: LARS documents where its zero-norm guard differs from SimCLR's ---------------------------------------------
def test_lars_docstring_names_the_simclr_guard_difference():
    doc = optimlab.LARS.__doc__
    assert "SimCLR" in doc and "guard" in doc


# == issue 19: found by the reliability review (../shared/notes/reviews/reliability.md) ================================
# -- H2: a state tensor of another size than its parameter, in a fresh process (the old code corrupted the heap) -----
H2_SCRIPT = """
import sys, torch, optimlab
results = []
for name in ("NAdam", "Adam", "RMSprop", "Adagrad", "Lion"):
    cls = getattr(optimlab, name)
    # (a) a checkpoint of an (8,) layer loaded for a (200000,) layer: the same tensor count
    old = torch.nn.Parameter(torch.randn(8)); o = cls([old], lr=1e-3); old.grad = torch.randn(8); o.step()
    new = torch.nn.Parameter(torch.zeros(200_000)); opt = cls([new], lr=1e-3)
    try:
        opt.load_state_dict(o.state_dict()); results.append(f"{name} load accepted")
    except ValueError as e:
        results.append(f"{name} load ValueError {e}")
    # (b) the parameter grown in place after a step (steps 1-3: the third runs on a cached step plan)
    emb = torch.nn.Parameter(torch.randn(10, 16)); o = cls([emb], lr=1e-3)
    for _ in range(3):
        emb.grad = torch.randn(10, 16); o.step()
    emb.data = torch.randn(20_000, 16); emb.grad = torch.randn(20_000, 16)
    try:
        o.step(); results.append(f"{name} grown stepped")
    except RuntimeError as e:
        results.append(f"{name} grown RuntimeError {e}")
    # (b') grown after a cached step, the old gradient left in place (no backward since)
    emb = torch.nn.Parameter(torch.randn(10, 16)); o = cls([emb], lr=1e-3)
    for _ in range(3):
        emb.grad = torch.randn(10, 16); o.step()
    emb.data = torch.randn(20_000, 16)
    try:
        o.step(); results.append(f"{name} stale stepped")
    except RuntimeError as e:
        results.append(f"{name} stale RuntimeError {e}")
    # (c) a state larger than its parameter (accepted silently before)
    p = torch.nn.Parameter(torch.randn(5)); o = cls([p], lr=1e-3); p.grad = torch.randn(5); o.step()
    for k, v in o.state[p].items():
        if v.dim():
            o.state[p][k] = torch.zeros(50)
    try:
        o.step(); results.append(f"{name} larger stepped")
    except RuntimeError as e:
        results.append(f"{name} larger RuntimeError {e}")
print("\\n".join(results))
"""


def test_state_of_another_size_raises_instead_of_corrupting_memory():
    """H2: NAdam aborted with ``malloc(): unaligned tcache chunk``, Adam segfaulted, RMSprop stepped then aborted;
    a larger state stepped silently. Run in a fresh process: on the old code it dies."""
    done = subprocess.run([sys.executable, "-c", H2_SCRIPT], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 20, done.stdout
    for line in lines:
        name, case = line.split()[:2]
        if case == "load":
            assert f"{name}.load_state_dict: state '" in line and "of parameter 0 has shape (8,), the parameter " \
                   "has (200000,)" in line, line
        elif case == "stale":
            assert f"RuntimeError {name}: the " in line and "of a parameter of shape (20000, 16) has shape " \
                   "(10, 16)" in line, line
        elif case == "grown":
            assert f"RuntimeError {name}: the state '" in line and "of a parameter of shape (20000, 16) has shape " \
                   "(10, 16)" in line, line
        else:
            assert f"RuntimeError {name}: the state '" in line and "of a parameter of shape (5,) has shape (50,)" \
                   in line, line


# -- L4: every boolean option is a bool (a string "False" read as True) -------------------------------------------
BOOL_OPTIONS = [("adam", "amsgrad"), ("adamw", "amsgrad"), ("adabound", "amsbound"), ("rmsprop", "centered"),
                ("lamb", "bias_correction"), ("lamb", "layer_adaptation"), ("lars", "layer_adaptation"),
                ("lars", "nesterov"), ("swats", "nesterov"), ("sgd", "nesterov"), ("nadam", "decoupled_weight_decay"),
                ("radam", "degenerated_to_sgd"), ("ademamix", "warmup_from_zero"), ("soap", "normalize_grads"),
                ("shampoo", "use_bias_correction"), ("muon", "use_muon")]


@pytest.mark.parametrize("name, option", BOOL_OPTIONS)
def test_a_boolean_option_must_be_a_bool(name, option):
    kwargs = {"lr": 0.1, "momentum": 0.9} if name in ("sgd", "lars") else {}
    cls = optimlab.OPTIMIZERS[name].cls
    p = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(TypeError, match=rf"Invalid {option}: 'False'; expected a bool"):
        cls([p], **kwargs, **{option: "False"})
    opt = cls([p], **kwargs)  # and in a group added later, and in a loaded state_dict
    with pytest.raises(TypeError, match=rf"Invalid {option}: 'no'"):
        opt.add_param_group({"params": [torch.zeros(2, 2, requires_grad=True)], option: "no"})
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0][option] = "False"
    with pytest.raises(TypeError, match=rf"Invalid {option}: 'False'"):
        opt.load_state_dict(sd)


def test_every_bool_option_of_every_registered_class_is_checked():
    """No boolean option is left out: every constructor argument whose default is a bool, of every class."""
    import inspect

    for name, spec in optimlab.OPTIMIZERS.items():
        flags = [a.name for a in inspect.signature(spec.cls.__init__).parameters.values()
                 if isinstance(a.default, bool)]
        for flag in flags:
            kwargs = {"lr": 0.1} if name == "lars" else {}
            with pytest.raises(TypeError, match=rf"Invalid {flag}: 'True'; expected a bool"):
                spec.cls([torch.zeros(3, 3, requires_grad=True)], **kwargs, **{flag: "True"})


# -- L5: load_state_dict checks what it loads, and leaves the optimizer unchanged when it refuses -------------------
def _adam_with_state():
    p = torch.nn.Parameter(torch.randn(5, generator=torch.Generator().manual_seed(0)))
    opt = optimlab.Adam([p], lr=0.1)
    p.grad = torch.ones(5)
    opt.step()
    return p, opt


def _tampered(edit):
    p, opt = _adam_with_state()
    sd = copy.deepcopy(opt.state_dict())
    edit(sd)
    return p, opt, sd


@pytest.mark.parametrize("edit, error, message", [
    (lambda sd: sd["param_groups"][0].update(lr=-0.1), ValueError, r"Invalid lr: -0\.1; expected lr >= 0"),
    (lambda sd: sd["param_groups"][0].update(betas=(1.5, 0.999)), ValueError, r"Invalid betas\[0\]: 1\.5"),
    (lambda sd: sd["param_groups"][0].update(eps=0.0), ValueError, r"Invalid eps"),
    (lambda sd: sd["state"][0].pop("exp_avg"), ValueError,
     r"Adam\.load_state_dict: the state of parameter 0 has no 'exp_avg'"),
    (lambda sd: sd["state"][0].pop("step"), ValueError, r"the state of parameter 0 has no 'step'"),
    (lambda sd: sd["state"][0].update(step=torch.ones(3)), ValueError,
     r"state 'step' of parameter 0 has shape \(3,\); expected \(\) \(a 0-d tensor\)"),
    (lambda sd: sd["state"][0].update(exp_avg=torch.zeros(50)), ValueError,
     r"state 'exp_avg' of parameter 0 has shape \(50,\), the parameter has \(5,\)"),
], ids=["lr", "betas", "eps", "no-exp_avg", "no-step", "vector-step", "larger-state"])
def test_load_state_dict_refuses_a_tampered_checkpoint_and_changes_nothing(edit, error, message):
    p, opt, sd = _tampered(edit)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(error, match=message):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert all(torch.equal(v, after["state"][0][k]) for k, v in before["state"][0].items())
    p.grad = torch.ones(5)
    opt.step()  # and it still steps


def test_an_sgd_checkpoint_loaded_into_adam_names_the_missing_state():
    p = torch.nn.Parameter(torch.randn(5))
    sgd = optimlab.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(5)
    sgd.step()
    _, adam = _adam_with_state()
    with pytest.raises(ValueError, match=r"the state of parameter 0 has no 'exp_avg' \(it has \['momentum_buffer'\]"):
        adam.load_state_dict(sgd.state_dict())


def test_a_torch_checkpoint_without_optional_state_still_loads():
    """torch.optim's checkpoints (an SGD without momentum has no state; Adam without amsgrad no max_exp_avg_sq;
    an older torch's Python-number step) load as before."""
    w = torch.nn.Parameter(torch.randn(4))
    pairs = ((torch.optim.SGD([w], lr=0.1), optimlab.SGD), (torch.optim.Adam([w], lr=0.1), optimlab.Adam),
             (torch.optim.Adagrad([w], lr=0.1), optimlab.Adagrad), (torch.optim.NAdam([w]), optimlab.NAdam))
    for theirs, ours in pairs:
        w.grad = torch.ones(4)
        theirs.step()
        sd = copy.deepcopy(theirs.state_dict())
        for state in sd["state"].values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].item()
        opt = ours([w])
        opt.load_state_dict(sd)
        opt.step()


def test_schedule_state_dict_of_another_group_count_is_refused():
    from optimlab.schedules import ScheduleLR

    two = optimlab.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                        {"params": [torch.zeros(1, requires_grad=True)]}], lr=0.1)
    one = optimlab.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sd = ScheduleLR(two, lambda t: 0.5).state_dict()
    sched = ScheduleLR(one, lambda t: 0.5)
    before = sched.state_dict()
    with pytest.raises(ValueError, match=r"'base_lrs' has 2 values .*this optimizer has 1 param groups"):
        sched.load_state_dict(sd)
    assert sched.state_dict() == before


# -- L8: a cache folder that cannot be created is not a security problem ---------------------------------------------
@needs_compiler
def test_a_cache_folder_that_cannot_be_created_says_so(fresh_cache, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OPTIMLAB_KERNEL_CACHE", str(blocker / "kernels"))  # below a file: mkdir fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _add_kernel(_lists()) is False
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "cannot be created" in messages[0] and "eager path" in messages[0]
    assert "OPTIMLAB_KERNEL_CACHE" in messages[0]
    assert "planted" not in messages[0] and "chmod" not in messages[0]
