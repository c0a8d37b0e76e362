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


def _norm(t: Tensor) -> float:
    return float(torch.linalg.vector_norm(_real(t).to(torch.float64)))


def _guarded(w_norm: float, u_norm: float, coefficient: float = 1.0) -> float:
    return coefficient * w_norm / u_norm if (w_norm > 0 and u_norm > 0) else 1.0


@torch.no_grad()
def trust_ratios(optimizer: Optimizer, params: Sequence[Tensor], weights_before: Sequence[Tensor]
                 ) -> list[float] | None:
    """The trust ratio of each tensor of ``params`` at the step just taken, or ``None`` for an optimizer without
    trust ratios. Call it after ``optimizer.step()`` with the weights from before it (``p.grad`` unchanged)."""
    inner, chain = unwrap(optimizer)
    if not has_trust_ratios(optimizer):
        return None
    group_of = {id(p): g for g in inner.param_groups for p in g["params"]}
    out = []
    for p, w in zip(params, weights_before, strict=True):
        group = group_of.get(id(p))
        state = inner.state.get(p, {})
        if group is None or not group.get("layer_adaptation", True) or p.grad is None or not state:
            out.append(math.nan)
            continue
        w64 = _real(w).to(torch.float64)
        if isinstance(inner, LAMB):
            out.append(_lamb_ratio(w64, state, group))
        else:
            out.append(_lars_ratio(w64, _real(p.grad).to(torch.float64), group))
    return out


def _lamb_ratio(w: Tensor, state: dict, group: dict) -> float:
    beta1, beta2 = (float(b) for b in group["betas"])
    step = float(state["step"])
    m = _real(state["exp_avg"]).to(torch.float64)
    v = _real(state["exp_avg_sq"]).to(torch.float64)
    bc1, bc2 = (1 - beta1**step, 1 - beta2**step) if group["bias_correction"] else (1.0, 1.0)
    r = m / bc1 / (v.sqrt() / math.sqrt(bc2) + float(group["eps"]))
    if group["weight_decay"] != 0:
        r = r + float(group["weight_decay"]) * w
    w_norm = _norm(w)
    if group.get("max_weight_norm") is not None:
        w_norm = min(w_norm, float(group["max_weight_norm"]))
    return _guarded(w_norm, _norm(r))


def _lars_ratio(w: Tensor, g: Tensor, group: dict) -> float:
    g = -g if group["maximize"] else g
    wd, eps, eta = float(group["weight_decay"]), float(group["eps"]), float(group["trust_coefficient"])
    w_norm, g_norm = _norm(w), _norm(g)
    if w_norm == 0 or g_norm == 0:
        return 1.0
    denom = g_norm + wd * w_norm + eps if group["trust_denominator"] == "sum" else _norm(g + wd * w) + eps
    return eta * w_norm / denom
