r"""Per-layer trust ratios of LAMB and LARS, recomputed after their step without touching the optimizer.

The optimizers compute the ratios inside their (compiled) step and keep nothing; recomputing them here from the
pre-step weights, the gradient and the post-step state leaves their trajectory and their code alone:

* LAMB (You et al., ICLR 2020, Algorithm 2): :math:`\phi(\|w_{t-1}\|) / \|r_t\|` with
  :math:`r_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon) + \lambda w_{t-1}`, :math:`m_t, v_t` read from the state
  after the step (which already holds them);
* LARS (You, Gitman & Ginsburg 2017): :math:`\eta\,\|w\| / (\|g\| + \beta\|w\| + \epsilon)` (``"sum"``) or
  :math:`\eta\,\|w\| / (\|g + \beta w\| + \epsilon)` (``"norm"``), the trust coefficient :math:`\eta` included and
  the lr not;

both with the optimizers' guard (1 where a norm is 0) and NaN for a tensor of a group without layer adaptation or
without a gradient at that step. ``tests/test_diagnostics_recorder.py`` checks the recomputed ratios against the
update the optimizer actually applied. Under :class:`optimlab.GradientNoise` the gradient LARS saw is not known:
no LARS ratios are reported there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..algorithms.layerwise import LAMB, LARS

__all__ = ["unwrap", "has_trust_ratios", "trust_ratios"]


def unwrap(optimizer: Optimizer) -> tuple[Optimizer, list[str]]:
    """The innermost optimizer under any chain of wrappers, and the wrappers' class names (outermost first)."""
    chain = []
    while isinstance(getattr(optimizer, "optimizer", None), Optimizer):
        chain.append(type(optimizer).__name__)
        optimizer = optimizer.optimizer  # type: ignore[attr-defined]
    return optimizer, chain


def has_trust_ratios(optimizer: Optimizer) -> bool:
    """True where :func:`trust_ratios` reports ratios for this optimizer (LAMB, LARS, under wrappers)."""
    inner, chain = unwrap(optimizer)
    return isinstance(inner, LAMB) or (isinstance(inner, LARS) and "GradientNoise" not in chain)


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _stack(norms: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(norms)).to("cpu", torch.float64)


@torch.no_grad()
def trust_ratios(optimizer: Optimizer, params: Sequence[Tensor], weights_before: Sequence[Tensor]
                 ) -> list[float] | None:
    """The trust ratio of each tensor of ``params`` at the step just taken, or ``None`` for an optimizer without
    trust ratios. Call it after ``optimizer.step()`` with the weights from before it (``p.grad`` unchanged).

    Computed with list operations per bucket of tensors sharing a param group and a step count (a handful of
    kernel launches whatever the number of layers), in the parameters' precision, as the optimizers do."""
    inner, _ = unwrap(optimizer)
    if not has_trust_ratios(optimizer):
        return None
    group_of = {id(p): (gi, g) for gi, g in enumerate(inner.param_groups) for p in g["params"]}
    out = [math.nan] * len(params)
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        gi, group = group_of.get(id(p), (None, None))
        state = inner.state.get(p, {})
        if group is None or not group.get("layer_adaptation", True) or p.grad is None or not state:
            continue
        step = float(state["step"]) if isinstance(inner, LAMB) else 0.0
        buckets.setdefault((gi, step, p.dtype, p.device), []).append(i)
    for (gi, step, _, _), idx in buckets.items():
        group = inner.param_groups[gi]
        w = [_real(weights_before[i]) for i in idx]
        if isinstance(inner, LAMB):
            st = [inner.state[params[i]] for i in idx]
            ratios = _lamb_ratios(w, [_real(s["exp_avg"]) for s in st], [_real(s["exp_avg_sq"]) for s in st],
                                  step, group)
        else:
            ratios = _lars_ratios(w, [_real(params[i].grad) for i in idx], group)
        for i, r in zip(idx, ratios, strict=True):
            out[i] = r
    return out


def _guarded(w_norm: Tensor, u_norm: Tensor) -> list[float]:
    ok = (w_norm > 0) & (u_norm > 0)
    return torch.where(ok, w_norm / torch.where(ok, u_norm, torch.ones_like(u_norm)), torch.ones_like(w_norm)).tolist()


def _lamb_ratios(w: list[Tensor], m: list[Tensor], v: list[Tensor], step: float, group: dict) -> list[float]:
    beta1, beta2 = (float(b) for b in group["betas"])
    bc1, bc2 = (1 - beta1**step, 1 - beta2**step) if group["bias_correction"] else (1.0, 1.0)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, math.sqrt(bc2))
    torch._foreach_add_(denom, float(group["eps"]))
    r = torch._foreach_div(m, denom)
    torch._foreach_div_(r, bc1)
    if group["weight_decay"] != 0:
        torch._foreach_add_(r, w, alpha=float(group["weight_decay"]))
    w_norm = _stack(torch._foreach_norm(w))
    if group.get("max_weight_norm") is not None:
        w_norm = w_norm.clamp(max=float(group["max_weight_norm"]))
    return _guarded(w_norm, _stack(torch._foreach_norm(r)))


def _lars_ratios(w: list[Tensor], g: list[Tensor], group: dict) -> list[float]:
    if group["maximize"]:
        g = torch._foreach_neg(g)
    wd, eps, eta = float(group["weight_decay"]), float(group["eps"]), float(group["trust_coefficient"])
    w_norm, g_norm = _stack(torch._foreach_norm(w)), _stack(torch._foreach_norm(g))
    if group["trust_denominator"] == "sum":
        denom = g_norm + wd * w_norm + eps
    else:
        denom = _stack(torch._foreach_norm(torch._foreach_add(g, w, alpha=wd))) + eps
    ok = (w_norm > 0) & (g_norm > 0)
    return torch.where(ok, eta * w_norm / denom, torch.ones_like(w_norm)).tolist()
