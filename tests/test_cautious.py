"""Cautious updates (``cautious=True``) and cautious weight decay (``cautious_weight_decay=True``).

Reference: timm 1.0.31's optimizers with ``caution=True`` (``timm/optim/adamw.py``, ``lion.py``, ``sgdw.py``,
``adopt.py``), pinned in the ``test`` extra. timm's package ``__init__`` imports torchvision, which is not installed
here, so the four modules are loaded from the installed timm by their file paths under stand-in parent packages
(their only imports are torch and timm's own ``optim/_helpers.py`` and ``optim/_types.py``): the code under test is
timm's own, unchanged. Trajectories of 12 steps, float32, several shapes in one group, gradients with exact zeros
(where ``>`` and ``>=`` differ); tolerance rtol 1e-5, atol 1e-6 (float32 round-off of a dozen steps; the mask
itself must agree exactly, or an element would be off by a whole step).

Cautious weight decay is checked against its rule as modded-nanogpt's record #50 writes it
(``mask = (update * p_slice) >= 0``; decay ``p * mask`` on the pre-update weights), on one step from a given state.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types

import pytest
import torch

import optimlab
from optimlab.core import blocks, dispatch, kernels, tiling

SHAPES = [(7,), (5, 3), (4, 3, 2), (1,)]
STEPS = 12
TOL = dict(rtol=1e-5, atol=1e-6)


def _timm(module: str) -> types.ModuleType:
    """``timm.optim.<module>`` from the installed timm without running timm's ``__init__`` (torchvision)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("timm is not installed (pip install --no-deps timm==1.0.31)")
    root = list(spec.submodule_search_locations)[0]
    name = "_timm_reference"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [root]  # type: ignore[attr-defined]
        sys.modules[name] = pkg
        optim = types.ModuleType(f"{name}.optim")
        optim.__path__ = [f"{root}/optim"]  # type: ignore[attr-defined]
        sys.modules[f"{name}.optim"] = optim
    return importlib.import_module(f"{name}.optim.{module}")


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _grads(step: int) -> list[torch.Tensor]:
    """Fixed gradients per step (not of the parameters, so a difference cannot hide in a chaotic trajectory), with
    about a fifth of the components exactly zero (dead units), where a strict and a non-strict mask differ."""
    g = torch.Generator().manual_seed(1000 + step)
    out = []
    for s in SHAPES:
        x = torch.randn(s, generator=g)
        out.append(torch.where(torch.rand(s, generator=g) < 0.2, torch.zeros(()), x))
    return out


def _trajectory(make, steps: int = STEPS) -> list[list[torch.Tensor]]:
    params = _params()
    opt = make(params)
    out = []
    for k in range(steps):
        for p, g in zip(params, _grads(k), strict=True):
            p.grad = g.clone()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def _assert_trajectories(a, b, **tol):
    for k, (xa, xb) in enumerate(zip(a, b, strict=True)):
        for i, (u, v) in enumerate(zip(xa, xb, strict=True)):
            torch.testing.assert_close(u, v, msg=lambda m, k=k, i=i: f"step {k + 1}, tensor {i}: {m}", **(tol or TOL))


def _differ(a, b) -> bool:
    return any(not torch.equal(u, v) for xa, xb in zip(a, b, strict=True) for u, v in zip(xa, xb, strict=True))


# -- against timm -----------------------------------------------------------------------------------------------------
ADAMW_CASES = [dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1),
               dict(lr=3e-3, betas=(0.8, 0.999), weight_decay=0.0, maximize=True),
               dict(lr=1e-2, weight_decay=0.05, amsgrad=True)]


@pytest.mark.parametrize("cfg", ADAMW_CASES)
@pytest.mark.parametrize("foreach", [False, None])
def test_cautious_adamw_matches_timm(cfg, foreach):
    timm_adamw = _timm("adamw").AdamWLegacy
    ref = _trajectory(lambda ps: timm_adamw(ps, caution=True, foreach=False, **cfg))
    ours = _trajectory(lambda ps: optimlab.AdamW(ps, cautious=True, foreach=foreach, **cfg))
    _assert_trajectories(ours, ref)
    assert _differ(ours, _trajectory(lambda ps: optimlab.AdamW(ps, foreach=foreach, **cfg)))  # the mask acts


LION_CASES = [dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1), dict(lr=3e-4, betas=(0.95, 0.98), maximize=True)]


@pytest.mark.parametrize("cfg", LION_CASES)
@pytest.mark.parametrize("foreach", [False, None])
def test_cautious_lion_matches_timm(cfg, foreach):
    timm_lion = _timm("lion").Lion
    ref = _trajectory(lambda ps: timm_lion(ps, caution=True, foreach=False, **cfg))
    ours = _trajectory(lambda ps: optimlab.Lion(ps, cautious=True, foreach=foreach, **cfg))
    _assert_trajectories(ours, ref)
    assert _differ(ours, _trajectory(lambda ps: optimlab.Lion(ps, foreach=foreach, **cfg)))


SGD_CASES = [dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
             dict(lr=0.02, momentum=0.8, dampening=0.3, maximize=True)]


@pytest.mark.parametrize("cfg", SGD_CASES)
@pytest.mark.parametrize("foreach", [False, None])
def test_cautious_sgd_momentum_matches_timm(cfg, foreach):
    timm_sgdw = _timm("sgdw").SGDW  # without weight decay timm's SGDW is SGD
    ref = _trajectory(lambda ps: timm_sgdw(ps, caution=True, foreach=False, **cfg))
    ours = _trajectory(lambda ps: optimlab.SGD(ps, cautious=True, foreach=foreach, **cfg))
    _assert_trajectories(ours, ref)
    assert _differ(ours, _trajectory(lambda ps: optimlab.SGD(ps, foreach=foreach, **cfg)))


@pytest.mark.parametrize("foreach", [False, None])
def test_cautious_sgdw_matches_timm(foreach):
    cfg = dict(lr=0.05, momentum=0.9, weight_decay=0.1)
    ref = _trajectory(lambda ps: _timm("sgdw").SGDW(ps, caution=True, foreach=False, **cfg))
    _assert_trajectories(_trajectory(lambda ps: optimlab.SGDW(ps, cautious=True, foreach=foreach, **cfg)), ref)


@pytest.mark.parametrize("cfg", [dict(lr=1e-2, weight_decay=0.01), dict(lr=1e-2, weight_decay=0.01, decouple=True)])
@pytest.mark.parametrize("foreach", [False, None])
def test_cautious_adopt_matches_timm(cfg, foreach):
    timm_cfg = {("decoupled" if k == "decouple" else k): v for k, v in cfg.items()}
    ref = _trajectory(lambda ps: _timm("adopt").Adopt(ps, caution=True, clip_exp=0.25, foreach=False, **timm_cfg))
    ours = _trajectory(lambda ps: optimlab.ADOPT(ps, cautious=True, foreach=foreach, **cfg))  # clip t^(1/4)
    _assert_trajectories(ours, ref)


# -- the option off leaves the rule as it was --------------------------------------------------------------------------
@pytest.mark.parametrize("cls, cfg, torch_cls", [(optimlab.AdamW, dict(lr=1e-2, weight_decay=0.1), torch.optim.AdamW),
                                                 (optimlab.SGD, dict(lr=0.05, momentum=0.9), torch.optim.SGD),
                                                 (optimlab.NAdam, dict(lr=1e-2), torch.optim.NAdam)])
def test_off_is_torch(cls, cfg, torch_cls):
    ours = _trajectory(lambda ps: cls(ps, cautious=False, foreach=False, **cfg))
    _assert_trajectories(ours, _trajectory(lambda ps: torch_cls(ps, foreach=False, **cfg)), rtol=1e-6, atol=1e-7)


def test_off_lion_is_timm_without_caution():
    cfg = dict(lr=1e-3, weight_decay=0.1)
    _assert_trajectories(_trajectory(lambda ps: optimlab.Lion(ps, cautious=False, **cfg)),
                         _trajectory(lambda ps: _timm("lion").Lion(ps, foreach=False, **cfg)))


# -- every path the table may choose gives the plain loop's numbers --------------------------------------------------
CLASSES = [(optimlab.Adam, dict(lr=1e-2, weight_decay=0.01, cautious=True)),
           (optimlab.AdamW, dict(lr=1e-2, cautious=True, cautious_weight_decay=True)),
           (optimlab.AdamW, dict(lr=1e-2, cautious_weight_decay=True)),
           (optimlab.NAdam, dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True, cautious=True)),
           (optimlab.Lion, dict(lr=1e-3, weight_decay=0.1, cautious=True)),
           (optimlab.Lion, dict(lr=1e-3, weight_decay=0.1, cautious_weight_decay=True)),
           (optimlab.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, cautious=True)),
           (optimlab.SGDW, dict(lr=0.05, momentum=0.9, weight_decay=0.1, cautious=True)),
           (optimlab.ADOPT, dict(lr=1e-2, cautious=True))]
BIG = [(tiling.MIN_BLOCKED_ELEMS + 37,), (300, 170), (9,)]  # large enough for the blocked row


def _big_run(cls, cfg, foreach, dtype=torch.float32, steps=4):
    g = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in BIG]
    opt = cls(params, foreach=foreach, **cfg)
    for _ in range(steps):
        for p in params:
            x = torch.randn(p.shape, generator=g, dtype=dtype)
            p.grad = torch.where(torch.rand(p.shape, generator=g) < 0.2, torch.zeros((), dtype=dtype), x)
        opt.step()
    return params, opt


@pytest.mark.parametrize("cls, cfg", CLASSES, ids=lambda x: x.__name__ if isinstance(x, type) else str(sorted(x)))
@pytest.mark.parametrize("path", ["fused", "compiled", "mixed", "blocked", "foreach"])
def test_every_path_is_the_plain_loop(cls, cfg, path):
    ref, ref_opt = _big_run(cls, cfg, foreach=False)
    with dispatch.only(path):
        got, opt = _big_run(cls, cfg, foreach=None)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        for key, value in ref_opt.state[b].items():
            torch.testing.assert_close(opt.state[a][key], value, rtol=1e-6, atol=1e-6, msg=key)


def test_cautious_steps_run_on_whole_lists():
    """A cautious step never takes a row that would split the mask's mean (blocks, compiled loops, fused)."""
    before = copy.copy(dispatch.taken)
    _big_run(optimlab.AdamW, dict(lr=1e-2, cautious=True), foreach=None, steps=2)
    taken = dispatch.taken - before
    assert set(taken) <= {"foreach", "mixed", "traced"} and taken["foreach"] >= 2, taken
    if kernels.enabled():  # the same bucket without caution takes a faster row
        before = copy.copy(dispatch.taken)
        _big_run(optimlab.AdamW, dict(lr=1e-2), foreach=None, steps=1)
        assert "foreach" not in dispatch.taken - before


def test_cautious_with_bfloat16_moment_runs_mixed():
    ref, _ = _big_run(optimlab.AdamW, dict(lr=1e-2, cautious=True, moment_dtype=torch.bfloat16), foreach=False)
    got, _ = _big_run(optimlab.AdamW, dict(lr=1e-2, cautious=True, moment_dtype=torch.bfloat16), foreach=None)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_cautious_compiles():
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, ref_opt = optimlab.AdamW(params, lr=1e-2, cautious=True), optimlab.AdamW(ref, lr=1e-2, cautious=True,
                                                                                   foreach=False)
    step = torch.compile(opt.step)
    for _ in range(3):
        for p, q, g in zip(params, ref, [torch.randn(5, 3), torch.randn(4)], strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        step()
        ref_opt.step()
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


# -- the blocks --------------------------------------------------------------------------------------------------------
def test_cautious_block():
    u = torch.tensor([1.0, -2.0, 3.0, 0.0, 5.0, -1.0, 2.0, 1.0])
    g = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, -3.0, -1.0, 1.0])
    kept = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # strictly same sign; zeros dropped
    expected = u * kept / (4 / 8)
    torch.testing.assert_close(blocks.cautious(u, g), expected)
    torch.testing.assert_close(blocks.cautious([u, u[:2]], [g, g[:2]])[1], u[:2] * torch.tensor([1.0, 0.0]) * 2)
    assert torch.equal(u, torch.tensor([1.0, -2.0, 3.0, 0.0, 5.0, -1.0, 2.0, 1.0]))  # not written
    one = torch.zeros(2000)
    one[0] = 1.0
    torch.testing.assert_close(blocks.cautious(one, one)[0], torch.tensor(1000.0))  # the floor: mean 5e-4 -> 1e-3


def test_cautious_decay_block():
    p = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0, 0.0])
    u = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 1.0])
    h = dict(weight_decay=0.5, lr=0.1, decay_scale="lr")
    blocks.cautious_decay_(p, u, h)
    torch.testing.assert_close(p, torch.tensor([0.95, 1.0, -1.0, -0.95, 1.9, 0.0]))  # u * p >= 0 decays


@pytest.mark.parametrize("cls, cfg", [(optimlab.AdamW, dict(lr=1e-2, betas=(0.9, 0.95))),
                                      (optimlab.Lion, dict(lr=1e-3)),
                                      (optimlab.NAdam, dict(lr=1e-2, decoupled_weight_decay=True))])
@pytest.mark.parametrize("cautious", [False, True])
def test_cautious_weight_decay_rule(cls, cfg, cautious):
    """One step from a warm state: ``p - lr*lambda*p*[u*p >= 0] - step`` with the step of the same optimizer without
    decay and ``u`` its direction (modded-nanogpt #50: ``mask = (update * p_slice) >= 0`` on the pre-update weights)."""
    lam = 0.3
    params = _params()
    warm = cls(params, weight_decay=0.0, cautious=cautious, **cfg)
    for k in range(3):
        for p, g in zip(params, _grads(k), strict=True):
            p.grad = g.clone()
        warm.step()
    state = copy.deepcopy(warm.state_dict())
    old = [p.detach().clone() for p in params]
    for p, g in zip(params, _grads(3), strict=True):
        p.grad = g.clone()
    warm.step()
    no_decay = [p.detach().clone() for p in params]
    for p, x in zip(params, old, strict=True):
        p.data.copy_(x)
    cwd = cls(params, weight_decay=lam, cautious=cautious, cautious_weight_decay=True, **cfg)
    state["param_groups"][0]["weight_decay"] = lam
    state["param_groups"][0]["cautious_weight_decay"] = True
    cwd.load_state_dict(state)
    cwd.step()
    decayed = 0
    for p, x, y in zip(params, old, no_decay, strict=True):
        mask = ((x - y) * x >= 0).to(x.dtype)  # the step's direction u has the sign of x - y
        decayed += int(mask.sum())
        torch.testing.assert_close(p.detach(), y - cfg["lr"] * lam * x * mask, rtol=1e-6, atol=1e-7)
    assert 0 < decayed < sum(x.numel() for x in old)


# -- bad input ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda ps: optimlab.AdamW(ps, cautious=1), r"Invalid cautious: 1; expected a bool"),
    (lambda ps: optimlab.Lion(ps, cautious_weight_decay="yes"), r"Invalid cautious_weight_decay"),
    (lambda ps: optimlab.ADOPT(ps, cautious=None), r"Invalid cautious"),
])
def test_flags_are_bools(make, match):
    with pytest.raises(TypeError, match=match):
        make(_params())


@pytest.mark.parametrize("make, match", [
    (lambda ps: optimlab.SGD(ps, cautious=True), r"Invalid cautious: True; expected momentum > 0"),
    (lambda ps: optimlab.SGD(ps, momentum=0.9, cautious=True, fused=True), r"Invalid fused"),
    (lambda ps: optimlab.AdamW(ps, cautious=True, fused=True), r"Invalid fused"),
    (lambda ps: optimlab.Adam(ps, weight_decay=0.1, cautious_weight_decay=True),
     r"Invalid cautious_weight_decay: True; expected decoupled_weight_decay=True"),
])
def test_bad_combinations(make, match):
    with pytest.raises(ValueError, match=match):
        make(_params())


def test_sparse_gradients_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = optimlab.SGD(emb.parameters(), lr=0.1, momentum=0.9, cautious=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="cautious=True does not support sparse gradients"):
        opt.step()
