"""GradScaler's fused contract (issue 19): with ``fused=True`` torch's SGD, Adam, AdamW and Adagrad declare
``_step_supports_amp_scaling``, so ``torch.amp.GradScaler.step`` does not unscale the gradients itself: it sets
``optimizer.grad_scale`` and ``optimizer.found_inf`` and calls ``step()``. The step must divide the gradients by
``grad_scale`` and, where ``found_inf`` is set, leave parameters and state alone and not count the step.

Checked against torch's fused classes through a real ``GradScaler`` loop on CPU (bfloat16 autocast, an infinite
gradient on one step, the scale growing and backing off), with the flags set by hand as torch's
``test_fused_does_not_step_if_foundinf`` does, and for the buckets that do not reach torch's fused kernel (float16
SGD on CPU, a ``foreach=False`` group, SGDW's decay outside the kernel), which read the flag and step on unscaled
copies of the gradients.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn import Parameter

import optimlab
from optimlab.algorithms import sgd as sgd_module

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01)),
]
IDS = [f"{name}-{'-'.join(kw)}" for name, kw in CASES]

#: Iterations of the loop whose gradient gets an inf (GradScaler skips the step there and halves the scale). Not the
#: first: torch's fused SGD with momentum then keeps uninitialised buffers (see the test of that case below).
INF_AT = (2, 5)


def _params() -> list[Parameter]:
    g = torch.Generator().manual_seed(0)
    return [Parameter(torch.randn(4, 3, generator=g)), Parameter(torch.randn(4, generator=g))]


def _loop(opt: torch.optim.Optimizer, params: list[Parameter], steps: int = 7) -> list[list[torch.Tensor]]:
    """A GradScaler training loop (bfloat16 autocast on CPU); returns the parameters after each iteration."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    w, b = params
    seen = []
    for i in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (x @ w.t() + b).float().pow(2).mean()
        scaler.scale(loss).backward()
        if i in INF_AT:
            w.grad[1, 2] = float("inf")
        scaler.step(opt)
        scaler.update()
        seen.append([p.detach().clone() for p in params])
    return seen


def _state(opt: torch.optim.Optimizer) -> list[dict[str, torch.Tensor]]:
    return [opt.state[p] for group in opt.param_groups for p in group["params"]]


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_grad_scaler_loop_equals_torch_fused(name, kwargs):
    """Same parameters after every iteration and the same state (step counts included) as torch's fused class: the
    skipped steps leave everything alone, the others are unscaled inside torch's kernel."""
    ref_params, params = _params(), _params()
    ref = getattr(torch.optim, name)(ref_params, fused=True, **kwargs)
    opt = getattr(optimlab, name)(params, fused=True, **kwargs)
    assert opt._step_supports_amp_scaling is True
    for want, got in zip(_loop(ref, ref_params), _loop(opt, params), strict=True):
        for a, b in zip(want, got, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    for st_ref, st in zip(_state(ref), _state(opt), strict=True):
        assert st.keys() == st_ref.keys()
        for key in st_ref:
            torch.testing.assert_close(st[key], st_ref[key], rtol=0, atol=0)
        if "step" in st:  # two of the seven iterations were skipped
            assert float(st["step"]) == 7 - len(INF_AT)


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("grad_scale", [None, torch.ones(1)], ids=["no_grad_scale", "grad_scale"])
def test_fused_does_not_step_if_found_inf(name, kwargs, grad_scale):
    """torch's ``test_fused_does_not_step_if_foundinf``: the flags set by hand, ``found_inf`` = 1."""
    params = [torch.ones(1) for _ in range(5)]
    before = [p.clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    opt = getattr(optimlab, name)(params, fused=True, **kwargs)
    opt.grad_scale = grad_scale
    opt.found_inf = torch.ones(())
    opt.step()
    for p, p0 in zip(params, before, strict=True):
        assert torch.equal(p, p0)
        if "step" in opt.state[p]:
            assert torch.equal(opt.state[p]["step"], torch.zeros(()))
        for key, value in opt.state[p].items():
            if key != "step" and key != "sum":
                assert not value.any(), key  # moments still zero


def test_sgd_momentum_skipped_first_step_creates_no_buffer():
    """A skipped first step of fused SGD with momentum creates no buffer, so the next step starts it from the
    gradient. torch's fused step keeps the uninitialised ``empty_like`` buffer it made for the kernel and uses it
    on the next step (1e19 in one run of this file's loop with an inf on the first step): a
    documented difference, and the usual case under GradScaler, whose first scale often overflows."""
    p = Parameter(torch.ones(3))
    opt = optimlab.SGD([p], lr=0.1, momentum=0.9, fused=True)
    p.grad = torch.full((3,), 4.0)
    opt.grad_scale, opt.found_inf = torch.tensor(2.0), torch.ones(())
    opt.step()
    assert "momentum_buffer" not in opt.state[p] and torch.equal(p, torch.ones(3))
    opt.found_inf = torch.zeros(())
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.full((3,), 2.0))
    assert torch.allclose(p, torch.full((3,), 0.8))


def _by_hand(cls, kwargs, params, steps):
    """The reference for the buckets that leave the fused row: GradScaler's non-fused contract by hand, i.e. the
    optimizer stepped on ``grad / scale`` (no step where ``found_inf``)."""
    opt = cls(params, **kwargs)
    for grads, scale, inf in steps:
        if inf:
            continue
        for p, g in zip(params, grads, strict=True):
            p.grad = g / scale
        opt.step()
    return opt


def _steps(params):
    g = torch.Generator().manual_seed(2)
    out = []
    for i, scale in enumerate((8.0, 8.0, 4.0, 4.0)):
        grads = [torch.randn(p.shape, generator=g).to(p.dtype) * scale for p in params]
        out.append((grads, scale, i == 1))
    return out


@pytest.mark.parametrize("name, kwargs, dtype", [
    ("SGD", dict(lr=0.1, momentum=0.9), torch.float16),    # torch's fused SGD drops float16 updates on CPU
    ("SGD", dict(lr=0.1, momentum=0.9), torch.bfloat16),
    ("SGDW", dict(lr=0.1, momentum=0.9, weight_decay=0.1), torch.float32),  # decay outside the kernel
], ids=["sgd-float16", "sgd-bfloat16", "sgdw-float32"])
def test_buckets_off_the_fused_row_honour_the_flags(name, kwargs, dtype, monkeypatch):
    """``fused=True`` buckets that another row steps: skipped where ``found_inf``, else stepped on unscaled copies
    (``p.grad`` keeps the scaled values); the same parameters and state as the optimizer stepped by hand."""
    cls = getattr(optimlab, name)
    params = [Parameter(torch.randn(24, generator=torch.Generator().manual_seed(3)).to(dtype))]
    ref_params = [Parameter(p.detach().clone()) for p in params]
    steps = _steps(params)
    ref = _by_hand(cls, dict(kwargs, fused=False), ref_params, steps)
    monkeypatch.setattr(sgd_module, "_warned_fused_sgd", [])  # the warning is once per process: not ours to use
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fused SGD kernel")  # float16/bfloat16
        opt = cls(params, fused=True, **kwargs)
        for grads, scale, inf in steps:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.grad_scale, opt.found_inf = torch.tensor(scale), torch.tensor(float(inf))
            opt.step()
            for p, g in zip(params, grads, strict=True):
                assert torch.equal(p.grad, g)  # never unscaled in place off the fused row
    # another path than the reference's (the fused kernel or compiled loop): equal to float round-off
    torch.testing.assert_close(params[0], ref_params[0])
    torch.testing.assert_close(opt.state[params[0]]["momentum_buffer"], ref.state[ref_params[0]]["momentum_buffer"])


def test_foreach_false_group_of_a_fused_optimizer():
    """A group with ``foreach=False`` in an optimizer built with ``fused=True`` takes the plain loop: GradScaler
    did not unscale its gradients either, so the loop honours the flags too (against torch's fused Adam, whose
    kernel computes the same rule)."""
    ref_params, params = _params(), _params()
    ref = torch.optim.Adam(ref_params, lr=0.01, fused=True)
    opt = optimlab.Adam([{"params": [params[0]]}, {"params": [params[1]], "fused": None, "foreach": False}],
                        lr=0.01, fused=True)
    for want, got in zip(_loop(ref, ref_params), _loop(opt, params), strict=True):
        for a, b in zip(want, got, strict=True):
            torch.testing.assert_close(b, a)
    assert float(opt.state[params[1]]["step"]) == 7 - len(INF_AT)



def test_sparse_gradient_of_a_fused_sgd():
    """A sparse gradient (SGD's own path, one tensor at a time) honours the flags too: unscaled as a copy, and no
    step where ``found_inf``."""
    w = Parameter(torch.ones(5, 2))
    opt = optimlab.SGD([w], lr=0.1, fused=True)
    g = torch.sparse_coo_tensor([[0, 3]], torch.full((2, 2), 4.0), (5, 2), check_invariants=True)
    w.grad = g
    opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.zeros(())
    opt.step()
    want = torch.ones(5, 2)
    want[[0, 3]] = 0.9
    assert torch.equal(w.detach(), want) and torch.equal(w.grad.to_dense(), g.to_dense())
    opt.found_inf = torch.ones(())
    opt.step()
    assert torch.equal(w.detach(), want)
