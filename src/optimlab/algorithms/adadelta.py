"""Adadelta: step sizes from the ratio of two running averages, of squared updates and of squared gradients."""

from __future__ import annotations

from typing import Any

import torch

from ..core import blocks, ops, validation
from ..core.base import Optimizer, ParamsT, new_step
from ..core.ops import TensorOrList

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012, Algorithm 1), with torch's lr and L2 weight decay.

    A drop-in for :class:`torch.optim.Adadelta` (arguments, defaults, state keys ``step``, ``square_avg``,
    ``acc_delta`` and the trajectory):

    .. math::
        g_t &= \nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \qquad
            v_t = \rho v_{t-1} + (1-\rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t, \qquad
            u_t = \rho u_{t-1} + (1-\rho) \Delta_t^2, \qquad \theta_t = \theta_{t-1} - \gamma \Delta_t

    The paper has no learning rate (:math:`\gamma = 1`, torch's default); :math:`\epsilon` sits inside both
    square roots, as in the paper. ``square_avg`` is :math:`v`, ``acc_delta`` is :math:`u`.

    Args:
        lr: :math:`\gamma` (1.0). rho: :math:`\rho` in [0, 1] (0.9). eps: :math:`\epsilon` (1e-6).
        weight_decay: L2 :math:`\lambda` (0). foreach, capturable, maximize, differentiable: as in
        :class:`optimlab.SGD` (torch's arguments). fused: only ``None``/``False``.

    References: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012; torch.optim.Adadelta.
    """

    _elementwise = True
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      foreach=foreach, capturable=capturable, differentiable=differentiable,
                                      fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_in_range("rho", group["rho"], 0.0, 1.0, hi_open=False)

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        rho, eps = h["rho"], h["eps"]
        g = blocks.l2_decay(g, p, h["weight_decay"])
        v = blocks.ema_sq_(s["square_avg"], g, rho)
        std = ops.sqrt(ops.add_scalar(v, eps))
        delta = ops.mul_(ops.div_(ops.sqrt(ops.add_scalar(s["acc_delta"], eps)), std), g)
        blocks.ema_sq_(s["acc_delta"], delta, rho)
        ops.add_(p, delta, alpha=-h["lr"])
