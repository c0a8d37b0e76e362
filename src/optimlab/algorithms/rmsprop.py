"""RMSProp: step sizes from an exponential average of squared gradients."""

from __future__ import annotations

from typing import Any

import torch

from ..core import blocks, ops, validation
from ..core.base import Optimizer, ParamsT, new_step
from ..core.ops import TensorOrList

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSProp (Tieleman & Hinton 2012, Coursera lecture 6.5), centered variant of Graves 2013.

    A drop-in for :class:`torch.optim.RMSprop` (arguments, defaults, state keys ``step``, ``square_avg``,
    ``momentum_buffer``, ``grad_avg``):

    .. math::
        v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2 \\
        \tilde v_t &= v_t - \bar g_t^2 \text{ with } \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t
            \text{ (centered), else } v_t \\
        b_t &= \mu b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon), \qquad \theta_t = \theta_{t-1} - \gamma b_t
            \quad (\text{without momentum: } \theta_t = \theta_{t-1} - \gamma g_t / (\sqrt{\tilde v_t} + \epsilon))

    Note that :math:`\epsilon` is added outside the square root (torch and Keras), whereas the source document writes
    :math:`\sqrt{v_t + \epsilon}`; with the default 1e-8 the difference only matters where :math:`v_t \approx 0`.

    Args:
        lr: :math:`\gamma` (default 1e-2). alpha: :math:`\alpha` (default 0.99). eps: :math:`\epsilon` (1e-8).
        weight_decay: L2 penalty. momentum: :math:`\mu`. centered: normalise by the estimated variance.
        capturable, foreach, maximize, differentiable: as in :class:`optimlab.SGD`, in torch's positional order.
        fused: only ``None``/``False`` (torch has no fused RMSprop; on CPU the rule runs as one compiled loop).
    """

    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False, *,
                 fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_in_range("alpha", group["alpha"], 0.0, 1.0, hi_open=False)
        validation.check_nonneg("momentum", group["momentum"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    _elementwise = True

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        g = blocks.l2_decay(g, p, h["weight_decay"])
        v = blocks.ema_sq_(s["square_avg"], g, h["alpha"])
        if h["centered"]:
            g_avg = blocks.ema_(s["grad_avg"], g, h["alpha"])
            v = ops.sqrt(ops.addcmul_(ops.clone(v), g_avg, g_avg, value=-1))
        else:
            v = ops.sqrt(v)
        denom = ops.add_scalar_(v, h["eps"])
        if h["momentum"] > 0:
            buf = ops.mul_(s["momentum_buffer"], h["momentum"])
            ops.addcdiv_(buf, g, denom)
            ops.add_(p, buf, alpha=-h["lr"])
        else:
            ops.addcdiv_(p, g, denom, value=-h["lr"])
