"""SWATS: start with Adam, switch to SGD with momentum at a learning rate estimated from Adam's own steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core import blocks, kernels, ops, tiling, validation
from ..core.base import Optimizer, ParamsT, _get_scalar_dtype, new_step
from ..core.ops import TensorOrList

__all__ = ["SWATS"]

ADAM, SGD = 0.0, 1.0


def _dot(a: TensorOrList, b: TensorOrList) -> list[Tensor]:
    """Per-tensor inner products :math:`a^\\top b` as 0-d float64 tensors: the products in the tensors' dtype, summed
    in float64, as the compiled loop and the blocked path sum them. The criterion compares them at a tolerance of
    1e-9, far below float32's precision: a float32 sum (``torch.dot``) would let the paths disagree on the switch.
    DTensor shards (possibly uneven) are reduced across ranks by the sum."""
    pairs = list(zip(a, b, strict=True)) if isinstance(a, list) else [(a, b)]
    return [torch.sum(x * y, dtype=torch.float64) for x, y in pairs]


class SWATS(Optimizer):
    r"""SWATS: Switching from Adam to SGD (Keskar & Socher 2017, "Improving Generalization Performance by Switching
    from Adam to SGD", Algorithm 1). The source documents' "begin with Adam, end with SGDM".

    Adam phase, for each parameter tensor (a layer) with Adam's step :math:`p_k`:

    .. math::
        p_k &= -\gamma \frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\, \frac{m_k}{\sqrt{v_k}+\epsilon}, \qquad
            \theta_k = \theta_{k-1} + p_k \\
        \gamma_k &= \frac{p_k^\top p_k}{-p_k^\top g_k} \;(\text{if } p_k^\top g_k \ne 0), \qquad
            \lambda_k = \beta_2 \lambda_{k-1} + (1-\beta_2)\gamma_k \\
        &\text{switch when } k > 1,\ \left|\tfrac{\lambda_k}{1-\beta_2^k} - \gamma_k\right| < \epsilon
            \text{ and } \Lambda = \tfrac{\lambda_k}{1-\beta_2^k} > 0

    SGD phase: :math:`v_k = \beta_1 v_{k-1} + g_k` (:math:`v` starts at zero),
    :math:`\theta_k = \theta_{k-1} - (1-\beta_1)\,\Lambda\,v_k` (Nesterov: :math:`g_k + \beta_1 v_k` in place of
    :math:`v_k`).

    Granularity: the criterion is tested and the switch made **per parameter tensor** (per layer), as in the
    paper, which estimates :math:`\Lambda` per layer because the projection of Adam's step on the gradient differs
    strongly between layers. The third-party reference (Mrpatekful/swats) lets the first tensor of a group switch
    the whole group with its own rate; that is not reproduced. Other differences from that reference: ``p.grad`` is
    never modified, and the momentum buffer is not rescaled in place each SGD step.

    A learning-rate schedule keeps acting after the switch: the SGD rate is :math:`\Lambda\,\gamma_t/\gamma_s`,
    where :math:`\gamma_s` is the lr at the switch. The phase (``phase``: 0 Adam, 1 SGD), the switch step
    (``switch_step``), :math:`\Lambda` (``sgd_lr``), :math:`\gamma_s` (``switch_lr``) and :math:`\lambda_k`
    (``sgd_lr_ema``) are 0-d tensors in each parameter's state, hence in the ``state_dict``; the attributes
    :attr:`phase`, :attr:`switch_steps` and :attr:`sgd_lrs` summarise them.

    Args:
        lr: Adam's :math:`\gamma` (1e-3). betas: (0.9, 0.999). eps: :math:`\epsilon`, Adam's denominator term
            and, unless ``switch_tol`` is given, the switching tolerance (1e-9, as the reference).
        weight_decay: L2 penalty added to the gradient in both phases. nesterov: Nesterov momentum after the switch.
        switch_tol: tolerance of the switching criterion (default: ``eps``).
        maximize, foreach: as in :class:`optimlab.SGD`. fused, capturable, differentiable: only their defaults.

    The dot products decide a branch, so each Adam-phase step reads them on the host (one sync per tensor on an
    accelerator; correct for DTensor shards, whose dot product is reduced before it is read).
    """

    _scalar_state = ("step", "phase")
    _lazy_param_state = ("momentum_buffer",)  # created by the first SGD-phase step

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-9, weight_decay: float = 0.0, nesterov: bool = False, *,
                 switch_tol: float | None = None, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, nesterov=nesterov,
                                      switch_tol=switch_tol, maximize=maximize, foreach=foreach, fused=fused,
                                      capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if group["switch_tol"] is not None:
            validation.check_positive("switch_tol", group["switch_tol"])

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        scalar = _get_scalar_dtype()
        state["step"] = new_step()
        state["phase"] = torch.tensor(ADAM, dtype=scalar)
        state["sgd_lr_ema"] = torch.tensor(0.0, dtype=torch.float64)
        state["sgd_lr"] = torch.tensor(0.0, dtype=torch.float64)
        state["switch_lr"] = torch.tensor(0.0, dtype=torch.float64)
        state["switch_step"] = torch.tensor(0.0, dtype=scalar)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


    # The rule in three parts, so that the fast path can run the element-wise parts on cache-sized blocks.
    def _sgd_rates(self, s: dict[str, Any], h: dict[str, Any]) -> list[float]:
        """Per tensor: :math:`(1-\beta_1)\\Lambda\\gamma_t/\\gamma_s`, the SGD phase's step size."""
        beta1, lr = h["betas"][0], h["lr"]
        return [(1 - beta1) * float(lam) * (lr / float(lr_s) if float(lr_s) != 0 else 1.0)
                for lam, lr_s in zip(_listify(s["sgd_lr"]), _listify(s["switch_lr"]), strict=True)]

    def _sgd_direction(self, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> TensorOrList:
        """:math:`v_k = \beta_1 v_{k-1} + g_k` (Nesterov: :math:`g_k + \beta_1 v_k`)."""
        beta1 = h["betas"][0]
        if "momentum_buffer" not in s:
            buf = s["momentum_buffer"] = ops.clone(g)
        else:
            buf = ops.add_(ops.mul_(s["momentum_buffer"], beta1), g)
        return ops.add(g, buf, alpha=beta1) if h["nesterov"] else buf

    def _adam_step_(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> TensorOrList:
        """Advance the moments, take Adam's step :math:`p_k` and return it."""
        beta1, beta2 = h["betas"]
        m = blocks.ema_(s["exp_avg"], g, beta1)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        bc1, bc2 = blocks.bias_correction(beta1, h["step"]), blocks.bias_correction(beta2, h["step"])
        step = ops.div(m, ops.add_scalar_(ops.sqrt(v), h["eps"]))
        ops.mul_(step, -h["lr"] * bc2**0.5 / bc1)
        ops.add_(p, step)
        return step

    def _maybe_switch(self, pp: list[float], pg: list[float], s: dict[str, Any], h: dict[str, Any]) -> None:
        """The switching criterion, per tensor, from :math:`p_k^\top p_k` and :math:`p_k^\top g_k`."""
        beta2, k = h["betas"][1], h["step"]
        bc2 = blocks.bias_correction(beta2, k)
        tol = h["switch_tol"] if h["switch_tol"] is not None else h["eps"]
        for i, (pp_i, pg_i) in enumerate(zip(pp, pg, strict=True)):
            if pg_i == 0:
                continue
            gamma = pp_i / -pg_i
            ema = _listify(s["sgd_lr_ema"])[i]
            ema.mul_(beta2).add_((1 - beta2) * gamma)
            estimate = float(ema) / bc2
            if k > 1 and abs(estimate - gamma) < tol and estimate > 0:
                _listify(s["phase"])[i].fill_(SGD)
                _listify(s["sgd_lr"])[i].fill_(estimate)
                _listify(s["switch_lr"])[i].fill_(h["lr"])
                _listify(s["switch_step"])[i].fill_(k)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        g = blocks.l2_decay(g, p, h["weight_decay"])
        if h["phase"] == SGD:
            d = self._sgd_direction(g, s, h)
            for p_i, d_i, rate in zip(_listify(p), _listify(d), self._sgd_rates(s, h), strict=True):
                p_i.add_(d_i, alpha=-rate)
            return
        step = self._adam_step_(p, g, s, h)
        self._maybe_switch([float(x) for x in _dot(step, step)], [float(x) for x in _dot(step, g)], s, h)

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        """One compiled loop (:mod:`optimlab.core.kernels`) or, eagerly, cache-sized blocks: the element-wise parts,
        with the dot products summed over each tensor."""
        if h["phase"] == SGD and "momentum_buffer" not in s:
            return super()._run_lists(ps, gs, s, h, tensor_keys)
        if self._run_compiled(ps, gs, s, h):
            return
        if not tiling.blockable(ps):
            return super()._run_lists(ps, gs, s, h, tensor_keys)
        if h["phase"] == SGD:
            rates = -torch.tensor(self._sgd_rates(s, h), dtype=ps[0].dtype, device=ps[0].device)
            for (p_b, g_b, buf_b), owners in tiling.owned_block_plan([ps, gs, s["momentum_buffer"]]):
                self._sgd_phase_step(p_b, g_b, buf_b, list(rates[owners].unbind()), h)
            return
        pp = torch.zeros(len(ps), dtype=torch.float64, device=ps[0].device)
        pg = torch.zeros_like(pp)
        for (p_b, g_b, m_b, v_b), owners in tiling.owned_block_plan([ps, gs, s["exp_avg"], s["exp_avg_sq"]]):
            step, g_b = self._adam_phase_step(p_b, g_b, m_b, v_b, h)
            tiling.add_piece_dots_(pp, step, step, owners)
            tiling.add_piece_dots_(pg, step, g_b, owners)
        self._maybe_switch(pp.tolist(), pg.tolist(), s, h)

    # Each phase's element-wise part, on a block or a traced symbol (the compiled loop).
    def _sgd_phase_step(self, p: TensorOrList, g: TensorOrList, buf: TensorOrList, rate: Any,
                        h: dict[str, Any]) -> None:
        g = blocks.l2_decay(ops.neg(g) if h["maximize"] else g, p, h["weight_decay"])
        ops.add_(p, ops.mul(self._sgd_direction(g, {"momentum_buffer": buf}, h), rate))

    def _adam_phase_step(self, p: TensorOrList, g: TensorOrList, m: TensorOrList, v: TensorOrList,
                         h: dict[str, Any]) -> tuple[TensorOrList, TensorOrList]:
        """Adam's step :math:`p_k`, and the gradient it was taken with (decay included), for the dot products."""
        g = blocks.l2_decay(ops.neg(g) if h["maximize"] else g, p, h["weight_decay"])
        return self._adam_step_(p, g, {"exp_avg": m, "exp_avg_sq": v}, h), g

    def _run_compiled(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        if h["phase"] == SGD:
            lists = [ps, gs, s["momentum_buffer"]]
            if not kernels.usable(lists, type(self).__name__):
                return False
            rates = -torch.tensor(self._sgd_rates(s, h), dtype=torch.float64)

            def sgd(p: Any, g: Any, buf: Any, rate: Any) -> None:
                self._sgd_phase_step(p, g, buf, rate, h)

            return kernels.run(sgd, lists, per_tensor=[rates], readonly=(1,)) is not False
        lists = [ps, gs, s["exp_avg"], s["exp_avg_sq"]]
        if not kernels.usable(lists, type(self).__name__):
            return False

        def adam(p: Any, g: Any, m: Any, v: Any) -> list[Any]:
            step, g = self._adam_phase_step(p, g, m, v, h)
            return [ops.mul(step, step), ops.mul(step, g)]

        dots = kernels.run(adam, lists, readonly=(1,))
        if dots is False:
            return False
        self._maybe_switch(dots[0].tolist(), dots[1].tolist(), s, h)
        return True

    # -- readable summaries -----------------------------------------------------------------------------------
    def _all_states(self) -> list[dict[str, Any]]:
        return [self.state[p] for group in self.param_groups for p in group["params"] if self.state.get(p)]

    @property
    def phase(self) -> str:
        """``"adam"`` until a tensor switches, ``"sgd"`` once every tensor with state has, else ``"mixed"``."""
        phases = {float(st["phase"]) for st in self._all_states()}
        if phases <= {ADAM}:
            return "adam"
        return "sgd" if phases == {SGD} else "mixed"

    @property
    def switch_steps(self) -> list[int | None]:
        """Per parameter (in group order): the step at which it switched to SGD, or None."""
        return [int(st["switch_step"]) if float(st["phase"]) == SGD else None for st in self._all_states()]

    @property
    def sgd_lrs(self) -> list[float | None]:
        """Per parameter (in group order): the estimated SGD learning rate :math:`\\Lambda`, or None."""
        return [float(st["sgd_lr"]) if float(st["phase"]) == SGD else None for st in self._all_states()]


def _listify(x: TensorOrList) -> list[Tensor]:
    return list(x) if isinstance(x, list | tuple) else [x]
