"""optimlab.core.triton_kernels: the Triton kernels generated from the traced rules, run by Triton's interpreter.

CI has no GPU. Triton's interpreter (``TRITON_INTERPRET=1``, set here for this module's tests only) runs the very
kernels a GPU would compile, on CPU tensors, with numpy. Every optimizer of ``optim_db`` then runs its list path
through them (torch's fused kernels and the C kernels switched off, the Triton backend put in the C backend's
place: same interface) and is compared with the plain loop. A last group compiles the generated kernels with
Triton's real CUDA compiler, for an H100/H200 (no device needed), so the source is valid beyond the interpreter.
"""

from __future__ import annotations

import copy
import re

import optim_db
import pytest
import torch
from optim_db import CASES, DB, case_id
from problems import loss_at, make_params
from test_kernels import _every_op, _tensors

from optimlab.core import kernels, ops, tensors
from optimlab.core import triton_kernels as tk

pytest.importorskip("triton", reason="Triton is not installed (pip install 'optimlab[gpu]'; scripts/setup.sh test)")
if not tk.available():
    pytest.skip(f"Triton older than {'.'.join(map(str, tk.MIN_TRITON))}", allow_module_level=True)

ALL = pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Triton's interpreter, for this test only (the variable is removed again afterwards)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")


@pytest.fixture
def triton_path(monkeypatch):
    """The optimizers' list path on Triton kernels: torch's fused kernels off, the Triton backend in the C
    backend's place (``usable``/``run`` have the same contract)."""
    asked = {"usable": 0}  # how often a list path asked for a kernel and could have one

    def usable(lists, *args, **kwargs):
        ok = tk.usable(lists, *args, **kwargs)
        asked["usable"] += ok
        return ok

    monkeypatch.setattr(tensors, "fused_kernels_support", lambda ts: False)
    monkeypatch.setattr(kernels, "usable", usable)
    monkeypatch.setattr(kernels, "run", tk.run)
    return asked


def _assert_a_kernel_ran(runs_before, asked, info):
    """A Triton kernel ran; or the optimizer's list path never asks for a traced kernel (a rule that is not
    element-wise, e.g. Adafactor's factored moments): then there is nothing of this backend to test."""
    if tk.stats()["runs"] > runs_before:
        return
    if not asked["usable"]:
        pytest.skip(f"{info.name}: its list path asks for no traced kernel")
    pytest.fail("the list path asked for a kernel on usable tensors, yet no Triton kernel ran (an op missing "
                "from triton_kernels.OPS?)")


# -- the traced ops -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_op_matches_torch(dtype):
    sizes = (1, 17, 300, 1024, 1500)  # one element, a masked block, a full block, a full and a masked block
    got = _tensors(3, sizes, dtype)
    eager = [[t.clone() for t in lst] for lst in got]
    y_before = [t.clone() for t in got[1]]
    assert tk.usable(got)
    sums = tk.run(_every_op, got, readonly=(1,))
    want = [_every_op(*(lst[i] for lst in eager)) for i in range(len(sizes))]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for j in (0, 2):
        for a, b in zip(got[j], eager[j], strict=True):
            torch.testing.assert_close(a, b, **tol)
    for a, b in zip(got[1], y_before, strict=True):
        assert torch.equal(a, b)
    expected = torch.tensor([[float(w[r].sum(dtype=torch.float64)) for w in want] for r in range(2)],
                            dtype=torch.float64)
    assert sums.dtype == torch.float64 and sums.shape == (2, len(sizes))
    torch.testing.assert_close(sums, expected, **tol)


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16])
def test_low_precision_storage_computes_in_float32_and_rounds_once(storage):
    """bfloat16/float16 lists are widened on load, computed in float32 and rounded to nearest on store: the
    result is the float32 computation on the widened values, rounded once."""
    sizes = (5, 1030)
    got = [[t.to(storage) for t in lst] for lst in _tensors(3, sizes, torch.float32, seed=4)]
    wide = [[t.float() for t in lst] for lst in got]
    tk.run(_every_op, got, readonly=(1,))
    for i in range(len(sizes)):
        _every_op(*(lst[i] for lst in wide))
    for j in (0, 2):
        for a, b in zip(got[j], wide[j], strict=True):
            assert a.dtype == storage
            torch.testing.assert_close(a, b.to(storage), rtol=0, atol=0)


def test_mixed_storage_bfloat16_moment_beside_float32():
    lists = _tensors(3, (40, 7), torch.float32, seed=2)
    lists[2] = [t.bfloat16() for t in lists[2]]
    ref = [[t.float() for t in lst] for lst in lists]
    assert tk.usable(lists)

    def rule(p, g, m):
        ops.lerp_(m, g, 0.1)
        ops.add_(p, m, alpha=-0.01)

    tk.run(rule, lists, readonly=(1,))
    for i in range(2):
        rule(ref[0][i], ref[1][i], ref[2][i])  # float32 m, from the stored bfloat16 values
        torch.testing.assert_close(lists[2][i], ref[2][i].bfloat16(), rtol=0, atol=0)
        torch.testing.assert_close(lists[0][i], ref[0][i], rtol=1e-6, atol=1e-7)


def test_nan_and_inf_propagate_as_in_torch():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([nan, 1.0, -inf, inf, 0.0, 2.0])
    y = torch.tensor([0.0, nan, 0.0, nan, -0.0, 3.0])

    def rule(a, b):
        ops.maximum_(a, b)
        ops.clamp_(b, -1.0, 1.0)

    got = [[x.clone()], [y.clone()]]
    assert tk.run(rule, got) is None
    torch.testing.assert_close(got[0][0], torch.maximum(x, y), equal_nan=True)
    torch.testing.assert_close(got[1][0], y.clamp(-1.0, 1.0), equal_nan=True)


class _Trace:
    """A hand-written trace, as :func:`optimlab.core.kernels.trace_rule` records one."""

    def __init__(self, instrs, scalars):
        self.instrs, self.scalars = instrs, scalars


def test_sign_abs_comparison_and_where_ops_match_torch_bit_for_bit(monkeypatch):
    """The ops issue 12 adds to the tracer (abs, sign, gt/ge/lt/le as 1/0 masks, where), from a hand-written trace
    (this branch's tracer does not record them yet): exact ops, so equal to torch bit for bit, NaN and -0.0 too."""
    instrs = [("load", "0"), ("load", "1"), ("load", "2"), ("load", "3"), ("load", "4"),  # x y a b c
              ("abs", "n0"), ("sign", "n1"), ("gt", "n0", "n1"), ("where", "n7", "n5", "n6"),  # n8 -> a
              ("ge", "n0", "s0"), ("le", "n1", "s0"), ("add", "n9", "n10", "s1"),  # n11 = ge + 2 le -> b
              ("lt", "n1", "n0"), ("le", "n0", "n1"), ("where", "n13", "s2", "n0"), ("add", "n14", "n12", "s3")]
    scalars = [0.0, 2.0, 7.5, 3.0]  # n15 = where(le(x, y), 7.5, x) + 3 lt(y, x) -> c
    stores = [(2, "n8"), (3, "n11"), (4, "n15")]
    monkeypatch.setattr(tk.kernels, "trace_rule", lambda *a, **k: (_Trace(instrs, scalars), stores, ["n6", "n12"]))
    nan, inf = float("nan"), float("inf")
    specials = [nan, -0.0, 0.0, -inf, inf, -2.5, 3.0, 1e-40, 1.0]
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(3)
        x = torch.cat([torch.tensor(specials * 9), torch.randn(1100, generator=gen)]).to(dtype)
        y = torch.cat([torch.tensor(specials).repeat_interleave(9), x[81:].roll(1)]).to(dtype)
        y[81::5] = x[81::5]  # equal pairs: gt/lt false, ge/le true
        lists = [[x.clone()], [y.clone()], [torch.zeros_like(x)], [torch.zeros_like(x)], [torch.zeros_like(x)]]
        sums = tk.run(None, lists)
        one = torch.ones((), dtype=dtype)
        a = torch.where(x > y, x.abs(), y.sign())
        b = (x >= 0.0).to(dtype) + 2.0 * (y <= 0.0).to(dtype)
        c = torch.where(x <= y, 7.5 * one, x) + 3.0 * (y < x).to(dtype)
        for got, want in zip([lst[0] for lst in lists[2:]], (a, b, c), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
            assert torch.equal(torch.signbit(got), torch.signbit(want)), dtype  # -0.0 and +0.0 told apart
        for got, want in ((lists[0][0], x), (lists[1][0], y)):  # inputs untouched
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
        assert float(sums[0, 0]) == float(y.sign().sum(dtype=torch.float64))
        assert float(sums[1, 0]) == float((y < x).sum())


def test_issue12_rule_with_sign_and_mask_ops_once_traced():
    """issue 12's own rule of those ops (tests/test_kernels.py), traced, once its tracer support is merged."""
    import test_kernels

    rule = getattr(test_kernels, "_sign_and_mask_ops", None)
    if rule is None or not hasattr(kernels.Sym, "sign"):
        pytest.skip("the tracer does not record abs/sign/comparisons/where yet (issue 12's ops not merged)")
    sizes = (1, 17, 300, 4099)
    for dtype in (torch.float32, torch.float64):
        got = _tensors(3, sizes, dtype)
        for lst in got[:2]:
            for t in lst:
                t[::7] = float("nan")
                t[1::7] = -0.0
        eager = [[t.clone() for t in lst] for lst in got]
        runs = tk.stats()["runs"]
        sums = tk.run(rule, got)
        assert tk.stats()["runs"] == runs + 1
        want = [rule(*(lst[i] for lst in eager)) for i in range(len(sizes))]
        for j in range(3):
            for a, b in zip(got[j], eager[j], strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
                assert torch.equal(torch.signbit(a), torch.signbit(b))
        expected = torch.tensor([[float(w[r].sum(dtype=torch.float64)) for w in want] for r in range(3)],
                                dtype=torch.float64)
        torch.testing.assert_close(sums, expected, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0,
                                   equal_nan=True)


def test_per_tensor_scalars_and_sums_over_many_blocks(monkeypatch):
    """Small blocks, so tensors span many programs and the sum kernel loops: per-tensor scalars reach every block
    of their tensor and the block sums add up per tensor; empty tensors have no block and sum to 0."""
    monkeypatch.setattr(tk, "_BLOCK", 16)
    monkeypatch.setattr(tk, "_SUM_BLOCK", 4)
    sizes = (5, 1000, 0, 33, 16, 17)
    lists = _tensors(2, sizes, torch.float64)
    scale = torch.arange(1.0, len(sizes) + 1)
    before = [t.clone() for t in lists[0]]

    def rule(p, g, k):
        ops.add_(p, ops.mul(g, k))
        return [ops.mul(g, g), k]  # a sum of a per-tensor scalar: k * numel

    sums = tk.run(rule, lists, per_tensor=[scale], readonly=(1,))
    for i, (p, g, b) in enumerate(zip(lists[0], lists[1], before, strict=True)):
        torch.testing.assert_close(p, b + g * scale[i], rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(sums[0, i], (g * g).sum(), rtol=1e-13, atol=0)
        assert float(sums[1, i]) == scale[i] * sizes[i]


def test_sums_are_deterministic():
    lists = _tensors(2, (3000, 2049, 1), torch.float32, seed=5)
    first = tk.run(lambda p, g: [ops.mul(p, g)], lists)
    for _ in range(3):
        assert torch.equal(tk.run(lambda p, g: [ops.mul(p, g)], lists), first)


def test_unaligned_views_take_the_unaligned_variant():
    base = [torch.randn(2100, dtype=torch.float64), torch.randn(2100, dtype=torch.float64)]
    lists = [[b[1:2050]] for b in base]  # 8-byte offset: not 16-byte aligned
    assert lists[0][0].data_ptr() % 16
    want = lists[0][0] + 0.5 * lists[1][0]
    tk.run(lambda p, g: ops.add_(p, g, alpha=0.5), lists)
    torch.testing.assert_close(lists[0][0], want, rtol=1e-15, atol=0)
    assert not tk._layout(lists, lists[0][0].device)[3]


def test_writing_into_a_readonly_input_is_an_error():
    with pytest.raises(RuntimeError, match="never modify p.grad"):
        tk.run(lambda p, g: ops.mul_(g, 2.0), _tensors(2, (8,), torch.float32), readonly=(1,))


def test_untraceable_rule_or_unknown_op_touches_nothing(monkeypatch):
    lists = _tensors(2, (8, 3), torch.float32)
    before = [t.clone() for lst in lists for t in lst]

    def rule(p, g):
        ops.add_(p, g)
        ops.norms(p)

    assert tk.run(rule, lists) is False
    monkeypatch.delitem(tk.OPS, "sqrt")  # an op the C backend has and this one would lack
    assert tk.run(lambda p, g: ops.add_(p, ops.sqrt(g)), lists) is False
    assert all(torch.equal(a, b) for a, b in zip([t for lst in lists for t in lst], before, strict=True))


def test_usable(monkeypatch):
    a = torch.zeros(4, 3)
    assert tk.usable([[a], [torch.zeros(4, 3)]])
    assert tk.usable([[a.bfloat16()], [a.bfloat16()], [a]])
    assert tk.usable([[a.half()], [a.half()]])
    assert not tk.usable([[a.t()], [torch.zeros(3, 4)]])
    assert not tk.usable([[a.double()], [a]])  # float64 parameters need float64 lists
    assert not tk.usable([[a], [a.double()]])
    assert not tk.usable([[a.int()], [a.int()]])
    assert not tk.usable([[]])
    monkeypatch.delenv("TRITON_INTERPRET")  # CPU tensors only under the interpreter
    assert not tk.usable([[a], [a]])
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    previous = tk.set_enabled(False)
    try:
        assert not tk.usable([[a], [a]])
    finally:
        tk.set_enabled(previous)


def test_a_schedule_never_generates_a_new_kernel():
    lists = _tensors(2, (9, 2000), torch.float32)
    tk.run(lambda p, g: ops.add_(p, g, alpha=0.123), lists)
    generated, layouts = tk.stats()["generated"], tk.stats()["layouts"]
    for lr in (1e-3, 0.0, -7.0, 1e30):
        tk.run(lambda p, g, lr=lr: ops.add_(p, g, alpha=lr), lists)
    assert tk.stats()["generated"] == generated and tk.stats()["layouts"] == layouts


def test_float64_hyperparameters_keep_float64():
    """A float64 rule gets its scalars as float64 (a float32 argument would round 1 + 1e-12 to 1)."""
    lists = [[torch.zeros(3, dtype=torch.float64)], [torch.ones(3, dtype=torch.float64)]]
    tk.run(lambda p, g: ops.add_(p, g, alpha=1 + 1e-12), lists)
    assert torch.equal(lists[0][0], torch.full((3,), 1 + 1e-12, dtype=torch.float64))


# -- every optimizer of the registry --------------------------------------------------------------------------
def _trajectory(info, cfg, foreach, dtype, steps=5):
    params = make_params(dtype)
    opt = info.make(params, **cfg, foreach=foreach)
    for k in range(steps):
        opt.zero_grad()
        loss_at(params, k).backward()
        if k % 3 == 1:
            params[1].grad = None  # a parameter without a gradient on some steps: buckets split
        if k == 2:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.5  # a schedule
        opt.step()
    return params, opt


@ALL
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_path_equals_plain_loop(case, dtype, triton_path):
    """Every optimizer's list path, run as Triton kernels, gives the plain loop's parameters and state."""
    info, cfg = case
    pa, oa = _trajectory(info, cfg, foreach=False, dtype=dtype)
    runs, triton_path["usable"] = tk.stats()["runs"], 0
    pb, ob = _trajectory(info, cfg, foreach=True, dtype=dtype)
    _assert_a_kernel_ran(runs, triton_path, info)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    for a, b in zip(pa, pb, strict=True):
        torch.testing.assert_close(a, b, **tol)
        sa, sb = oa.state[a], ob.state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], **tol, msg=key)


#: State computed from a Newton-Schulz output (NorMuon's row second moment): a one-ulp difference of the low-precision
#: momentum moves the orthogonalized matrix by more than an ulp, so this state is not held to the one-ulp check of the
#: element-wise state; the parameters still are.
NOT_ELEMENTWISE_STATE = {"second_momentum_buffer"}


@pytest.mark.parametrize("info", DB, ids=[info.name for info in DB])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_parameters_step_in_float32(info, dtype, triton_path):
    """bfloat16/float16 parameters and state: a Triton step equals one float32 plain-loop step on the widened
    values, rounded once (to within one unit in the last place of the stored dtype). Each optimizer's first
    configuration (the others' kernels differ in arithmetic, tested above, not in how they load and store)."""
    cfg = info.configs[0]
    if dtype == torch.float16 and info.name in getattr(optim_db, "NO_FLOAT16", ()):
        pytest.skip("refuses float16 parameters (a clear error, tested with the optimizer)")
    eps = cfg.get("eps", info.cls([info.tensor(1)], lr=0.1).defaults.get("eps", 1.0))
    if dtype == torch.float16 and isinstance(eps, float) and eps < 1e-4:
        cfg = {**cfg, "eps": 1e-4}  # as test_every_optimizer.test_dtypes: eps below float16's range warns, overflows
    params, opt = _trajectory(info, cfg, foreach=True, dtype=dtype, steps=2)
    wide = [p.detach().float().requires_grad_() for p in params]
    ref = info.make(wide, **cfg, foreach=False)
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))  # state widened to float32 by torch's loader, except
    for w in wide:  # a 0-d parameter's moments, which optimlab's loader keeps as saved (like its 0-d counters)
        ref.state[w].update({k: v.float() for k, v in ref.state[w].items() if torch.is_tensor(v) and v.dtype == dtype})
    opt.zero_grad()
    ref.zero_grad()
    loss_at(params, 9).backward()
    for w, p in zip(wide, params, strict=True):
        w.grad = p.grad.float()
    runs, triton_path["usable"] = tk.stats()["runs"], 0
    opt.step()
    _assert_a_kernel_ran(runs, triton_path, info)
    ref.step()
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    for p, w in zip(params, wide, strict=True):
        assert p.dtype == dtype
        torch.testing.assert_close(p.float(), w.detach().to(dtype).float(), rtol=ulp, atol=1e-6)
        for key, value in opt.state[p].items():
            if key in NOT_ELEMENTWISE_STATE:
                continue
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                assert value.dtype == dtype, key
                torch.testing.assert_close(value.float(), ref.state[w][key].to(dtype).float(), rtol=ulp,
                                           atol=1e-6, msg=key)


def test_bfloat16_first_moment_beside_float32_parameters(triton_path):
    """``moment_dtype=torch.bfloat16``: the kernel reads and writes m as bfloat16 (no float32 copy)."""
    import optimlab

    params = make_params(torch.float32)
    opt = optimlab.Adam(params, lr=0.01, moment_dtype=torch.bfloat16)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ref = optimlab.Adam(ref_params, lr=0.01, moment_dtype=torch.bfloat16, foreach=False)
    for k in range(5):
        for ps, o in ((params, opt), (ref_params, ref)):
            o.zero_grad()
            loss_at(ps, k).backward()
            o.step()
    for p, r in zip(params, ref_params, strict=True):
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
        torch.testing.assert_close(p, r, rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref.state[r]["exp_avg"], rtol=2.0**-7, atol=1e-6)


# -- the real compiler ----------------------------------------------------------------------------------------
def _recorded_structures(monkeypatch):
    """Every rule structure the optimizers' first configurations hand to the backend (float32)."""
    seen: dict[tuple, tuple] = {}
    real = tk.run

    def record(rule, lists, per_tensor=(), readonly=()):
        found = tk._structure(rule, lists, len(per_tensor), readonly)
        if found is not None:
            seen.setdefault(found[0][:6], (rule, [lst[0].dtype for lst in lists], len(per_tensor), tuple(readonly)))
        return real(rule, lists, per_tensor, readonly)

    monkeypatch.setattr(tensors, "fused_kernels_support", lambda ts: False)
    monkeypatch.setattr(kernels, "usable", tk.usable)
    monkeypatch.setattr(kernels, "run", record)
    monkeypatch.setattr(tk, "run", record)  # dispatch's triton row calls the Triton backend directly
    for info in DB:
        _trajectory(info, info.configs[0], foreach=True, dtype=torch.float32, steps=3)
    return seen


def test_generated_kernels_compile_for_a_gpu(monkeypatch):
    """The kernels every optimizer generates compile with Triton's CUDA compiler (sm_90, no device needed), and
    the aligned variant moves data in 128-bit accesses and rounds division and square root to nearest."""
    seen = _recorded_structures(monkeypatch)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert len(seen) >= 10
    for structure, (rule, dtypes, n_per_tensor, readonly) in seen.items():
        compiled = tk.compile_offline(rule, dtypes, n_per_tensor, readonly)
        ptx = compiled.asm["ptx"]
        assert "ld.global.v4.b32" in ptx
        assert ("st.global.v4.b32" in ptx) == bool(structure[1])  # stores (a norms-only pass stores nothing)
        assert not re.search(r"div\.(full|approx)\.f32|sqrt\.approx\.f32", ptx)
        assert compiled.asm["cubin"]


def test_low_precision_unaligned_and_sum_kernels_compile_for_a_gpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    for dtypes in ([torch.bfloat16, torch.bfloat16, torch.float32], [torch.float16] * 3, [torch.float64] * 3):
        for aligned in (True, False):
            assert tk.compile_offline(_every_op, dtypes, readonly=(1,), aligned=aligned).asm["cubin"]
    assert tk._compile_sums_offline().asm["cubin"]


def test_nothing_imports_triton_until_a_kernel_runs():
    import subprocess
    import sys

    code = ("import sys, torch, optimlab, optimlab.core.triton_kernels as tk; "
            "a = [[torch.zeros(3)], [torch.zeros(3)]]; tk.usable(a); print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
