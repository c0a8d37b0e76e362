"""The numbers a study reports, per optimizer, computed from its records with :mod:`optimlab.lab.present.stats`.

Headline: the final test metric over the final seeds (the training loss for the data-free 2-D tasks), mean and
95 % interval, and the set of optimizers indistinguishable from the best (:func:`optimlab.lab.present.stats.best_set`).
An optimizer with a diverged final seed cannot be in that set. Also: validation metric, training loss, the
generalization gap, steps and training CPU seconds to the task's validation target (median over seeds, ``inf``
when more than half miss it; evaluation time excluded), the optimizer's own step time apart from the model's
forward+backward (CPU time, medians over steps), and the tuning cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from optimlab.lab.present import stats
from optimlab.lab.study.selection import Selection
from optimlab.lab.study.tuning import OptimizerResult, StudyResult
from optimlab.lab.training.record import RunRecord

__all__ = ["Row", "TaskSummary", "summarize_study", "headline_value"]


@dataclass
class Row:
    """One optimizer's summary under a protocol."""

    spec: str
    selection: Selection | None
    n: int  # final seeds with a record
    expected: int  # final seeds the protocol asks for
    diverged: int
    headline: stats.Interval | None  # final test metric (training loss on the 2-D tasks)
    val: stats.Interval | None
    train_loss: stats.Interval | None
    gap: stats.Interval | None  # oriented so that positive = better on train than on test
    steps_to_target: float
    cpu_to_target: float
    reached: int
    step_ms: stats.Interval | None  # optimizer.step() CPU ms, median over steps, per run
    fwd_bwd_ms: stats.Interval | None
    overhead_pct: stats.Interval | None  # step / (forward + backward), %
    tuning_trials: int
    tuning_cpu_seconds: float
    final_cpu_seconds: float
    in_best_set: bool = False
    adjusted_p: float | None = None
    records: list[RunRecord] = field(default_factory=list, repr=False)

    @property
    def complete(self) -> bool:
        return self.selection is not None and self.n == self.expected


@dataclass
class TaskSummary:
    """A study's rows, best first, and its indistinguishable-from-best set."""

    study: StudyResult
    rows: list[Row]
    best: stats.BestSet | None
    headline_split: str  # "test", or "train" for the 2-D tasks
    metric: str
    higher_is_better: bool
    target: float | None

    @property
    def members(self) -> list[str]:
        return list(self.best.members) if self.best else []


def headline_value(record: RunRecord) -> float | None:
    """A final run's headline number: its test metric, or its final training loss on a task without splits
    (``None`` for a diverged run, or a value that was not finite)."""
    if not record.ok:
        return None
    if record.test_values is not None:
        return record.test(record.metric)
    return record.final(f"train_{record.metric}")


def _ci(values: list[float | None]) -> stats.Interval | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return stats.mean_ci(finite) if finite and len(finite) == len(values) else None


def _median_time(times: list[float]) -> float:
    if not times:
        return math.inf
    return float(np.median(np.asarray(times, dtype=float)))  # inf when more than half are inf


def _row(result: OptimizerResult, study: StudyResult) -> Row:
    task = study.task
    target = study.protocol.target_value
    m, higher = task.metric, task.higher_is_better
    recs = sorted(result.finals, key=lambda r: r.config.seed)
    heads = [headline_value(r) for r in recs]
    diverged = sum(not r.ok for r in recs)
    gaps = []
    for r in recs:
        train, test = r.final(f"train_{m}"), r.test(m)
        if train is None or test is None:
            gaps.append(None)
        else:
            gaps.append(train - test if higher else test - train)
    steps_t, cpu_t = [], []
    key = f"{task.selection_split}_{m}"
    for r in recs:
        if target is None or key not in r.history:
            continue
        steps_t.append(r.steps_to(target, key=key, higher_is_better=higher))
        cpu_t.append(r.cpu_seconds_to(target, key=key, higher_is_better=higher))
    step_ms = [r.step_cpu_ms for r in recs]
    fb_ms = [r.fwd_bwd_cpu_ms for r in recs]
    overhead = [100 * a / b if a is not None and b else None for a, b in zip(step_ms, fb_ms, strict=True)]
    sel = result.selection
    return Row(
        spec=result.spec,
        selection=sel,
        n=len(recs),
        expected=result.expected_finals,
        diverged=diverged,
        headline=_ci(heads) if recs else None,
        val=_ci([r.final(f"val_{m}") for r in recs]) if recs and task.selection_split == "val" else None,
        train_loss=_ci([r.final("train_loss") for r in recs]) if recs else None,
        gap=_ci(gaps) if recs and task.final_splits != ("train",) else None,
        steps_to_target=_median_time(steps_t),
        cpu_to_target=_median_time(cpu_t),
        reached=sum(math.isfinite(t) for t in steps_t),
        step_ms=_ci(step_ms) if recs else None,
        fwd_bwd_ms=_ci(fb_ms) if recs else None,
        overhead_pct=_ci(overhead) if recs else None,
        tuning_trials=len(sel.trials) if sel else 0,
        tuning_cpu_seconds=result.tuning_cpu_seconds,
        final_cpu_seconds=sum(r.train_cpu_seconds or 0.0 for r in recs),
        records=recs,
    )


def summarize_study(study: StudyResult) -> TaskSummary:
    """Rows for every optimizer of ``study`` (best headline first; incomplete ones last) and the best set,
    taken over the optimizers whose final seeds are all present and none diverged."""
    task = study.task
    rows = [_row(r, study) for r in study.results.values()]
    eligible = {
        r.spec: [headline_value(rec) for rec in r.records]
        for r in rows
        if r.complete and r.diverged == 0 and r.headline is not None
    }
    best = None
    if eligible:
        best = stats.best_set(eligible, higher_is_better=task.higher_is_better, alpha=study.protocol.alpha)
        for r in rows:
            r.in_best_set = r.spec in best.members
            r.adjusted_p = best.adjusted_p.get(r.spec)
    sign = 1.0 if task.higher_is_better else -1.0

    def order(r: Row) -> tuple:
        has = r.headline is not None and r.complete and r.diverged == 0
        return (not has, -sign * r.headline.mean if has else 0.0, r.spec)

    rows.sort(key=order)
    return TaskSummary(
        study=study,
        rows=rows,
        best=best,
        headline_split="test" if "test" in task.final_splits else "train",
        metric=task.metric,
        higher_is_better=task.higher_is_better,
        target=study.protocol.target_value,
    )
