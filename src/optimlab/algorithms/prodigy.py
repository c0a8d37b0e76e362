"""Prodigy: Adam whose step size is estimated on the fly (D-adaptation), so the lr stays 1."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..core import kernels, ops, tensors, tiling, validation
from ..core.base import Optimizer, ParamsT
from ..core.ops import TensorOrList

__all__ = ["Prodigy"]

#: Options of the D estimate, which is one for all groups: they must agree across groups.
_GLOBAL = ("betas", "beta3", "d0", "d_coef", "growth_rate", "use_bias_correction", "decouple", "fsdp_in_use")
#: The estimate's running values, kept in every group as the reference does (so they are in the state_dict).
_ESTIMATE = ("d", "d_max", "d_numerator", "d_denom", "d_hat", "k")


def _total(x: TensorOrList) -> Tensor:
    """The float64 sum of a tensor or of a list of tensors (a DTensor sum stays a DTensor: reduced when read)."""
    parts = [t.sum(dtype=torch.float64) for t in (x if isinstance(x, list | tuple) else [x])]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class Prodigy(Optimizer):
    r"""Prodigy (Mishchenko & Defazio, ICML 2024, Algorithm 5 "Adam with Prodigy step sizes").

    Faithful to the authors' package (konstmish/prodigy ``prodigyopt/prodigy.py``, ``prodigyopt`` 1.1.2). One
    estimate :math:`d_k` of the distance to the solution, over **all** parameters of all groups, scales Adam's step;
    with :math:`\gamma` the lr (kept at 1) and :math:`\hat d_k = \gamma d_k \rho_k`
    (:math:`\rho_k = \sqrt{1-\beta_2^{k+1}}/(1-\beta_1^{k+1})` with ``use_bias_correction``, else 1):

    .. math::
        m_{k+1} &= \beta_1 m_k + (1-\beta_1) d_k g_k, \qquad v_{k+1} = \beta_2 v_k + (1-\beta_2) d_k^2 g_k^2 \\
        r_{k+1} &= \beta_3 r_k + \frac{d_k}{d_0} \hat d_k \langle g_k, x_0 - x_k\rangle, \qquad
            s_{k+1} = \beta_3 s_k + \frac{d_k}{d_0} \hat d_k g_k \\
        d_{k+1} &= \min\!\left(\max\bigl(d_k, c\,\frac{r_{k+1}}{\|s_{k+1}\|_1}\bigr),\ \omega\, d_k\right)
            \quad (\text{the reference's } d_{\max} \text{ bookkeeping}) \\
        x_{k+1} &= x_k - \hat d_k \frac{m_{k+1}}{\sqrt{v_{k+1}} + d_{k+1}\epsilon}
            \quad (\text{decoupled decay: } x_k \mathrel{-}= \lambda \hat d_k x_k \text{ first})

    with :math:`\beta_3 = \sqrt{\beta_2}` unless given, :math:`c` = ``d_coef``, :math:`\omega` = ``growth_rate``;
    ``safeguard_warmup=True`` uses :math:`d_k` instead of :math:`\hat d_k` in :math:`s` (for lr warm-up).
    :math:`r` is the group value ``d_numerator``; :math:`x_0` is ``state["p0"]`` (not stored for a parameter that
    starts at zero, as the reference saves that memory); ``state["s"]`` is :math:`s`.

    **Two passes.** The sums :math:`\langle g, x_0 - x\rangle` and :math:`\|s\|_1` are global, so a step is two
    passes over memory: moments, :math:`s` and the sums (one compiled loop per bucket on CPU, returning its sums in
    float64), then the update with the new :math:`d`. Under FSDP2 the parameters are DTensor shards and the sums are
    reduced across ranks (a DTensor sum, read once per step); ``fsdp_in_use=True`` all-reduces them for plain-tensor
    shards (FSDP1, ZeRO) as the reference's flag does.

    Differences from the reference: ``p.grad`` is never modified (the reference adds coupled weight decay into it);
    a group with lr 0 is frozen (the reference still decays it and, with :math:`\beta_1 = 0`, steps it); the options
    of the estimate (``betas``, ``beta3``, ``d0``, ``d_coef``, ``growth_rate``, ``use_bias_correction``,
    ``decouple``, ``fsdp_in_use``) must agree across groups (the reference reads them from one group or another);
    ``slice_p`` (statistics on every p-th element, an approximation to save memory) is not offered; sums are taken
    in float64.

    Args:
        lr: :math:`\gamma` (1.0; every group the same, or 0). betas: :math:`(\beta_1, \beta_2)` ((0.9, 0.999)).
        beta3: (None: :math:`\sqrt{\beta_2}`). eps: :math:`\epsilon` (1e-8). weight_decay: :math:`\lambda` (0).
        decouple: AdamW-style decay (True) or L2 into the gradient. use_bias_correction: (False).
        safeguard_warmup: (False). d0: :math:`d_0` (1e-6). d_coef: :math:`c`, the knob to tune (1.0).
        growth_rate: :math:`\omega` (inf). fsdp_in_use: see above.
        maximize, foreach: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).
    """

    _elementwise = True
    _scalar_state = ()
    _optional_state = ("p0",)  # kept only for a parameter that did not start at zero

    def __init__(self, params: ParamsT, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, weight_decay: float = 0.0, decouple: bool = True,
                 use_bias_correction: bool = False, safeguard_warmup: bool = False, d0: float = 1e-6,
                 d_coef: float = 1.0, growth_rate: float = float("inf"), fsdp_in_use: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay,
                                      decouple=decouple, use_bias_correction=use_bias_correction,
                                      safeguard_warmup=safeguard_warmup, d0=d0, d_coef=d_coef,
                                      growth_rate=growth_rate, fsdp_in_use=fsdp_in_use, d=d0, d_max=d0,
                                      d_numerator=0.0, d_denom=0.0, d_hat=d0, k=0, maximize=maximize,
                                      foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if group["beta3"] is not None:
            validation.check_beta("beta3", group["beta3"])
        validation.check_positive("d0", group["d0"])
        validation.check_positive("d_coef", group["d_coef"])
        validation.check_in_range("growth_rate", group["growth_rate"], 1.0, math.inf, hi_open=False)
        for flag in ("decouple", "use_bias_correction", "safeguard_warmup", "fsdp_in_use"):
            if not isinstance(group[flag], bool):
                validation.fail(flag, group[flag], "a bool", TypeError)
        if getattr(self, "param_groups", None) and group is not self.param_groups[0]:  # defaults: none yet
            first = self.param_groups[0]
            for key in _GLOBAL:
                if group[key] != first[key]:
                    validation.fail(key, group[key],
                                    f"{first[key]!r}, the first group's: Prodigy's D estimate is global")
            for key in _ESTIMATE:  # a group added later joins the running estimate
                group[key] = first[key]

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if p.dtype == torch.float16:
            raise TypeError("Prodigy does not support float16 parameters: its moments are scaled by d^2 (d0^2 = "
                            "1e-12 at the start), which underflows in float16; use float32 or bfloat16 parameters "
                            "(or float32 master weights)")
        state["s"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if not tensors.is_plain([p]) or p.is_meta or bool(p.detach().any()):  # meta: load_state_dict's shapes
            state["p0"] = p.detach().clone(memory_format=torch.preserve_format)
        if group["betas"][0] > 0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # -- the two passes, element-wise ----------------------------------------------------------------------------
    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        beta1, beta2 = h["betas"]
        coupled = not h["decouple"] and h["weight_decay"] != 0
        if h["pass"] == 1:
            d = h["d"]
            g = ops.add(g, p, alpha=h["weight_decay"]) if coupled else g
            diff = ops.add(s["p0"], p, alpha=-1.0) if "p0" in s else ops.neg(p)
            if beta1 > 0:
                ops.add_(ops.mul_(s["exp_avg"], beta1), g, alpha=d * (1 - beta1))
            ops.addcmul_(ops.mul_(s["exp_avg_sq"], beta2), g, g, value=d * d * (1 - beta2))
            acc = ops.add_(ops.mul_(s["s"], h["beta3"]), g, alpha=h["s_coef"])
            h["_sums"] = [ops.mul(g, diff), ops.abs(acc)]
            return
        dlr, d_new = h["dlr"], h["d_new"]
        denom = ops.add_scalar_(ops.sqrt(s["exp_avg_sq"]), d_new * h["eps"])
        if h["decouple"] and h["weight_decay"] != 0:
            ops.add_(p, p, alpha=-h["weight_decay"] * dlr)
        if beta1 > 0:
            ops.addcdiv_(p, s["exp_avg"], denom, value=-dlr)
        else:  # the (decayed) gradient itself; the parameters have not moved since the first pass
            g = ops.add(g, p, alpha=h["weight_decay"]) if coupled else g
            ops.addcdiv_(p, g, denom, value=-dlr * d_new)

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        lists = [ps, gs, *(s[k] for k in tensor_keys)]
        if kernels.usable(lists):
            def rule(p: Any, g: Any, *state: Any) -> list[Any]:
                hh = dict(h)
                self._apply(p, g, dict(zip(tensor_keys, state, strict=True)), hh)
                return hh.get("_sums", [])

            out = kernels.run(rule, lists, readonly=(1,))
            if out is not False:
                if out is not None:
                    h["_totals"].append(out.sum(dim=1))
                return
        plan = tiling.block_plan(lists) if tiling.blockable(ps) else [lists]
        for block in plan:
            self._apply(block[0], block[1], dict(zip(tensor_keys, block[2:], strict=True)), h)
            self._collect(h)

    @staticmethod
    def _collect(h: dict[str, Any]) -> None:
        """Reduce the element-wise terms an eager first pass left in ``h["_sums"]`` into ``h["_totals"]``."""
        sums = h.pop("_sums", None)
        if sums is not None:
            h["_totals"].append([_total(x) for x in sums])

    # -- the step ----------------------------------------------------------------------------------------------
    def _buckets(self, group: dict[str, Any]) -> list[list[tuple[Tensor, Tensor, dict[str, Any]]]]:
        use_lists = group["foreach"] is not False
        buckets: dict[Any, list[tuple[Tensor, Tensor, dict[str, Any]]]] = defaultdict(list)
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Prodigy does not support sparse gradients; use dense gradients")
            state = self.state[p]
            if not state:
                self._init_state(p, state, group)
            key = (p.device, p.dtype, torch.is_complex(p), tuple(sorted(state)))
            buckets[key if use_lists else (i, *key)].append((p, p.grad, state))
        return list(buckets.values())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: the first pass over every group, the new D estimate, then the update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        first = groups[0]
        hp = [self._hyperparameters(group) for group in groups]
        lr = max(h["lr"] for h in hp)
        for h in hp:
            if h["lr"] not in (lr, 0.0):
                raise RuntimeError(f"Prodigy: every param group must have the same lr (or 0), got {h['lr']} and {lr}")
        beta1, beta2 = first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        k, d, d_max = first["k"], first["d"], first["d_max"]
        rho = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1)) if first["use_bias_correction"] else 1.0
        dlr = d * lr * rho
        work = [(group, h, self._buckets(group)) for group, h in zip(groups, hp, strict=True) if h["lr"] > 0]
        # first pass: moments, s, and the two sums
        numerator: Any = 0.0
        denominator: Any = 0.0
        for _group, h, buckets in work:
            h.update({"pass": 1, "d": d, "beta3": beta3, "dlr": dlr, "_totals": []},
                     s_coef=(d / h["d0"]) * (d if h["safeguard_warmup"] else dlr))
            for bucket in buckets:
                self._run_bucket(bucket, h, as_list=h["foreach"] is not False)
                self._collect(h)
            for dot, l1 in h.pop("_totals"):
                numerator = numerator + (d / h["d0"]) * dlr * dot
                denominator = denominator + l1
        numerator, denominator = self._reduce(numerator, denominator, first["fsdp_in_use"])
        if denominator == 0:  # no gradient information this step (all zero): the reference returns here too
            return loss
        d_numerator = first["d_numerator"] * beta3 + numerator
        d_hat = first["d_coef"] * d_numerator / denominator
        if d == first["d0"]:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * first["growth_rate"])
        for group in groups:
            group.update(d_numerator=d_numerator, d_denom=denominator, d=d, d_max=d_max, d_hat=d_hat, k=k + 1)
        # second pass: the step with the new estimate
        for _group, h, buckets in work:
            h.update({"pass": 2, "d": d, "d_new": d, "dlr": dlr})
            for bucket in buckets:
                self._run_bucket(bucket, h, as_list=h["foreach"] is not False)
        return loss

    @staticmethod
    def _reduce(numerator: Any, denominator: Any, fsdp_in_use: bool) -> tuple[float, float]:
        """The global sums as Python floats: a DTensor sum is reduced across ranks when read; with
        ``fsdp_in_use`` plain-tensor sums are all-reduced (one call for both)."""
        values = [float(x) if isinstance(x, Tensor) else x for x in (numerator, denominator)]
        if fsdp_in_use and dist.is_available() and dist.is_initialized():
            t = torch.tensor(values, dtype=torch.float64)
            if dist.get_backend() == "nccl":
                t = t.cuda()
            dist.all_reduce(t)
            values = t.tolist()
        return values[0], values[1]
