"""Evaluating a model at moved weights: a fixed set of batches, dropout off, BatchNorm handled explicitly.

Whenever a diagnostic moves the weights (interpolation, landscapes), the BatchNorm running statistics stored in
the model belong to other weights. The caller chooses what to do with them (``bn``):

``"recompute"`` (default)
    at every point, reset the running statistics and re-estimate them with one pass over ``bn_batches`` (default:
    the evaluation batches) as :func:`torch.optim.swa_utils.update_bn` does, then evaluate in eval mode. Correct
    for every point; costs ``len(bn_batches)`` more forward passes per point, and nothing for a model without
    BatchNorm.
``"eval"``
    evaluate in eval mode with the running statistics the model holds, as the reference implementation of Li et
    al. (2018), tomgoldstein/loss-landscape ``evaluation.py``, does; cheap, but stale away from the weights the
    statistics were estimated for.
``"batch"``
    BatchNorm layers normalise with each evaluation batch's own statistics (train-mode BatchNorm).

Dropout (and every other module with train-time randomness) is always off. The model's parameters, buffers and
modes are restored afterwards, bit for bit. Losses are averaged over batches weighted by the number of target
elements, so the result is the mean over examples (tokens for a language model) whatever the batch sizes. A
non-finite loss is recorded as it is (``inf``/``nan``), never raised: the remaining batches of that point are
skipped.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.validation import check_choice, fail
from .weights import restored

__all__ = [
    "BN_MODES",
    "Batch",
    "EvalCost",
    "Evaluator",
    "Progress",
    "batchnorm_layers",
    "evaluation_mode",
    "fixed_batches",
    "recompute_batchnorm",
]

BN_MODES = ("recompute", "eval", "batch")

Batch = tuple[Any, Any]
LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Any]
Progress = Callable[[int, int], None]  # (points done, points in all)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def fixed_batches(inputs: Any, targets: Any, batch_size: int) -> list[Batch]:
    """Split a fixed evaluation subset ``(inputs, targets)`` into consecutive batches of ``batch_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        fail("batch_size", batch_size, "a positive integer")
    n = len(targets)
    if n == 0:
        fail("targets", "an empty tensor", "at least one example")
    return [(inputs[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, n, batch_size)]


def _weight(target: Any) -> float:
    return float(target.numel()) if isinstance(target, Tensor) else 1.0


def _check_batches(batches: Any, name: str) -> list[Batch]:
    if isinstance(batches, tuple) and len(batches) == 2 and not isinstance(batches[0], tuple):
        batches = [batches]  # a single (inputs, targets) batch
    try:
        out = list(batches)
    except TypeError:
        fail(name, type(batches).__name__, "an iterable of (inputs, targets) batches", TypeError)
    if not out:
        fail(name, "no batches", "at least one (inputs, targets) batch")
    for b in out:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            fail(name, f"an element of type {type(b).__name__}", "(inputs, targets) pairs", TypeError)
    return [tuple(b) for b in out]  # type: ignore[misc]


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, bn: str = "eval") -> Iterator[None]:
    """Dropout off; BatchNorm in eval mode (``"eval"``, ``"recompute"``) or on batch statistics (``"batch"``).

    Parameters, buffers and modes are restored on exit."""
    check_choice("bn", bn, BN_MODES)
    with restored(model):
        model.eval()
        if bn == "batch":
            for m in batchnorm_layers(model):
                m.train()
        yield


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Sequence[Batch]) -> None:
    """Re-estimate the BatchNorm running statistics at the current weights: reset, then a cumulative average over
    ``batches`` (``momentum=None``), dropout off. Leaves the model in eval mode."""
    layers = batchnorm_layers(model)
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
            m.eval()


@dataclass(frozen=True)
class EvalCost:
    """What an evaluation will cost, known before it starts."""

    points: int
    batches: int  # evaluation batches per point
    bn_batches: int  # BatchNorm re-estimation batches per point (0 unless bn="recompute" on a BatchNorm model)
    examples: int  # evaluation examples (target elements) per point

    @property
    def forward_passes(self) -> int:
        return self.points * (self.batches + self.bn_batches)

    def __str__(self) -> str:
        bn = f" + {self.bn_batches} BatchNorm batch(es)" if self.bn_batches else ""
        return (f"{self.points} point(s) x ({self.batches} batch(es){bn}, {self.examples:g} examples) = "
                f"{self.forward_passes} forward passes")


class Evaluator:
    """Loss (and metric) of ``model`` at its current weights over a fixed list of batches.

    ``loss_fn(output, target)`` returns the mean loss of a batch; ``metric_fn(output, target)``, if given, the
    mean metric (e.g. accuracy). Call it inside :func:`evaluation_mode` (the diagnostics do).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Iterable[Batch], *,
                 metric_fn: MetricFn | None = None, bn: str = "recompute",
                 bn_batches: Iterable[Batch] | None = None) -> None:
        check_choice("bn", bn, BN_MODES)
        if not callable(loss_fn):
            fail("loss_fn", type(loss_fn).__name__, "a callable (output, target) -> loss", TypeError)
        self.model, self.loss_fn, self.metric_fn, self.bn = model, loss_fn, metric_fn, bn
        self.batches = _check_batches(batches, "batches")
        self.bn_batches = self.batches if bn_batches is None else _check_batches(bn_batches, "bn_batches")
        self.has_bn = bool(batchnorm_layers(model))
        self.weights = [_weight(y) for _, y in self.batches]

    def cost(self, points: int) -> EvalCost:
        bn = len(self.bn_batches) if (self.bn == "recompute" and self.has_bn) else 0
        return EvalCost(points, len(self.batches), bn, int(sum(self.weights)))

    @torch.no_grad()
    def __call__(self) -> tuple[float, float]:
        """``(loss, metric)`` at the current weights; ``metric`` is NaN without a ``metric_fn``."""
        if self.bn == "recompute" and self.has_bn:
            recompute_batchnorm(self.model, self.bn_batches)
        total_loss = total_metric = total_w = 0.0
        for (x, y), w in zip(self.batches, self.weights, strict=True):
            out = self.model(x)
            loss = float(self.loss_fn(out, y))
            if not math.isfinite(loss):
                return loss, math.nan
            total_loss += loss * w
            if self.metric_fn is not None:
                total_metric += float(self.metric_fn(out, y)) * w
            total_w += w
        return total_loss / total_w, (total_metric / total_w if self.metric_fn is not None else math.nan)
