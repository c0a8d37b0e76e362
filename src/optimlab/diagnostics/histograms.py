r"""Histograms of magnitudes on fixed log-spaced bins, so that histograms of different steps, layers and runs line up.

The RAdam paper (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020, Figure 2)
stacks the histograms of :math:`|g|` of the first steps along the y-axis on a log x-axis: without warm-up the
distribution is distorted in the first steps. :func:`abs_histogram` computes such a histogram in one pass over a
list of tensors (concatenated once), with separate counts for exact zeros (dead ReLUs), values below and above the
bins, and non-finite values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..core.validation import fail

__all__ = ["LogBins", "Histogram", "abs_histogram", "abs_histograms"]


@dataclass(frozen=True)
class LogBins:
    r"""Bins :math:`[10^{e_i}, 10^{e_{i+1}})` with exponents from ``low`` to ``high``, ``per_decade`` to a decade."""

    low: float = -12.0
    high: float = 2.0
    per_decade: int = 4

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                fail(name, v, "a finite number (a base-10 exponent)")
        if not self.high > self.low:
            fail("high", self.high, f"high > low ({self.low})")
        if isinstance(self.per_decade, bool) or not isinstance(self.per_decade, int) or self.per_decade < 1:
            fail("per_decade", self.per_decade, "a positive integer")
        if abs(round((self.high - self.low) * self.per_decade) - (self.high - self.low) * self.per_decade) > 1e-9:
            fail("per_decade", self.per_decade, "a value for which (high - low) * per_decade is a whole number")

    @property
    def count(self) -> int:
        return int(round((self.high - self.low) * self.per_decade))

    @property
    def edges(self) -> np.ndarray:
        """The ``count + 1`` bin edges (not exponents)."""
        return 10.0 ** np.linspace(self.low, self.high, self.count + 1)

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "per_decade": self.per_decade}


@dataclass
class Histogram:
    """Counts per bin, and the elements outside the bins: exactly zero, below, above, non-finite."""

    counts: np.ndarray
    zero: int
    under: int
    over: int
    nonfinite: int

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zero + self.under + self.over + self.nonfinite


def _histogram(counts: np.ndarray, zero: int, inf: int, n: int) -> Histogram:
    # counts: [below (zeros included), bin 0 .. bin n-1, above (inf included), NaN]
    return Histogram(counts[1:n + 1].astype(np.int64), zero, int(counts[0]) - zero, int(counts[n + 1]) - inf,
                     int(counts[n + 2]) + inf)


def abs_histogram(tensors: Sequence[Tensor] | Tensor, bins: LogBins | None = None) -> Histogram:
    """The histogram of :math:`|x|` over every element of ``tensors`` on ``bins`` (default :class:`LogBins`)."""
    bins = LogBins() if bins is None else bins
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    parts = [t.detach().reshape(-1) for t in tensors if t.numel() > 0]
    if not parts:
        return Histogram(np.zeros(bins.count, dtype=np.int64), 0, 0, 0, 0)
    return abs_histograms(torch.cat(parts).abs()[None], bins)[0]


def abs_histograms(rows: Tensor, bins: LogBins | None = None) -> list[Histogram]:
    """One histogram per row of a 2-d tensor of magnitudes (``rows >= 0``), in one pass of a dozen element-wise
    operations and one ``bincount`` (the bin of :math:`x` is :math:`\\lfloor (\\log_{10} x - low) \\cdot
    per\\_decade \rfloor`, exact up to rounding of values that sit on an edge)."""
    bins = LogBins() if bins is None else bins
    n, k = bins.count, rows.shape[0]
    a = rows.detach()
    a = a if a.dtype in (torch.float32, torch.float64) else a.float()
    # below the bins (zeros: -inf) -> -1, above (inf) -> n, NaN -> n + 1; then shifted to start at 0
    c = torch.log10(a).sub_(bins.low).mul_(bins.per_decade).floor_().clamp_(-1, n).nan_to_num_(nan=n + 1)
    codes = c.add_(1).to(torch.int64)
    if k > 1:
        codes += (n + 3) * torch.arange(k, device=a.device)[:, None]
    counts = torch.bincount(codes.reshape(-1), minlength=k * (n + 3)).reshape(k, n + 3)
    extra = torch.stack([(a == 0).sum(1), torch.isinf(a).sum(1)])
    counts, extra = counts.cpu().numpy(), extra.cpu().tolist()
    return [_histogram(counts[i], extra[0][i], extra[1][i], n) for i in range(k)]
