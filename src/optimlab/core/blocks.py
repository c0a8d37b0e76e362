"""The building blocks of the source documents' taxonomy of optimizers, one small function each.

Adam = momentum (``ema_``) + RMSProp (``ema_sq_``) + ``bias_correction``; AdamW = Adam + ``decoupled_decay_``;
AMSGrad = Adam + ``amsgrad_max_``; LAMB/LARS = Adam/SGDM + ``trust_ratio``. After Adam: Adamax = momentum +
``ema_inf_``; Lion = an interpolated momentum + ``sign_step_``; Schedule-Free = a base step +
``schedule_free_step_``. Cautious optimizers = any of these + ``cautious`` (the update masked where it disagrees
with the gradient); cautious weight decay = ``cautious_decay_`` in place of ``decoupled_decay_``. Each block takes
a tensor or a list of tensors (see :mod:`optimlab.core.ops`) and never writes into the gradient it is given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import ops
from .ops import TensorOrList

__all__ = [
    "CAUTION_FLOOR",
    "adam_denominator",
    "amsgrad_max_",
    "bias_correction",
    "cautious",
    "cautious_decay_",
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


def cautious_decay_(p: TensorOrList, u: TensorOrList, h: dict[str, Any]) -> None:
    r"""Cautious weight decay (Chen, Liang et al. 2025, "Cautious Weight Decay", arXiv 2510.12402): decoupled decay
    only where the update and the weights agree in sign, i.e. where the step already shrinks the weight:

    .. math:: \theta \leftarrow \theta - f\,\theta \odot \mathbb{1}[u \odot \theta \ge 0]

    with :math:`f` of :func:`decoupled_decay_factor`, :math:`\theta` the pre-update weights and :math:`u` the
    direction the step subtracts (:math:`\theta \mathrel{-}= \gamma u`, after any caution mask). ``>= 0`` as the
    paper and modded-nanogpt's records #43 (``mask = (v_chunk * param_chunk) >= 0``, NorMuon) and #50
    (``mask = (update * p_slice) >= 0``, Adam) write it; the kept weights are ``p * (1 - f)`` exactly as
    :func:`decoupled_decay_`, so with every sign agreeing the two give the same numbers. Element-wise (traceable)."""
    if h["weight_decay"] != 0:
        agree = ops.ge(ops.mul(u, p), 0.0)
        ops.copy_(p, ops.where(agree, ops.mul(p, 1 - decoupled_decay_factor(h)), p))


#: The floor on the fraction of components a cautious mask keeps (timm's ``mask.mean().clamp_(min=1e-3)``): with
#: fewer kept, the kept ones are scaled by 1000, not more.
CAUTION_FLOOR = 1e-3


def cautious(u: TensorOrList, g: TensorOrList) -> TensorOrList:
    r"""The cautious update (Liang, Chen, Liu & Liu 2024, "Cautious Optimizers: Improving Training with One Line of
    Code", arXiv 2411.16085): the components of the update direction ``u`` whose sign disagrees with the gradient
    ``g`` are dropped and the rest rescaled by the fraction kept, per tensor:

    .. math:: \phi = \mathbb{1}[u \odot g > 0], \qquad
        u \leftarrow u \odot \phi \,/\, \max(\operatorname{mean}(\phi), 10^{-3})

    as timm does it (``timm/optim/adamw.py``, ``lion.py``, ``sgdw.py``, ``adopt.py``, ``nadamw.py`` with
    ``caution=True``: ``mask = (u * grad > 0).to(grad.dtype); mask.div_(mask.mean().clamp_(min=1e-3))``), the mask in
    the gradient's dtype, and as the authors' ``c_adamw.py`` (kyleliang919/C-Optim) does now. The authors' first form,
    still in their ``c_lion.py``, rescales by ``numel / (sum + 1)`` instead (not offered: the authors' C-AdamW moved
    to timm's form, citing timm's runs). ``>`` is strict: a zero component of ``u`` or ``g`` is dropped.

    A new tensor (or list); ``u`` and ``g`` are not written. The mean is over each whole tensor (a complex
    parameter's real view), so a rule that calls this is not element-wise: it must not run on blocks or compiled
    element loops (the classes declare such a step unblocked, see ``Optimizer._creates_state``)."""
    kept = ops.gt(ops.mul(u, g), 0.0)
    if isinstance(kept, list):
        mask: TensorOrList = [m.to(t.dtype) for m, t in zip(kept, g, strict=True)]
        scale: TensorOrList = [m.mean() for m in mask]
    else:
        mask = kept.to(g.dtype)  # type: ignore[union-attr]
        scale = mask.mean()
    ops.div_(mask, ops.clamp_(scale, CAUTION_FLOOR, None))
    return ops.mul(u, mask)


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
