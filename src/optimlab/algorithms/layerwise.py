"""Layer-wise adaptation for large batches: LARS (SGDM + trust ratio) and LAMB (Adam + trust ratio)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core import blocks, kernels, ops, tiling, validation
from ..core.base import Optimizer, ParamsT, new_step
from ..core.ops import TensorOrList

__all__ = ["LAMB", "LARS"]


def _stack(x: TensorOrList) -> Tensor:
    return torch.stack(x) if isinstance(x, list) else x


def _unstack(x: Tensor, like: TensorOrList) -> TensorOrList:
    return list(x.unbind()) if isinstance(like, list) else x


class LARS(Optimizer):
    r"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, Algorithm 1). LARS = SGDM + trust ratio.

    For each parameter tensor (a "layer") :math:`w`:

    .. math::
        \eta^\ell &= \eta\,\frac{\|w\|}{\|\nabla L(w)\| + \beta\|w\| + \epsilon}
            \quad (1 \text{ where } \|w\| = 0 \text{ or } \|\nabla L(w)\| = 0) \\
        v &\leftarrow m\, v + \gamma_t\, \eta^\ell\, (\nabla L(w) + \beta w), \qquad w \leftarrow w - v
            \quad (\text{Nesterov: } w \leftarrow w - (m v + \gamma_t \eta^\ell (\nabla L(w) + \beta w)))

    :math:`\eta` is ``trust_coefficient``, :math:`\beta` ``weight_decay``, :math:`m` ``momentum``; the lr sits
    inside the momentum buffer as in the paper and in the TF reference implementations (tensorflow/addons
    ``lars.py``, google-research/simclr ``lars_optimizer.py``). Weight decay is inside the scaled update.
    ``trust_denominator="sum"`` (default) is the paper's :math:`\|\nabla L\| + \beta\|w\|`;
    ``"norm"`` is SimCLR's :math:`\|\nabla L + \beta w\|`. A group with ``layer_adaptation=False`` (biases and
    normalisation weights, as in SimCLR; see :func:`optimlab.create_optimizer`) takes plain momentum steps.

    Norms stay tensors (no ``.item()``), so a norm reduced over DTensor shards is the full layer's norm.

    Zero-norm guard: the ratio is 1 where :math:`\|w\| = 0` or :math:`\|\nabla L(w)\| = 0`, the norm of the *raw*
    gradient, with either denominator, as TF Addons does. SimCLR's guard differs: it tests the norm of the gradient
    *with* weight decay, :math:`\|\nabla L + \beta w\|` (its denominator, without :math:`\epsilon`). So with
    ``trust_denominator="norm"``, :math:`\beta > 0` and a zero raw gradient, SimCLR takes the ratio
    :math:`\eta/\beta` (the decay alone, adapted) where this class takes 1; where :math:`\nabla L = -\beta w`
    exactly SimCLR takes 1 and this class :math:`\eta\|w\|/\epsilon` times a zero update. Elsewhere they agree.

    The lr sits inside the momentum buffer (as in the paper), so ``lr=0`` from the start freezes a group, while a
    group whose lr is set to 0 mid-run still moves by its decaying momentum (set ``momentum`` to 0 as well).

    Args:
        lr: :math:`\gamma` (required). momentum: 0.9. weight_decay: 0. trust_coefficient: 1e-3. eps: 1e-8.
        nesterov: False. trust_denominator: ``"sum"`` or ``"norm"``. layer_adaptation: True.
        maximize, foreach: as in :class:`optimlab.SGD`. fused, capturable, differentiable: only their defaults.
    """

    def __init__(self, params: ParamsT, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, eps: float = 1e-8, nesterov: bool = False, *,
                 trust_denominator: str = "sum", layer_adaptation: bool = True, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov,
                                      trust_denominator=trust_denominator, layer_adaptation=layer_adaptation,
                                      maximize=maximize, foreach=foreach, fused=fused, capturable=capturable,
                                      differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_in_range("momentum", group["momentum"], 0.0, 1.0)
        validation.check_positive("trust_coefficient", group["trust_coefficient"])
        validation.check_choice("trust_denominator", group["trust_denominator"], {"sum", "norm"})
        if group["nesterov"] and group["momentum"] <= 0:
            validation.fail("nesterov", True, "momentum > 0 (Nesterov momentum)")

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _local_lr_from_norms(self, w_norm: Tensor, g_norm: Tensor, u_norm: Tensor | None,
                             h: dict[str, Any]) -> Tensor:
        r""":math:`\gamma_t \eta^\ell` from the layers' norms (0-d or 1-d tensors; no ``.item()``)."""
        if h["trust_denominator"] == "sum":
            denom = g_norm + h["weight_decay"] * w_norm + h["eps"]
        else:
            denom = u_norm + h["eps"]
        ratio = torch.where((w_norm > 0) & (g_norm > 0), h["trust_coefficient"] * w_norm / denom,
                            torch.ones_like(w_norm))
        return ratio * h["lr"]

    def _local_lr(self, p: TensorOrList, g: TensorOrList, u: TensorOrList, h: dict[str, Any]) -> TensorOrList:
        r""":math:`\gamma_t \eta^\ell` per tensor, as 0-d tensors."""
        u_norm = _stack(ops.norms(u)) if h["trust_denominator"] == "norm" else None
        return _unstack(self._local_lr_from_norms(_stack(ops.norms(p)), _stack(ops.norms(g)), u_norm, h), p)

    def _apply_scaled(self, p: TensorOrList, u: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        """Momentum on the scaled update ``u`` (lr and trust ratio already in it), then the step."""
        if h["momentum"] > 0:
            buf = ops.add_(ops.mul_(s["momentum_buffer"], h["momentum"]), u)
            u = ops.add_(ops.mul(buf, h["momentum"]), u) if h["nesterov"] else buf
        ops.add_(p, u, alpha=-1.0)

    def _scaled_step(self, p: TensorOrList, g: TensorOrList, scale: Any, s: dict[str, Any],
                     h: dict[str, Any]) -> None:
        r"""The second pass, on a block, a traced symbol or whole lists: the raw gradient, with weight decay,
        times the per-tensor :math:`\gamma_t \eta^\ell` (``scale``), into momentum and the step."""
        g = ops.neg(g) if h["maximize"] else g
        self._apply_scaled(p, ops.mul(blocks.l2_decay(g, p, h["weight_decay"]), scale), s, h)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        u = blocks.l2_decay(g, p, h["weight_decay"])
        if h["layer_adaptation"]:
            u = ops.mul(u, self._local_lr(p, g, u, h))
        else:
            u = ops.mul(u, h["lr"])
        self._apply_scaled(p, u, s, h)

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        """Two passes: the layers' norms, then the element-wise update with the finished ratios; each pass one
        compiled loop (:mod:`optimlab.core.kernels`), else eager on cache-sized blocks."""
        keys = [k for k in tensor_keys if k in s]
        if self._run_compiled(ps, gs, s, h, keys):
            return
        if not tiling.blockable(ps):
            return super()._run_lists(ps, gs, s, h, tensor_keys)
        n = len(ps)
        plan = tiling.owned_block_plan([ps, gs, *(s[k] for k in keys)])
        local: list[Tensor] | None = None
        if h["layer_adaptation"]:
            acc = _acc_dtype(ps[0])
            w2, g2, u2 = (torch.zeros(n, dtype=acc, device=ps[0].device) for _ in range(3))
            for (p_b, g_b, *_), owners in plan:
                g_b = ops.neg(g_b) if h["maximize"] else g_b
                tiling.add_piece_sq_norms_(w2, p_b, owners)
                tiling.add_piece_sq_norms_(g2, g_b, owners)
                if h["trust_denominator"] == "norm":
                    tiling.add_piece_sq_norms_(u2, blocks.l2_decay(g_b, p_b, h["weight_decay"]), owners)
            local = self._local_lr_from_norms(w2.sqrt(), g2.sqrt(), u2.sqrt(), h).to(ps[0].dtype)
        for (p_b, g_b, *st_b), owners in plan:
            scale = list(local[owners].unbind()) if local is not None else h["lr"]
            self._scaled_step(p_b, g_b, scale, dict(zip(keys, st_b, strict=True)), h)

    def _run_compiled(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                      keys: list[str]) -> bool:
        lists = [ps, gs, *(s[k] for k in keys)]
        if not kernels.usable(lists, type(self).__name__):
            return False
        local = None
        if h["layer_adaptation"]:
            def norms(p: Any, g: Any) -> list[Any]:
                g = ops.neg(g) if h["maximize"] else g
                sq = [ops.mul(p, p), ops.mul(g, g)]
                if h["trust_denominator"] == "norm":
                    u = blocks.l2_decay(g, p, h["weight_decay"])
                    sq.append(ops.mul(u, u))
                return sq

            sums = kernels.run(norms, [ps, gs], readonly=(0, 1))
            if sums is False:
                return False
            sums = sums.sqrt()
            local = self._local_lr_from_norms(sums[0], sums[1], sums[2] if len(sums) > 2 else None, h)

        def apply(p: Any, g: Any, *rest: Any) -> None:
            scale = rest[-1] if local is not None else h["lr"]
            self._scaled_step(p, g, scale, dict(zip(keys, rest, strict=False)), h)

        if kernels.run(apply, lists, per_tensor=[local] if local is not None else (), readonly=(1,)) is False:
            if local is None:
                return False
            scale = list(local.to(ps[0].dtype).unbind())  # the norms are taken: finish this step eagerly
            self._scaled_step(ps, gs, scale, {k: s[k] for k in keys}, h)
        return True


class LAMB(Optimizer):
    r"""LAMB: layer-wise adaptive moments (You et al., ICLR 2020, Algorithm 2). LAMB = Adam + trust ratio.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        r_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda w_{t-1} \\
        w_t &= w_{t-1} - \gamma_t\, \frac{\phi(\|w_{t-1}\|)}{\|r_t\|}\, r_t
            \quad (\text{ratio } 1 \text{ where either norm is } 0)

    with :math:`\phi(z) = z` (or :math:`\min(z, \text{max\_weight\_norm})`). Weight decay is inside the update whose
    norm forms the trust ratio. Where the references disagree: the final paper, tensorflow/addons ``lamb.py`` and
    optax bias-correct :math:`m, v` (``bias_correction=True``, default); the v3 paper's code and cybertronai
    ``pytorch-lamb`` do not (``bias_correction=False``). apex applies the ratio only when weight decay is non-zero;
    here it always applies unless the group sets ``layer_adaptation=False``. Without the zero-norm guard
    (cybertronai) zero-initialised weights never move. Norms stay tensors (no ``.item()``): DTensor-safe.

    Args:
        lr: :math:`\gamma` (1e-3). betas: (0.9, 0.999). eps: :math:`\epsilon` (1e-6). weight_decay: :math:`\lambda`.
        bias_correction: see above. max_weight_norm: clip :math:`\|w\|` in :math:`\phi` (None: identity;
        cybertronai uses 10). layer_adaptation: apply the trust ratio. maximize, foreach: as :class:`optimlab.SGD`.
        fused, capturable, differentiable: only their defaults.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, bias_correction: bool = True, *,
                 max_weight_norm: float | None = None, layer_adaptation: bool = True, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction, max_weight_norm=max_weight_norm,
                                      layer_adaptation=layer_adaptation, maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if group["max_weight_norm"] is not None:
            validation.check_positive("max_weight_norm", group["max_weight_norm"])

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _direction(self, p: TensorOrList, g: TensorOrList | None, s: dict[str, Any],
                   h: dict[str, Any]) -> TensorOrList:
        """:math:`r_t`; with a gradient the moments are advanced first, without one (the second blocked pass)
        :math:`r_t` is recomputed from the already advanced moments."""
        beta1, beta2 = h["betas"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        if g is not None:
            m, v = blocks.ema_(m, g, beta1), blocks.ema_sq_(v, g, beta2)
        bc1, bc2 = ((blocks.bias_correction(beta1, h["step"]), blocks.bias_correction(beta2, h["step"]))
                    if h["bias_correction"] else (1.0, 1.0))
        r = ops.div_(ops.div(m, blocks.adam_denominator(v, bc2, h["eps"])), bc1)
        if h["weight_decay"] != 0:
            ops.add_(r, p, alpha=h["weight_decay"])
        return r

    def _apply_ratio(self, p: TensorOrList, m: TensorOrList, v: TensorOrList, ratio: Any,
                     h: dict[str, Any]) -> None:
        """The second pass, on a block, a traced symbol or whole lists: :math:`r_t` recomputed from the advanced
        moments, times the finished per-tensor trust ratio, into the step."""
        r = self._direction(p, None, {"exp_avg": m, "exp_avg_sq": v}, h)
        ops.add_(p, ops.mul_(r, ratio), alpha=-h["lr"])

    def _phi(self, w_norm: Tensor, h: dict[str, Any]) -> Tensor:
        return w_norm if h["max_weight_norm"] is None else w_norm.clamp(max=h["max_weight_norm"])

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        r = self._direction(p, g, s, h)
        if h["layer_adaptation"]:
            ops.mul_(r, _unstack(blocks.trust_ratio(self._phi(_stack(ops.norms(p)), h), _stack(ops.norms(r))), p))
        ops.add_(p, r, alpha=-h["lr"])

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        """Blocked in two passes: advance the moments and sum the layers' norms of :math:`w` and :math:`r`, then
        recompute :math:`r` block by block and apply it with the finished trust ratios. Reading the moments twice
        (40 bytes per fp32 parameter) beats keeping a model-sized :math:`r` between the passes. Each pass is one
        compiled loop where :mod:`optimlab.core.kernels` can run it."""
        if self._run_compiled(ps, gs, s, h):
            return
        if not tiling.blockable(ps):
            return super()._run_lists(ps, gs, s, h, tensor_keys)
        n = len(ps)
        plan = tiling.owned_block_plan([ps, gs, s["exp_avg"], s["exp_avg_sq"]])
        acc = _acc_dtype(ps[0])
        w2, r2 = torch.zeros(n, dtype=acc, device=ps[0].device), torch.zeros(n, dtype=acc, device=ps[0].device)
        adapt = h["layer_adaptation"]
        for (p_b, g_b, m_b, v_b), owners in plan:
            g_b = ops.neg(g_b) if h["maximize"] else g_b
            r_b = self._direction(p_b, g_b, {"exp_avg": m_b, "exp_avg_sq": v_b}, h)
            if not adapt:
                ops.add_(p_b, r_b, alpha=-h["lr"])
                continue
            tiling.add_piece_sq_norms_(w2, p_b, owners)
            tiling.add_piece_sq_norms_(r2, r_b, owners)
        if not adapt:
            return
        ratio = blocks.trust_ratio(self._phi(w2.sqrt(), h), r2.sqrt()).to(ps[0].dtype)
        for (p_b, _, m_b, v_b), owners in plan:
            self._apply_ratio(p_b, m_b, v_b, list(ratio[owners].unbind()), h)

    def _run_compiled(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        if not kernels.usable([ps, gs, s["exp_avg"], s["exp_avg_sq"]], type(self).__name__):
            return False
        adapt = h["layer_adaptation"]

        def moments(p: Any, g: Any, m: Any, v: Any) -> list[Any] | None:
            r = self._direction(p, ops.neg(g) if h["maximize"] else g, {"exp_avg": m, "exp_avg_sq": v}, h)
            if not adapt:
                ops.add_(p, r, alpha=-h["lr"])
                return None
            return [ops.mul(p, p), ops.mul(r, r)]

        sums = kernels.run(moments, [ps, gs, s["exp_avg"], s["exp_avg_sq"]], readonly=(1,))
        if sums is False:
            return False
        if not adapt:
            return True
        ratio = blocks.trust_ratio(self._phi(sums[0].sqrt(), h), sums[1].sqrt())

        lists = [ps, s["exp_avg"], s["exp_avg_sq"]]
        def apply(p: Any, m: Any, v: Any, ratio: Any) -> None:
            self._apply_ratio(p, m, v, ratio, h)

        if kernels.run(apply, lists, per_tensor=[ratio], readonly=(1, 2)) is False:  # moments advanced: finish
            self._apply_ratio(ps, lists[1], lists[2], list(ratio.to(ps[0].dtype).unbind()), h)
        return True


def _acc_dtype(t: Tensor) -> torch.dtype:
    """Norms of low-precision tensors are summed in float32."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
