"""AdaBound and AMSBound: Adam whose per-coordinate step is clipped into bounds that converge to an SGD lr."""

from __future__ import annotations

from typing import Any

import torch

from ..core import blocks, ops, validation
from ..core.base import ParamsT
from ..core.ops import TensorOrList
from .adam import _AdamBase

__all__ = ["AMSBound", "AdaBound"]


class AdaBound(_AdamBase):
    r"""AdaBound (Luo, Xiong, Liu & Sun, ICLR 2019). AdaBound = Adam + a clipped step; AMSBound = AMSGrad + clip.

    Faithful to the authors' code (Luolc/AdaBound ``adabound/adabound.py``):

    .. math::
        g_t &= \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2
            \quad (\text{AMSBound: } \hat v_t = \max(\hat v_{t-1}, v_t)) \\
        \alpha_t &= \gamma\sqrt{1-\beta_2^t}/(1-\beta_1^t), \qquad
            \gamma^*_t = \text{final\_lr}\cdot\gamma_t/\gamma_0 \\
        \eta_l(t) &= \gamma^*_t\left(1 - \frac{1}{\delta t + 1}\right), \qquad
            \eta_u(t) = \gamma^*_t\left(1 + \frac{1}{\delta t}\right) \\
        \theta_t &= \theta_{t-1} - \operatorname{clip}\!\left(\frac{\alpha_t}{\sqrt{v_t} + \epsilon},
            \eta_l(t), \eta_u(t)\right) m_t

    ``final_lr`` is scaled by :math:`\gamma_t/\gamma_0` so an lr schedule moves the bounds too, as in the
    reference. :math:`\gamma_0` is the scheduler's base lr (``initial_lr``, which torch's schedulers set to the lr
    current when they are created) or, without a scheduler, the lr at construction (the group's ``base_lr``, the
    reference's ``base_lr``): see :func:`optimlab.core.blocks.schedule_multiplier`. Unlike the reference, both are
    in the param group and so in the ``state_dict`` (the reference keeps ``base_lr`` outside it, so a resumed run
    silently rescales its bounds); ``lr=0`` freezes the group (the bounds are 0 too), and a zero base with a
    nonzero lr leaves the bounds unscaled instead of dividing by zero.

    Args:
        lr: :math:`\gamma` (1e-3). betas: (0.9, 0.999). final_lr: the SGD lr the bounds converge to (0.1).
        gamma: :math:`\delta`, the convergence speed of the bounds (1e-3). eps: 1e-8 (added to :math:`\sqrt{v_t}`).
        weight_decay: L2 :math:`\lambda` added to the gradient, as in the paper. ``decoupled_weight_decay=True``
            shrinks the weights instead; with ``decay_scale="schedule"`` that is the reference's AdaBoundW
            (:math:`\theta \mathrel{-}= \lambda\theta_{t-1}` at the base lr, scaled by the schedule), with the
            default ``decay_scale="lr"`` torch's AdamW convention (:math:`\gamma_t\lambda\theta_{t-1}`).
        amsbound: use AMSBound.
        decay_scale, moment_dtype, maximize, foreach: as :class:`optimlab.Adam`. fused, capturable,
        differentiable: only their defaults (``None``/``False``; see :mod:`optimlab.core.base`).
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 final_lr: float = 0.1, gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0,
                 amsbound: bool = False, *, decoupled_weight_decay: bool = False, decay_scale: str = "lr",
                 moment_dtype: torch.dtype | None = None, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsbound, amsbound=amsbound,
                                      decoupled_weight_decay=decoupled_weight_decay, decay_scale=decay_scale,
                                      moment_dtype=moment_dtype, maximize=maximize, foreach=foreach, fused=fused,
                                      capturable=capturable, differentiable=differentiable))

    def _needs_base_lr(self, group: dict[str, Any]) -> bool:
        return True  # the bounds scale with the schedule multiplier

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_nonneg("final_lr", group["final_lr"])
        validation.check_positive("gamma", group["gamma"])
        if group["amsbound"] != group["amsgrad"]:
            group["amsgrad"] = group["amsbound"]  # a group that overrides amsbound

    _elementwise = True

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        t, lr = h["step"], h["lr"]
        g = self._decay(p, g, h)
        m = blocks.ema_(s["exp_avg"], g, beta1)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        if h["amsbound"]:
            v = blocks.amsgrad_max_(s["max_exp_avg_sq"], v)
        step_size = lr * blocks.bias_correction(beta2, t) ** 0.5 / blocks.bias_correction(beta1, t)
        final_lr = h["final_lr"] * blocks.schedule_multiplier(h)
        lower = final_lr * (1 - 1 / (h["gamma"] * t + 1))
        upper = final_lr * (1 + 1 / (h["gamma"] * t))
        step = ops.mul_(ops.reciprocal_(ops.add_scalar_(ops.sqrt(v), h["eps"])), step_size)
        ops.mul_(ops.clamp_(step, lower, upper), m)
        ops.add_(p, step, alpha=-1.0)


class AMSBound(AdaBound):
    """AMSBound: :class:`AdaBound` with ``amsbound=True`` (the max of the raw second moment, as the reference)."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 final_lr: float = 0.1, gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0, *,
                 decoupled_weight_decay: bool = False, decay_scale: str = "lr",
                 moment_dtype: torch.dtype | None = None, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, lr, betas, final_lr, gamma, eps, weight_decay, True,
                         decoupled_weight_decay=decoupled_weight_decay, decay_scale=decay_scale,
                         moment_dtype=moment_dtype, maximize=maximize, foreach=foreach, fused=fused,
                         capturable=capturable, differentiable=differentiable)


