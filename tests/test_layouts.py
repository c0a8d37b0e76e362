"""Gradients and state laid out or sized unlike their parameters (issue 19, H1 and H2): every path equals the plain
loop, or raises a clear error; none reads or writes memory in another order or beyond a tensor.

Gradients set by hand (``torch.autograd.grad``, meta-learning loops, gradient surgery, hooks) can be transposed,
sliced, broadcast (stride 0: what ``torch.autograd.grad(w.sum(), [w])`` returns), channels-last beside a
contiguous parameter, or overlapping; parameters themselves can be non-contiguous. A property test draws such
cases at random (seeded: the same cases every run) for every registered optimizer and checks the default path
against ``foreach=False`` (the plain per-parameter loop) to round-off. State of another shape than its parameter
(a checkpoint of a resized layer, ``p.data = bigger``) must raise ``ValueError``/``RuntimeError`` naming it.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from optim_db import BY_NAME, DB, MATRIX_OPTIMIZERS, NO_FLOAT16

import optimlab
from optimlab.core import dispatch, kernels, tensors, tiling
from optimlab.core import triton_kernels as tk

NAMES = [info.name for info in DB]
STEPS = 3
#: Gradient layouts, each applied to the values the plain loop gets contiguous.
GRAD_LAYOUTS = ("same", "contiguous", "transposed", "sliced", "broadcast", "channels_last", "overlapping")
PARAM_LAYOUTS = ("contiguous", "transposed", "channels_last")


# -- layouts ---------------------------------------------------------------------------------------------------
def _reverse(t: torch.Tensor) -> torch.Tensor:
    """The same values with the dimensions' memory order reversed (a transposed layout, e.g. strides (1, 3))."""
    order = list(reversed(range(t.dim())))
    return t.permute(order).contiguous().permute(order)


def _laid_out(values: torch.Tensor, layout: str, like: torch.Tensor) -> torch.Tensor:
    """``values`` (or, for the layouts that constrain values, values derived from them) in ``layout``."""
    shape = values.shape
    if layout == "same":
        return torch.empty_like(like, memory_format=torch.preserve_format).copy_(values)
    if layout == "contiguous":
        return values.contiguous()
    if layout == "transposed":
        return _reverse(values)
    if layout == "sliced":  # every other element of a buffer twice as wide: strides with gaps
        buf = torch.zeros(*shape[:-1], 2 * shape[-1], dtype=values.dtype)
        buf[..., ::2] = values
        return buf[..., ::2]
    if layout == "broadcast":  # stride 0 everywhere, as autograd.grad(w.sum(), [w]) returns
        return values.reshape(-1)[:1].reshape([1] * values.dim()).expand(shape)
    if layout == "channels_last":
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "overlapping":  # element (i, j, ...) at offset i + j + ...: many elements share memory
        buf = values.reshape(-1)[: sum(shape) - len(shape) + 1].clone()
        return buf.as_strided(shape, (1,) * len(shape))
    raise AssertionError(layout)


def _applicable(layout: str, shape: tuple[int, ...]) -> bool:
    if layout in ("transposed", "overlapping"):
        return len(shape) >= 2
    if layout == "channels_last":
        return len(shape) == 4
    return len(shape) >= 1


class Case:
    """One random draw: parameter shapes, their layouts, each gradient's layout, and a dtype.

    A matrix optimizer gets no broadcast gradient for a matrix: a constant matrix has a degenerate eigenbasis, in
    which the stacked path and the loop (different, equally valid contractions) differ by 1e-11 with contiguous
    gradients too, so it would test conditioning, not layout."""

    def __init__(self, name: str, seed: int) -> None:
        rng = random.Random(f"{name}-{seed}")
        self.seed = seed
        self.shapes = [(rng.randint(2, 6), rng.randint(2, 6)), (rng.randint(1, 3), rng.randint(2, 3), 2, 3),
                       (rng.randint(1, 9),)]
        if name in MATRIX_OPTIMIZERS:
            self.shapes = self.shapes[:1] + [(rng.randint(2, 5), rng.randint(2, 5))] + self.shapes[2:]
        self.param_layouts = [rng.choice([x for x in PARAM_LAYOUTS if _applicable(x, s)]) for s in self.shapes]
        self.grad_layouts = [rng.choice([x for x in GRAD_LAYOUTS if _applicable(x, s)
                                         and not (x == "broadcast" and name in MATRIX_OPTIMIZERS and len(s) >= 2)])
                             for s in self.shapes]
        dtypes = [torch.float64, torch.float32]
        if name not in MATRIX_OPTIMIZERS | NO_FLOAT16:
            dtypes.append(torch.bfloat16)
        self.dtype = rng.choice(dtypes)

    def __repr__(self) -> str:
        return (f"Case(seed={self.seed}, dtype={self.dtype}, shapes={self.shapes}, params={self.param_layouts}, "
                f"grads={self.grad_layouts})")

    def params(self) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        out = []
        for shape, layout in zip(self.shapes, self.param_layouts, strict=True):
            values = torch.randn(shape, generator=g, dtype=torch.float64).to(self.dtype)
            out.append(torch.nn.Parameter(_laid_out(values, layout, values)))
        return out

    def set_grads(self, params: list[torch.Tensor], step: int, contiguous: bool) -> None:
        g = torch.Generator().manual_seed(1000 * self.seed + step)
        for p, layout in zip(params, self.grad_layouts, strict=True):
            values = torch.randn(p.shape, generator=g, dtype=torch.float64).to(self.dtype)
            grad = _laid_out(values, layout, p)  # the values this layout constrains them to (broadcast, overlap)
            p.grad = grad.contiguous() if contiguous else grad


def _tolerance(p: torch.Tensor) -> dict[str, float]:
    if p.dtype == torch.float64:
        return dict(rtol=1e-12, atol=1e-14)
    if p.dtype == torch.float32:
        return dict(rtol=1e-5, atol=1e-6)
    # bfloat16: the compiled loop computes in float32 and rounds once, the plain loop rounds every operation
    # (tests/test_every_optimizer.py's bound: one rounding of the parameter per step)
    return dict(rtol=STEPS * 2.0**-7, atol=STEPS * 2.0**-7)


def _make(name: str, params: list[torch.Tensor], **kwargs: Any) -> torch.optim.Optimizer:
    info = BY_NAME[name]
    return info.make(params, **info.configs[0], **kwargs)


def _compare(name: str, case: Case, path: Callable[[], Any] | None = None) -> None:
    """``STEPS`` steps on the default path (under ``path()``, a ``dispatch.only`` context, if given) with the
    case's gradient layouts, against the plain loop given the same gradient values contiguous."""
    ps, ref = case.params(), case.params()
    opt, loop = _make(name, ps), _make(name, ref, foreach=False)
    for k in range(STEPS):
        case.set_grads(ps, k, contiguous=False)
        case.set_grads(ref, k, contiguous=True)
        grads = [p.grad.clone() for p in ps]
        if path is None:
            opt.step()
        else:
            with path():
                opt.step()
        loop.step()
        for p, g in zip(ps, grads, strict=True):
            assert torch.equal(p.grad, g), "the step wrote into a gradient"
    for i, (a, b) in enumerate(zip(ps, ref, strict=True)):
        torch.testing.assert_close(a.detach(), b.detach(), **_tolerance(a),
                                   msg=lambda m, i=i: f"{name} {case}: parameter {i}: {m}")


# -- the property: every optimizer's default path, random layouts -----------------------------------------------
SEEDS = (1, 2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_default_path_equals_the_plain_loop_for_any_layout(name):
    for seed in SEEDS:
        _compare(name, Case(name, seed))


#: The element-wise rows, forced (the blocked row on tiny blocks, so that views are taken of small tensors).
FORCED = ("fused", "compiled", "blocked", "foreach")


@pytest.mark.parametrize("path", FORCED)
@pytest.mark.parametrize("name", ["sgdm", "adam", "adagrad", "nadam", "lion", "rmsprop"])
def test_every_elementwise_row_equals_the_plain_loop_for_any_layout(name, path, monkeypatch):
    if path == "compiled" and not kernels.enabled():
        pytest.skip("no C compiler")
    monkeypatch.setattr(tiling, "MIN_BLOCKED_ELEMS", 0)
    monkeypatch.setattr(tiling, "DEFAULT_BLOCK_ELEMS", 7)
    for seed in (4, 5, 6, 7):
        _compare(name, Case(name, seed), lambda: dispatch.only(path))


def test_every_layout_and_dtype_is_drawn():
    """The draws cover what they claim (else the property tests less than it says)."""
    cases = [Case(name, seed) for name in NAMES for seed in SEEDS]
    assert {x for c in cases for x in c.grad_layouts} == set(GRAD_LAYOUTS)
    assert {x for c in cases for x in c.param_layouts} == set(PARAM_LAYOUTS)
    assert {c.dtype for c in cases} == {torch.float32, torch.float64, torch.bfloat16}


# -- the review's cases, exactly ------------------------------------------------------------------------------
def test_transposed_and_broadcast_gradients_of_autograd_grad_step_sgd_right():
    """H1 as reported: ``torch.autograd.grad`` returns a transposed (strides (1, 3)) or a broadcast (strides
    (0, 0)) gradient; the default path gave |error| 0.5 and 7e27 (an out-of-bounds read)."""
    w = torch.nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    (g_t,) = torch.autograd.grad(w.t().contiguous().pow(2).sum(), [w])
    (g_b,) = torch.autograd.grad(w.sum(), [w])
    assert g_t.stride() == (1, 3) and g_b.stride() == (0, 0)
    for g in (g_t, g_b):
        p = torch.nn.Parameter(w.detach().clone())
        opt = optimlab.SGD([p], lr=0.1)
        p.grad = g
        opt.step()
        torch.testing.assert_close(p.detach(), w.detach() - 0.1 * g, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["sgd", "sgdm", "nesterov", "sgdw", "adagrad", "adam", "adamw", "amsgrad", "radam"])
def test_the_fused_kernel_users_with_a_transposed_gradient_for_8_steps(name):
    """The review's sweep: these took torch's fused kernels by default and differed from ``foreach=False`` by
    0.0008 (radam) to 0.62 (nesterov) after 8 steps."""
    w0 = torch.randn(40, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    runs = []
    for foreach in (None, False):
        w = torch.nn.Parameter(w0.clone())
        opt = _make(name, [w], foreach=foreach)
        for k in range(8):
            g = torch.randn(30, 40, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
            w.grad = g.t()  # strides (1, 30)
            opt.step()
        runs.append(w.detach())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("hand_set", [False, True])
def test_a_parameter_moved_to_channels_last_after_its_state_was_created(hand_set):
    """``model.to(memory_format=torch.channels_last)`` after some steps: the state keeps the old (contiguous)
    layout, the parameter and its gradients are channels-last (``hand_set``: the gradient is set contiguous, as
    the state); a fused kernel would pair them element by element in memory and mix up the moments (the step plan
    re-checks the layout, so this is seen on a cached plan too)."""
    runs = []
    for foreach in (None, False):
        torch.manual_seed(2)
        conv = torch.nn.Conv2d(3, 4, 3)
        opt = optimlab.Adam(conv.parameters(), lr=0.1, foreach=foreach)
        x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(3))
        for k in range(6):
            if k == 3:
                conv.to(memory_format=torch.channels_last)
            opt.zero_grad()
            conv(x.contiguous(memory_format=torch.channels_last) if k >= 3 else x).square().sum().backward()
            if hand_set:
                conv.weight.grad = conv.weight.grad.contiguous()
            opt.step()
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        runs.append(conv.weight.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


# -- state of another size ------------------------------------------------------------------------------------
def _tensor_state(opt: torch.optim.Optimizer, p: torch.Tensor) -> bool:
    return any(isinstance(v, torch.Tensor) and v.dim() > 0 for v in opt.state.get(p, {}).values())


@pytest.mark.parametrize("name", NAMES)
def test_a_parameter_resized_after_steps_raises_or_steps_as_the_plain_loop(name):
    """``p.data = bigger`` after some steps (a grown embedding): with state of the old size the step raises
    (``RuntimeError``, as torch's does, naming the shapes), on every path; without state it steps as the loop."""
    case = Case(name, 11)
    results = []
    for foreach in (None, False):
        ps = case.params()
        opt = _make(name, ps, foreach=foreach)
        for k in range(STEPS):  # three steps: the default path steps on a cached plan by then
            case.set_grads(ps, k, contiguous=True)
            opt.step()
        p = ps[0]
        stateful = _tensor_state(opt, p)
        p.data = torch.randn(p.shape[0] + 3, p.shape[1] + 2, generator=torch.Generator().manual_seed(5)).to(p.dtype)
        case.set_grads(ps, STEPS, contiguous=True)
        if stateful:
            with pytest.raises((RuntimeError, ValueError), match=r"\w") as info:
                opt.step()
            assert re.search(r"shape|size", str(info.value)), info.value
            results.append(None)
        else:
            opt.step()
            results.append([q.detach().clone() for q in ps])
    if results[0] is not None:
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, **_tolerance(a))


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_of_a_resized_layer_is_refused_on_load(name):
    """H2 (a): same tensor count, one layer of another size. Every state tensor is checked against its parameter
    (Adafactor's factored moments against their factored shapes): ``ValueError`` naming the parameter index and
    the key, and the optimizer is left as it was."""
    case = Case(name, 12)
    old = case.params()
    source = _make(name, old)
    for k in range(STEPS):
        case.set_grads(old, k, contiguous=True)
        source.step()
    sd = copy.deepcopy(source.state_dict())
    new = case.params()
    new[0] = torch.nn.Parameter(torch.randn(new[0].shape[0] + 1, new[0].shape[1], dtype=new[0].dtype))
    target = _make(name, new)
    before = copy.deepcopy(target.state_dict())
    if not _tensor_state(source, old[0]):
        target.load_state_dict(sd)
        return
    with pytest.raises(ValueError, match=r"parameter 0 has shape .*\(\d+, \d+\)") as info:
        target.load_state_dict(sd)
    assert f"{type(target).__name__}.load_state_dict: state '" in str(info.value)
    after = target.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for i, state in before["state"].items():
        assert all(torch.equal(v, after["state"][i][k]) for k, v in state.items())


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_of_the_same_model_loads_and_continues_bit_for_bit(name):
    """The load-time checks accept every genuine checkpoint (Adafactor's factored moments, SWATS's 0-d rates,
    the matrix optimizers' preconditioners, SGD's lazily created buffer): a resumed run equals an unbroken one."""
    case = Case(name, 13)
    case.grad_layouts = ["same"] * len(case.shapes)
    unbroken, first = case.params(), case.params()
    a, b = _make(name, unbroken), _make(name, first)
    for k in range(STEPS):
        for ps, opt in ((unbroken, a), (first, b)):
            case.set_grads(ps, k, contiguous=True)
            opt.step()
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    c = _make(name, resumed)
    c.load_state_dict(copy.deepcopy(b.state_dict()))
    for k in range(STEPS, STEPS + 2):
        for ps, opt in ((unbroken, a), (resumed, c)):
            case.set_grads(ps, k, contiguous=True)
            opt.step()
    for x, y in zip(unbroken, resumed, strict=True):
        assert torch.equal(x, y)


# -- the raw-pointer rows themselves --------------------------------------------------------------------------
def _mismatched() -> list[list[torch.Tensor]]:
    return [[torch.zeros(5), torch.zeros(7)], [torch.ones(5), torch.ones(7)], [torch.zeros(5), torch.zeros(50)]]


def test_the_compiled_rows_refuse_lists_of_other_sizes():
    """``kernels.usable`` took every size from ``lists[0]``: a state tensor smaller than its parameter was written
    out of bounds, a larger one stepped silently. Now it raises (it never declines to an eager path)."""
    if not kernels.enabled():
        pytest.skip("no C compiler")
    with pytest.raises(RuntimeError, match=r"LAMB: the state 'operand 2' of a parameter of shape \(7,\) has "
                                           r"shape \(50,\) \(tensor 1 of its bucket\)"):
        kernels.usable(_mismatched(), "LAMB")
    lists = _mismatched()
    lists[2][1] = torch.zeros(7)
    assert kernels.usable(lists)


def test_the_triton_rows_refuse_lists_of_other_sizes(monkeypatch):
    pytest.importorskip("triton")
    if not tk.available():
        pytest.skip("Triton too old")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match=r"has shape \(50,\)"):
        tk.usable(_mismatched())
    lists = _mismatched()
    lists[2][1] = torch.zeros(7)
    assert tk.usable(lists)


def test_same_layout_is_what_the_fused_kernels_need():
    p = torch.zeros(3, 4)
    assert tensors.same_layout([[p], [torch.ones(3, 4)]])
    assert not tensors.same_layout([[p], [torch.ones(4, 3).t()]])
    assert not tensors.same_layout([[p], [torch.ones(1, 1).expand(3, 4)]])
    assert not tensors.same_layout([[p], [torch.ones(3, 8)[:, ::2]]])
    assert not tensors.same_layout([[p], [torch.ones(3, 5)]])
    t = torch.zeros(4, 3).t()  # a transposed parameter with a gradient of its layout: dense, the same strides
    assert tensors.same_layout([[t], [torch.ones(4, 3).t()]])
    assert not tensors.same_layout([[torch.zeros(3, 8)[:, ::2]], [torch.ones(3, 8)[:, ::2]]])  # gaps: not dense
    c = torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert tensors.same_layout([[c], [torch.ones_like(c)]])
    assert not tensors.same_layout([[c], [torch.ones(2, 3, 4, 5)]])


# -- Triton's interpreter ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["adam", "nadam", "lion"])
def test_the_triton_path_equals_the_plain_loop_for_any_layout(name, monkeypatch):
    """The Triton row, run by Triton's interpreter on CPU tensors: it takes a bucket of parameters laid out as
    their gradients and state, and no other (those go on to the eager rows, equal to the plain loop too)."""
    pytest.importorskip("triton")
    if not tk.available():
        pytest.skip("Triton too old")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")
    for layouts, runs_a_kernel in ((["same"] * 3, True), (["same", "transposed", "broadcast"], False)):
        case = Case(name, 8)
        case.dtype, case.grad_layouts, case.param_layouts = torch.float32, layouts, ["contiguous"] * 3
        runs = tk.stats()["runs"]
        _compare(name, case, lambda: dispatch.only("triton"))
        assert (tk.stats()["runs"] > runs) == runs_a_kernel
