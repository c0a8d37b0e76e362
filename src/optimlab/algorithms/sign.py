"""Sign-based methods: Rprop (the sign of successive gradients sets per-element step sizes) and Lion (the sign of an
interpolated momentum is the step)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core import blocks, ops, validation
from ..core.base import Optimizer, ParamsT, _number, new_step
from ..core.ops import TensorOrList

__all__ = ["Lion", "Rprop"]


class Rprop(Optimizer):
    r"""Rprop, resilient backpropagation (Riedmiller & Braun 1993), in the iRprop- form torch implements.

    A drop-in for :class:`torch.optim.Rprop` (arguments, defaults, state keys ``step``, ``prev``, ``step_size`` and
    the trajectory): each element keeps its own step size :math:`\Delta`, grown by :math:`\eta_+` while the gradient
    keeps its sign and shrunk by :math:`\eta_-` when it flips; after a flip the element does not move and its
    gradient is forgotten:

    .. math::
        s_t &= \operatorname{sign}(g_t\, g_{t-1}) \\
        \Delta_t &= \operatorname{clip}\bigl(\Delta_{t-1} \cdot
            \{\eta_+ \text{ if } s_t > 0;\ \eta_- \text{ if } s_t < 0;\ 1 \text{ otherwise}\},
            \Delta_{\min}, \Delta_{\max}\bigr) \\
        \tilde g_t &= 0 \text{ where } s_t < 0, \text{ else } g_t, \qquad
            \theta_t = \theta_{t-1} - \operatorname{sign}(\tilde g_t)\, \Delta_t, \qquad g_{t-1} \leftarrow \tilde g_t

    :math:`\Delta_0` is the lr at the first step (later changes of the lr have no effect, as in torch). A complex
    parameter is two real ones (its step sizes start at ``lr + lr i``).

    Args:
        lr: :math:`\Delta_0` (1e-2). etas: :math:`(\eta_-, \eta_+)`, ``0 < eta_- < 1 < eta_+`` ((0.5, 1.2)).
        step_sizes: :math:`(\Delta_{\min}, \Delta_{\max})` ((1e-6, 50)). capturable, foreach, maximize,
        differentiable: as :class:`optimlab.SGD` (torch's arguments). fused: only ``None``/``False``.

    References: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP
    Algorithm", ICNN 1993; Igel & Hüsken 2000 (iRprop-); torch.optim.Rprop.
    """

    _elementwise = True
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable, fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        etas, sizes = group["etas"], group["step_sizes"]
        if not isinstance(etas, tuple | list) or len(etas) != 2:
            validation.fail("etas", etas, "a pair (eta_minus, eta_plus)", TypeError)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            validation.fail("etas", etas, "0 < etas[0] < 1 < etas[1]")
        if not isinstance(sizes, tuple | list) or len(sizes) != 2:
            validation.fail("step_sizes", sizes, "a pair (min, max)", TypeError)
        validation.check_nonneg("step_sizes[0]", sizes[0])
        if not sizes[0] <= sizes[1]:
            validation.fail("step_sizes", sizes, "step_sizes[0] <= step_sizes[1]")

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr = _number(group["lr"])
        state["step"] = new_step()
        state["prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step_size"] = torch.full_like(p, complex(lr, lr) if p.is_complex() else lr,
                                             memory_format=torch.preserve_format)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        eta_minus, eta_plus = h["etas"]
        lo, hi = h["step_sizes"]
        prev, step_size = s["prev"], s["step_size"]
        sign = ops.sign(ops.mul(g, prev))
        up, down = ops.gt(sign, 0.0), ops.lt(sign, 0.0)
        grown = ops.where(up, ops.mul(step_size, eta_plus), ops.where(down, ops.mul(step_size, eta_minus), step_size))
        ops.copy_(step_size, ops.clamp_(grown, lo, hi))
        g = ops.where(down, 0.0, g)
        ops.addcmul_(p, ops.sign(g), step_size, value=-1.0)
        ops.copy_(prev, g)


class Lion(Optimizer):
    r"""Lion, "EvoLved Sign Momentum" (Chen et al. 2023, Algorithm 2), found by program search.

    Faithful to the authors' PyTorch code (google/automl ``lion/lion_pytorch.py``):

    .. math::
        \theta_t &= \theta_{t-1}(1 - \eta_t\lambda) \\
        c_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
            \theta_t \leftarrow \theta_t - \eta_t \operatorname{sign}(c_t) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

    Every element moves by exactly :math:`\eta_t` before decay (or not at all where :math:`c_t = 0`), so the update
    norm is fixed by the lr: the paper's guidance is an lr 3-10x smaller than AdamW's and a weight decay
    correspondingly larger (the effective decay is :math:`\eta\lambda`). One state tensor (``exp_avg``), 4 bytes
    per fp32 parameter. A complex parameter takes the sign of its real and imaginary parts (lucidrains'
    ``lion-pytorch`` takes ``sgn``, the complex unit, instead).

    Where the references disagree: the authors decay by :math:`\eta_t\lambda` (``decay_scale="lr"``, default);
    lucidrains' ``lion-pytorch`` with ``decoupled_weight_decay=True`` decays by :math:`(\eta_t/\eta_0)\lambda`
    (``decay_scale="schedule"``, as the AdamW paper).

    Args:
        lr: :math:`\eta` (1e-4). betas: :math:`(\beta_1, \beta_2)` ((0.9, 0.99)). weight_decay: :math:`\lambda` (0).
        decay_scale: ``"lr"`` or ``"schedule"`` (see above).
        cautious: C-Lion (Liang et al. 2024): :math:`\operatorname{sign}(c_t)` masked where it disagrees with
            :math:`g_t` and rescaled by the fraction kept, per tensor (:func:`optimlab.core.blocks.cautious`), as
            timm's ``Lion(caution=True)`` (``timm/optim/lion.py``). Such a step runs on whole lists.
        cautious_weight_decay: decay only where the step and the weights agree in sign
            (:func:`optimlab.core.blocks.cautious_decay_`).
        maximize, foreach: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """

    _elementwise = True
    _scalar_state = ()

    def __init__(self, params: ParamsT, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, decay_scale: str = "lr", cautious: bool = False,
                 cautious_weight_decay: bool = False, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, decay_scale=decay_scale,
                                      cautious=cautious, cautious_weight_decay=cautious_weight_decay,
                                      maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_choice("decay_scale", group["decay_scale"], {"lr", "schedule"})
        validation.check_bool("cautious", group["cautious"])
        validation.check_bool("cautious_weight_decay", group["cautious_weight_decay"])

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool:
        # A cautious step reduces over each tensor (blocks.cautious): whole lists only (see Adam's).
        return h["cautious"]

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        m = s["exp_avg"]
        if not h["cautious"] and not h["cautious_weight_decay"]:
            blocks.decoupled_decay_(p, h)
            blocks.sign_step_(p, ops.add(ops.mul(m, beta1), g, alpha=1 - beta1), h["lr"])
        else:
            u = ops.sign(ops.add(ops.mul(m, beta1), g, alpha=1 - beta1))
            if h["cautious"]:
                u = blocks.cautious(u, g)
            if h["cautious_weight_decay"]:
                blocks.cautious_decay_(p, u, h)
            else:
                blocks.decoupled_decay_(p, h)
            ops.add_(p, u, alpha=-h["lr"])
        ops.add_(ops.mul_(m, beta2), g, alpha=1 - beta2)
