"""The Adam family: Adam (with AMSGrad), AdamW, NAdam and RAdam, each a few lines over the shared blocks."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core import blocks, ops, tensors, validation
from ..core.base import Optimizer, ParamsT, _get_scalar_dtype, new_step, scaling
from ..core.ops import TensorOrList

__all__ = ["Adam", "AdamW", "NAdam", "RAdam"]


class _AdamBase(Optimizer):
    """Shared state and the weight-decay choice (L2 into the gradient, or decoupled) of the Adam family."""

    _elementwise = True
    _moment_keys = ("exp_avg",)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_choice("decay_scale", group["decay_scale"], {"lr", "schedule"})
        if not isinstance(group["decoupled_weight_decay"], bool):
            validation.fail("decoupled_weight_decay", group["decoupled_weight_decay"], "a bool", TypeError)
        if group["fused"] and group.get("moment_dtype") is not None:
            validation.fail("fused", True, "fused=None or False with moment_dtype (torch's fused kernel keeps m in the "
                            "parameters' dtype)")
        for flag in ("cautious", "cautious_weight_decay"):
            if flag in group:
                validation.check_bool(flag, group[flag])
                if group[flag] and group["fused"]:
                    validation.fail("fused", True, f"fused=None or False with {flag}=True (torch's fused kernel has "
                                    "no mask)")
        if group.get("cautious_weight_decay") and not group["decoupled_weight_decay"]:
            validation.fail("cautious_weight_decay", True, "decoupled_weight_decay=True (cautious weight decay masks "
                            "the decoupled decay)")

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool:
        # A cautious step reduces over each tensor (the mask's mean, blocks.cautious): never on blocks or compiled
        # element loops; it runs on whole lists (the traced, mixed or foreach row).
        return bool(h.get("cautious"))

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group.get("amsgrad"):
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _fused_adam(self, ps: list[torch.Tensor], gs: list[torch.Tensor], s: dict[str, Any], h: dict[str, Any],
                    lr: float, eps: float) -> bool:
        """One pass of torch's fused Adam/AdamW kernel,
        :math:`\theta \\mathrel{-}= \frac{lr}{1-\beta_1^t} m / (\\sqrt{v}/\\sqrt{1-\beta_2^t} + eps)`, for any rule
        of that shape (``lr`` and ``eps`` rescaled by the caller). Decoupled decay of the rule's own size is
        obtained by rescaling the kernel's ``weight_decay`` (the kernel decays by ``lr * weight_decay``)."""
        if not tensors.fused_kernels_support(ps) or lr <= 0 or h.get("cautious") or h.get("cautious_weight_decay"):
            return False
        weight_decay = h["weight_decay"]
        if h["decoupled_weight_decay"]:
            weight_decay = blocks.decoupled_decay_factor(h) / lr
        kernel = torch._fused_adamw_ if h["decoupled_weight_decay"] else torch._fused_adam_
        beta1, beta2 = h["betas"]
        kernel(ps, gs, s["exp_avg"], s["exp_avg_sq"], s.get("max_exp_avg_sq", []), s["step"], lr=lr,
               beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=bool(h.get("amsgrad")),
               maximize=h["maximize"], **scaling(h, ps[0].device))
        return True

    @staticmethod
    def _decay(p: TensorOrList, g: TensorOrList, h: dict[str, Any]) -> TensorOrList:
        """AdamW-style decay shrinks the weights; Adam-style L2 returns ``g + lambda * p``. Cautious weight decay
        waits for the update (:meth:`_step`)."""
        if h["decoupled_weight_decay"]:
            if not h.get("cautious_weight_decay"):
                blocks.decoupled_decay_(p, h)
            return g
        return blocks.l2_decay(g, p, h["weight_decay"])

    @staticmethod
    def _step(p: TensorOrList, u: TensorOrList, g: TensorOrList, denom: TensorOrList, value: float,
              h: dict[str, Any]) -> None:
        """``p += value * u / denom`` (``value < 0``, ``denom > 0``), with the caution mask on ``u`` against ``g``
        (``cautious``) and cautious weight decay on the pre-update ``p`` (``cautious_weight_decay``: the step's
        direction has the sign of ``u``)."""
        if h.get("cautious"):
            u = blocks.cautious(u, g)
        if h.get("cautious_weight_decay"):
            blocks.cautious_decay_(p, u, h)
        ops.addcdiv_(p, u, denom, value=value)


class Adam(_AdamBase):
    r"""Adam (Kingma & Ba 2015) with the AMSGrad option (Reddi, Kale & Kumar 2018). Adam = momentum + RMSProp.

    A drop-in for :class:`torch.optim.Adam` (arguments, defaults, state keys ``step``, ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``, and the trajectory to round-off):

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ (AMSGrad) or } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    AMSGrad: torch, Keras and the AMSBound reference keep the max of the *raw* second moment and then bias-correct
    (``amsgrad_max="v"``, default, for drop-in equality with torch); optax keeps the max of the bias-corrected
    :math:`v_t/(1-\beta_2^t)` (``amsgrad_max="v_hat"``; ``max_exp_avg_sq`` then holds that max). The two give
    different trajectories early in training.

    Args:
        lr: :math:`\gamma` (1e-3). betas: :math:`(\beta_1, \beta_2)` (0.9, 0.999). eps: :math:`\epsilon` (1e-8).
        weight_decay: :math:`\lambda`; L2 added to the gradient unless ``decoupled_weight_decay`` (then AdamW).
        amsgrad: use AMSGrad. amsgrad_max: ``"v"`` or ``"v_hat"`` (see above).
        decoupled_weight_decay: decay the weights directly (Loshchilov & Hutter 2019).
        decay_scale: ``"lr"`` (torch: shrink by ``lr * lambda``) or ``"schedule"`` (the AdamW paper: by
            ``(lr / lr_0) * lambda``, ``lr_0`` the scheduler's base lr, else the lr at construction).
        moment_dtype: ``torch.bfloat16`` stores the first moment :math:`m_t` in bfloat16 (6 instead of 8 bytes of
            state per fp32 parameter); every step computes in the parameters' dtype and rounds :math:`m_t` to
            nearest on store. Allowed for :math:`\beta_1 \le 0.95` only: an average kept in bfloat16 stops moving
            once :math:`(1-\beta)|g_t - m_{t-1}|` is below half its precision, so with :math:`\beta_1 = 0.9` it may
            sit up to about 3% away from the float32 average, which is well inside minibatch noise, while
            :math:`v_t` (:math:`\beta_2 = 0.999`) would never move and stays in the parameters' dtype. None (default):
            the parameters' dtype. CPU kernels read and write bfloat16 directly; elsewhere the step computes on
            a float32 copy of :math:`m` (a transient model-sized buffer). Complex parameters keep their dtype.
        cautious: the cautious update (Liang et al. 2024, :func:`optimlab.core.blocks.cautious`): :math:`m_t` in
            the step is masked where its sign disagrees with :math:`g_t` (the gradient with any L2 term) and
            rescaled by the fraction kept, per tensor; the state keeps the unmasked :math:`m_t`. As timm's
            ``AdamW(caution=True)`` (``timm/optim/adamw.py``). Such a step runs on whole lists (a reduction per
            tensor), never on blocks, compiled loops or torch's fused kernel.
        cautious_weight_decay: decoupled decay only where the step and the weights agree in sign
            (:func:`optimlab.core.blocks.cautious_decay_`; needs ``decoupled_weight_decay``).
        foreach, maximize, capturable, differentiable: as in :class:`optimlab.SGD`.
        fused: ``True`` always runs torch's fused Adam/AdamW kernel (not with ``amsgrad_max="v_hat"``,
            ``moment_dtype``, ``cautious`` or ``cautious_weight_decay``), ``False`` never; ``None`` (default) takes
            it where it applies.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Reddi et al., "On the
    Convergence of Adam and Beyond", ICLR 2018; torch.optim.Adam.
    """

    _has_fused = True
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, decoupled_weight_decay: bool = False,
                 amsgrad_max: str = "v", decay_scale: str = "lr", moment_dtype: torch.dtype | None = None,
                 cautious: bool = False, cautious_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      amsgrad_max=amsgrad_max, decoupled_weight_decay=decoupled_weight_decay,
                                      decay_scale=decay_scale, moment_dtype=moment_dtype, cautious=cautious,
                                      cautious_weight_decay=cautious_weight_decay, maximize=maximize,
                                      foreach=foreach, capturable=capturable, differentiable=differentiable,
                                      fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_choice("amsgrad_max", group["amsgrad_max"], {"v", "v_hat"})
        if group["fused"] and group["amsgrad_max"] != "v":
            validation.fail("fused", True, "fused=None or False with amsgrad_max='v_hat' (torch's fused kernel "
                            "keeps the max of v)")

    def _fused(self, ps: list[torch.Tensor], gs: list[torch.Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        # torch's fused Adam/AdamW kernel is this rule (with AMSGrad's max of v) in one pass over memory.
        if h["amsgrad_max"] != "v":
            return False
        return self._fused_adam(ps, gs, s, h, lr=h["lr"], eps=h["eps"])

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        g = self._decay(p, g, h)
        m = blocks.ema_(s["exp_avg"], g, beta1)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        bc1, bc2 = blocks.bias_correction(beta1, h["step"]), blocks.bias_correction(beta2, h["step"])
        if h["amsgrad"]:
            if h["amsgrad_max"] == "v":
                v = blocks.amsgrad_max_(s["max_exp_avg_sq"], v)
            else:
                v, bc2 = blocks.amsgrad_max_(s["max_exp_avg_sq"], ops.div(v, bc2)), 1.0
        self._step(p, m, g, blocks.adam_denominator(v, bc2, h["eps"]), -(h["lr"] / bc1), h)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2). AdamW = Adam + decay.

    .. math:: \theta_t = \theta_{t-1} - \gamma\lambda\theta_{t-1} - \text{Adam step}

    A drop-in for :class:`torch.optim.AdamW` (default ``weight_decay=1e-2``). The paper scales the decay by the
    schedule multiplier :math:`\eta_t` rather than by the lr; ``decay_scale="schedule"`` does that (see
    :class:`Adam`). Reference code: loshchil/AdamW-and-SGDW (``adam.lua``). ``cautious=True`` is C-AdamW (timm's
    ``AdamW(caution=True)``), ``cautious_weight_decay=True`` AdamW with cautious weight decay (modded-nanogpt
    record #50); see :class:`Adam`.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, amsgrad_max: str = "v",
                 decay_scale: str = "lr", moment_dtype: torch.dtype | None = None, cautious: bool = False,
                 cautious_weight_decay: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay=True,
                         amsgrad_max=amsgrad_max, decay_scale=decay_scale, moment_dtype=moment_dtype,
                         cautious=cautious, cautious_weight_decay=cautious_weight_decay, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # AdamW is always decoupled (as torch: a checkpoint of Adam loads as AdamW)
            group["decoupled_weight_decay"] = True


class NAdam(_AdamBase):
    r"""NAdam: Adam with Nesterov momentum and Dozat's momentum-decay schedule. NAdam = Adam + Nesterov.

    A drop-in for :class:`torch.optim.NAdam` (state keys ``step``, ``mu_product``, ``exp_avg``,
    ``exp_avg_sq``), which is the same recurrence as Dozat's legacy Keras ``Nadam``:

    .. math::
        \mu_t &= \beta_1 \left(1 - \tfrac12\, 0.96^{t\psi}\right), \qquad \Pi_t = \prod_{i\le t} \mu_i \\
        \theta_t &= \theta_{t-1} - \gamma \left( \frac{(1-\mu_t)\, g_t}{1 - \Pi_t}
            + \frac{\mu_{t+1}\, m_t}{1 - \Pi_t \mu_{t+1}} \right) \Big/ \left(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\right)

    The running product :math:`\Pi_t` lives in the state as ``mu_product``. optax's ``nadam`` is the constant-momentum
    simplification :math:`\mu_t = \beta_1` (then :math:`\Pi_t = \beta_1^t` and the step is
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)` over the denominator):
    ``momentum_schedule="constant"`` gives it; the default ``"dozat"`` is torch's and Keras's schedule.

    Args:
        lr: (2e-3, torch's). betas, eps, weight_decay, decoupled_weight_decay, decay_scale, moment_dtype: as
        :class:`Adam` (``decoupled_weight_decay=True`` is NAdamW). momentum_decay: :math:`\psi` (4e-3).
        momentum_schedule: ``"dozat"`` (default) or ``"constant"`` (see above). cautious,
        cautious_weight_decay: as :class:`Adam`, on the step's whole direction
        :math:`u_t = \frac{(1-\mu_t) g_t}{1-\Pi_t} + \frac{\mu_{t+1} m_t}{1-\Pi_t\mu_{t+1}}` (timm masks its
        NAdamW's Nesterov combination the same way, ``timm/optim/nadamw.py``; timm's NAdamW is another recurrence,
        the bias correction :math:`1-\beta_1^t` on both terms). foreach, maximize, capturable,
        differentiable: as :class:`optimlab.SGD`. fused: only ``None``/``False`` (torch has no fused NAdam).

    References: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop; Keras ``Nadam``.
    """

    _scalar_state = ("step", "mu_product")
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False, fused: bool | None = None,
                 momentum_schedule: str = "dozat", decay_scale: str = "lr",
                 moment_dtype: torch.dtype | None = None, cautious: bool = False,
                 cautious_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      momentum_schedule=momentum_schedule, decay_scale=decay_scale,
                                      moment_dtype=moment_dtype, cautious=cautious,
                                      cautious_weight_decay=cautious_weight_decay, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable, fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_nonneg("momentum_decay", group["momentum_decay"])
        validation.check_choice("momentum_schedule", group["momentum_schedule"], {"dozat", "constant"})

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        super()._init_state(p, state, group)
        state["mu_product"] = torch.ones((), dtype=_get_scalar_dtype())

    def _prepare(self, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, t, psi = h["betas"][0], h["step"], h["momentum_decay"]
        if h["momentum_schedule"] == "constant":
            h["mu"] = h["mu_next"] = beta1
        else:
            h["mu"] = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
            h["mu_next"] = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        h["mu_product"] = ops.first(ops.mul_(s["mu_product"], h["mu"])).item()  # kept in its own dtype, as torch
        if h["momentum_schedule"] == "constant":
            h["mu_product"] = beta1**t  # exact, rather than the float32 running product

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        lr, mu, mu_next, mu_product = h["lr"], h["mu"], h["mu_next"], h["mu_product"]
        bc2 = blocks.bias_correction(beta2, h["step"])
        g = self._decay(p, g, h)
        m = blocks.ema_(s["exp_avg"], g, beta1)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        denom = ops.add_scalar_(ops.sqrt(ops.div(v, bc2)), h["eps"])
        if h["cautious"] or h["cautious_weight_decay"]:
            u = ops.add(ops.mul(g, (1.0 - mu) / (1.0 - mu_product)), m, alpha=mu_next / (1.0 - mu_product * mu_next))
            self._step(p, u, g, denom, -lr, h)
            return
        ops.addcdiv_(p, g, denom, value=-lr * (1.0 - mu) / (1.0 - mu_product))
        ops.addcdiv_(p, m, denom, value=(-lr * mu_next) / (1.0 - mu_product * mu_next))


class RAdam(_AdamBase):
    r"""RAdam: Adam whose adaptive step is switched on only once the variance of :math:`1/\sqrt{v_t}` is tractable.

    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020 (Algorithm 2); code
    LiyuanLucasLiu/RAdam ``radam/radam.py``. A drop-in for :class:`torch.optim.RAdam`:

    .. math::
        \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
            \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t} \\
        r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
        \theta_t &= \theta_{t-1} - \gamma\, \hat m_t \cdot
            \begin{cases} r_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > \rho_{\min} \\
            1 & \text{otherwise (un-adapted momentum step)} \end{cases}

    Where the references disagree: the paper rectifies when :math:`\rho_t > 4`, the authors' code when
    :math:`\rho_t \ge 5`, torch when :math:`\rho_t > 5`. The default is torch's (``rectify_threshold=5.0``, so
    the class is a drop-in; with the default betas the first rectified step is t = 6 either way);
    ``rectify_threshold=4.0`` is the paper's. Before rectification torch takes the un-adapted momentum step, as the
    reference did with ``degenerated_to_sgd=True``; ``degenerated_to_sgd=False`` skips those steps entirely
    (the reference's current default; decoupled decay is then skipped too).

    Args:
        lr, betas, eps, weight_decay, decoupled_weight_decay, decay_scale, moment_dtype, foreach, maximize,
        capturable, differentiable: as :class:`Adam`. fused: only ``None``/``False`` (torch has no fused RAdam; the
        rectified steps still run on torch's fused Adam kernel by default). rectify_threshold:
        :math:`\rho_{\min}`. degenerated_to_sgd: see above.
    """

    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, rectify_threshold: float = 5.0,
                 degenerated_to_sgd: bool = True, decay_scale: str = "lr",
                 moment_dtype: torch.dtype | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      rectify_threshold=rectify_threshold, degenerated_to_sgd=degenerated_to_sgd,
                                      decay_scale=decay_scale, moment_dtype=moment_dtype, maximize=maximize,
                                      foreach=foreach, capturable=capturable, differentiable=differentiable,
                                      fused=fused))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_in_range("rectify_threshold", group["rectify_threshold"], 4.0, math.inf)
        if not isinstance(group["degenerated_to_sgd"], bool):
            validation.fail("degenerated_to_sgd", group["degenerated_to_sgd"], "a bool", TypeError)

    @staticmethod
    def _rectification(h: dict[str, Any]) -> float | None:
        """:math:`r_t`, or None while :math:`\rho_t` is below the threshold."""
        beta2, t = h["betas"][1], h["step"]
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2**t) / blocks.bias_correction(beta2, t)
        if not rho_t > h["rectify_threshold"]:
            return None
        return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5

    def _fused(self, ps: list[torch.Tensor], gs: list[torch.Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        # A rectified step is Adam's step with lr * r_t and eps / sqrt(1 - beta2^t): torch's fused Adam kernel.
        r = self._rectification(h)
        if r is None:
            return False
        bc2 = blocks.bias_correction(h["betas"][1], h["step"])
        return self._fused_adam(ps, gs, s, h, lr=h["lr"] * r, eps=h["eps"] / bc2**0.5)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        t, lr = h["step"], h["lr"]
        bc1, bc2 = blocks.bias_correction(beta1, t), blocks.bias_correction(beta2, t)
        r = self._rectification(h)
        if r is None and not h["degenerated_to_sgd"]:
            g = g if h["decoupled_weight_decay"] else blocks.l2_decay(g, p, h["weight_decay"])
            blocks.ema_(s["exp_avg"], g, beta1)
            blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
            return
        g = self._decay(p, g, h)
        m = blocks.ema_(s["exp_avg"], g, beta1)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        update = ops.mul_(ops.div(m, bc1), lr)
        if r is not None:
            adaptive = ops.mul_(ops.reciprocal_(ops.add_scalar_(ops.sqrt(v), h["eps"])), bc2**0.5)
            ops.mul_(ops.mul_(update, adaptive), r)
        ops.add_(p, update, alpha=-1.0)
