"""The numbers a study reports, per optimizer, computed from its records with :mod:`optimlab.lab.present.stats`.

Headline: the final test metric over the final seeds (the training loss for the data-free 2-D tasks), mean and
95 % percentile-bootstrap interval (:func:`optimlab.lab.present.stats.bootstrap_ci`: inside the metric's range)
over the seeds that did not fail, and every optimizer's verdict against the best
(:func:`optimlab.lab.present.stats.classify`: best, as good as, worse, inconclusive, unstable). A seed *failed*
when it diverged or ended at chance (:func:`at_chance`); an optimizer with a failed seed is "unstable" and never
in the best set, and its failed seeds are counted, not averaged in. Also: validation metric, training loss, the
generalization gap, steps and training CPU seconds to the task's validation target (median over seeds, ``inf``
when more than half miss it; evaluation time excluded), the optimizer's own step time apart from the model's
forward+backward (CPU time, medians over steps), and the tuning cost.

With several independent tuning studies (``Protocol.studies`` > 1, AlgoPerf's rule) the headline is the median
over studies of each study's mean, with a two-level bootstrap interval (studies, then seeds within each:
:func:`optimlab.lab.present.stats.hierarchical_bootstrap_ci`), so it includes the selection noise of re-tuning.
The verdicts then take the per-study means as the units (:func:`summarize_study` says why). How often each
optimizer's selected setting sits at the edge of the values tried is counted per study (:func:`edge_report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from optimlab.lab.present import stats
from optimlab.lab.study.selection import Selection
from optimlab.lab.study.tuning import OptimizerResult, StudyResult
from optimlab.lab.training.record import RunRecord

__all__ = [
    "Row", "TaskSummary", "summarize_study", "headline_value", "initial_value", "at_chance", "CHANCE_FRACTION",
    "edge_counts", "edge_report"]


@dataclass
class Row:
    """One optimizer's summary under a protocol."""

    spec: str
    selection: Selection | None
    n: int  # final seeds with a record
    expected: int  # final seeds the protocol asks for
    diverged: int
    headline: stats.Interval | None  # final test metric (train loss on the 2-D tasks) over the seeds that did not fail
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
    in_best_set: bool = False  # the best, or as good as it (equivalent within the protocol's margin)
    adjusted_p: float | None = None  # max-t adjusted p-value of "equal to the best"
    records: list[RunRecord] = field(default_factory=list, repr=False)
    at_chance: int = 0  # final seeds that ended no better than the untrained model (:func:`at_chance`)
    verdict: stats.Verdict | None = None  # against the best (:func:`optimlab.lab.present.stats.classify`)
    selections: list[Selection | None] = field(default_factory=list, repr=False)  # each study's selection
    study_values: list[list[float]] = field(default_factory=list, repr=False)  # per study: the ok seeds' values

    @property
    def studies(self) -> int:
        return max(1, len(self.selections))

    @property
    def study_means(self) -> list[float]:
        """Each study's mean over its seeds that did not fail (a study without one is left out)."""
        return [float(np.mean(v)) for v in self.study_values if v]

    @property
    def complete(self) -> bool:
        return self.selection is not None and self.n == self.expected

    @property
    def failed(self) -> int:
        """Final seeds that diverged or ended at chance."""
        return self.diverged + self.at_chance

    @property
    def ok(self) -> int:
        return self.n - self.failed

    def seeds_text(self) -> str:
        """``"3/5 ok; 1 diverged, 1 at chance"``, or ``"5/5 ok"``."""
        why = [f"{k} {what}" for k, what in ((self.diverged, "diverged"), (self.at_chance, "at chance")) if k]
        return f"{self.ok}/{self.n} ok" + (f"; {', '.join(why)}" if why else "")


@dataclass
class TaskSummary:
    """A study's rows, best first, and the best set: the best and those as good as it.

    ``best`` keeps the :class:`~optimlab.lab.present.stats.BestSet` shape (``members``: the best set;
    ``adjusted_p``: the max-t p-values); ``comparison`` holds every verdict; ``margin`` the equivalence margin."""

    study: StudyResult
    rows: list[Row]
    best: stats.BestSet | None
    headline_split: str  # "test", or "train" for the 2-D tasks
    metric: str
    higher_is_better: bool
    target: float | None
    comparison: stats.Comparison | None = None
    margin: float = math.nan

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


def initial_value(record: RunRecord) -> float | None:
    """The untrained model's training metric (the history's first evaluation, at step 0), or ``None``."""
    values = record.history.get(f"train_{record.metric}")
    v = values[0] if values else None
    return float(v) if v is not None and math.isfinite(v) else None


CHANCE_FRACTION = 0.05


def at_chance(record: RunRecord, margin: float, higher_is_better: bool) -> bool:
    """Whether a final run that did not diverge ended at chance: its headline value improved on the untrained
    model's (its training metric at step 0: about ``1 / classes`` for accuracy, the initial loss) by less than
    ``max(margin, CHANCE_FRACTION * |ideal - initial|)``, the ideal being 1 for accuracy and perplexity and 0 for
    a loss (10 classes: at or below 14.5 % accuracy). A diverged run, or one without the two values, is not "at
    chance" (it is counted elsewhere)."""
    head, init = headline_value(record), initial_value(record)
    if head is None or init is None or not math.isfinite(head):
        return False
    ideal = 0.0 if record.metric == "loss" else 1.0
    least = max(margin, CHANCE_FRACTION * abs(ideal - init))
    return head < init + least if higher_is_better else head > init - least


def _boot(values: list[float | None]) -> stats.Interval | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return stats.bootstrap_ci(finite) if finite else None


def _ci(values: list[float | None]) -> stats.Interval | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return stats.mean_ci(finite) if finite and len(finite) == len(values) else None


def edge_counts(selections: list[Selection | None]) -> dict[tuple[str, str], int]:
    """``{(hyperparameter, "upper"|"lower"): studies}``: in how many studies the selected value of each
    hyperparameter was the highest (lowest) of those tried."""
    counts: dict[tuple[str, str], int] = {}
    for sel in selections:
        if sel is None:
            continue
        for name, side in sel.edge_sides.items():
            counts[name, side] = counts.get((name, side), 0) + 1
    return counts


def edge_report(row: Row) -> str:
    """``"lr at the upper edge in 2/3 studies; beta2 at the lower edge in 1/3 studies"`` (the edge of the values
    tried, per tuning study), or ``""`` when no selected value sits at an edge."""
    counts = edge_counts(row.selections)
    n = sum(s is not None for s in row.selections)
    return "; ".join(f"{name} at the {side} edge in {k}/{n} stud{'y' if n == 1 else 'ies'}"
                     for (name, side), k in sorted(counts.items()))


def _median_time(times: list[float]) -> float:
    if not times:
        return math.inf
    return float(np.median(np.asarray(times, dtype=float)))  # inf when more than half are inf


def _row(result: OptimizerResult, study: StudyResult) -> Row:
    task = study.task
    target = study.protocol.target_value
    m, higher = task.metric, task.higher_is_better
    margin = study.protocol.margin_value
    recs = sorted(result.finals, key=lambda r: r.config.seed)
    chance = [at_chance(r, margin, higher) for r in recs]
    heads = [headline_value(r) for r, c in zip(recs, chance, strict=True) if not c]
    groups = []
    for part in result.studies:
        vs = [headline_value(r) for r in sorted(part.finals, key=lambda r: r.config.seed)
              if not at_chance(r, margin, higher)]
        groups.append([v for v in vs if v is not None and math.isfinite(v)])
    if len(groups) > 1:  # several studies: median of the study means, two-level bootstrap interval
        filled = [g for g in groups if g]
        headline = stats.hierarchical_bootstrap_ci(filled) if filled else None
    else:
        headline = _boot(heads) if recs else None
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
        headline=headline,
        val=_ci([r.final(f"val_{m}") for r in recs]) if recs and task.selection_split == "val" else None,
        train_loss=_ci([r.final("train_loss") for r in recs]) if recs else None,
        gap=_ci(gaps) if recs and task.final_splits != ("train",) else None,
        steps_to_target=_median_time(steps_t),
        cpu_to_target=_median_time(cpu_t),
        reached=sum(math.isfinite(t) for t in steps_t),
        step_ms=_ci(step_ms) if recs else None,
        fwd_bwd_ms=_ci(fb_ms) if recs else None,
        overhead_pct=_ci(overhead) if recs else None,
        tuning_trials=sum(len(s.trials) for s in result.selections if s is not None),
        tuning_cpu_seconds=result.tuning_cpu_seconds,
        final_cpu_seconds=sum(r.train_cpu_seconds or 0.0 for r in recs),
        records=recs,
        at_chance=sum(chance),
        selections=list(result.selections),
        study_values=groups,
    )


def summarize_study(study: StudyResult) -> TaskSummary:
    """Rows for every optimizer of ``study`` (the stable ones best headline first, then the unstable, then the
    incomplete) and every complete optimizer's verdict (:func:`optimlab.lab.present.stats.classify`, at the
    protocol's ``alpha`` and ``margin_value``).

    With several tuning studies the verdicts take each study's mean as one unit (not the seeds pooled): the seeds
    of a study share its selected setting, so they are not independent draws of "tune this optimizer, then run
    it"; pooling them would count the selection noise once per study while claiming one degree of freedom per
    seed, and call differences significant that re-tuning alone produces. With few studies this is less powerful
    (more "inconclusive"), which is the honest answer. The best is then the highest (lowest) mean of the study
    means; the headline shown is their median (AlgoPerf)."""
    task = study.task
    margin = study.protocol.margin_value
    rows = [_row(r, study) for r in study.results.values()]
    complete = [r for r in rows if r.complete]
    samples: dict[str, list[float]] = {}
    for r in complete:
        values = [(headline_value(rec), at_chance(rec, margin, task.higher_is_better)) for rec in r.records]
        samples[r.spec] = [v for v, c in values if v is not None and math.isfinite(v) and not c]
    # failed: diverged, at chance, or a value that is not finite
    failed = {spec: len(next(r for r in complete if r.spec == spec).records) - len(v) for spec, v in samples.items()}
    if study.protocol.studies > 1:  # the study means are the units (see above)
        samples = {r.spec: r.study_means for r in complete}
    best = comparison = None
    if complete:
        comparison = stats.classify(
            samples, higher_is_better=task.higher_is_better, margin=margin, alpha=study.protocol.alpha, failed=failed
        )
        members = comparison.as_good
        if comparison.best is not None:
            adjusted = {n: (v.worse_p if v.worse_p is not None else 0.0) for n, v in comparison.verdicts.items()}
            best = stats.BestSet(
                comparison.best, members, adjusted, comparison.alpha, "max-t", tested=comparison.tested
            )
        for r in rows:
            r.verdict = comparison.verdicts.get(r.spec)
            r.in_best_set = r.spec in members
            r.adjusted_p = r.verdict.worse_p if r.verdict is not None else None
    sign = 1.0 if task.higher_is_better else -1.0

    def order(r: Row) -> tuple:
        has = r.headline is not None and r.complete
        stable = has and r.failed == 0
        return (not has, not stable, -sign * r.headline.mean if has else 0.0, r.spec)

    rows.sort(key=order)
    return TaskSummary(
        study=study,
        rows=rows,
        best=best,
        headline_split="test" if "test" in task.final_splits else "train",
        metric=task.metric,
        higher_is_better=task.higher_is_better,
        target=study.protocol.target_value,
        comparison=comparison,
        margin=margin,
    )
