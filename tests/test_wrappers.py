"""Tests for optimlab.wrappers: Lookahead, GradientNoise, SWA, EMA, update_bn.

The numerical tests compare each wrapper with a small for-loop reference written from the paper's equations
(plain tensors, hand-written SGD or torch's own inner step), exactly, in float64.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from optimlab.wrappers import EMA, SWA, GradientNoise, Lookahead, OptimizerWrapper, update_bn

__all__: list[str] = []

SHAPES = [(4, 3), (3,), (2, 2, 2)]
LR = 0.05
MU = 0.9


# ---------------------------------------------------------------------------------------------- problem
def make_params(dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def loss_at(params: list[torch.Tensor], t: int) -> torch.Tensor:
    """A non-quadratic loss whose targets change with the step ``t`` (deterministic)."""
    g = torch.Generator().manual_seed(1000 + t)
    total = torch.zeros((), dtype=params[0].dtype)
    for p in params:
        target = torch.randn(p.shape, generator=g, dtype=p.dtype)
        total = total + ((p - target) ** 2).sum() + 0.1 * torch.sin(3 * p).sum()
    return total


def grads_at(ws: list[torch.Tensor], t: int) -> list[torch.Tensor]:
    leaves = [w.detach().clone().requires_grad_(True) for w in ws]
    loss_at(leaves, t).backward()
    return [leaf.grad for leaf in leaves]  # type: ignore[misc]


def train(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: range, sched: Any = None) -> None:
    for t in steps:
        opt.zero_grad()
        loss_at(params, t).backward()
        opt.step()
        if sched is not None:
            sched.step()


def sgd_ref_step(ws: list[torch.Tensor], bufs: list[torch.Tensor | None], grads: list[torch.Tensor],
                 lr: float = LR, mu: float = MU) -> None:
    """Hand-written SGD with heavy-ball momentum (torch's convention: the buffer starts at the gradient)."""
    for i, (w, g) in enumerate(zip(ws, grads, strict=True)):
        if mu == 0:
            w.add_(g, alpha=-lr)
            continue
        if bufs[i] is None:
            bufs[i] = g.clone()
        else:
            bufs[i].mul_(mu).add_(g)  # type: ignore[union-attr]
        w.add_(bufs[i], alpha=-lr)  # type: ignore[arg-type]


def sgd(params: list[torch.Tensor], mu: float = MU) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=LR, momentum=mu, foreach=False)


def assert_equal(a: Any, b: Any, where: str = "") -> None:
    """Exact (bitwise for tensors) equality of nested state."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: max diff {(a.double() - b.double()).abs().max().item()}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} vs {b}"
        for k in a:
            assert_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ---------------------------------------------------------------------------------------------- Lookahead
@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8), (1, 0.3)])
def test_lookahead_matches_reference_sgd(pullback: str, k: int, alpha: float) -> None:
    steps = 23
    params = make_params()
    opt = Lookahead(sgd(params), k=k, alpha=alpha, pullback=pullback)
    train(opt, params, range(steps))

    ws = [p.detach().clone() for p in make_params()]
    slow = [w.clone() for w in ws]  # slow weights start at the initial weights
    bufs: list[torch.Tensor | None] = [None] * len(ws)
    slow_bufs = [torch.zeros_like(w) for w in ws]
    for t in range(steps):
        sgd_ref_step(ws, bufs, grads_at(ws, t))
        if (t + 1) % k == 0:
            for i in range(len(ws)):
                slow[i] = torch.lerp(slow[i], ws[i], alpha)  # phi + alpha * (theta - phi)
                ws[i].copy_(slow[i])
                if pullback == "reset":
                    bufs[i].zero_()  # type: ignore[union-attr]
                elif pullback == "pullback":
                    slow_bufs[i] = torch.lerp(slow_bufs[i], bufs[i], alpha)  # type: ignore[arg-type]
                    bufs[i].copy_(slow_bufs[i])  # type: ignore[union-attr]
    for i, p in enumerate(params):
        assert torch.equal(p.detach(), ws[i]), i
        assert torch.equal(opt.wrapper_state[p]["slow_param"], slow[i]), i
        assert torch.equal(opt.state[p]["momentum_buffer"], bufs[i]), i  # type: ignore[arg-type]
    assert opt.step_count == steps


def test_lookahead_pullback_adam_exp_avg() -> None:
    k, alpha, steps = 4, 0.6, 18
    params = make_params()
    opt = Lookahead(torch.optim.Adam(params, lr=0.01, foreach=False), k=k, alpha=alpha, pullback="pullback")
    train(opt, params, range(steps))

    ref_params = make_params()
    inner = torch.optim.Adam(ref_params, lr=0.01, foreach=False)
    slow = [p.detach().clone() for p in ref_params]
    slow_m = [torch.zeros_like(p) for p in ref_params]
    for t in range(steps):
        train(inner, ref_params, range(t, t + 1))
        if (t + 1) % k == 0:
            with torch.no_grad():
                for i, p in enumerate(ref_params):
                    slow[i] = torch.lerp(slow[i], p, alpha)
                    p.copy_(slow[i])
                    m = inner.state[p]["exp_avg"]
                    slow_m[i] = torch.lerp(slow_m[i], m, alpha)
                    m.copy_(slow_m[i])
    for p, q in zip(params, ref_params, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], inner.state[q]["exp_avg"])
        assert torch.equal(opt.state[p]["exp_avg_sq"], inner.state[q]["exp_avg_sq"])


def test_lookahead_alpha_one_is_inner_and_first_sync_is_not_a_noop() -> None:
    params, ref = make_params(), make_params()
    train(Lookahead(torch.optim.AdamW(params, lr=0.01), k=3, alpha=1.0), params, range(10))
    train(torch.optim.AdamW(ref, lr=0.01), ref, range(10))
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(p, q)
    # alpha < 1: the first synchronisation (after k steps) pulls back towards the initial weights.
    params, ref = make_params(), make_params()
    init = [p.detach().clone() for p in params]
    train(Lookahead(sgd(params), k=3, alpha=0.5), params, range(3))
    train(sgd(ref), ref, range(3))
    for p, q, w0 in zip(params, ref, init, strict=True):
        assert torch.equal(p.detach(), torch.lerp(w0, q.detach(), 0.5))
        assert not torch.equal(p, q)


def test_lookahead_slow_weights_context_restores_fast_weights() -> None:
    params = make_params()
    opt = Lookahead(sgd(params), k=5, alpha=0.5)
    train(opt, params, range(7))  # 2 steps after a sync: fast != slow
    fast = [p.detach().clone() for p in params]
    slow = [opt.wrapper_state[p]["slow_param"].clone() for p in params]
    assert not all(torch.equal(f, s) for f, s in zip(fast, slow, strict=True))
    with opt.slow_weights():
        for p, s in zip(params, slow, strict=True):
            assert torch.equal(p.detach(), s)
        with pytest.raises(RuntimeError, match="swapped"):
            opt.step()
    for p, f in zip(params, fast, strict=True):
        assert torch.equal(p.detach(), f)
    with pytest.raises(KeyError), opt.slow_weights():
        raise KeyError("boom")
    for p, f in zip(params, fast, strict=True):
        assert torch.equal(p.detach(), f)
    # training continues exactly as if the context had not been entered
    ref = make_params()
    train(Lookahead(sgd(ref), k=5, alpha=0.5), ref, range(12))
    train(opt, params, range(7, 12))
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("eta_is", ["variance", "std"])
def test_gradient_noise_matches_reference(eta_is: str) -> None:
    eta, gamma, steps = 0.3, 0.55, 25
    params = make_params()
    opt = GradientNoise(sgd(params, mu=0.0), eta=eta, gamma=gamma, seed=7, eta_is=eta_is)
    train(opt, params, range(steps))

    ws = [p.detach().clone() for p in make_params()]
    gen = torch.Generator().manual_seed(7)
    for t in range(steps):  # t = 0 at the first step
        scale = eta / (1 + t) ** gamma
        sigma = math.sqrt(scale) if eta_is == "variance" else scale
        noisy = [g + sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype) for g in grads_at(ws, t)]
        sgd_ref_step(ws, [None] * len(ws), noisy, mu=0.0)
    for p, w in zip(params, ws, strict=True):
        assert torch.equal(p.detach(), w)
    assert opt.step_count == steps


@pytest.mark.parametrize("eta_is,expected_std", [("variance", 2.0 / 3.0**0.25), ("std", 4.0 / 3.0**0.5)])
def test_gradient_noise_scale_is_the_documented_one(eta_is: str, expected_std: float) -> None:
    # eta = 4, gamma = 0.5, third step (t = 2): variance 4/sqrt(3) or std 4/sqrt(3).
    p = torch.nn.Parameter(torch.zeros(200_000, dtype=torch.float64))
    opt = GradientNoise(torch.optim.SGD([p], lr=1.0), eta=4.0, gamma=0.5, seed=0, eta_is=eta_is)
    assert opt.noise_std(2) == pytest.approx(expected_std, rel=1e-15)
    for _ in range(3):
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
    change = before - p.detach()
    assert abs(change.mean().item()) < 0.02 * expected_std
    assert change.std().item() == pytest.approx(expected_std, rel=0.01)


def test_gradient_noise_never_modifies_grad() -> None:
    params = make_params()
    opt = GradientNoise(torch.optim.Adam(params, lr=0.01), eta=1.0, seed=0)
    loss_at(params, 0).backward()
    grads = [p.grad for p in params]
    values = [g.clone() for g in grads]  # type: ignore[union-attr]
    opt.step()
    for p, g, v in zip(params, grads, values, strict=True):
        assert p.grad is g
        assert torch.equal(p.grad, v)
    # the inner optimizer did see noisy gradients
    ref = make_params()
    loss_at(ref, 0).backward()
    torch.optim.Adam(ref, lr=0.01).step()
    assert not all(torch.equal(p, q) for p, q in zip(params, ref, strict=True))


def test_gradient_noise_restores_grad_when_inner_step_raises() -> None:
    class Boom(torch.optim.SGD):
        def step(self, closure: Callable[[], Any] | None = None) -> Any:
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.mul_(0.0)  # a noisy copy, not the user's gradient
            raise RuntimeError("boom")

    params = make_params()
    opt = GradientNoise(Boom(params, lr=0.1), eta=1.0, seed=0)
    loss_at(params, 0).backward()
    grads = [p.grad for p in params]
    values = [g.clone() for g in grads]  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="boom"):
        opt.step()
    for p, g, v in zip(params, grads, values, strict=True):
        assert p.grad is g and torch.equal(p.grad, v)


def test_gradient_noise_eta_zero_is_inner_and_generator_argument() -> None:
    params, ref = make_params(), make_params()
    train(GradientNoise(torch.optim.Adam(params, lr=0.01), eta=0.0, seed=0), params, range(8))
    train(torch.optim.Adam(ref, lr=0.01), ref, range(8))
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(p, q)
    a, b = make_params(), make_params()
    train(GradientNoise(sgd(a), eta=0.1, generator=torch.Generator().manual_seed(5)), a, range(4))
    train(GradientNoise(sgd(b), eta=0.1, seed=5), b, range(4))
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------------- averaging
@pytest.mark.parametrize("start,every", [(0, 1), (4, 3), (1, 5)])
def test_swa_matches_reference(start: int, every: int) -> None:
    steps = 26
    params = make_params()
    opt = SWA(sgd(params), start=start, every=every)
    train(opt, params, range(steps))

    ws = [p.detach().clone() for p in make_params()]
    bufs: list[torch.Tensor | None] = [None] * len(ws)
    avg: list[torch.Tensor] = []
    n = 0

    def sample() -> None:
        nonlocal avg, n
        if n == 0:
            avg = [w.clone() for w in ws]
        else:  # w_swa = (w_swa * n + w) / (n + 1)
            avg = [(a * n + w) / (n + 1) for a, w in zip(avg, ws, strict=True)]
        n += 1

    if start == 0:
        sample()  # the initial weights
    for t in range(steps):
        sgd_ref_step(ws, bufs, grads_at(ws, t))
        s = t + 1
        if s >= start and (s - start) % every == 0:
            sample()
    assert opt.n_averaged == n
    for p, w, a in zip(params, ws, avg, strict=True):
        assert torch.equal(p.detach(), w)  # averaging does not touch the trajectory
        assert torch.equal(opt.wrapper_state[p]["average"], a)
        assert opt.wrapper_state[p]["n_averaged"] == n
    with opt.averaged():
        for p, a in zip(params, avg, strict=True):
            assert torch.equal(p.detach(), a)
    for p, w in zip(params, ws, strict=True):
        assert torch.equal(p.detach(), w)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_reference(warmup: bool) -> None:
    decay, steps, start, every = 0.95, 30, 3, 2
    params = make_params()
    opt = EMA(torch.optim.Adam(params, lr=0.02, foreach=False), decay=decay, warmup=warmup, start=start,
              every=every)
    train(opt, params, range(steps))

    ref = make_params()
    inner = torch.optim.Adam(ref, lr=0.02, foreach=False)
    ema: list[torch.Tensor] = []
    updates = 0
    for t in range(steps):
        train(inner, ref, range(t, t + 1))
        s = t + 1
        if s >= start and (s - start) % every == 0:
            if not ema:
                ema = [q.detach().clone() for q in ref]
            else:
                d = min(decay, (1 + updates) / (10 + updates)) if warmup else decay
                ema = [torch.lerp(e, q.detach(), 1 - d) for e, q in zip(ema, ref, strict=True)]
                updates += 1
    for p, q, e in zip(params, ref, ema, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.wrapper_state[p]["average"], e)


def test_average_dtype_is_at_least_the_parameters() -> None:
    p16 = torch.nn.Parameter(torch.randn(5, dtype=torch.bfloat16))
    p64 = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = EMA(torch.optim.SGD([p16, p64], lr=0.1), decay=0.5)
    assert opt.wrapper_state[p16]["average"].dtype == torch.float32
    assert opt.wrapper_state[p64]["average"].dtype == torch.float64
    for p in (p16, p64):
        p.grad = torch.ones_like(p)
    opt.step()
    expected = torch.lerp(p16.detach().float() + 0.1, p16.detach().float(), 0.5)  # from w0 = w1 + 0.1
    assert torch.allclose(opt.wrapper_state[p16]["average"], expected, rtol=0, atol=1e-2)
    with pytest.raises(ValueError, match="dtype"):
        SWA(torch.optim.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.1), start=0, dtype=torch.float16)


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).double()


def test_update_bn_and_averaged_context_restore_model_exactly() -> None:
    model = _bn_model()
    data = [torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) * 2 + 1
            for i in range(4)]
    opt = SWA(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), start=2, every=1)
    for x in data * 2:
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    with opt.averaged(model):
        for p in model.parameters():
            assert torch.equal(p.detach(), opt.wrapper_state[p]["average"])
        update_bn(data, model)
        bn = model[0]
        assert torch.allclose(bn.running_mean, torch.cat(data).mean(0), rtol=0, atol=1e-12)
        # momentum=None: cumulative average of the per-batch (unbiased) variances
        expected_var = torch.stack([x.var(0) for x in data]).mean(0)
        assert torch.allclose(bn.running_var, expected_var, rtol=0, atol=1e-12)
        assert model.training
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p.detach(), q)
    for b, c in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(b, c)


def test_swa_manual_averaging_with_start_none() -> None:
    params = make_params()
    opt = SWA(sgd(params), start=None)
    train(opt, params, range(3))
    assert opt.n_averaged == 0
    first = [p.detach().clone() for p in params]
    opt.update_average()
    train(opt, params, range(3, 5))
    opt.update_average()
    assert opt.n_averaged == 2
    for p, w in zip(params, first, strict=True):
        assert torch.equal(opt.wrapper_state[p]["average"], (w * 1 + p.detach()) / 2)


def test_averaged_before_any_average_raises() -> None:
    opt = SWA(sgd(make_params()), start=5)
    with pytest.raises(RuntimeError, match="not averaged"), opt.averaged():
        pass


# ------------------------------------------------------------------------------------- torch integration
def _transparent_wrappers(params: list[torch.Tensor]) -> dict[str, torch.optim.Optimizer]:
    """Wrappers whose trajectory must equal the bare inner optimizer's."""
    return {
        "lookahead_alpha1": Lookahead(torch.optim.AdamW(params, lr=0.01), k=2, alpha=1.0),
        "noise_eta0": GradientNoise(torch.optim.AdamW(params, lr=0.01), eta=0.0, seed=0),
        "swa": SWA(torch.optim.AdamW(params, lr=0.01), start=1, every=2),
        "ema": EMA(torch.optim.AdamW(params, lr=0.01), decay=0.9),
        "composed": SWA(
            Lookahead(GradientNoise(torch.optim.AdamW(params, lr=0.01), eta=0.0, seed=1), alpha=1.0), start=0
        ),
    }


@pytest.mark.parametrize("name", list(_transparent_wrappers(make_params())))
@pytest.mark.parametrize("sched_kind", ["step", "lambda"])
def test_lr_schedulers_drive_the_inner_optimizer(name: str, sched_kind: str) -> None:
    def sched_for(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        if sched_kind == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))

    params, ref = make_params(), make_params()
    opt = _transparent_wrappers(params)[name]
    inner = opt
    while isinstance(inner, OptimizerWrapper):
        inner = inner.optimizer
    bare = torch.optim.AdamW(ref, lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        sched, ref_sched = sched_for(opt), sched_for(bare)
        train(opt, params, range(10), sched)
        train(bare, ref, range(10), ref_sched)
    assert inner.param_groups[0]["lr"] == bare.param_groups[0]["lr"] != 0.01
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    assert opt.defaults is inner.defaults
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(p, q)


def test_grad_scaler_on_cpu() -> None:
    def run(scaled: bool) -> tuple[list[torch.Tensor], Lookahead]:
        params = make_params(torch.float32)
        opt = Lookahead(GradientNoise(torch.optim.Adam(params, lr=0.01), eta=0.01, seed=0), k=3)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        for t in range(9):
            opt.zero_grad()
            loss = loss_at(params, t)
            if scaled:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, 1e6)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        if scaled:  # an overflow: the step is skipped, nothing moves, counters stay
            before = [p.detach().clone() for p in params]
            scale = scaler.get_scale()
            opt.zero_grad()
            (loss_at(params, 9) * float("inf")).backward()
            scaler.step(opt)
            scaler.update()
            assert opt.step_count == 9 and opt.optimizer.step_count == 9
            assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
            assert scaler.get_scale() == scale / 2
        return params, opt

    scaled, _ = run(True)
    plain, _ = run(False)
    for p, q in zip(scaled, plain, strict=True):
        assert torch.equal(p, q)  # scaling by 2**k and unscaling is exact


def test_hooks_zero_grad_and_closure() -> None:
    params = make_params()
    inner = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    opt = Lookahead(EMA(inner, decay=0.9), k=2)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    inner.register_step_post_hook(lambda o, a, k: calls.append("inner-post"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd-post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    losses: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_at(params, 0)
        loss.backward()
        losses.append(loss)
        return loss

    assert opt.step(closure) is losses[0] and len(losses) == 1  # evaluated once, its loss returned
    assert calls == ["pre", "inner-post", "post"]
    noise = GradientNoise(torch.optim.SGD(make_params(), lr=0.1), eta=0.1, seed=0)
    assert noise.step(lambda: torch.tensor(3.0)).item() == 3.0
    opt.load_state_dict(opt.state_dict())
    assert calls[3:] == ["sd-post", "load-pre", "load-post"]
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_add_param_group_creates_wrapper_state() -> None:
    params = make_params()
    inner = torch.optim.SGD(params[:2], lr=LR, momentum=MU)
    swa = SWA(Lookahead(inner, k=2, alpha=0.5), start=0)
    la = swa.optimizer
    assert isinstance(la, Lookahead)
    new = params[2]
    w0 = new.detach().clone()
    swa.add_param_group({"params": [new], "lr": 0.1})
    assert len(inner.param_groups) == 2 and swa.param_groups is inner.param_groups
    assert torch.equal(la.wrapper_state[new]["slow_param"], w0)
    assert swa.wrapper_state[new]["n_averaged"] == 0
    train(swa, params, range(2))  # one Lookahead sync, two averages
    ref = [w0.clone()]
    bufs: list[torch.Tensor | None] = [None]
    for t in range(2):
        g = grads_at(params[:2] + ref, t)[2]
        sgd_ref_step(ref, bufs, [g], lr=0.1)
    assert torch.equal(new.detach(), torch.lerp(w0, ref[0], 0.5))
    assert swa.wrapper_state[new]["n_averaged"] == 2
    assert 2 in swa.state_dict()["wrapper"]["state"] and 2 in la.state_dict()["wrapper"]["state"]


def test_state_dict_layout_and_bare_inner_load(tmp_path: Path) -> None:
    params = make_params()
    opt = Lookahead(GradientNoise(torch.optim.AdamW(params, lr=0.01), eta=0.01, seed=0), k=3)
    train(opt, params, range(4))
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "wrapper", "inner"}
    assert sd["wrapper"]["type"] == "Lookahead" and sd["wrapper"]["step"] == 4
    assert set(sd["wrapper"]["state"]) == {0, 1, 2}
    assert sd["inner"]["wrapper"]["type"] == "GradientNoise" and sd["inner"]["inner"] == {}
    assert set(sd["state"]) == {0, 1, 2} and "exp_avg" in sd["state"][0]
    torch.save(sd, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    bare = torch.optim.AdamW(make_params(), lr=0.01)
    bare.load_state_dict(loaded)  # the torch-style part is authoritative
    assert_equal(bare.state_dict()["state"], sd["state"])
    with pytest.raises(ValueError, match="not written by SWA"):
        SWA(torch.optim.AdamW(make_params(), lr=0.01), start=0).load_state_dict(loaded)
    with pytest.raises(ValueError, match="not written by Lookahead"):
        Lookahead(torch.optim.AdamW(make_params(), lr=0.01)).load_state_dict(bare.state_dict())
    clone = pickle.loads(pickle.dumps(opt))
    assert isinstance(clone, Lookahead) and clone.step_count == 4


# ---------------------------------------------------------------------------------------------- resume
def build(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if name == "lookahead":
        return Lookahead(sgd(params), k=5, alpha=0.5, pullback="pullback")
    if name == "noise":
        return GradientNoise(torch.optim.Adam(params, lr=0.01), eta=0.05, seed=1)
    if name == "swa":
        return SWA(sgd(params), start=4, every=3)
    if name == "ema":
        return EMA(torch.optim.AdamW(params, lr=0.01), decay=0.9, warmup=True)
    if name == "lookahead(noise)":
        return Lookahead(GradientNoise(torch.optim.AdamW(params, lr=0.01), eta=0.01, seed=3), k=3,
                         pullback="reset")
    if name == "noise(lookahead)":
        return GradientNoise(Lookahead(torch.optim.AdamW(params, lr=0.01), k=4, alpha=0.7), eta=0.02, seed=4)
    if name == "swa(lookahead)":
        return SWA(Lookahead(sgd(params), k=3), start=2, every=2)
    raise KeyError(name)


RESUME_NAMES = ["lookahead", "noise", "swa", "ema", "lookahead(noise)", "noise(lookahead)", "swa(lookahead)"]
STEPS, CUT = 20, 11


def _setup(name: str) -> tuple[list[torch.Tensor], torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    params = make_params()
    opt = build(name, params)
    return params, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.7)


def _continue_in_this_process(ckpt_path: str, out_path: str) -> None:
    """Entry point of the fresh process: load each checkpoint, run the remaining steps, save the result."""
    ckpts = torch.load(ckpt_path, weights_only=True)
    out = {}
    for name in RESUME_NAMES:
        params, opt, sched = _setup(name)
        with torch.no_grad():
            for p, w in zip(params, ckpts[name]["params"], strict=True):
                p.copy_(w)
        opt.load_state_dict(ckpts[name]["opt"])
        sched.load_state_dict(ckpts[name]["sched"])
        train(opt, params, range(CUT, STEPS), sched)
        out[name] = {"params": [p.detach() for p in params], "opt": opt.state_dict()}
    torch.save(out, out_path)


def test_resume_in_a_fresh_process_is_bit_for_bit(tmp_path: Path) -> None:
    ckpts, unbroken = {}, {}
    for name in RESUME_NAMES:
        params, opt, sched = _setup(name)
        train(opt, params, range(CUT), sched)
        # deepcopy: a state_dict holds references to live tensors, as torch's does
        ckpts[name] = copy.deepcopy({"params": [p.detach() for p in params], "opt": opt.state_dict(),
                                     "sched": sched.state_dict()})
        train(opt, params, range(CUT, STEPS), sched)
        unbroken[name] = {"params": [p.detach() for p in params], "opt": opt.state_dict()}
    torch.save(ckpts, tmp_path / "ckpt.pt")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_wrappers as t; "
            f"t._continue_in_this_process({str(tmp_path / 'ckpt.pt')!r}, {str(tmp_path / 'out.pt')!r})")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    resumed = torch.load(tmp_path / "out.pt", weights_only=True)
    for name in RESUME_NAMES:
        assert_equal(resumed[name], unbroken[name], name)


# ---------------------------------------------------------------------------------------------- errors
def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


ERRORS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("k=0", lambda: Lookahead(_sgd(), k=0), ValueError, "Invalid k value: 0"),
    ("k=2.5", lambda: Lookahead(_sgd(), k=2.5), ValueError, "Invalid k value"),
    ("alpha=0", lambda: Lookahead(_sgd(), alpha=0.0), ValueError, r"alpha.*\(0, 1\]"),
    ("alpha>1", lambda: Lookahead(_sgd(), alpha=1.5), ValueError, "Invalid alpha value"),
    ("pullback", lambda: Lookahead(_sgd(), pullback="x"), ValueError, "Invalid pullback"),
    ("la inner", lambda: Lookahead(object()), TypeError, "optimizer must be a torch.optim.Optimizer"),  # type: ignore
    ("eta<0", lambda: GradientNoise(_sgd(), eta=-1.0), ValueError, "Invalid eta value"),
    ("eta nan", lambda: GradientNoise(_sgd(), eta=math.nan), ValueError, "Invalid eta"),
    ("gamma<0", lambda: GradientNoise(_sgd(), eta=1.0, gamma=-0.1), ValueError,
     "Invalid gamma value"),
    ("eta_is", lambda: GradientNoise(_sgd(), eta=1.0, eta_is="var"), ValueError,
     "Invalid eta_is"),
    ("seed+gen", lambda: GradientNoise(_sgd(), eta=1.0, seed=1,
                                       generator=torch.Generator()), ValueError, "either generator or seed"),
    ("generator", lambda: GradientNoise(_sgd(), eta=1.0, generator=3), TypeError, "torch.Generator"),  # type: ignore
    ("momentum_keys", lambda: Lookahead(_sgd(), momentum_keys=[1]), ValueError, "Invalid momentum_keys"),
    ("noise inner", lambda: GradientNoise([1.0], eta=1.0), TypeError, "torch.optim.Optimizer"),  # type: ignore
    ("decay=1", lambda: EMA(_sgd(), decay=1.0), ValueError, r"decay.*\[0, 1\)"),
    ("decay<0", lambda: EMA(_sgd(), decay=-0.1), ValueError, "Invalid decay value"),
    ("start<0", lambda: SWA(_sgd(), start=-1), ValueError, "Invalid start value"),
    ("every=0", lambda: SWA(_sgd(), start=0, every=0), ValueError, "Invalid every value"),
    ("ema every", lambda: EMA(_sgd(), every=0), ValueError, "Invalid every value"),
    ("swa inner", lambda: SWA(None, start=0), TypeError, "torch.optim.Optimizer"),  # type: ignore
    ("dtype int", lambda: EMA(_sgd(), dtype=torch.int32), ValueError, "Invalid dtype"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_errors(case: tuple[str, Callable[[], Any], type[Exception], str]) -> None:
    _, make, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        make()


def test_load_state_dict_rejects_mismatched_shapes() -> None:
    params = make_params()
    opt = Lookahead(torch.optim.SGD(params, lr=0.1), k=2)
    sd = opt.state_dict()
    sd["wrapper"]["state"][0]["slow_param"] = torch.zeros(7, dtype=torch.float64)
    before = opt.wrapper_state[params[0]]["slow_param"].clone()
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)
    assert torch.equal(opt.wrapper_state[params[0]]["slow_param"], before)


# -- with optimlab's own optimizers ----------------------------------------------------------------------------------
def test_wrappers_compose_with_optimlab_optimizers_and_resume():
    """Lookahead(SWATS), GradientNoise(Lookahead(AdamW)) and SWA(LAMB) built from optimlab classes resume exactly."""
    import copy as _copy

    import optimlab

    def builds(params):
        return [
            optimlab.Lookahead(optimlab.SWATS(params[0], lr=0.01), k=3, alpha=0.5),
            optimlab.GradientNoise(optimlab.Lookahead(optimlab.AdamW(params[1], lr=0.01), k=2), eta=0.01, seed=3),
            optimlab.SWA(optimlab.LAMB(params[2], lr=0.01), start=2, every=2),
        ]

    def make():
        g = torch.Generator().manual_seed(0)
        return [[torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_()] for _ in range(3)]

    def train(opts, params, start, steps):
        for k in range(start, start + steps):
            for opt, ps in zip(opts, params, strict=True):
                opt.zero_grad()
                g = torch.Generator().manual_seed(k)
                ((ps[0] - torch.randn(4, 3, generator=g, dtype=torch.float64)) ** 2).sum().backward()
                opt.step()

    pa = make()
    oa = builds(pa)
    train(oa, pa, 0, 5)
    ckpt = [_copy.deepcopy(o.state_dict()) for o in oa]
    saved = [[p.detach().clone() for p in ps] for ps in pa]
    train(oa, pa, 5, 6)
    pb = make()
    with torch.no_grad():
        for ps, ss in zip(pb, saved, strict=True):
            ps[0].copy_(ss[0])
    ob = builds(pb)
    for o, c in zip(ob, ckpt, strict=True):
        o.load_state_dict(c)
    train(ob, pb, 5, 6)
    for a, b in zip(pa, pb, strict=True):
        assert torch.equal(a[0], b[0])
