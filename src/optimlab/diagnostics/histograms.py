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

__all__ = ["LogBins", "Histogram", "abs_histogram"]


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


def _codes(x: Tensor, bins: LogBins) -> Tensor:
    """Bin index + 1 of each element (0: under, count + 1: over, count + 2: zero, count + 3: non-finite)."""
    n = bins.count
    a = x.abs()
    k = torch.floor((torch.log10(a) - bins.low) * bins.per_decade)
    finite = torch.isfinite(a)
    k = torch.where(finite, k.nan_to_num(neginf=-1.0).clamp(-1, n), torch.full_like(k, n + 2))
    return torch.where(a == 0, torch.full_like(k, n + 1), k).add_(1).to(torch.int64)


def abs_histogram(tensors: Sequence[Tensor] | Tensor, bins: LogBins | None = None) -> Histogram:
    """The histogram of :math:`|x|` over every element of ``tensors`` on ``bins`` (default :class:`LogBins`)."""
    bins = LogBins() if bins is None else bins
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    parts = [t.detach().reshape(-1) for t in tensors if t.numel() > 0]
    n = bins.count
    if not parts:
        return Histogram(np.zeros(n, dtype=np.int64), 0, 0, 0, 0)
    dtype = torch.float64 if any(t.dtype in (torch.float64, torch.complex128) for t in parts) else torch.float32
    flat = torch.cat([(t.abs() if t.is_complex() else t).to(dtype) for t in parts])
    counts = torch.bincount(_codes(flat, bins), minlength=n + 4).cpu().numpy()
    return Histogram(counts[1:n + 1].astype(np.int64), int(counts[n + 2]), int(counts[0]), int(counts[n + 1]),
                     int(counts[n + 3]))
