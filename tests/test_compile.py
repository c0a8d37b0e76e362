"""``torch.compile(opt.step)`` (torch's tutorial "Compiling the optimizer", issue 19).

The step traced by dynamo takes the ``traced`` row of :mod:`optimlab.core.dispatch` (the rule on torch ops over
lists): torch's fused kernels, the compiled C loops and the step plan stay out of the graph, which before made
inductor fail with an internal assert. Each compiled step must give the eager step's parameters and state to float
round-off (``torch.testing.assert_close``'s float32 defaults, what torch's own compiled-optimizer tests use).

Kept small for CI on CPU: two tensors of a few elements, two or three steps (the first creates the state), dynamo
reset between cases; the sweep over every element-wise optimizer uses ``aot_eager`` (dynamo plus AOT autograd's
functionalization, where the old failure was), inductor runs three representatives.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.nn import Parameter

import optimlab
from optimlab.registry import OPTIMIZERS

#: Rules with a per-tensor reduction (several passes) and the matrix optimizers: they trace too, with many more
#: graphs (slow to compile: not swept here); Muon is checked below, Shampoo refuses with one clear error.
MULTI_PASS = ("lars", "lamb", "swats", "mars", "prodigy", "adafactor")
MATRIX = ("muon", "soap", "shampoo", "normuon")
ELEMENTWISE = [name for name in OPTIMIZERS if name not in MULTI_PASS + MATRIX]


def _make(name: str, base: list[torch.Tensor]) -> tuple[list[Parameter], torch.optim.Optimizer]:
    spec = OPTIMIZERS[name]
    params = [Parameter(b.clone()) for b in base]
    kwargs = dict(spec.preset)
    if inspect.signature(spec.cls).parameters["lr"].default is inspect.Parameter.empty:
        kwargs.setdefault("lr", 0.01)
    return params, spec.cls(params, **kwargs)


def _check(name: str, backend: str, steps: int, shapes: tuple[tuple[int, ...], ...] = ((3, 2), (4,))) -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(shape, generator=gen) for shape in shapes]
    eager_params, eager = _make(name, base)
    params, opt = _make(name, base)

    @torch.compile(fullgraph=False, backend=backend)
    def step() -> None:
        opt.step()

    for _ in range(steps):
        grads = [torch.randn(b.shape, generator=gen) for b in base]
        for p, q, g in zip(eager_params, params, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        eager.step()
        step()
        for p, q in zip(eager_params, params, strict=True):
            torch.testing.assert_close(q, p)
    for p, q in zip(eager_params, params, strict=True):
        assert eager.state[p].keys() == opt.state[q].keys()
        for key, value in eager.state[p].items():
            torch.testing.assert_close(opt.state[q][key], value, msg=lambda m, k=key: f"{name} state {k!r}: {m}")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo's notes on graph breaks
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_compiled_step_equals_eager(name):
    """Every element-wise optimizer of the registry: dynamo and AOT autograd trace the step, same numbers."""
    _check(name, "aot_eager", steps=2)


@pytest.mark.parametrize("name", ["adamw", "sgdm", "amsgrad"])
def test_inductor_step_equals_eager(name):
    """torch's tutorial with the default backend (inductor, C++ on CPU): AdamW crashed here with "mutating a
    non-functional tensor with a functional tensor is not allowed"."""
    _check(name, "inductor", steps=2)


def test_muon_compiles():
    _check("muon", "aot_eager", steps=2, shapes=((3, 2), (4, 3)))


def test_normuon_compiles():
    _check("normuon", "aot_eager", steps=2, shapes=((3, 2), (4, 3)))


def test_lookahead_wrapper_compiles():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)]
    runs = []
    for compiled in (False, True):
        params = [Parameter(b.clone()) for b in base]
        opt = optimlab.Lookahead(optimlab.AdamW(params, lr=0.01), k=2)
        step = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
        g2 = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g2)
            step()
        runs.append(params)
    for p, q in zip(*runs, strict=True):
        torch.testing.assert_close(q, p)


def test_shampoo_refuses_with_one_clear_error():
    """Shampoo's traced step failed inside dynamo's guards (an internal AssertionError on the third step): it
    raises one RuntimeError naming the class and what to do instead, on the first compiled call."""
    torch._dynamo.reset()
    p = Parameter(torch.randn(4, 3))
    opt = optimlab.Shampoo([p])
    p.grad = torch.randn(4, 3)

    @torch.compile(backend="aot_eager")
    def step() -> None:
        opt.step()

    with pytest.raises(RuntimeError, match=r"Shampoo does not support torch.compile\(opt.step\).*compile the model"):
        step()
    opt.step()  # eagerly it steps as before
