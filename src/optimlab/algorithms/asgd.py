"""ASGD: SGD with a decaying step size and a Polyak-Ruppert average of the iterates."""

from __future__ import annotations

from typing import Any

import torch

from ..core import blocks, ops, validation
from ..core.base import Optimizer, ParamsT, _get_scalar_dtype, _number, new_step
from ..core.ops import TensorOrList

__all__ = ["ASGD"]


def _tensors(x: TensorOrList) -> list[torch.Tensor]:
    return list(x) if isinstance(x, list | tuple) else [x]


class ASGD(Optimizer):
    r"""Averaged SGD (Polyak & Juditsky 1992; the step-size schedule of Bottou 2012 / Xu 2011).

    A drop-in for :class:`torch.optim.ASGD` (arguments, defaults, state keys ``step``, ``eta``, ``mu``, ``ax`` and the
    trajectory):

    .. math::
        g_t &= \nabla f(\theta_{t-1}) + \lambda_{wd}\,\theta_{t-1}, \qquad
            \theta_t = \theta_{t-1}(1 - \lambda\eta_{t-1}) - \eta_{t-1} g_t \\
        \bar\theta_t &= \bar\theta_{t-1} + \mu_{t-1}(\theta_t - \bar\theta_{t-1})
            \quad (\bar\theta_t = \theta_t \text{ while } \mu_{t-1} = 1) \\
        \eta_t &= \frac{\gamma}{(1 + \lambda\gamma t)^{\alpha}}, \qquad \mu_t = \frac{1}{\max(1, t - t_0)}

    so averaging starts after :math:`t_0` steps (the default 1e6 means "never", as in torch). The average
    :math:`\bar\theta` is ``ax``; evaluate with it by copying it into the parameters. :math:`\eta` and :math:`\mu`
    are 0-d state tensors of torch's scalar dtype (float32 by default): the step reads their stored values, as
    torch does, so trajectories agree to round-off.

    Args:
        lr: :math:`\gamma` (1e-2). lambd: the decay term :math:`\lambda` (1e-4). alpha: the power :math:`\alpha`
            (0.75). t0: the step :math:`t_0` at which averaging starts (1e6). weight_decay: L2
            :math:`\lambda_{wd}` (0). foreach, maximize, differentiable, capturable: as :class:`optimlab.SGD`
            (torch's arguments). fused: only ``None``/``False``.

    References: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J. Control Optim.
    1992; Bottou, "Stochastic Gradient Descent Tricks", 2012; torch.optim.ASGD.
    """

    _elementwise = True
    _supports_differentiable = True
    _scalar_state = ("step", "eta", "mu")

    def __init__(self, params: ParamsT, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False, *,
                 fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      maximize=maximize, foreach=foreach, differentiable=differentiable,
                                      capturable=capturable, fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_nonneg("lambd", group["lambd"])
        validation.check_nonneg("alpha", group["alpha"])
        validation.check_nonneg("t0", group["t0"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["eta"] = torch.tensor(_number(group["lr"]), dtype=_get_scalar_dtype())
        state["mu"] = torch.ones((), dtype=_get_scalar_dtype())
        state["ax"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _prepare(self, s: dict[str, Any], h: dict[str, Any]) -> None:
        # The rule uses this step's eta and mu (already read into h); store the next step's, as torch does after
        # its update.
        t, lr = h["step"], h["lr"]
        for key, value in (("eta", lr / ((1 + h["lambd"] * lr * t) ** h["alpha"])), ("mu", 1 / max(1, t - h["t0"]))):
            tensors = _tensors(s[key])
            torch._foreach_zero_(tensors)  # two list calls, not one fill_ per tensor: the value rounds as fill_
            torch._foreach_add_(tensors, value)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        eta, mu = h["eta"], h["mu"]
        g = blocks.l2_decay(g, p, h["weight_decay"])
        ops.mul_(p, 1 - h["lambd"] * eta)
        ops.add_(p, g, alpha=-eta)
        if mu != 1:
            ops.add_(s["ax"], ops.mul_(ops.add(p, s["ax"], alpha=-1.0), mu))
        else:
            ops.copy_(s["ax"], p)
