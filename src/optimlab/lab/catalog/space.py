"""Search spaces for tuning: hyperparameter ranges and the trial points drawn from them.

A :class:`SearchSpace` is a tuple of :class:`Param` (the lr first, log-uniform; optionally a second
hyperparameter). Trial points are quasi-random (a Halton sequence, bases 2, 3, 5, ..., with a random shift per
dimension as in AlgoPerf's ``algoperf/halton.py`` after Bousquet et al., 2017, "Critical Hyper-Parameters: No
Random, No Cry"; a shifted grid when only the lr is tuned) or a grid (log-spaced, ends included; the lr only).
Both are deterministic functions of the space, the budget and the study number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Param", "SearchSpace", "halton", "trial_points", "parse_space", "METHODS", "MIN_LR_DECADES"]

METHODS = ("quasirandom", "grid")
MIN_LR_DECADES = 2.0  # the default spaces span at least this many decades of lr around the preset


@dataclass(frozen=True)
class Param:
    """One tuned hyperparameter: ``low <= value <= high``, uniform in ``log`` (default) or linear scale."""

    name: str
    low: float
    high: float
    log: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Invalid search-space name: {self.name!r}; expected an argument name such as 'lr'")
        for bound in ("low", "high"):
            v = getattr(self, bound)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Invalid {self.name} {bound}: {v!r}; expected a finite number")
        if self.log and self.low <= 0:
            raise ValueError(f"Invalid {self.name} low: {self.low!r}; expected > 0 for a log-uniform range")
        if not self.low < self.high:
            kind = "empty" if self.low == self.high else "inverted"
            raise ValueError(f"Invalid {self.name} range: {self.low:g}..{self.high:g} is {kind}; expected low < high")

    def value(self, u: float) -> float:
        """The point at fraction ``u`` in [0, 1] of the range (rounded to 4 significant digits)."""
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return float(f"{x:.4g}")

    def fraction(self, x: float) -> float:
        """Where ``x`` lies in the range, 0 at ``low`` and 1 at ``high``."""
        if self.log:
            return (math.log(x) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (x - self.low) / (self.high - self.low)

    @property
    def decades(self) -> float:
        return math.log10(self.high / self.low) if self.log else math.nan

    def describe(self) -> str:
        return f"{self.name} {'log-' if self.log else ''}uniform [{self.low:.3g}, {self.high:.3g}]"


@dataclass(frozen=True)
class SearchSpace:
    """The tuned hyperparameters of one optimizer; the first is always the lr."""

    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        if not self.params or self.params[0].name != "lr":
            raise ValueError(f"Invalid search space: {self.params!r}; expected the lr first")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"Invalid search space: {names}; expected each hyperparameter once")

    @property
    def lr(self) -> Param:
        return self.params[0]

    def describe(self) -> str:
        return ", ".join(p.describe() for p in self.params)

    def to_dict(self) -> list[dict]:
        return [{"name": p.name, "low": p.low, "high": p.high, "log": p.log} for p in self.params]

    @staticmethod
    def from_dict(items: Sequence[dict]) -> SearchSpace:
        return SearchSpace(tuple(Param(d["name"], d["low"], d["high"], d["log"]) for d in items))


def _primes(n: int) -> list[int]:
    out: list[int] = []
    k = 2
    while len(out) < n:
        if all(k % p for p in out):
            out.append(k)
        k += 1
    return out


def halton(n: int, dims: int, seed: int = 0) -> np.ndarray:
    """``n`` points of the Halton sequence in ``[0, 1)^dims`` (points 0..n-1, base = the d-th prime), each
    dimension shifted by a uniform random offset modulo 1 (Cranley–Patterson rotation, seeded)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"Invalid n: {n!r}; expected a positive integer")
    if not isinstance(dims, int) or dims < 1:
        raise ValueError(f"Invalid dims: {dims!r}; expected a positive integer")
    out = np.empty((n, dims))
    shifts = np.random.default_rng(seed).random(dims)
    for d, base in enumerate(_primes(dims)):
        for i in range(n):
            f, r, k = 1.0, 0.0, i
            while k > 0:
                f /= base
                r += f * (k % base)
                k //= base
            out[i, d] = (r + shifts[d]) % 1.0
    return out


def trial_points(space: SearchSpace, budget: int, method: str = "quasirandom", study: int = 0) -> list[dict]:
    """The ``budget`` hyperparameter settings to try: ``[{"lr": ..., ...}, ...]``.

    ``quasirandom``: shifted Halton points over every dimension; in one dimension (the lr alone) the shifted
    grid ``(i + u) / budget``, the one-dimensional low-discrepancy set that Halton's first points only approach
    when ``budget`` is a power of 2. The shift ``u`` depends on ``study``, so studies are independent
    repetitions. ``grid``: ``budget`` lrs evenly spaced (log scale) from ``low`` to ``high``, ends
    included; the other hyperparameters are not tuned (they keep the preset's values).
    """
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"Invalid budget: {budget!r}; expected at least 1 trial per optimizer")
    if method not in METHODS:
        raise ValueError(f"Invalid tuning method: {method!r}; expected one of {', '.join(METHODS)}")
    if method == "grid":
        return [{"lr": space.lr.value(i / (budget - 1) if budget > 1 else 0.5)} for i in range(budget)]
    if len(space.params) == 1:  # in one dimension the best-spread set is the shifted grid (a rank-1 lattice)
        shift = float(np.random.default_rng(1000 + study).random())
        us = [[(i + shift) / budget] for i in range(budget)]
    else:
        us = halton(budget, len(space.params), seed=1000 + study).tolist()
    return [{p.name: p.value(x) for p, x in zip(space.params, u, strict=True)} for u in us]


def parse_space(text: str) -> tuple[str, list[Param]]:
    """``'adam:lr=1e-4..1e-1,weight_decay=1e-3..1'`` -> ``("adam", [Param("lr", ...), Param(...)])``.

    A range ``a..b`` is log-uniform when both ends are positive and ``b/a >= 10``, else linear; append
    ``:lin`` or ``:log`` to choose (``momentum=0.8..0.99:lin``).
    """
    name, sep, rest = text.partition(":")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(
            f"Invalid --space {text!r}; expected OPTIMIZER:NAME=LOW..HIGH[,NAME=LOW..HIGH], e.g. 'adam:lr=1e-4..1e-1'"
        )
    params = []
    for item in rest.split(","):
        key, eq, rng = item.partition("=")
        rng, _, scale = rng.partition(":")
        lo_s, dots, hi_s = rng.partition("..")
        if not eq or not dots:
            raise ValueError(f"Invalid --space item {item!r} in {text!r}; expected NAME=LOW..HIGH")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise ValueError(f"Invalid --space item {item!r} in {text!r}; LOW and HIGH must be numbers") from None
        if scale not in ("", "log", "lin"):
            raise ValueError(f"Invalid --space scale {scale!r} in {text!r}; expected 'log' or 'lin'")
        log = scale == "log" or (scale == "" and lo > 0 and hi > 0 and hi / lo >= 10)
        params.append(Param(key.strip(), lo, hi, log))
    return name.strip().lower(), params
