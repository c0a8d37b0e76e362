"""Statistics that decide: intervals, tests against the best, the best set ("as good as"), performance profiles.

Every function here is pure (numbers in, numbers out; the only randomness is a seeded generator) and is tested
against known answers in ``tests/lab/test_stats.py``.

- :func:`mean_ci`: mean and Student-t confidence interval over seeds.
- :func:`welch_test`, :func:`paired_test`: two-sided t tests; :func:`holm`: Holm's step-down adjustment.
- :func:`best_set`: the optimizers *not shown worse than the best* (not "as good as": that needs :func:`classify`'s
  equivalence test; the compare command uses ``best_set`` for "worse" only). Each optimizer is compared with the one
  of best mean by a Welch t statistic; because "the best" is itself chosen from the data, the statistics are
  calibrated by simulating the whole procedure (choosing the best included) under the hypothesis that the compared
  optimizers are equal, with each optimizer's own spread and seed count (a parametric bootstrap of the maximum
  statistic, stepped down as in Westfall & Young, 1993). Stated rate: when all optimizers are equal, the chance that
  any is declared worse than the best is ``alpha`` (5 %) whatever their number; a plain Welch test against the
  observed best with Holm's correction holds that rate only for two optimizers (the tests show both).
- :func:`bootstrap_ci`: mean and percentile-bootstrap interval over seeds (seeded, deterministic). Its bounds are
  means of resampled seeds, so they lie between the smallest and the largest value: an accuracy interval stays in
  [0, 1] and a loss interval above 0 whatever the shape of the sample (a t interval on the bimodal 9.6..89.7 %
  LARS sample reaches 109.9 %).
- :func:`hierarchical_bootstrap_ci`: the answer of several independent tuning studies (AlgoPerf's rule): the
  median over studies of each study's mean, and a two-level percentile bootstrap (resample the studies with
  replacement, then the seeds within each resampled study) so that the interval includes the study-to-study spread
  (the selection noise of re-tuning), not only the seed-to-seed one. Its bounds also lie within the values' range.
- :func:`tost`: Schuirmann's two one-sided Welch t tests of equivalence, ``|mean(a) - mean(b)| < margin``. It is
  an intersection-union test: each one-sided test at ``alpha`` gives a level-``alpha`` test of equivalence, with no
  split of ``alpha``.
- :func:`min_detectable_effect`: the smallest true difference a two-sided Welch test at ``alpha`` detects with the
  given power (80 % by default): ``(t_{1-alpha/2, df} + t_{power, df}) * se`` (Welch-Satterthwaite ``df``).
- :func:`classify`: the verdict of every optimizer against the best: ``unstable`` (a seed failed: diverged or
  ended at chance; never in the best set), ``best``, ``as good as`` (equivalent within the margin by TOST, the
  TOST p-values Holm-adjusted over the compared optimizers so that the family-wise rate of a false "as good as"
  is at most ``alpha``), else ``worse`` (the max-t test of :func:`best_set`), else ``inconclusive`` (its minimum
  detectable effect says how small a difference these seeds could have found). ``better`` is reserved for a
  comparison against a reference that is not the best (not produced by :func:`classify`).
- :func:`time_to_target`: the first evaluation at which a validation curve reaches its target (``inf`` if never;
  it lives with the record, :mod:`optimlab.lab.training.record`, whose ``steps_to`` uses it).
- :func:`performance_ratios`, :func:`performance_profile`, :func:`integrated_score`: Dolan & Moré (2002)
  performance profiles over tasks and AlgoPerf's benchmark score (Dahl et al., 2023): ratios to the fastest
  optimizer per task, ratios above ``r_max = 4`` count as misses, and the score is the profile's integral over
  ``[1, r_max]`` divided by ``r_max - 1`` (computed exactly; AlgoPerf's ``scoring/performance_profile.py``
  approximates the same integral with the trapezoid rule on 100 points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from optimlab.lab.training.record import time_to_target

__all__ = [
    "Interval",
    "TestResult",
    "TostResult",
    "Verdict",
    "Comparison",
    "VERDICTS",
    "bootstrap_ci",
    "hierarchical_bootstrap_ci",
    "tost",
    "min_detectable_effect",
    "classify",
    "BestSet",
    "mean_ci",
    "welch_test",
    "paired_test",
    "holm",
    "best_set",
    "time_to_target",
    "performance_ratios",
    "performance_profile",
    "integrated_score",
    "R_MAX",
    "SIMULATIONS",
    "t_quantile",
    "t_sf",
]

R_MAX = 4.0
#: Simulations of :func:`best_set`'s max-t calibration: its adjusted p-values are multiples of ``1 / SIMULATIONS``,
#: so a p-value of 0 means "below 1 / SIMULATIONS" (what :mod:`~optimlab.lab.present.tables` prints).
SIMULATIONS = 4000


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``scipy.special.stdtrit``)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def t_sf(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtr

    return float(stdtr(df, -t))


def _values(values: Sequence[float], name: str = "values") -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"Invalid {name}: {list(values)!r}; expected a non-empty sequence of numbers")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"Invalid {name}: {x.tolist()!r}; expected finite numbers")
    return x


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval (``low``/``high`` are NaN for a single value)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval ``mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)`` (exact for normal data)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Invalid confidence: {confidence!r}; expected 0 < confidence < 1")
    x = _values(values)
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence)
    sd = float(x.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, confidence)


@dataclass(frozen=True)
class TestResult:
    """A two-sided t test: statistic, degrees of freedom, p-value."""

    t: float
    df: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's unequal-variance t test of ``mean(a) == mean(b)`` (Satterthwaite degrees of freedom)."""
    x, y = _values(a, "a"), _values(b, "b")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Invalid sample sizes: {x.size}, {y.size}; expected at least 2 values each")
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(x.mean() - y.mean())
    se2 = va + vb
    if se2 == 0.0:
        return TestResult(0.0 if diff == 0 else math.copysign(math.inf, diff), math.inf, 1.0 if diff == 0 else 0.0)
    df = se2**2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    t = diff / math.sqrt(se2)
    return TestResult(t, float(df), 2 * t_sf(abs(t), df))


def paired_test(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Paired t test of ``mean(a - b) == 0`` (``a[i]`` and ``b[i]`` share seed ``i``)."""
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size or x.size < 2:
        raise ValueError(f"Invalid sample sizes: {x.size}, {y.size}; expected two equal sizes of at least 2")
    d = x - y
    sd = d.std(ddof=1)
    mean = float(d.mean())
    if sd == 0.0:
        return TestResult(0.0 if mean == 0 else math.copysign(math.inf, mean), x.size - 1, 1.0 if mean == 0 else 0.0)
    t = mean / (sd / math.sqrt(d.size))
    return TestResult(float(t), d.size - 1, 2 * t_sf(abs(t), d.size - 1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values (reject where ``adjusted <= alpha``; controls the FWER)."""
    p = np.asarray(list(pvalues), dtype=float)
    if p.size and (np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ValueError(f"Invalid pvalues: {p.tolist()!r}; expected numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class BestSet:
    """The optimizer of best mean and those not shown worse than it.

    ``adjusted_p[name]`` is the multiplicity-adjusted p-value of "``name`` is as good as the best" (1.0 for the
    best itself); ``members`` are the names with ``adjusted_p > alpha``, best first. ``tested`` is False when
    the samples hold a single value each (then only exact ties with the best are members).
    """

    best: str
    members: tuple[str, ...]
    adjusted_p: dict[str, float] = field(default_factory=dict)
    alpha: float = 0.05
    method: str = "max-t"
    tested: bool = True


def _oriented(samples: Mapping[str, Sequence[float]], higher_is_better: bool) -> dict[str, np.ndarray]:
    if not samples:
        raise ValueError("Invalid samples: {}; expected at least one optimizer")
    sign = 1.0 if higher_is_better else -1.0
    return {name: sign * _values(v, f"samples[{name!r}]") for name, v in samples.items()}


def _t_stats(means: np.ndarray, var_n: np.ndarray, best: np.ndarray) -> np.ndarray:
    """(mean_best - mean_i) / sqrt(var_best/n_best + var_i/n_i), broadcasting over leading axes."""
    diff = np.take_along_axis(means, best[..., None], -1) - means
    se = np.sqrt(np.take_along_axis(var_n, best[..., None], -1) + var_n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / se
    return np.where(diff == 0, 0.0, np.where(se == 0, np.inf, t))


def best_set(
    samples: Mapping[str, Sequence[float]],
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
    method: str = "max-t",
    simulations: int = SIMULATIONS,
    seed: int = 0,
) -> BestSet:
    """The set of optimizers indistinguishable from the one with the best mean.

    ``samples`` maps a name to its per-seed values (finite). ``method="max-t"`` (default): Welch statistics of
    each optimizer against the best, calibrated by a parametric bootstrap of the largest statistic under "all
    remaining optimizers are equal" (the best re-chosen in every simulated experiment) and stepped down; the
    family-wise rate of declaring an equal optimizer worse is ``alpha`` for any number of optimizers.
    ``method="holm"``: Welch p-values against the observed best, Holm-adjusted (nominal only for two).
    Deterministic: the simulation uses ``numpy.random.default_rng(seed)``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"Invalid alpha: {alpha!r}; expected 0 < alpha < 1")
    if method not in ("max-t", "holm"):
        raise ValueError(f"Invalid method: {method!r}; expected 'max-t' or 'holm'")
    if not isinstance(simulations, int) or simulations < 100:
        raise ValueError(f"Invalid simulations: {simulations!r}; expected an integer >= 100")
    data = _oriented(samples, higher_is_better)
    names = list(data)
    means = np.array([data[n].mean() for n in names])
    best_i = int(np.argmax(means))  # first of equal means: the order of ``samples`` breaks ties
    best = names[best_i]
    if any(data[n].size < 2 for n in names):
        members = tuple([best] + [n for i, n in enumerate(names) if i != best_i and means[i] == means[best_i]])
        p = {n: (1.0 if n in members else 0.0) for n in names}
        return BestSet(best, members, p, alpha, method, tested=False)

    sizes = np.array([data[n].size for n in names], dtype=float)
    var_n = np.array([data[n].var(ddof=1) for n in names]) / sizes
    t_obs = _t_stats(means, var_n, np.array(best_i))
    others = [i for i in range(len(names)) if i != best_i]
    adjusted = {best: 1.0}
    if method == "holm":
        raw = [welch_test(data[best], data[names[i]]).p for i in others]
        for i, q in zip(others, holm(raw), strict=True):
            adjusted[names[i]] = q
    else:
        rng = np.random.default_rng(seed)
        sim_means = np.empty((simulations, len(names)))
        sim_var_n = np.empty_like(sim_means)
        sds = np.sqrt(var_n * sizes)
        for j, n in enumerate(sizes.astype(int)):
            draws = rng.standard_normal((simulations, n)) * sds[j]
            sim_means[:, j] = draws.mean(axis=1)
            sim_var_n[:, j] = draws.var(axis=1, ddof=1) / n
        order = sorted(others, key=lambda i: -t_obs[i])
        active = list(range(len(names)))
        running = 0.0
        for i in order:
            idx = np.array(active)
            m, v = sim_means[:, idx], sim_var_n[:, idx]
            t_sim = _t_stats(m, v, np.argmax(m, axis=1)).max(axis=1)
            running = max(running, float(np.mean(t_sim >= t_obs[i])))
            adjusted[names[i]] = running
            active.remove(i)
    members = tuple([best] + [names[i] for i in sorted(others, key=lambda i: -means[i]) if adjusted[names[i]] > alpha])
    return BestSet(best, members, {n: adjusted[n] for n in names}, alpha, method)


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """Mean and percentile-bootstrap interval of the mean: the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the means
    of ``resamples`` resamples of the values with replacement (``numpy.random.default_rng(seed)``; the same values
    give the same interval). The bounds lie within ``[min(values), max(values)]``, so within the metric's range.
    A single value gives NaN bounds."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Invalid confidence: {confidence!r}; expected 0 < confidence < 1")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"Invalid resamples: {resamples!r}; expected an integer >= 100")
    x = _values(values)
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    # rounding in the mean of equal values must not put a bound outside the values
    low, high = max(float(low), float(x.min())), min(float(high), float(x.max()))
    return Interval(mean, low, high, n, float(x.std(ddof=1)), confidence)


def hierarchical_bootstrap_ci(
    groups: Sequence[Sequence[float]], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """The median over groups (tuning studies) of each group's mean (seeds), with a two-level percentile-bootstrap
    interval: each of ``resamples`` resamples draws as many groups as there are, with replacement, then within
    each drawn group as many of its values as it has, with replacement, and takes the median of the resampled
    groups' means; the bounds are the ``(1-c)/2`` and ``(1+c)/2`` quantiles (``numpy.random.default_rng(seed)``:
    the same groups give the same interval). When the groups' means differ, the interval widens to cover that
    spread; it stays within ``[min, max]`` of all values. ``n`` is the number of groups and ``sd`` the standard
    deviation of their means. One group of one value gives NaN bounds; one group is resampled over its seeds only.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Invalid confidence: {confidence!r}; expected 0 < confidence < 1")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"Invalid resamples: {resamples!r}; expected an integer >= 100")
    if isinstance(groups, (str, bytes)) or len(groups) == 0:
        raise ValueError(f"Invalid groups: {groups!r}; expected a non-empty sequence of non-empty samples")
    xs = [_values(g, f"groups[{i}]") for i, g in enumerate(groups)]
    k = len(xs)
    means = np.array([x.mean() for x in xs])
    centre = float(np.median(means))
    sd = float(means.std(ddof=1)) if k > 1 else math.nan
    lo_all, hi_all = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
    if k == 1 and xs[0].size == 1:
        return Interval(centre, math.nan, math.nan, 1, math.nan, confidence)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, k, size=(resamples, k))  # level 1: the studies
    boot = np.empty((resamples, k))
    for i, x in enumerate(xs):  # level 2: the seeds of each study, drawn afresh for every time it is picked
        inner = x[rng.integers(0, x.size, size=(resamples, k, x.size))].mean(axis=2)
        boot = np.where(pick == i, inner, boot)
    stat = np.median(boot, axis=1)
    low, high = np.quantile(stat, [0.5 - confidence / 2, 0.5 + confidence / 2])
    low, high = max(float(low), lo_all), min(float(high), hi_all)
    return Interval(centre, low, high, k, sd, confidence)


@dataclass(frozen=True)
class TostResult:
    """Two one-sided tests of ``|mean(a) - mean(b)| < margin``: ``diff = mean(a) - mean(b)``, its standard error
    and Welch degrees of freedom, the p-value of equivalence (the larger one-sided p), and ``equivalent``
    (``p <= alpha``, the same as the ``1 - 2 alpha`` interval of ``diff`` lying inside ``(-margin, margin)``)."""

    diff: float
    se: float
    df: float
    p: float
    margin: float
    alpha: float

    @property
    def equivalent(self) -> bool:
        return self.p <= self.alpha


def _welch_se_df(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = va + vb
    if se2 == 0.0:
        return 0.0, math.inf
    return math.sqrt(se2), float(se2**2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1)))


def tost(a: Sequence[float], b: Sequence[float], margin: float, alpha: float = 0.05) -> TostResult:
    """Schuirmann's TOST with Welch's t: H0 ``|mean(a) - mean(b)| >= margin`` against equivalence.

    ``p = max(P(T > (d + margin) / se), P(T < (d - margin) / se))``; both samples need 2 values or more. Two
    samples without spread are equivalent exactly when ``|d| < margin`` (p 0 or 1).
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"Invalid margin: {margin!r}; expected a positive number")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"Invalid alpha: {alpha!r}; expected 0 < alpha < 1")
    x, y = _values(a, "a"), _values(b, "b")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Invalid sample sizes: {x.size}, {y.size}; expected at least 2 values each")
    d = float(x.mean() - y.mean())
    se, df = _welch_se_df(x, y)
    if se == 0.0:
        return TostResult(d, 0.0, df, 0.0 if abs(d) < margin else 1.0, float(margin), alpha)
    p_low = t_sf((d + margin) / se, df)  # H0: d <= -margin
    p_high = t_sf((margin - d) / se, df)  # H0: d >= margin
    return TostResult(d, se, df, max(p_low, p_high), float(margin), alpha)


def min_detectable_effect(
    sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true difference of means a two-sided Welch t test at ``alpha`` finds with probability
    ``power``: ``(t_{1-alpha/2, df} + t_{power, df}) * sqrt(sd_a^2/n_a + sd_b^2/n_b)``, ``df`` Welch-Satterthwaite
    (the usual normal-shift approximation; for sd 1, 64 seeds each, alpha 0.05, power 0.8 it gives Cohen's 0.5)."""
    for name, n in (("n_a", n_a), ("n_b", n_b)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"Invalid {name}: {n!r}; expected an integer >= 2")
    for name, sd in (("sd_a", sd_a), ("sd_b", sd_b)):
        if not (math.isfinite(sd) and sd >= 0):
            raise ValueError(f"Invalid {name}: {sd!r}; expected a finite number >= 0")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"Invalid alpha: {alpha!r}; expected 0 < alpha < 1")
    if not 0.0 < power < 1.0:
        raise ValueError(f"Invalid power: {power!r}; expected 0 < power < 1")
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    se2 = va + vb
    if se2 == 0.0:
        return 0.0
    df = se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * math.sqrt(se2)


VERDICTS = ("best", "as good as", "better", "worse", "inconclusive", "unstable")


@dataclass(frozen=True)
class Verdict:
    """One optimizer against the best: ``label`` (one of :data:`VERDICTS`), ``diff`` = its mean minus the best's
    (in the metric's units, sign as measured), ``worse_p`` (max-t adjusted, :func:`best_set`), ``equivalence_p``
    (TOST, Holm-adjusted), ``mde`` (:func:`min_detectable_effect`), and for ``unstable`` the failed seeds."""

    label: str
    diff: float = math.nan
    worse_p: float | None = None
    equivalence_p: float | None = None
    mde: float | None = None
    failed: int = 0
    n: int = 0


@dataclass(frozen=True)
class Comparison:
    """:func:`classify`'s answer: the best, every optimizer's verdict, the margin and alpha it used."""

    best: str | None
    verdicts: dict[str, Verdict]
    margin: float
    alpha: float
    tested: bool = True

    @property
    def as_good(self) -> tuple[str, ...]:
        """The best and those as good as it (the best set), best first in the order of ``verdicts``."""
        return tuple(n for n, v in self.verdicts.items() if v.label in ("best", "as good as"))

    def labelled(self, label: str) -> tuple[str, ...]:
        return tuple(n for n, v in self.verdicts.items() if v.label == label)


def classify(
    samples: Mapping[str, Sequence[float]],
    *,
    higher_is_better: bool,
    margin: float,
    alpha: float = 0.05,
    failed: Mapping[str, int] | None = None,
    power: float = 0.8,
    simulations: int = 4000,
    seed: int = 0,
) -> Comparison:
    """Every optimizer's verdict against the best (the highest mean, or lowest, among the stable ones).

    ``samples[name]``: the values of its seeds that did not fail; ``failed[name]``: how many failed (diverged or
    at chance). An optimizer with a failed seed is ``unstable`` and takes no part in the tests. Among the others:
    ``as good as`` where the TOST of :func:`tost` (margin ``margin``, p-values Holm-adjusted over the compared
    optimizers) shows equivalence at ``alpha`` (a difference smaller than the margin counts as none, even where
    it is significant); else ``worse`` where the max-t test of :func:`best_set` rejects "equal to the best" at
    ``alpha``; else ``inconclusive``, with the minimum detectable effect of these seeds.
    With a single value each (a deterministic task) nothing is tested: exact ties with the best are ``as good
    as``, the rest ``worse`` (``tested`` False). Deterministic (the max-t simulation is seeded).
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"Invalid margin: {margin!r}; expected a positive number")
    failed = dict(failed or {})
    for name, k in failed.items():
        if name not in samples:
            raise ValueError(f"Invalid failed: {name!r} is not in samples")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"Invalid failed[{name!r}]: {k!r}; expected an integer >= 0")
    stable = {n: v for n, v in samples.items() if failed.get(n, 0) == 0}
    for n, v in samples.items():
        if failed.get(n, 0) == 0 and len(list(v)) == 0:
            raise ValueError(f"Invalid samples[{n!r}]: empty, and no failed seeds")
    unstable = {
        n: Verdict("unstable", failed=failed[n], n=failed[n] + len(list(samples[n])))
        for n in samples
        if failed.get(n, 0) > 0
    }
    if not stable:
        return Comparison(None, unstable, float(margin), alpha)
    bs = best_set(stable, higher_is_better=higher_is_better, alpha=alpha, simulations=simulations, seed=seed)
    data = {n: _values(v, f"samples[{n!r}]") for n, v in stable.items()}
    ref = data[bs.best]
    verdicts: dict[str, Verdict] = {bs.best: Verdict("best", 0.0, 1.0, None, None, 0, ref.size)}
    others = [n for n in stable if n != bs.best]
    if not bs.tested:
        for n in others:
            d = float(data[n].mean() - ref.mean())
            verdicts[n] = Verdict("as good as" if n in bs.members else "worse", d, bs.adjusted_p[n], None, None, 0,
                                  data[n].size)
        return Comparison(bs.best, {**verdicts, **unstable}, float(margin), alpha, tested=False)
    eq = holm([tost(data[n], ref, margin, alpha).p for n in others])
    for n, q in zip(others, eq, strict=True):
        x = data[n]
        d = float(x.mean() - ref.mean())
        mde = min_detectable_effect(float(x.std(ddof=1)), x.size, float(ref.std(ddof=1)), ref.size, alpha, power)
        if q <= alpha:
            label = "as good as"
        elif bs.adjusted_p[n] <= alpha:
            label = "worse"
        else:
            label = "inconclusive"
        verdicts[n] = Verdict(label, d, bs.adjusted_p[n], q, mde, 0, x.size)
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(verdicts, key=lambda n: (n != bs.best, -sign * verdicts[n].diff))
    return Comparison(bs.best, {**{n: verdicts[n] for n in order}, **unstable}, float(margin), alpha)


def performance_ratios(times: Mapping[str, Mapping[str, float]], r_max: float = R_MAX) -> dict[str, dict[str, float]]:
    """``times[task][optimizer]`` (time to target, ``inf`` for a miss) -> ratio to the fastest on each task.

    As in AlgoPerf, a ratio above ``r_max`` counts as a miss (``inf``), and a task no optimizer solved gives
    every optimizer ``inf``.
    """
    if not r_max > 1:
        raise ValueError(f"Invalid r_max: {r_max!r}; expected a number > 1")
    out: dict[str, dict[str, float]] = {}
    for task, row in times.items():
        if not row:
            raise ValueError(f"Invalid times[{task!r}]: {{}}; expected at least one optimizer")
        for name, t in row.items():
            if math.isnan(t) or t < 0:
                raise ValueError(f"Invalid times[{task!r}][{name!r}]: {t!r}; expected a time >= 0 or inf")
        fastest = min(row.values())
        ratios = {}
        for name, t in row.items():
            if not math.isfinite(t) or not math.isfinite(fastest):
                ratios[name] = math.inf
            else:
                r = 1.0 if t == fastest else (t / fastest if fastest > 0 else math.inf)
                ratios[name] = r if r <= r_max else math.inf
        out[task] = ratios
    return out


def performance_profile(ratios: Mapping[str, Mapping[str, float]], taus: Sequence[float]) -> dict[str, list[float]]:
    """Dolan–Moré profile ``rho_o(tau)``: the fraction of tasks on which optimizer ``o`` is within ``tau`` of the
    fastest, for each ``tau`` in ``taus``. Every task must list the same optimizers."""
    tasks = list(ratios)
    if not tasks:
        raise ValueError("Invalid ratios: {}; expected at least one task")
    names = list(ratios[tasks[0]])
    for t in tasks:
        if set(ratios[t]) != set(names):
            raise ValueError(f"Invalid ratios[{t!r}]: optimizers {sorted(ratios[t])}; expected {sorted(names)}")
    return {n: [sum(ratios[t][n] <= tau for t in tasks) / len(tasks) for tau in taus] for n in names}


def integrated_score(ratios: Mapping[str, Mapping[str, float]], r_max: float = R_MAX) -> dict[str, float]:
    """AlgoPerf's benchmark score: ``(1 / (r_max - 1)) ∫_1^{r_max} rho(tau) dtau`` per optimizer, in [0, 1].

    Exact for the step-function profile: each task contributes ``(r_max - r) / (r_max - 1)`` for a ratio
    ``r <= r_max`` and 0 for a miss, averaged over tasks (1 = fastest everywhere).
    """
    if not r_max > 1:
        raise ValueError(f"Invalid r_max: {r_max!r}; expected a number > 1")
    tasks = list(ratios)
    if not tasks:
        raise ValueError("Invalid ratios: {}; expected at least one task")
    names = list(ratios[tasks[0]])
    return {
        n: sum((r_max - max(1.0, ratios[t][n])) / (r_max - 1) if ratios[t][n] <= r_max else 0.0 for t in tasks)
        / len(tasks)
        for n in names
    }
