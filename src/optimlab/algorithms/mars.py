"""MARS: variance reduction (a STORM-style gradient correction) under a preconditioned optimizer; MARS-AdamW."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..core import kernels, ops, tiling, validation
from ..core.base import Optimizer, ParamsT, new_step
from ..core.blocks import schedule_multiplier
from ..core.ops import TensorOrList

__all__ = ["MARS"]


def _stack(x: TensorOrList) -> Tensor:
    return torch.stack(x) if isinstance(x, list) else x


def _unstack(x: Tensor, like: TensorOrList) -> TensorOrList:
    return list(x.unbind()) if isinstance(like, list) else x


class MARS(Optimizer):
    r"""MARS, "Make vAriance Reduction Shine" (Yuan et al. 2024, Algorithm 2, approximate form), in its
    MARS-AdamW instance.

    Faithful to the authors' code (AGI-Arena/MARS ``MARS/optimizers/mars.py``, ``is_approx=True``). For a 2-D
    parameter (a matrix):

    .. math::
        c_t &= g_t + \gamma\,\frac{\beta_1}{1-\beta_1}\,(g_t - g_{t-1}), \qquad
            c_t \leftarrow c_t / \max(1, \|c_t\|_2) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) c_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) c_t^2 \\
        \theta_t &= \theta_{t-1} - \eta\left(\frac{m_t}{(\sqrt{v_t/(1-\beta_2^t)} + \epsilon)(1-\beta_1^t)}
            + \lambda\theta_{t-1}\right)

    where :math:`g_{t-1}` is the previous step's gradient (``last_grad``; zero on the first step), the exact MARS
    needing a second gradient at the new point each step, which this approximate form avoids (the authors' default;
    the exact form is not offered). The norm :math:`\|c_t\|_2` is over the whole tensor: two passes over memory
    (the norms, then the update), each one compiled loop on CPU; under FSDP2 the norm of a DTensor shard is reduced
    across ranks. ``mars_type="mars-lion"`` replaces the Adam step by :math:`\operatorname{sign}(m_t)` (no
    :math:`v`).

    **Other parameters** (1-D biases and gains, 0-d scalars, and conv filters: every parameter that is not 2-D, as
    the reference decides by ``len(grad.shape) == 2``) take plain AdamW on :math:`g_t` with ``betas_1d``, the lr
    :math:`\eta\,\text{lr\_1d}/\eta_0` (:math:`\eta_0` the group's initial lr, so a schedule acts on both; the
    reference's ``lr_1d_factor``) and ``weight_decay_1d``; ``optimize_1d=True`` gives them MARS too. The
    reference's third type, MARS-Shampoo, orthogonalises with Newton-Schulz (a matrix method, as Muon) and is not
    offered here.

    Args:
        lr: :math:`\eta` (3e-3). betas: :math:`(\beta_1, \beta_2)` ((0.95, 0.99)). eps: (1e-8). weight_decay:
            :math:`\lambda` (0). amsgrad: keep the max of :math:`v` (the reference's option). gamma: :math:`\gamma`,
            the scale of the correction (0.025). mars_type: ``"mars-adamw"`` or ``"mars-lion"``.
        optimize_1d: MARS for every parameter (False). lr_1d: (3e-3). betas_1d: ((0.9, 0.95)). weight_decay_1d:
            (0.1). maximize, foreach: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    Reference: Yuan, Liu, Wu, Zhou, Gu, Sun & Wang, "MARS: Unleashing the Power of Variance Reduction for Training
    Large Models", ICML 2025 (arXiv:2411.10438).
    """

    _elementwise = True  # the AdamW tensors; the MARS tensors take two passes (see _run_lists)

    def __init__(self, params: ParamsT, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, gamma: float = 0.025, *,
                 mars_type: str = "mars-adamw", optimize_1d: bool = False, lr_1d: float = 3e-3,
                 betas_1d: tuple[float, float] = (0.9, 0.95), weight_decay_1d: float = 0.1,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      gamma=gamma, mars_type=mars_type, optimize_1d=optimize_1d, lr_1d=lr_1d,
                                      betas_1d=betas_1d, weight_decay_1d=weight_decay_1d, maximize=maximize,
                                      foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_nonneg("gamma", group["gamma"])
        validation.check_choice("mars_type", group["mars_type"], {"mars-adamw", "mars-lion"})
        validation.check_lr(group["lr_1d"], "lr_1d")
        validation.check_betas(group["betas_1d"], "betas_1d")
        validation.check_nonneg("weight_decay_1d", group["weight_decay_1d"])
        for flag in ("amsgrad", "optimize_1d"):
            if not isinstance(group[flag], bool):
                validation.fail(flag, group[flag], "a bool", TypeError)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        mars = p.dim() == 2 or group["optimize_1d"]
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if mars:
            state["last_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if not mars or group["mars_type"] == "mars-adamw":
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # -- the rule ---------------------------------------------------------------------------------------------
    @staticmethod
    def _correction(g: TensorOrList, last_grad: TensorOrList, h: dict[str, Any]) -> TensorOrList:
        """:math:`c_t` before clipping (a new tensor)."""
        beta1 = h["betas"][0]
        return ops.add_(ops.mul(ops.add(g, last_grad, alpha=-1.0), h["gamma"] * (beta1 / (1.0 - beta1))), g)

    @staticmethod
    def _adam_direction(m: TensorOrList, v: TensorOrList, s: dict[str, Any], betas: tuple[float, float],
                        h: dict[str, Any]) -> TensorOrList:
        """:math:`m_t / ((\\sqrt{\\hat v_t} + \\epsilon)(1-\\beta_1^t))` as the reference computes it."""
        if h["amsgrad"]:
            v = ops.maximum_(s["max_exp_avg_sq"], v)
        t = h["step"]
        bc1, bc2 = 1.0 - betas[0] ** t, 1.0 - betas[1] ** t
        denom = ops.mul_(ops.add_scalar_(ops.mul_(ops.sqrt(v), 1 / math.sqrt(bc2)), h["eps"]), bc1)
        return ops.div(m, denom)

    def _mars_step(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any],
                   scale: Any) -> None:
        """The element-wise part for a MARS tensor, with the finished per-tensor :math:`\\max(1, \\|c_t\\|)`."""
        beta1, beta2 = h["betas"]
        c = ops.div_(self._correction(g, s["last_grad"], h), scale)
        m = ops.add_(ops.mul_(s["exp_avg"], beta1), c, alpha=1.0 - beta1)
        if h["mars_type"] == "mars-adamw":
            v = ops.addcmul_(ops.mul_(s["exp_avg_sq"], beta2), c, c, value=1.0 - beta2)
            u = self._adam_direction(m, v, s, (beta1, beta2), h)
        else:
            u = ops.sign(m)
        ops.add_(u, p, alpha=h["weight_decay"])
        ops.add_(p, u, alpha=-h["lr"])
        ops.copy_(s["last_grad"], g)

    def _adamw_step(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        """A tensor that is not 2-D (unless ``optimize_1d``): AdamW with ``betas_1d``, ``lr_1d``,
        ``weight_decay_1d``."""
        beta1, beta2 = h["betas_1d"]
        m = ops.add_(ops.mul_(s["exp_avg"], beta1), g, alpha=1.0 - beta1)
        v = ops.addcmul_(ops.mul_(s["exp_avg_sq"], beta2), g, g, value=1.0 - beta2)
        u = self._adam_direction(m, v, s, (beta1, beta2), h)
        ops.add_(u, p, alpha=h["weight_decay_1d"])
        ops.add_(p, u, alpha=-h["lr_1d"] * schedule_multiplier(h))  # lr_1d follows the group's schedule

    def _needs_base_lr(self, group: dict[str, Any]) -> bool:
        return not group["optimize_1d"]  # lr_1d is scaled by the schedule multiplier lr_t / lr_0

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        if "last_grad" not in s:
            self._adamw_step(p, g, s, h)
            return
        scale = h.get("_scale")
        if scale is None:  # eager: the norms of c_t over whole tensors (reduced across ranks for DTensor shards)
            c = self._correction(g, s["last_grad"], h)
            scale = _unstack(torch.clamp(_stack(ops.norms(c)), min=1.0), p)
        self._mars_step(p, g, s, h, scale)

    # -- the fast path: two passes (the norms of c_t, then the update) ------------------------------------------
    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        if "last_grad" not in s:  # AdamW tensors: element-wise (compiled loop, or blocked eager)
            return super()._run_lists(ps, gs, s, h, tensor_keys)
        lists = [ps, gs, *(s[k] for k in tensor_keys)]
        lg = s["last_grad"]
        if kernels.usable(lists):
            def norms(g: Any, last: Any) -> list[Any]:
                c = self._correction(ops.neg(g) if h["maximize"] else g, last, h)
                return [ops.mul(c, c)]

            sums = kernels.run(norms, [gs, lg], readonly=(0, 1))
            if sums is not False:
                scale = sums[0].sqrt().clamp(min=1.0)

                def apply(p: Any, g: Any, *rest: Any) -> None:
                    self._apply(p, g, dict(zip(tensor_keys, rest[:-1], strict=True)), {**h, "_scale": rest[-1]})

                if kernels.run(apply, lists, per_tensor=[scale], readonly=(1,)) is False:  # norms taken: finish
                    self._apply(ps, gs, s, {**h, "_scale": list(scale.to(ps[0].dtype).unbind())})
                return
        if not tiling.blockable(ps):
            self._apply(ps, gs, s, h)
            return
        plan = tiling.owned_block_plan(lists)
        c2 = torch.zeros(len(ps), dtype=torch.float64, device=ps[0].device)
        for (_, g_b, *st_b), owners in plan:
            g_b = ops.neg(g_b) if h["maximize"] else g_b
            tiling.add_piece_sq_norms_(c2, self._correction(g_b, st_b[tensor_keys.index("last_grad")], h), owners)
        scale = c2.sqrt().clamp(min=1.0).to(ps[0].dtype)
        for (p_b, g_b, *st_b), owners in plan:
            self._apply(p_b, g_b, dict(zip(tensor_keys, st_b, strict=True)),
                        {**h, "_scale": list(scale[owners].unbind())})
