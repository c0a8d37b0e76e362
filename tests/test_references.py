"""AdaBound/AMSBound, LARS, LAMB, SGDW and SWATS against small single-tensor references written here.

Each reference below is written independently of optimlab (plain torch ops and Python scalars, one tensor at a
time) from the paper's algorithm and, where there is one, the authors' code:

* AdaBound / AMSBound: Luo et al., ICLR 2019; Luolc/AdaBound ``adabound/adabound.py`` (``AdaBound`` and
  ``AdaBoundW``), including ``final_lr * lr / base_lr`` under an lr change.
* LARS: You, Gitman & Ginsburg 2017, Algorithm 1 (lr inside the momentum buffer); SimCLR's ``lars_optimizer.py``
  for Nesterov and the ``||g + wd w||`` denominator.
* LAMB: You et al., ICLR 2020, Algorithm 2 (with and without bias correction; decay inside the trust-ratio norm).
* SGDW: Loshchilov & Hutter, ICLR 2019, Algorithm 1 (decays the pre-update weights).
* SWATS: Keskar & Socher 2017, Algorithm 1, per parameter tensor.

Trajectories (parameters and state) are compared in float64 over 20-250 steps at rtol 1e-10, on both of optimlab's
paths (``foreach=False`` and ``foreach=True``) with two tensors of different shapes. Then the first step or two of
each is derived by hand from chosen numbers, the zero-norm guards of LARS/LAMB are checked, and no optimizer in the
registry writes into ``p.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from optim_db import FIRST_STEP_STILL
from torch import Tensor

import optimlab

DT = torch.float64
RTOL = 1e-10


def close(actual: Tensor, expected: Tensor | Sequence[float] | float, rtol: float = RTOL) -> None:
    """Element-wise ``|a - e| <= rtol * |e| + rtol * max|e|``: relative error, where an element that has cancelled
    to near zero is measured against its tensor's scale (its round-off comes from operands of that scale)."""
    expected = torch.as_tensor(expected, dtype=DT)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.detach().to(DT), expected, rtol=rtol, atol=rtol * scale)


# -- a small random problem: a matrix and a vector, a fresh mini-batch each step --------------------------------------
def initial_params(seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=gen, dtype=DT), torch.randn(4, generator=gen, dtype=DT)]


def make_data(steps: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(steps, 6, 3, generator=gen, dtype=DT), torch.randn(steps, 6, 4, generator=gen, dtype=DT)


def loss_fn(params: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
    w, b = params
    return torch.log(torch.cosh(torch.tanh(x @ w) + b - y)).mean() + 0.05 * torch.sin(3 * w).sum()


def gradients(params: Sequence[Tensor], data: tuple[Tensor, Tensor], t: int) -> list[Tensor]:
    leaves = [p.detach().clone().requires_grad_() for p in params]
    return list(torch.autograd.grad(loss_fn(leaves, data[0][t], data[1][t]), leaves))


RefStep = Callable[[Tensor, Tensor, dict[str, Any], dict[str, Any]], None]


def run_reference(step: RefStep, hp: dict[str, Any] | Sequence[dict[str, Any]], data: tuple[Tensor, Tensor],
                  steps: int, lr_at: Callable[[int], float] | None = None
                  ) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Run a single-tensor reference on each tensor of the problem, given one hyperparameter dict or one per tensor
    (the loss couples the tensors, the update rule does not)."""
    ws = [p.clone() for p in initial_params()]
    hps = [hp] * len(ws) if isinstance(hp, dict) else list(hp)
    states: list[dict[str, Any]] = [{} for _ in ws]
    for t in range(steps):
        for w, g, st, h in zip(ws, gradients(ws, data, t), states, hps, strict=True):
            step(w, g, st, dict(h, lr=lr_at(t)) if lr_at is not None else h)
    return ws, states


def run_optimlab(cls: type[torch.optim.Optimizer], kw: dict[str, Any], data: tuple[Tensor, Tensor], steps: int,
                 foreach: bool, lr_at: Callable[[int], float] | None = None
                 ) -> tuple[list[Tensor], torch.optim.Optimizer]:
    params = [p.clone().requires_grad_() for p in initial_params()]
    opt = cls(params, foreach=foreach, **kw)
    for t in range(steps):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        for p, g in zip(params, gradients(params, data, t), strict=True):
            p.grad = g
        opt.step()
    return params, opt


def compare(cls: type[torch.optim.Optimizer], kw: dict[str, Any], step: RefStep, hp: dict[str, Any], steps: int,
            state_keys: dict[str, str], lr_at: Callable[[int], float] | None = None) -> list[dict[str, Any]]:
    """optimlab (both paths) versus the reference: parameters and the mapped state (ours -> reference) agree."""
    data = make_data(steps)
    ref_ws, ref_states = run_reference(step, hp, data, steps, lr_at)
    for w, w0 in zip(ref_ws, initial_params(), strict=True):
        assert not torch.allclose(w, w0, rtol=1e-3, atol=0)  # the reference moved: the test is not vacuous
    for foreach in (False, True):
        params, opt = run_optimlab(cls, kw, data, steps, foreach, lr_at)
        for p, w, ref_state in zip(params, ref_ws, ref_states, strict=True):
            close(p, w)
            for ours, theirs in state_keys.items():
                close(opt.state[p][ours], ref_state[theirs])
    return ref_states


# == AdaBound / AMSBound (Luolc/AdaBound adabound/adabound.py) ======================================================
def adabound_reference(w: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
    """``AdaBound.step`` (``AdaBoundW.step`` with ``decoupled``) of the authors' code, for one tensor."""
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(w)
        state["exp_avg_sq"] = torch.zeros_like(w)
        if h["amsbound"]:
            state["max_exp_avg_sq"] = torch.zeros_like(w)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    beta1, beta2 = h["betas"]
    state["step"] += 1
    if h["weight_decay"] != 0 and not h["decoupled"]:
        grad = grad.add(w, alpha=h["weight_decay"])
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    if h["amsbound"]:
        torch.max(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        denom = state["max_exp_avg_sq"].sqrt().add_(h["eps"])
    else:
        denom = exp_avg_sq.sqrt().add_(h["eps"])
    bias_correction1 = 1 - beta1 ** state["step"]
    bias_correction2 = 1 - beta2 ** state["step"]
    step_size = h["lr"] * math.sqrt(bias_correction2) / bias_correction1
    # "lr_scheduler cannot affect final_lr, this is a workaround to apply lr decay"
    final_lr = h["final_lr"] * h["lr"] / h["base_lr"]
    lower_bound = final_lr * (1 - 1 / (h["gamma"] * state["step"] + 1))
    upper_bound = final_lr * (1 + 1 / (h["gamma"] * state["step"]))
    step_t = torch.full_like(denom, step_size)
    step_t.div_(denom).clamp_(lower_bound, upper_bound).mul_(exp_avg)
    if h["weight_decay"] != 0 and h["decoupled"]:  # AdaBoundW: p -= step; p -= wd * p_old
        decayed = torch.mul(w, h["weight_decay"])
        w.add_(-step_t)
        w.sub_(decayed)
    else:
        w.add_(-step_t)


def _lr_drop(t: int) -> float:
    """lr 0.01 for 120 steps, then 0.002 (a step schedule), so the bounds move with it."""
    return 0.01 if t < 120 else 0.002


ADABOUND_STATE = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


@pytest.mark.parametrize("amsbound", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adabound_matches_authors_code_under_lr_change(amsbound: bool, weight_decay: float) -> None:
    # gamma 0.05 and final_lr 0.1 make both bounds bind within the run (test_adabound_bounds_bind)
    kw = dict(lr=0.01, betas=(0.9, 0.99), final_lr=0.1, gamma=0.05, eps=1e-8, weight_decay=weight_decay)
    hp = dict(kw, amsbound=amsbound, decoupled=False, base_lr=0.01)
    keys = dict(ADABOUND_STATE, **({"max_exp_avg_sq": "max_exp_avg_sq"} if amsbound else {}))
    cls = optimlab.AMSBound if amsbound else optimlab.AdaBound
    compare(cls, kw, adabound_reference, hp, 250, keys, lr_at=_lr_drop)
    # the step counter too, for one run
    params, opt = run_optimlab(cls, kw, make_data(3), 3, False)
    assert float(opt.state[params[0]]["step"]) == 3


def test_adabound_bounds_bind() -> None:
    """Guard against a vacuous comparison: in the problem above, the clip is active at both ends at some step."""
    hit_lo = hit_hi = False
    data = make_data(250)
    ws = [p.clone() for p in initial_params()]
    states: list[dict[str, Any]] = [{} for _ in ws]
    for t in range(250):
        lr = _lr_drop(t)
        for w, g, st in zip(ws, gradients(ws, data, t), states, strict=True):
            adabound_reference(w, g, st, dict(lr=lr, betas=(0.9, 0.99), final_lr=0.1, gamma=0.05, eps=1e-8,
                                              weight_decay=0.0, amsbound=False, decoupled=False, base_lr=0.01))
            k = st["step"]
            raw = lr * math.sqrt(1 - 0.99**k) / (1 - 0.9**k) / (st["exp_avg_sq"].sqrt() + 1e-8)
            final = 0.1 * lr / 0.01
            hit_lo |= bool((raw < final * (1 - 1 / (0.05 * k + 1))).any())
            hit_hi |= bool((raw > final * (1 + 1 / (0.05 * k))).any())
    assert hit_lo and hit_hi


def test_adaboundw_matches_authors_code() -> None:
    """The authors' AdaBoundW shrinks by ``wd * p`` (no lr factor): optimlab's decoupled decay with
    ``decay_scale="schedule"`` at a constant lr (multiplier 1)."""
    kw = dict(lr=0.01, betas=(0.9, 0.99), final_lr=0.1, gamma=0.05, eps=1e-8, weight_decay=0.01)
    hp = dict(kw, amsbound=False, decoupled=True, base_lr=0.01)
    compare(optimlab.AdaBound, dict(kw, decoupled_weight_decay=True, decay_scale="schedule"), adabound_reference,
            hp, 150, ADABOUND_STATE)


def test_adabound_first_step_by_hand() -> None:
    # lr 0.01, betas (0.9, 0.999), final_lr 0.1, gamma 0.5, eps 1e-16 (negligible), w0 = [1, 2, 3], g = [0.5, -4, 0.1]
    # m1 = 0.1 g = [0.05, -0.4, 0.01];  v1 = 0.001 g^2, sqrt(v1) = sqrt(0.001) |g|
    # step_size = lr sqrt(1 - 0.999) / (1 - 0.9) = 0.1 sqrt(0.001)   ->   step_size / sqrt(v1) = 0.1 / |g|
    #           = [0.2, 0.025, 1.0]
    # bounds at t = 1: lower = 0.1 (1 - 1/(0.5 + 1)) = 0.1/3,  upper = 0.1 (1 + 1/0.5) = 0.3
    # clip -> [0.2, 0.1/3, 0.3];  update = clip * m1 = [0.01, -0.04/3, 0.003]
    w = torch.tensor([1.0, 2.0, 3.0], dtype=DT, requires_grad=True)
    opt = optimlab.AdaBound([w], lr=0.01, final_lr=0.1, gamma=0.5, eps=1e-16)
    w.grad = torch.tensor([0.5, -4.0, 0.1], dtype=DT)
    opt.step()
    close(w, [1.0 - 0.01, 2.0 + 0.04 / 3, 3.0 - 0.003], rtol=1e-12)
    # second step, same gradient: m2 = 0.19 g, v2 = 0.001999 g^2, bc1 = 0.19, bc2 = 0.001999
    # step_size / sqrt(v2) = 0.01 sqrt(0.001999) / 0.19 / (sqrt(0.001999) |g|) = 0.01 / (0.19 |g|)
    # bounds at t = 2: lower = 0.1 (1 - 1/2) = 0.05, upper = 0.1 (1 + 1) = 0.2
    # raw = [0.02/0.19, 0.0025/0.19, 0.1/0.19] = [0.10526.., 0.01315.., 0.52631..] -> clip [0.02/0.19, 0.05, 0.2]
    # update = clip * m2 = [0.02/0.19 * 0.095, 0.05 * -0.76, 0.2 * 0.019] = [0.01, -0.038, 0.0038]
    opt.step()
    close(w, [1.0 - 0.01 - 0.01, 2.0 + 0.04 / 3 + 0.038, 3.0 - 0.003 - 0.0038], rtol=1e-12)


# == LARS (You, Gitman & Ginsburg 2017, Algorithm 1; SimCLR lars_optimizer.py) =======================================
def lars_reference(w: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
    """Algorithm 1: local lr = eta ||w|| / (||g|| + beta ||w||); v = m v + gamma_t local_lr (g + beta w); w -= v."""
    beta, eta, m = h["weight_decay"], h["trust_coefficient"], h["momentum"]
    if "v" not in state:
        state["v"] = torch.zeros_like(w)
    w_norm, g_norm = float(torch.sqrt((w * w).sum())), float(torch.sqrt((grad * grad).sum()))
    update = grad + beta * w
    if not h["layer_adaptation"]:
        local_lr = 1.0
    elif w_norm == 0.0 or g_norm == 0.0:
        local_lr = 1.0
    elif h["trust_denominator"] == "sum":
        local_lr = eta * w_norm / (g_norm + beta * w_norm + h["eps"])
    else:  # SimCLR: the norm of the decayed gradient
        local_lr = eta * w_norm / (float(torch.sqrt((update * update).sum())) + h["eps"])
    scaled = h["lr"] * local_lr * update
    v = state["v"]
    v.mul_(m).add_(scaled)
    if h["nesterov"]:  # SimCLR: update = momentum * next_v + scaled_lr * grad
        w.sub_(m * v + scaled)
    else:
        w.sub_(v)


@pytest.mark.parametrize(("nesterov", "trust_denominator", "weight_decay"),
                         [(False, "sum", 0.0), (False, "sum", 0.01), (True, "sum", 0.01), (False, "norm", 0.01),
                          (True, "norm", 0.0)])
def test_lars_matches_algorithm_1(nesterov: bool, trust_denominator: str, weight_decay: float) -> None:
    kw = dict(lr=2.0, momentum=0.9, weight_decay=weight_decay, trust_coefficient=0.02, eps=1e-8, nesterov=nesterov,
              trust_denominator=trust_denominator)
    hp = dict(kw, layer_adaptation=True)
    # a step schedule: the lr sits inside the momentum buffer (v carries gamma_t of past steps)
    compare(optimlab.LARS, kw, lars_reference, hp, 120, {"momentum_buffer": "v"},
            lr_at=lambda t: 2.0 if t < 60 else 0.5)


def test_lars_layer_adaptation_off_group() -> None:
    """A group with ``layer_adaptation=False`` takes plain momentum steps (lr inside the buffer)."""
    data = make_data(60)
    hp = dict(lr=0.05, momentum=0.9, weight_decay=0.01, trust_coefficient=1e-3, eps=1e-8, nesterov=False,
              trust_denominator="sum")
    ref_ws, ref_states = run_reference(lars_reference, [dict(hp, layer_adaptation=True),
                                                        dict(hp, layer_adaptation=False)], data, 60)
    for foreach in (False, True):
        params = [p.clone().requires_grad_() for p in initial_params()]
        opt = optimlab.LARS([{"params": [params[0]], "layer_adaptation": True},
                             {"params": [params[1]], "layer_adaptation": False}],
                            lr=0.05, momentum=0.9, weight_decay=0.01, foreach=foreach)
        for t in range(60):
            for p, g in zip(params, gradients(params, data, t), strict=True):
                p.grad = g
            opt.step()
        close(params[0], ref_ws[0])
        close(params[1], ref_ws[1])
        close(opt.state[params[0]]["momentum_buffer"], ref_states[0]["v"])
        close(opt.state[params[1]]["momentum_buffer"], ref_states[1]["v"])


def test_lars_first_steps_by_hand() -> None:
    # w0 = [3, 4] (||w|| = 5), g = [0.6, 0.8] (||g|| = 1), lr 0.5, eta 0.1, wd 0.2, momentum 0.9, eps 1e-300
    # local lr = 0.1 * 5 / (1 + 0.2 * 5) = 0.25;  g + wd w = [0.6 + 0.6, 0.8 + 0.8] = [1.2, 1.6]
    # v1 = 0.5 * 0.25 * [1.2, 1.6] = [0.15, 0.2];  w1 = [2.85, 3.8]
    w = torch.tensor([3.0, 4.0], dtype=DT, requires_grad=True)
    opt = optimlab.LARS([w], lr=0.5, momentum=0.9, weight_decay=0.2, trust_coefficient=0.1, eps=1e-300)
    w.grad = torch.tensor([0.6, 0.8], dtype=DT)
    opt.step()
    close(w, [2.85, 3.8], rtol=1e-14)
    close(opt.state[w]["momentum_buffer"], [0.15, 0.2], rtol=1e-14)
    # step 2, g = [0, 1]: ||w1|| = 0.95 * 5 = 4.75; local lr = 0.1 * 4.75 / (1 + 0.2 * 4.75) = 0.475 / 1.95
    # g + wd w1 = [0.57, 1.76];  v2 = 0.9 v1 + 0.5 * (0.475 / 1.95) * [0.57, 1.76]
    w.grad = torch.tensor([0.0, 1.0], dtype=DT)
    opt.step()
    lr2 = 0.5 * 0.475 / 1.95
    v2 = [0.135 + lr2 * 0.57, 0.18 + lr2 * 1.76]
    close(opt.state[w]["momentum_buffer"], v2, rtol=1e-13)
    close(w, [2.85 - v2[0], 3.8 - v2[1]], rtol=1e-13)


def test_lars_nesterov_first_step_by_hand() -> None:
    # as above, Nesterov: v1 = [0.15, 0.2], w1 = w0 - (0.9 v1 + [0.15, 0.2]) = w0 - 1.9 [0.15, 0.2] = [2.715, 3.62]
    w = torch.tensor([3.0, 4.0], dtype=DT, requires_grad=True)
    opt = optimlab.LARS([w], lr=0.5, momentum=0.9, weight_decay=0.2, trust_coefficient=0.1, eps=1e-300,
                        nesterov=True)
    w.grad = torch.tensor([0.6, 0.8], dtype=DT)
    opt.step()
    close(w, [2.715, 3.62], rtol=1e-14)


# == LAMB (You et al. 2020, Algorithm 2) =============================================================================
def lamb_reference(w: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
    """m, v as Adam; r = m_hat / (sqrt(v_hat) + eps); u = r + lambda w; w -= lr phi(||w||) / ||u|| u."""
    beta1, beta2 = h["betas"]
    if not state:
        state["t"], state["m"], state["v"] = 0, torch.zeros_like(w), torch.zeros_like(w)
    state["t"] += 1
    t = state["t"]
    state["m"] = beta1 * state["m"] + (1 - beta1) * grad
    state["v"] = beta2 * state["v"] + (1 - beta2) * grad * grad
    if h["bias_correction"]:
        m_hat, v_hat = state["m"] / (1 - beta1**t), state["v"] / (1 - beta2**t)
    else:
        m_hat, v_hat = state["m"], state["v"]
    u = m_hat / (torch.sqrt(v_hat) + h["eps"]) + h["weight_decay"] * w
    w_norm, u_norm = float(torch.sqrt((w * w).sum())), float(torch.sqrt((u * u).sum()))
    if h["max_weight_norm"] is not None:
        w_norm = min(w_norm, h["max_weight_norm"])
    ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    w.sub_(h["lr"] * ratio * u)


@pytest.mark.parametrize(("bias_correction", "weight_decay", "max_weight_norm"),
                         [(True, 0.0, None), (True, 0.1, None), (False, 0.1, None), (False, 0.0, None),
                          (True, 0.1, 1.5)])
def test_lamb_matches_algorithm_2(bias_correction: bool, weight_decay: float, max_weight_norm: float | None) -> None:
    kw = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay, bias_correction=bias_correction,
              max_weight_norm=max_weight_norm)
    compare(optimlab.LAMB, kw, lamb_reference, kw, 150, {"exp_avg": "m", "exp_avg_sq": "v"},
            lr_at=lambda t: 0.02 if t < 75 else 0.005)


def test_lamb_first_step_by_hand() -> None:
    # w0 = [3, 4] (||w|| = 5), g = [1, -2], lr 0.1, wd 0.1, eps 1e-300, bias correction on
    # m_hat = g, v_hat = g^2 -> r = g / |g| = [1, -1];  u = r + 0.1 w0 = [1.3, -0.6], ||u|| = sqrt(2.05)
    # w1 = w0 - 0.1 * (5 / sqrt(2.05)) * [1.3, -0.6] = [3 - 0.65/sqrt(2.05), 4 + 0.3/sqrt(2.05)]
    w = torch.tensor([3.0, 4.0], dtype=DT, requires_grad=True)
    opt = optimlab.LAMB([w], lr=0.1, weight_decay=0.1, eps=1e-300)
    w.grad = torch.tensor([1.0, -2.0], dtype=DT)
    opt.step()
    close(w, [3 - 0.65 / math.sqrt(2.05), 4 + 0.3 / math.sqrt(2.05)], rtol=1e-14)


def test_lamb_first_step_without_bias_correction_by_hand() -> None:
    # betas (0.9, 0.99), no bias correction: m1 = 0.1 g, v1 = 0.01 g^2, r = 0.1 g / (0.1 |g|) = sign(g) -- the same
    # direction as with bias correction at t = 1 when (1 - b1) = sqrt(1 - b2). Take betas (0.5, 0.99) instead:
    # m1 = 0.5 g, sqrt(v1) = 0.1 |g| -> r = 5 sign(g) = [5, -5]; u = [5.3, -4.6], ||u|| = sqrt(28.09 + 21.16)
    w = torch.tensor([3.0, 4.0], dtype=DT, requires_grad=True)
    opt = optimlab.LAMB([w], lr=0.1, betas=(0.5, 0.99), weight_decay=0.1, eps=1e-300, bias_correction=False)
    w.grad = torch.tensor([1.0, -2.0], dtype=DT)
    opt.step()
    n = math.sqrt(28.09 + 21.16)
    close(w, [3 - 0.1 * 5 / n * 5.3, 4 + 0.1 * 5 / n * 4.6], rtol=1e-14)


# == SGDW (Loshchilov & Hutter 2019, Algorithm 1) ====================================================================
def sgdw_reference(w: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
    """x_t = x_{t-1} - gamma_t d_t - eta_t lambda x_{t-1}, with d_t the (Nesterov) momentum of the raw gradient.

    ``lr_inside`` puts the step size inside the buffer, as the paper writes it (m_t = mu m_{t-1} + eta_t alpha g_t);
    otherwise the buffer is torch's (b_t = mu b_{t-1} + g_t, b_1 = g_1) and the lr multiplies it at use.
    """
    lr, mu, lam = h["lr"], h["momentum"], h["weight_decay"]
    eta = lr / h["initial_lr"] if h["decay_scale"] == "schedule" else lr  # schedule multiplier, or torch's lr
    x_old = w.clone()
    if h["lr_inside"]:
        state["m"] = mu * state["m"] + lr * grad if "m" in state else lr * grad
        w.sub_(state["m"])
    else:
        state["b"] = mu * state["b"] + grad if "b" in state else grad.clone()
        d = grad + mu * state["b"] if h["nesterov"] else state["b"]
        w.sub_(lr * d)
    w.sub_(eta * lam * x_old)


@pytest.mark.parametrize("decay_scale", ["lr", "schedule"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdw_with_an_lr_change(decay_scale: str, nesterov: bool) -> None:
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=nesterov, decay_scale=decay_scale)
    hp = dict(kw, initial_lr=0.1, lr_inside=False)
    compare(optimlab.SGDW, kw, sgdw_reference, hp, 100, {"momentum_buffer": "b"},
            lr_at=lambda t: 0.1 if t < 50 else 0.03)


def test_sgdw_is_algorithm_1_at_constant_lr() -> None:
    """The paper's form (lr inside the momentum buffer) gives the same trajectory at a constant lr."""
    kw = dict(lr=0.05, momentum=0.9, weight_decay=0.5, decay_scale="schedule")
    hp = dict(kw, initial_lr=0.05, lr_inside=True, nesterov=False)
    ref_states = compare(optimlab.SGDW, kw, sgdw_reference, hp, 80, {})
    assert all("m" in st for st in ref_states)


def test_sgdw_two_steps_by_hand() -> None:
    # w0 = [1, -2], lr 0.1, momentum 0.9, wd 0.01, decay_scale "lr" (decay lr * wd = 0.001 of the *old* weights)
    # step 1, g1 = [0.5, 1]: buf = g1; w1 = 0.999 w0 - 0.1 g1 = [0.999 - 0.05, -1.998 - 0.1] = [0.949, -2.098]
    # step 2, g2 = [-1, 2]: buf = 0.9 [0.5, 1] + [-1, 2] = [-0.55, 2.9]
    #         w2 = 0.999 w1 - 0.1 buf = [0.948051 + 0.055, -2.095902 - 0.29] = [1.003051, -2.385902]
    w = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
    opt = optimlab.SGDW([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    w.grad = torch.tensor([0.5, 1.0], dtype=DT)
    opt.step()
    close(w, [0.949, -2.098], rtol=1e-14)
    w.grad = torch.tensor([-1.0, 2.0], dtype=DT)
    opt.step()
    close(w, [1.003051, -2.385902], rtol=1e-14)
    close(opt.state[w]["momentum_buffer"], [-0.55, 2.9], rtol=1e-14)


def test_sgdw_schedule_scale_two_steps_by_hand() -> None:
    # decay_scale "schedule": decay (lr_t / lr_0) wd. lr_0 = 0.1, wd = 0.01; lr drops to 0.05 for step 2.
    # step 1 (multiplier 1): w1 = 0.99 w0 - 0.1 g1 = [0.99 - 0.05, -1.98 - 0.1] = [0.94, -2.08]
    # step 2 (multiplier 0.5, decay 0.005): w2 = 0.995 w1 - 0.05 [-0.55, 2.9] = [0.9353 + 0.0275, -2.0696 - 0.145]
    #                                                                         = [0.9628, -2.2146]
    w = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
    opt = optimlab.SGDW([w], lr=0.1, momentum=0.9, weight_decay=0.01, decay_scale="schedule")
    w.grad = torch.tensor([0.5, 1.0], dtype=DT)
    opt.step()
    close(w, [0.94, -2.08], rtol=1e-14)
    opt.param_groups[0]["lr"] = 0.05
    w.grad = torch.tensor([-1.0, 2.0], dtype=DT)
    opt.step()
    close(w, [0.9628, -2.2146], rtol=1e-14)


# == SWATS (Keskar & Socher 2017, Algorithm 1, per tensor) ===========================================================
def swats_reference(w: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
    """Adam until |lambda_k / (1 - beta2^k) - gamma_k| < tol (k > 1, estimate > 0), then SGD with momentum at
    (1 - beta1) Lambda (scaled by lr_t / lr_switch); everything per tensor."""
    beta1, beta2 = h["betas"]
    if not state:
        state.update(k=0, m=torch.zeros_like(w), v=torch.zeros_like(w), lam=0.0, sgd=False, Lambda=None,
                     switch_step=None, switch_lr=None, buf=torch.zeros_like(w))
    state["k"] += 1
    k, lr = state["k"], h["lr"]
    g = grad + h["weight_decay"] * w
    if state["sgd"]:
        state["buf"] = beta1 * state["buf"] + g  # v_k = beta1 v_{k-1} + g_k, v starts at zero
        d = g + beta1 * state["buf"] if h["nesterov"] else state["buf"]
        w.sub_((1 - beta1) * state["Lambda"] * (lr / state["switch_lr"]) * d)
        return
    state["m"] = beta1 * state["m"] + (1 - beta1) * g
    state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
    p = -lr * math.sqrt(1 - beta2**k) / (1 - beta1**k) * state["m"] / (torch.sqrt(state["v"]) + h["eps"])
    w.add_(p)
    pg = float((p * g).sum())
    if pg != 0:
        gamma = float((p * p).sum()) / -pg
        state["lam"] = beta2 * state["lam"] + (1 - beta2) * gamma
        estimate = state["lam"] / (1 - beta2**k)
        if k > 1 and abs(estimate - gamma) < h["switch_tol"] and estimate > 0:
            state.update(sgd=True, Lambda=estimate, switch_step=k, switch_lr=lr)


def _ls_problem(steps: int, seed: int = 3) -> tuple[Tensor, Tensor]:
    """Noisy least squares: targets from a fixed linear map plus noise, a fresh mini-batch each step."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, 8, 3, generator=gen, dtype=DT)
    w_true = torch.tensor([[1.0, -0.5, 0.3, 2.0], [0.2, 0.8, -1.0, 0.1], [-0.7, 0.4, 0.9, -0.3]], dtype=DT)
    y = x @ w_true + 0.1 * torch.randn(steps, 8, 4, generator=gen, dtype=DT)
    return x, y


def _ls_grads(params: Sequence[Tensor], data: tuple[Tensor, Tensor], t: int) -> list[Tensor]:
    leaves = [p.detach().clone().requires_grad_() for p in params]
    w, b = leaves
    loss = ((data[0][t] @ w + b - data[1][t]) ** 2).mean()
    return list(torch.autograd.grad(loss, leaves))


SWATS_KW = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-9, switch_tol=1e-4)  # switches at steps 59 and 29
SWATS_STEPS = 300


def _swats_reference_run(kw: dict[str, Any], lr_at: Callable[[int], float]) -> tuple[list[Tensor], list[dict]]:
    data = _ls_problem(SWATS_STEPS)
    ws = [p.clone() for p in initial_params()]
    states: list[dict[str, Any]] = [{} for _ in ws]
    for t in range(SWATS_STEPS):
        hp = dict(kw, lr=lr_at(t))
        for w, g, st in zip(ws, _ls_grads(ws, data, t), states, strict=True):
            swats_reference(w, g, st, hp)
    return ws, states


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_swats_matches_algorithm_1(nesterov: bool, weight_decay: float) -> None:
    kw = dict(SWATS_KW, nesterov=nesterov, weight_decay=weight_decay)

    def lr_at(t: int) -> float:
        return 0.01 if t < 250 else 0.004  # an lr drop after both switches: the SGD rate follows it

    ref_ws, ref_states = _swats_reference_run(kw, lr_at)
    steps = [st["switch_step"] for st in ref_states]
    assert all(s is not None for s in steps) and steps[0] != steps[1] and max(steps) < 250, steps
    data = _ls_problem(SWATS_STEPS)
    for foreach in (False, True):
        params = [p.clone().requires_grad_() for p in initial_params()]
        opt = optimlab.SWATS(params, foreach=foreach, **kw)
        for t in range(SWATS_STEPS):
            opt.param_groups[0]["lr"] = lr_at(t)
            for p, g in zip(params, _ls_grads(params, data, t), strict=True):
                p.grad = g
            opt.step()
            if t + 1 == min(steps):
                assert opt.phase == "mixed"
        assert opt.phase == "sgd"
        assert opt.switch_steps == steps
        for ours, st in zip(opt.sgd_lrs, ref_states, strict=True):
            assert ours is not None and ours == pytest.approx(st["Lambda"], rel=RTOL, abs=0)
        for p, w, st in zip(params, ref_ws, ref_states, strict=True):
            close(p, w)
            close(opt.state[p]["exp_avg"], st["m"])
            close(opt.state[p]["exp_avg_sq"], st["v"])
            close(opt.state[p]["momentum_buffer"], st["buf"])
            assert float(opt.state[p]["sgd_lr_ema"]) == pytest.approx(st["lam"], rel=RTOL, abs=0)
            assert float(opt.state[p]["switch_lr"]) == st["switch_lr"]


def test_swats_hand_derived_gamma_and_switch() -> None:
    # one tensor, lr 0.1, betas (0.5, 0.5), eps 1e-300, switch_tol 1e-9, constant gradient g = [3, 4]
    # k = 1: m1 = 0.5 g, v1 = 0.5 g^2; p1 = -0.1 sqrt(0.5)/0.5 * 0.5 g / (sqrt(0.5) |g|) = -0.1 sign(g) = [-0.1, -0.1]
    #        gamma_1 = p.p / -p.g = 0.02 / 0.7;  lambda_1 = 0.5 gamma_1;  estimate = lambda_1 / 0.5 = gamma_1
    #        (k = 1: no switch)
    # k = 2: with a constant g, m2/bc1 = g and v2/bc2 = g^2, so p2 = p1 and gamma_2 = gamma_1;
    #        lambda_2 = 0.5 lambda_1 + 0.5 gamma_1 = 0.75 gamma_1; estimate = 0.75 gamma_1 / 0.75 = gamma_1 -> switch
    #        with Lambda = 0.02 / 0.7
    # k = 3 (SGD): v = g, w3 = w2 - (1 - 0.5) Lambda g = w2 - (0.01 / 0.7) [3, 4]
    w = torch.tensor([1.0, 2.0], dtype=DT, requires_grad=True)
    opt = optimlab.SWATS([w], lr=0.1, betas=(0.5, 0.5), eps=1e-300, switch_tol=1e-9)
    g = torch.tensor([3.0, 4.0], dtype=DT)
    w.grad = g.clone()
    opt.step()
    close(w, [0.9, 1.9], rtol=1e-14)
    assert opt.phase == "adam"
    assert float(opt.state[w]["sgd_lr_ema"]) == pytest.approx(0.5 * 0.02 / 0.7, rel=1e-13)
    opt.step()
    close(w, [0.8, 1.8], rtol=1e-14)
    assert opt.phase == "sgd" and opt.switch_steps == [2]
    assert opt.sgd_lrs[0] == pytest.approx(0.02 / 0.7, rel=1e-13)
    opt.step()
    close(w, [0.8 - 0.03 / 0.7, 1.8 - 0.04 / 0.7], rtol=1e-13)
    # k = 4: v = 0.5 g + g = 1.5 g; w4 = w3 - 0.5 Lambda 1.5 g
    opt.step()
    close(w, [0.8 - 0.03 / 0.7 * 2.5, 1.8 - 0.04 / 0.7 * 2.5], rtol=1e-13)


# == zero-norm guards ================================================================================================
@pytest.mark.parametrize("foreach", [False, True])
def test_lars_zero_weight_and_zero_gradient(foreach: bool) -> None:
    # zero weights: ratio 1, so v1 = lr g and w1 = -lr g (no NaN from 0/0); zero gradient: ratio 1, w1 = w0 - lr wd w0
    zero_w = torch.zeros(3, dtype=DT, requires_grad=True)
    zero_g = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
    opt = optimlab.LARS([zero_w, zero_g], lr=0.1, momentum=0.9, weight_decay=0.5, foreach=foreach)
    zero_w.grad = torch.tensor([1.0, 2.0, -3.0], dtype=DT)
    zero_g.grad = torch.zeros(2, dtype=DT)
    opt.step()
    close(zero_w, [-0.1, -0.2, 0.3], rtol=1e-15)
    close(zero_g, [1.0 * 0.95, -2.0 * 0.95], rtol=1e-15)
    # both zero: nothing moves, nothing is NaN
    both = torch.zeros(2, dtype=DT, requires_grad=True)
    opt2 = optimlab.LARS([both], lr=0.1, foreach=foreach)
    both.grad = torch.zeros(2, dtype=DT)
    opt2.step()
    assert torch.equal(both.detach(), torch.zeros(2, dtype=DT))
    assert torch.isfinite(opt2.state[both]["momentum_buffer"]).all()


@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_zero_weight_and_zero_gradient(foreach: bool) -> None:
    # zero-initialised weights move: ratio 1, w1 = -lr g/|g| (first step with bias correction; eps negligible)
    zero_w = torch.zeros(3, dtype=DT, requires_grad=True)
    # zero gradient, no decay: r = 0, ||u|| = 0 -> ratio 1, nothing moves, no NaN
    zero_g = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
    # zero gradient with decay: u = wd w, ratio ||w|| / ||wd w|| = 1/wd, so w1 = w0 - lr w0 = 0.9 w0
    zero_g_wd = torch.tensor([3.0, 4.0], dtype=DT, requires_grad=True)
    opt = optimlab.LAMB([{"params": [zero_w, zero_g]}, {"params": [zero_g_wd], "weight_decay": 0.3}],
                        lr=0.1, eps=1e-300, foreach=foreach)
    zero_w.grad = torch.tensor([1.0, 2.0, -3.0], dtype=DT)
    zero_g.grad = torch.zeros(2, dtype=DT)
    zero_g_wd.grad = torch.zeros(2, dtype=DT)
    opt.step()
    close(zero_w, [-0.1, -0.1, 0.1], rtol=1e-14)
    close(zero_g, [1.0, -2.0], rtol=0)
    close(zero_g_wd, [2.7, 3.6], rtol=1e-14)
    for p in (zero_w, zero_g, zero_g_wd):
        assert all(torch.isfinite(v).all() for v in opt.state[p].values())


# == p.grad is never written =========================================================================================
@pytest.mark.parametrize("maximize", [False, True])  # maximize negates into a new tensor, which hides a write
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", sorted(optimlab.OPTIMIZERS))
def test_grad_is_not_modified(name: str, foreach: bool, maximize: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    params = [torch.randn(3, 4, generator=gen, dtype=DT).requires_grad_(),
              torch.randn(4, generator=gen, dtype=DT).requires_grad_()]
    extra: dict[str, Any] = {"switch_tol": 1e3} if name == "swats" else {}  # switch at once: both SWATS phases run
    if name != "rprop":  # Rprop has no weight decay
        extra["weight_decay"] = 0.1
    opt = optimlab.create_optimizer(name, params, lr=0.01, maximize=maximize, foreach=foreach, **extra)
    for k in range(4):
        grads = [torch.randn(p.shape, generator=gen, dtype=DT) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        before = [p.detach().clone() for p in params]
        opt.step()
        for p, g in zip(params, grads, strict=True):
            assert torch.equal(p.grad, g), name
        if not (name in FIRST_STEP_STILL and k == 0):  # ADOPT's, SOAP's first step only initialises state
            assert any(not torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))
    if name == "swats":
        assert opt.phase == "sgd"


# == checkpoints of the non-torch optimizers resume bit for bit (float32 parameters, through a file) =================
@pytest.mark.parametrize(("cls", "kw"), [
    (optimlab.AdaBound, dict(lr=0.01, final_lr=0.1, gamma=0.05, weight_decay=0.01)),
    (optimlab.AMSBound, dict(lr=0.01, final_lr=0.1, gamma=0.05)),
    (optimlab.LARS, dict(lr=1.0, weight_decay=0.01, trust_coefficient=0.02, nesterov=True)),
    (optimlab.LAMB, dict(lr=0.01, weight_decay=0.1)),
    (optimlab.SGDW, dict(lr=0.05, momentum=0.9, weight_decay=0.01, decay_scale="schedule")),
    (optimlab.SWATS, dict(lr=0.01, betas=(0.9, 0.99), switch_tol=1e-4)),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_checkpoint_resumes_bit_for_bit(cls: type[torch.optim.Optimizer], kw: dict[str, Any]) -> None:
    import io

    data = _ls_problem(120)
    f32 = [p.float() for p in initial_params()]

    def run(params: list[Tensor], opt: torch.optim.Optimizer, start: int, stop: int) -> None:
        for t in range(start, stop):
            opt.param_groups[0]["lr"] = kw["lr"] * (1.0 if t < 70 else 0.5)
            for p, g in zip(params, _ls_grads([q.double() for q in params], data, t), strict=True):
                p.grad = g.float()
            opt.step()

    a_params = [p.clone().requires_grad_() for p in f32]
    a = cls(a_params, **kw)
    run(a_params, a, 0, 60)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b_params = [p.detach().clone().requires_grad_() for p in a_params]
    b = cls(b_params, **kw)
    b.load_state_dict(torch.load(buf, weights_only=True))
    run(a_params, a, 60, 120)
    run(b_params, b, 60, 120)
    for pa, pb in zip(a_params, b_params, strict=True):
        assert torch.equal(pa, pb)
        assert set(a.state[pa]) == set(b.state[pb])
        for key, value in a.state[pa].items():
            assert value.dtype == b.state[pb][key].dtype, key
            assert torch.equal(value, b.state[pb][key]), key
    if cls is optimlab.SWATS:
        assert a.phase == "sgd"
        assert min(a.switch_steps) <= 60 < max(a.switch_steps)  # checkpoint taken with one tensor switched, one not


def test_nadam_constant_momentum_schedule_is_optax_nadam():
    """``momentum_schedule="constant"`` is optax's nadam: b1*m/(1-b1^(t+1)) + (1-b1)*g/(1-b1^t) over sqrt(v_hat)+eps.

    The reference below is written from optax's ``scale_by_adam(nesterov=True)`` (eps_root=0).
    """
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    g_ = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, 4, generator=g_, dtype=torch.float64)
    grads = [torch.randn(5, 4, generator=g_, dtype=torch.float64) for _ in range(30)]
    for foreach in (False, True):
        p = w0.clone().requires_grad_()
        opt = optimlab.NAdam([p], lr=lr, momentum_schedule="constant", foreach=foreach)
        w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
        for t, g in enumerate(grads, start=1):
            p.grad = g.clone()
            opt.step()
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            w = w - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(p.detach(), w, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="Invalid momentum_schedule: 'keras'"):
        optimlab.NAdam([p], momentum_schedule="keras")
