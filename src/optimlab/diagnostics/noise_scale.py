r"""The gradient noise scale of McCandlish, Kaplan, Amodei et al., "An Empirical Model of Large-Batch Training", 2018
(arXiv 1812.06162, Appendix A.1).

The simple noise scale :math:`B_\text{simple} = \operatorname{tr}(\Sigma) / |G|^2` (the per-example gradient
covariance over the squared true gradient) predicts the batch size beyond which larger batches stop paying off.
From the squared norms of gradients at two batch sizes :math:`B_\text{small} < B_\text{big}` the unbiased
estimates are

.. math::
    |\mathcal G|^2 = \frac{B_\text{big}|G_{B_\text{big}}|^2 - B_\text{small}|G_{B_\text{small}}|^2}
                          {B_\text{big} - B_\text{small}}, \qquad
    \mathcal S = \frac{|G_{B_\text{small}}|^2 - |G_{B_\text{big}}|^2}{1/B_\text{small} - 1/B_\text{big}}.

Here the small batches are ``parts`` equal slices of one batch (:math:`|G_{B_\text{small}}|^2` averaged over the
slices) and the big one is their mean. The paper smooths :math:`|\mathcal G|^2` and :math:`\mathcal S` with
separate exponential averages before taking the ratio (:class:`NoiseScaleTracker`); one estimate alone is noisy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.validation import check_in_range, fail
from .evaluation import Batch, LossFn
from .weights import check_model, restored

__all__ = ["NoiseScaleEstimate", "NoiseScaleTracker", "noise_scale_from_gradients", "gradient_noise_scale"]


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """One estimate from gradients at two batch sizes."""

    b_small: float
    b_big: float
    g2_small: float  # mean of |G_small|^2 over the small batches
    g2_big: float  # |G_big|^2
    g2: float  # unbiased estimate of |G|^2
    trace: float  # unbiased estimate of tr(Sigma), the paper's S

    @property
    def b_simple(self) -> float:
        return self.trace / self.g2 if self.g2 > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("b_small", "b_big", "g2_small", "g2_big", "g2", "trace", "b_simple")}
        return {k: (v if math.isfinite(v) else None) for k, v in out.items()}


def _sq(grads: Sequence[Tensor]) -> float:
    return float(sum(torch.dot(g.reshape(-1).to(torch.float64), g.reshape(-1).to(torch.float64)) for g in grads))


def noise_scale_from_gradients(micro_grads: Sequence[Sequence[Tensor]], micro_batch_size: float) -> NoiseScaleEstimate:
    """The estimate from the gradients of ``k >= 2`` equal micro-batches (e.g. those of gradient accumulation,
    or of the workers of data-parallel training): small = one micro-batch, big = their mean."""
    k = len(micro_grads)
    if k < 2:
        fail("micro_grads", f"{k} gradient(s)", "at least 2 micro-batch gradients")
    if not (isinstance(micro_batch_size, (int, float)) and micro_batch_size > 0):
        fail("micro_batch_size", micro_batch_size, "a positive number")
    b_small, b_big = float(micro_batch_size), float(micro_batch_size) * k
    g2_small = sum(_sq(g) for g in micro_grads) / k
    mean = [sum(parts) / k for parts in zip(*micro_grads, strict=True)]
    g2_big = _sq(mean)
    g2 = (b_big * g2_big - b_small * g2_small) / (b_big - b_small)
    trace = (g2_small - g2_big) / (1.0 / b_small - 1.0 / b_big)
    return NoiseScaleEstimate(b_small, b_big, g2_small, g2_big, g2, trace)


def gradient_noise_scale(model: nn.Module, loss_fn: LossFn, batch: Batch, parts: int = 4) -> NoiseScaleEstimate:
    """Estimate from one batch split into ``parts`` equal slices along the first dimension (a remainder is
    dropped), one backward pass each, in the model's current mode (training: dropout and BatchNorm as in a step).

    Nothing of the training run is touched: gradients come from :func:`torch.autograd.grad` (``p.grad`` is left
    alone), torch's RNG is forked (dropout draws do not shift the run's) and the parameters, buffers (BatchNorm
    statistics) and modes are restored.
    """
    params = [p for _, p in check_model(model)]
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 2:
        fail("parts", parts, "an integer >= 2")
    x, y = batch
    n = len(y)
    size = n // parts
    if size < 1:
        fail("parts", parts, f"at most the batch size ({n})")
    grads = []
    devices = [p.device for p in params if p.device.type == "cuda"]
    with restored(model), torch.random.fork_rng(devices=sorted(set(devices), key=str)):
        for i in range(parts):
            sl = slice(i * size, (i + 1) * size)
            with torch.enable_grad():
                loss = loss_fn(model(x[sl]), y[sl])
                grads.append([g.detach() for g in torch.autograd.grad(loss, params, allow_unused=True,
                                                                       materialize_grads=True)])
    return noise_scale_from_gradients(grads, size)


class NoiseScaleTracker:
    r"""Exponential averages of :math:`|\mathcal G|^2` and :math:`\mathcal S`, and their ratio (the paper's way).

    ``update(estimate)`` returns the smoothed :math:`B_\text{simple}` (averages started at zero: their bias
    correction cancels in the ratio). Non-finite estimates are skipped."""

    def __init__(self, beta: float = 0.9) -> None:
        check_in_range("beta", beta, 0.0, 1.0)
        self.beta, self.n, self._g2, self._trace = float(beta), 0, 0.0, 0.0

    def update(self, estimate: NoiseScaleEstimate) -> float:
        if not (math.isfinite(estimate.g2) and math.isfinite(estimate.trace)):
            return self.b_simple
        self.n += 1
        self._g2 = self.beta * self._g2 + (1 - self.beta) * estimate.g2
        self._trace = self.beta * self._trace + (1 - self.beta) * estimate.trace
        return self.b_simple

    @property
    def b_simple(self) -> float:
        if self.n == 0:
            return math.nan
        return self._trace / self._g2 if self._g2 > 0 else math.nan
