"""Adam's later variants, each one change to Adam: Adamax (the infinity norm for the second moment), AdEMAMix (a
second, slow momentum mixed in) and ADOPT (the second moment of the previous steps, and momentum on the normalised
gradient)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..core import blocks, ops, validation
from ..core.base import Optimizer, ParamsT, new_step
from ..core.ops import TensorOrList

__all__ = ["ADOPT", "AdEMAMix", "Adamax", "ademamix_alpha", "ademamix_beta3"]


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba 2015, Algorithm 2): Adam with the infinity norm in place of the second moment.

    A drop-in for :class:`torch.optim.Adamax` (arguments, defaults, state keys ``step``, ``exp_avg``, ``exp_inf``
    and the trajectory). Adamax = momentum (``ema_``) + ``ema_inf_``:

    .. math::
        g_t &= \nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \qquad m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \qquad
            \theta_t = \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,\frac{m_t}{u_t}

    The paper has :math:`u_t = \max(\beta_2 u_{t-1}, |g_t|)` and no :math:`\epsilon`; torch (and Keras) add
    :math:`\epsilon` inside the max, which keeps :math:`u_t > 0` where gradients are zero. Followed here.

    Args:
        lr: :math:`\gamma` (2e-3). betas: :math:`(\beta_1, \beta_2)` ((0.9, 0.999)). eps: :math:`\epsilon` (1e-8).
        weight_decay: L2 :math:`\lambda` (0). foreach, maximize, differentiable, capturable: as
        :class:`optimlab.SGD` (torch's arguments). fused: only ``None``/``False`` (torch has no fused Adamax).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Section 7.1;
    torch.optim.Adamax.
    """

    _elementwise = True
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      foreach=foreach, differentiable=differentiable, capturable=capturable,
                                      fused=fused))

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        g = blocks.l2_decay(g, p, h["weight_decay"])
        m = blocks.ema_(s["exp_avg"], g, beta1)
        u = blocks.ema_inf_(s["exp_inf"], g, beta2, h["eps"])
        ops.addcdiv_(p, m, u, value=-h["lr"] / blocks.bias_correction(beta1, h["step"]))


def ademamix_alpha(step: float, alpha: float, warmup: int | None) -> float:
    r"""AdEMAMix's :math:`\alpha` warm-up: linear from 0 to :math:`\alpha` over ``warmup`` steps (the authors'
    ``linear_warmup_scheduler`` with ``alpha_start=0``)."""
    if warmup is None or step >= warmup:
        return alpha
    a = step / float(warmup)
    return a * alpha


def ademamix_beta3(step: float, beta3: float, beta_start: float, warmup: int | None) -> float:
    r"""AdEMAMix's :math:`\beta_3` warm-up: linear in the half-life :math:`t_{1/2}(\beta) = \ln 0.5 / \ln \beta - 1`
    from ``beta_start`` (:math:`\beta_1`) to :math:`\beta_3` over ``warmup`` steps (the authors'
    ``linear_hl_warmup_scheduler``, whose ``ln(beta + 1e-8)`` is kept)."""
    if warmup is None or step >= warmup:
        return beta3

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    a = step / float(warmup)
    return math.pow(0.5, 1 / ((1.0 - a) * half_life(beta_start) + a * half_life(beta3) + 1))


class AdEMAMix(Optimizer):
    r"""AdEMAMix (Pagliardini, Ablin & Grangier 2024, Algorithm 1): Adam plus a slow momentum, mixed in with weight
    :math:`\alpha`, so gradients from thousands of steps back still count. AdEMAMix = Adam + a second ``ema_``:

    .. math::
        m^{(1)}_t &= \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \qquad
            m^{(2)}_t = \beta_3(t) m^{(2)}_{t-1} + (1-\beta_3(t)) g_t, \qquad
            \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \eta\left(\frac{m^{(1)}_t/(1-\beta_1^t) + \alpha(t)\, m^{(2)}_t}
            {\sqrt{\nu_t/(1-\beta_2^t)} + \epsilon} + \lambda\theta_{t-1}\right)

    The slow EMA is not bias-corrected. Its warm-ups (needed for large :math:`\beta_3`, e.g. 0.9999): :math:`\alpha(t)`
    rises linearly from 0 over ``alpha_warmup`` steps, :math:`\beta_3(t)` from :math:`\beta_1` over ``beta3_warmup``
    steps, linearly in half-life (:func:`ademamix_alpha`, :func:`ademamix_beta3`); the paper sets both to the length
    of training. Weight decay is decoupled, :math:`\eta\lambda` as torch's AdamW. With :math:`\beta_1 = 0` the fast
    EMA is the gradient itself and no ``exp_avg_fast`` is stored.

    Where the references disagree: the authors' PyTorch code (apple/ml-ademamix ``pytorch/ademamix.py``, followed)
    evaluates the warm-ups at the step count :math:`t = 1, 2, \ldots` after incrementing it; their optax code at
    :math:`t - 1` (:math:`\alpha = 0` and :math:`\beta_3 = \beta_1` on the first step): ``warmup_from_zero=True``.
    The PyTorch code's default :math:`\alpha` is 2; the paper and README use 5-10 (README: 8).

    Args:
        lr: :math:`\eta` (1e-3). betas: :math:`(\beta_1, \beta_2, \beta_3)` ((0.9, 0.999, 0.9999)). alpha:
            :math:`\alpha` (2.0). beta3_warmup, alpha_warmup: warm-up lengths in steps (None: no warm-up).
        eps: :math:`\epsilon` (1e-8). weight_decay: :math:`\lambda` (0). warmup_from_zero: see above.
        maximize, foreach: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    Reference: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", ICLR 2025.
    """

    _elementwise = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
                 alpha: float = 2.0, beta3_warmup: int | None = None, alpha_warmup: int | None = None,
                 eps: float = 1e-8, weight_decay: float = 0.0, *, warmup_from_zero: bool = False,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, alpha=alpha, beta3_warmup=beta3_warmup,
                                      alpha_warmup=alpha_warmup, eps=eps, weight_decay=weight_decay,
                                      warmup_from_zero=warmup_from_zero, maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 3:
            validation.fail("betas", betas, "a triple (beta1, beta2, beta3)", TypeError)
        super()._validate({**group, "betas": tuple(betas[:2])})
        validation.check_beta("betas[2]", betas[2])
        validation.check_nonneg("alpha", group["alpha"])
        for name in ("beta3_warmup", "alpha_warmup"):
            value = group[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                validation.fail(name, value, "None or an int >= 1")
        if not isinstance(group["warmup_from_zero"], bool):
            validation.fail("warmup_from_zero", group["warmup_from_zero"], "a bool", TypeError)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        if group["betas"][0] != 0.0:
            state["exp_avg_fast"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_slow"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2, beta3_final = h["betas"]
        t = h["step"]
        at = t - 1 if h["warmup_from_zero"] else t
        alpha = ademamix_alpha(at, h["alpha"], h["alpha_warmup"])
        beta3 = ademamix_beta3(at, beta3_final, beta1, h["beta3_warmup"])
        m1 = ops.add_(ops.mul_(s["exp_avg_fast"], beta1), g, alpha=1 - beta1) if "exp_avg_fast" in s else g
        m2 = ops.add_(ops.mul_(s["exp_avg_slow"], beta3), g, alpha=1 - beta3)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        denom = blocks.adam_denominator(v, blocks.bias_correction(beta2, t), h["eps"])
        update = ops.div_(ops.add_(ops.div(m1, blocks.bias_correction(beta1, t)), m2, alpha=alpha), denom)
        if h["weight_decay"] != 0:
            ops.add_(update, p, alpha=h["weight_decay"])
        ops.add_(p, update, alpha=-h["lr"])


def adopt_clip(step: int) -> float:
    """ADOPT's default clipping bound for the normalised gradient: ``step ** 0.25`` (step counted from 0)."""
    return step**0.25


class ADOPT(Optimizer):
    r"""ADOPT (Taniguchi et al., NeurIPS 2024): Adam that converges for any :math:`\beta_2`, by normalising the
    gradient with the second moment of the *previous* steps and taking momentum after the normalisation.

    Faithful to the authors' code (iShohei220/adopt ``src/adopt/adopt.py``, v2 with clipping). With the step
    :math:`t` counted from 0:

    .. math::
        t = 0:&\quad v_0 = g_0^2 \quad(\text{no parameter update}) \\
        t \ge 1:&\quad \hat g_t = \operatorname{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},
            c(t)\right), \qquad m_t = \beta_1 m_{t-1} + (1-\beta_1)\hat g_t \\
        &\quad \theta_t = \theta_{t-1} - \gamma m_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

    with :math:`c(t) = t^{1/4}` (``clip_lambda``; None turns clipping off, the paper's v1). Weight decay: L2 into
    the gradient (default), or decoupled :math:`\theta \mathrel{-}= \gamma\lambda\theta` with ``decouple=True``
    (ADOPTW). Note :math:`\epsilon` is a floor on :math:`\sqrt{v}`, not added to it.

    Args:
        lr: :math:`\gamma` (1e-3). betas: ((0.9, 0.9999)). eps: :math:`\epsilon` (1e-6). clip_lambda: a function of
            the step (default :func:`adopt_clip`; kept on the optimizer, not in the ``state_dict``, as the
            reference). weight_decay: :math:`\lambda` (0). decouple: see above. cautious: the step's :math:`m_t`
            masked where its sign disagrees with :math:`g_t` (with any L2 term) and rescaled by the fraction kept,
            per tensor (:func:`optimlab.core.blocks.cautious`); the state keeps the unmasked :math:`m_t`. As timm's
            ``Adopt(caution=True)`` (``timm/optim/adopt.py``); such a step runs on whole lists. maximize, foreach: as
            :class:`optimlab.SGD`; fused, capturable, differentiable: torch's flags (``True`` raises, as a torch
            class without the feature does; README).

    Reference: Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal Rate", NeurIPS 2024.
    """

    _elementwise = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999),
                 eps: float = 1e-6, clip_lambda: Callable[[int], float] | None = adopt_clip,
                 weight_decay: float = 0.0, decouple: bool = False, *, cautious: bool = False,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        if clip_lambda is not None and not callable(clip_lambda):
            validation.fail("clip_lambda", clip_lambda, "None or a function of the step", TypeError)
        self.clip_lambda = clip_lambda
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decouple=decouple,
                                      cautious=cautious, maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if not isinstance(group["decouple"], bool):
            validation.fail("decouple", group["decouple"], "a bool", TypeError)
        validation.check_bool("cautious", group["cautious"])

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool:
        # A cautious step reduces over each tensor (blocks.cautious): whole lists only (see Adam's).
        return h["cautious"]

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _prepare(self, s: dict[str, Any], h: dict[str, Any]) -> None:
        t = int(h["step"]) - 1
        h["clip"] = self.clip_lambda(t) if self.clip_lambda is not None and t > 0 else None

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        lr, wd = h["lr"], h["weight_decay"]
        if not h["decouple"]:
            g = blocks.l2_decay(g, p, wd)
        v = s["exp_avg_sq"]
        if h["step"] == 1:  # the first step only initialises the second moment
            ops.addcmul_(v, g, g)
            return
        if h["decouple"] and wd != 0:
            ops.add_(p, p, alpha=-lr * wd)
        normed = ops.div(g, ops.clamp_(ops.sqrt(v), h["eps"], None))
        if h.get("clip") is not None:
            ops.clamp_(normed, -h["clip"], h["clip"])
        m = blocks.ema_(s["exp_avg"], normed, beta1)
        ops.add_(p, blocks.cautious(m, g) if h["cautious"] else m, alpha=-lr)
        blocks.ema_sq_(v, g, beta2)
