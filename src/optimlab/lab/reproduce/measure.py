"""What the claims measure with: a tuned study that stops the claim when it is not complete, a study's final runs in
seed order, missing numbers as NaN, and the two-sample comparisons the verdict rules use.

A run's numbers come from its record (:class:`~optimlab.lab.training.record.RunRecord`: ``final``, ``at``, ``test``,
``steps_to``), which gives ``None`` for a missing value and never looks at the run's status; a claim that counts a
diverged run as missing says so (``or_nan(r.test("accuracy")) if r.ok else math.nan``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: an experiment module is read by every command (``optimlab reproduce list``)
    from optimlab.lab.study.tuning import StudyResult
    from optimlab.lab.training.record import RunRecord

__all__ = ["tuned_study", "finals", "or_nan", "mean", "std", "welch"]


def tuned_study(ctx: Any, task: str, optimizers: Sequence[str], protocol: Any, subdir: str,
                callbacks: Any = None) -> StudyResult:
    """``ctx.tune``: :func:`~optimlab.lab.study.tuning.tune_and_run` in ``ctx.folder / subdir`` (the protocol of
    ``optimlab compare``, resumable by config key; ``callbacks`` as ``ctx.tune`` takes them). Raises
    KeyboardInterrupt when the study was interrupted or is not complete, so the experiment stops there (instead of
    computing a verdict from half a study; what finished is kept in the folder) and the same command resumes it."""
    result = ctx.tune(task, list(optimizers), protocol, subdir, callbacks=callbacks)
    if result.interrupted or not result.complete:
        raise KeyboardInterrupt
    return result


def finals(result: StudyResult, spec: str) -> list[RunRecord]:
    """The final runs of ``spec`` in ``result``, in seed order."""
    return sorted(result.results[spec].finals, key=lambda r: r.config.seed)


def or_nan(value: float | None) -> float:
    """``value`` as a float; NaN for ``None`` (a value a record does not have, or that was not finite)."""
    return math.nan if value is None else float(value)


def mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def std(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if len(vals) < 2:
        return math.nan
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(mean(a) - mean(b), two-sided Welch p)``; p is NaN when a side has fewer than two finite values or both
    have zero variance (then the difference alone decides, as the rules say)."""
    from optimlab.lab.present.stats import welch_test

    fa = [float(v) for v in a if math.isfinite(v)]
    fb = [float(v) for v in b if math.isfinite(v)]
    if not fa or not fb:
        return math.nan, math.nan
    diff = sum(fa) / len(fa) - sum(fb) / len(fb)
    try:
        return diff, float(welch_test(fa, fb).p)
    except (ValueError, ZeroDivisionError):
        return diff, math.nan
