r"""The loss on the straight line between two weight vectors.

Goodfellow, Vinyals & Saxe, "Qualitatively characterizing neural network optimization problems", ICLR 2015
(arXiv 1412.6544): the loss along :math:`\theta(\alpha) = (1-\alpha)\,\theta_a + \alpha\,\theta_b` from the
initialization :math:`\theta_a` to the solution :math:`\theta_b`, on a grid slightly beyond :math:`[0, 1]`. Xing,
Arpit, Tsirigotis & Bengio, "A Walk with SGD", 2018 (arXiv 1802.08770) draw the same line between consecutive
iterates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..core.validation import fail
from .evaluation import Batch, EvalCost, Evaluator, LossFn, MetricFn, Progress, evaluation_mode
from .weights import as_weights, check_model, set_point

__all__ = ["Interpolation", "interpolate", "default_alphas", "check_grid"]


def default_alphas(points: int = 29, low: float = -0.2, high: float = 1.2) -> np.ndarray:
    """``points`` values from ``low`` to ``high``; the default (-0.2 to 1.2 in steps of 0.05) contains 0 and 1."""
    return np.linspace(low, high, points)


def check_grid(values: Any, name: str) -> np.ndarray:
    """A 1-d grid of finite numbers with at least one point, as a float64 array."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        fail(name, values, "a sequence of numbers", TypeError)
    if arr.ndim != 1:
        fail(name, f"an array of shape {arr.shape}", "a 1-d sequence of numbers")
    if arr.size == 0:
        fail(name, "an empty grid", "at least one point")
    if not np.isfinite(arr).all():
        fail(name, arr.tolist(), "finite numbers")
    return arr


@dataclass
class Interpolation:
    """Loss (and metric) at each ``alpha``; non-finite values are kept as they are (see :attr:`finite`)."""

    alphas: np.ndarray
    loss: np.ndarray
    metric: np.ndarray
    cost: EvalCost

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.loss)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (non-finite values as ``None``)."""
        return {"alphas": _json(self.alphas), "loss": _json(self.loss), "metric": _json(self.metric)}


def _json(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=float).ravel()]


def interpolate(model: nn.Module, theta_a: Any, theta_b: Any, loss_fn: LossFn, batches: Iterable[Batch],
                alphas: Sequence[float] | np.ndarray | None = None, *, metric_fn: MetricFn | None = None,
                bn: str = "recompute", bn_batches: Iterable[Batch] | None = None,
                progress: Progress | None = None) -> Interpolation:
    r"""Loss and metric of ``model`` along :math:`(1-\alpha)\theta_a + \alpha\theta_b` for each ``alpha``.

    Args:
        model: the architecture; its weights, buffers and modes are restored afterwards.
        theta_a, theta_b: state_dicts or tensor lists (see :func:`~optimlab.diagnostics.weights.as_weights`);
            mismatched names or shapes raise ValueError.
        loss_fn: ``loss_fn(model(x), y)`` -> mean loss of a batch.
        batches: the fixed evaluation set, a list of ``(x, y)``.
        alphas: the grid (default :func:`default_alphas`: -0.2 to 1.2).
        metric_fn: optional ``metric_fn(output, y)`` -> mean metric of a batch (e.g. accuracy).
        bn, bn_batches: BatchNorm handling (see :mod:`optimlab.diagnostics.evaluation`).
        progress: called as ``progress(done, total)`` after each point.
    """
    named = check_model(model)
    a = as_weights(model, theta_a, "theta_a")
    b = as_weights(model, theta_b, "theta_b")
    grid = check_grid(default_alphas() if alphas is None else alphas, "alphas")
    evaluator = Evaluator(model, loss_fn, batches, metric_fn=metric_fn, bn=bn, bn_batches=bn_batches)
    direction = [y - x for x, y in zip(a, b, strict=True)]
    params = [p for _, p in named]
    loss = np.full(grid.size, np.nan)
    metric = np.full(grid.size, np.nan)
    with evaluation_mode(model, bn):
        for i, alpha in enumerate(grid):
            set_point(params, a, [direction], [alpha])
            loss[i], metric[i] = evaluator()
            if progress is not None:
                progress(i + 1, grid.size)
    return Interpolation(grid, loss, metric, evaluator.cost(grid.size))
