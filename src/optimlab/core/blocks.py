"""The building blocks of the source documents' taxonomy of optimizers, one small function each.

Adam = momentum (``ema_``) + RMSProp (``ema_sq_``) + ``bias_correction``; AdamW = Adam + ``decoupled_decay_``;
AMSGrad = Adam + ``amsgrad_max_``; LAMB/LARS = Adam/SGDM + ``trust_ratio``. After Adam: Adamax = momentum +
``ema_inf_``; Lion = an interpolated momentum + ``sign_step_``; Schedule-Free = a base step +
``schedule_free_step_``. Each block takes a tensor or a list of tensors (see :mod:`optimlab.core.ops`) and never
writes into the gradient it is given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ops
from .ops import TensorOrList

__all__ = [
    "adam_denominator",
    "amsgrad_max_",
    "bias_correction",
    "decoupled_decay_",
    "decoupled_decay_factor",
    "ema_",
    "ema_inf_",
    "ema_sq_",
    "l2_decay",
    "momentum_",
    "schedule_multiplier",
    "schedule_free_step_",
    "sign_step_",
    "trust_ratio",
]


def l2_decay(g: TensorOrList, p: TensorOrList, weight_decay: float) -> TensorOrList:
    """L2 regularisation folded into the gradient: ``g + lambda * p`` (a new tensor; ``g`` is untouched)."""
    return ops.add(g, p, alpha=weight_decay) if weight_decay != 0 else g


def schedule_multiplier(h: dict[str, Any]) -> float:
    """The schedule multiplier ``eta_t = lr_t / lr_0`` of a group.

    ``lr_0`` is the scheduler's base lr: the group's ``initial_lr``, which torch's schedulers (and
    :class:`optimlab.schedules.ScheduleLR`) set to the lr current when they are created; without a scheduler it is
    the group's ``base_lr``, the lr at construction (both are saved in the ``state_dict``). ``lr_t = 0`` gives 0,
    so ``lr=0`` freezes the group; ``lr_0 = 0`` with ``lr_t != 0`` gives 1 (no division by zero).
    """
    lr = h["lr"]
    if lr == 0:
        return 0.0
    lr0 = h.get("initial_lr", h.get("base_lr", lr))
    return lr / lr0 if lr0 != 0 else 1.0


def decoupled_decay_factor(h: dict[str, Any]) -> float:
    """How much decoupled decay shrinks the weights this step (Loshchilov & Hutter 2019).

    ``decay_scale="lr"`` (torch.optim's convention): ``lr_t * lambda``.
    ``decay_scale="schedule"`` (the paper's Algorithm 2, ``eta_t * lambda``): ``(lr_t / lr_0) * lambda`` with the
    schedule multiplier of :func:`schedule_multiplier`; ``lambda`` is then an absolute per-step decay, independent
    of the base lr.
    """
    if h["decay_scale"] == "lr":
        return h["lr"] * h["weight_decay"]
    return schedule_multiplier(h) * h["weight_decay"]


def decoupled_decay_(p: TensorOrList, h: dict[str, Any]) -> None:
    """``p *= 1 - factor`` (see :func:`decoupled_decay_factor`): decays the pre-update weights."""
    if h["weight_decay"] != 0:
        ops.mul_(p, 1 - decoupled_decay_factor(h))


def momentum_(buf: TensorOrList, g: TensorOrList, momentum: float, dampening: float = 0.0) -> TensorOrList:
    """Heavy-ball momentum as torch.optim.SGD keeps it: ``buf = momentum * buf + (1 - dampening) * g``."""
    ops.mul_(buf, momentum)
    return ops.add_(buf, g, alpha=1 - dampening)


def ema_(m: TensorOrList, g: TensorOrList, beta: float) -> TensorOrList:
    """First moment: ``m = beta * m + (1 - beta) * g``."""
    return ops.lerp_(m, g, 1 - beta)


def ema_sq_(v: TensorOrList, g: TensorOrList, beta: float) -> TensorOrList:
    """Second moment (RMSProp): ``v = beta * v + (1 - beta) * g^2``."""
    ops.mul_(v, beta)
    return ops.addcmul_(v, g, g, value=1 - beta)


def ema_inf_(u: TensorOrList, g: TensorOrList, beta: float, eps: float) -> TensorOrList:
    """Adamax's infinity norm (Kingma & Ba 2015, Alg. 2, with torch's ``eps``): ``u = max(beta * u, |g| + eps)``."""
    return ops.maximum_(ops.mul_(u, beta), ops.add_scalar_(ops.abs(g), eps))


def sign_step_(p: TensorOrList, u: TensorOrList, lr: float) -> TensorOrList:
    """A sign step (Lion, signSGD): ``p -= lr * sign(u)``, so every element moves by exactly ``lr`` (or not at all
    where ``u`` is 0)."""
    return ops.add_(p, ops.sign(u), alpha=-lr)


def schedule_free_step_(y: TensorOrList, z: TensorOrList, u: TensorOrList, lr: float, beta: float,
                        c: float) -> None:
    r"""Schedule-Free's averaging (Defazio et al. 2024) after a base step ``u`` taken at the gradient point ``y``:

    .. math::
        z_{t+1} = z_t - \gamma u_t, \qquad x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \qquad
        y_{t+1} = (1 - \beta) z_{t+1} + \beta x_{t+1}

    kept without storing :math:`x` (as the ``schedulefree`` package does): ``y = lerp(y, z, c)`` then
    ``y += lr * (beta * (1 - c) - 1) * u`` and ``z -= lr * u``.
    """
    ops.lerp_(y, z, c)
    ops.add_(y, u, alpha=lr * (beta * (1 - c) - 1))
    ops.add_(z, u, alpha=-lr)


def bias_correction(beta: float, step: float) -> float:
    """``1 - beta^t``: the weight an exponential average started at zero has accumulated after ``t`` steps."""
    return 1 - beta**step


def amsgrad_max_(v_max: TensorOrList, v: TensorOrList) -> TensorOrList:
    """AMSGrad (Reddi et al. 2018): ``v_max = max(v_max, v)``, so the effective step size never grows."""
    return ops.maximum_(v_max, v)


def adam_denominator(v: TensorOrList, bias_correction2: float, eps: float) -> TensorOrList:
    """``sqrt(v / (1 - beta2^t)) + eps`` computed as torch does: ``sqrt(v) / sqrt(bc2) + eps`` (a new tensor)."""
    denom = ops.div_(ops.sqrt(v), bias_correction2**0.5)
    return ops.add_scalar_(denom, eps)


def trust_ratio(w_norm: Tensor, u_norm: Tensor, coefficient: float = 1.0) -> Tensor:
    """Layer-wise trust ratio ``coefficient * ||w|| / ||u||``, and 1 where either norm is zero.

    The norms are 0-d tensors, or 1-d tensors holding one norm per layer. They stay tensors (no ``.item()``), so a
    norm reduced over DTensor shards stays on the device and correct. The guard matters: without it
    zero-initialised weights never move (a bug peers shipped).
    """
    ok = (w_norm > 0) & (u_norm > 0)
    safe_u = torch.where(ok, u_norm, torch.ones_like(u_norm))
    return torch.where(ok, coefficient * w_norm / safe_u, torch.ones_like(w_norm))
