"""The report's numbers as text: the answer in one sentence, the summary table with its notes (what ``optimlab
compare`` prints), and ``summary.csv``.

Metrics are shown in their units (:func:`optimlab.lab.catalog.metrics.fmt_value`: accuracy in %); the CSV keeps
their natural units (accuracy as a fraction).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

from optimlab.lab.catalog.metrics import fmt_value
from optimlab.lab.catalog.metrics import scale as _scale
from optimlab.lab.catalog.metrics import unit as _unit
from optimlab.lab.catalog.presets import ABBREVIATIONS
from optimlab.lab.present.stats import SIMULATIONS, Interval
from optimlab.lab.present.summary import Row, TaskSummary, edge_report

__all__ = [
    "headline_sentence",
    "format_summary",
    "summary_table",
    "summary_notes",
    "metric_name",
    "margin_text",
    "target_text",
    "settings_text",
    "write_csv",
    "CSV_COLUMNS",
]


def _fmt_ci(ci: Interval | None, metric: str) -> str:
    if ci is None:
        return "-"
    if ci.n < 2:
        return fmt_value(ci.mean, metric)
    return f"{fmt_value(ci.mean, metric)} [{fmt_value(ci.low, metric)}, {fmt_value(ci.high, metric)}]"


def margin_text(ts: TaskSummary) -> str:
    """The equivalence margin in the metric's display units: ``"1 pp"`` for 0.01 of accuracy."""
    if not math.isfinite(ts.margin):
        return "-"
    return f"{_scale(ts.metric) * ts.margin:.3g}{' pp' if ts.metric == 'accuracy' else ''}"


def _diff_text(x: float, ts: TaskSummary) -> str:
    return f"{_scale(ts.metric) * x:.2g}{' pp' if ts.metric == 'accuracy' else ''}"


def metric_name(ts: TaskSummary) -> str:
    split = "test" if ts.headline_split == "test" else "final"
    return f"{split} {ts.metric}"


def target_text(ts: TaskSummary) -> str:
    if ts.target is None:
        return "target"
    return f"{'≥' if ts.higher_is_better else '≤'} {fmt_value(ts.target, ts.metric)}{_unit(ts.metric)}"


def settings_text(row: Row) -> str:
    if row.selection is None:
        return "(tuning)"
    parts = [f"lr {row.selection.lr:.3g}"]
    short = {long: abbreviation for abbreviation, long in ABBREVIATIONS.items()}
    parts += [f"{short.get(k, k)} {v:.3g}" for k, v in sorted(row.selection.hparams.items())]
    return ", ".join(parts) + (" *" if row.selection.edges else "")


def _vs_best(row: Row, ts: TaskSummary) -> str:
    if not row.complete:
        return f"incomplete {row.n}/{row.expected}"
    v = row.verdict
    if v is None:
        return "-"
    if v.label == "unstable":
        return f"unstable ({row.seeds_text()})"
    if v.label == "best":
        return "best"
    if ts.comparison is not None and not ts.comparison.tested:
        return "tie" if v.label == "as good as" else "worse"
    if v.label == "as good as":
        return f"as good (TOST p={v.equivalence_p:.2g})"
    if v.label == "worse":
        return f"worse ({_p_text(v.worse_p)})"
    return f"inconclusive (MDE {_diff_text(v.mde or math.nan, ts)})"


def _p_text(p: float | None) -> str:
    """A max-t adjusted p-value, which is a count of simulations over :data:`~optimlab.lab.present.stats.SIMULATIONS`:
    0 is printed as the bound it is ("p<0.00025"), never as "p=0"."""
    if p is None:
        return "p=?"
    floor = 1 / SIMULATIONS
    return f"p<{floor:.2g}" if p < floor else f"p={p:.2g}"


def _time_text(row: Row, ts: TaskSummary) -> str:
    if ts.target is None or row.n == 0:
        return "-"
    if not math.isfinite(row.steps_to_target):
        return f"miss ({row.reached}/{row.n})"
    return f"{row.steps_to_target:.0f} st, {row.cpu_to_target:.1f} s ({row.reached}/{row.n})"


def _overhead_text(row: Row) -> str:
    if row.step_ms is None:
        return "-"
    pct = f" ({row.overhead_pct.mean:.0f}%)" if row.overhead_pct is not None else ""
    return f"{row.step_ms.mean:.2f}{pct}"


def summary_table(ts: TaskSummary) -> tuple[list[str], list[list[str]]]:
    unit = _unit(ts.metric)
    header = [
        "optimizer",
        "selected" if ts.study.protocol.tuned else "preset",
        f"{metric_name(ts)}{unit} [95% CI]",
        "seeds",
        "vs best",
    ]
    has_val = ts.study.task.selection_split == "val"
    if has_val:
        header.append(f"val {ts.metric}{unit}")
    header += ["train loss", f"to val {target_text(ts)}" if has_val else f"to {target_text(ts)}"]
    header += ["opt ms/step (% of fwd+bwd)", "tuning"]
    rows = []
    for r in ts.rows:
        cells = [r.spec, settings_text(r), _fmt_ci(r.headline, ts.metric), r.seeds_text(), _vs_best(r, ts)]
        if has_val:
            cells.append(fmt_value(r.val.mean, ts.metric) if r.val else "-")
        cells += [
            f"{r.train_loss.mean:.3g}" if r.train_loss else "-",
            _time_text(r, ts),
            _overhead_text(r),
            f"{r.tuning_trials} trials, {r.tuning_cpu_seconds:.0f} s" if r.tuning_trials else "none",
        ]
        rows.append(cells)
    return header, rows


def headline_sentence(ts: TaskSummary) -> str:
    """The answer in one sentence: the best optimizer and its number, those as good as it (equivalent within the
    protocol's margin), and by name those unstable or inconclusive; never a peer of the best on the strength of a
    wide interval."""
    task = ts.study.task.name
    c = ts.comparison
    if c is None or c.best is None:
        if c is not None and c.labelled("unstable"):
            return f"{task}: no optimizer is stable (every one has failed seeds: {', '.join(c.labelled('unstable'))})."
        return f"{task}: no optimizer has a complete set of final runs yet."
    best = next(r for r in ts.rows if r.spec == c.best)
    value = _fmt_ci(best.headline, ts.metric) + _unit(ts.metric)
    same = [n for n in c.as_good if n != c.best]
    unstable = [
        f"{r.spec} ({r.seeds_text()})" for r in ts.rows if r.verdict is not None and r.verdict.label == "unstable"
    ]
    tail = f"; unstable (seeds diverged or at chance; never in the best set): {', '.join(unstable)}" if unstable else ""
    if not c.tested:
        tie = f"; tied: {', '.join(same)}" if same else ""
        return f"{task}: best {c.best} ({metric_name(ts)} {value}; deterministic task, exact ranking{tie}){tail}."
    margin = margin_text(ts)
    good = (
        f"as good as it (within {margin}, TOST): {', '.join(same)}"
        if same
        else f"no other optimizer is shown within {margin} of it"
    )
    worse, unsure = c.labelled("worse"), c.labelled("inconclusive")
    parts = [good]
    if worse:
        parts.append(f"{len(worse)} worse")
    if unsure:
        parts.append(f"inconclusive (too few seeds to tell): {', '.join(unsure)}")
    n_studies = ts.study.protocol.studies
    over = (
        f"median of {n_studies} tuning studies' means [95% two-level bootstrap CI: studies, then seeds]"
        if n_studies > 1
        else f"mean [95% bootstrap CI] over {best.ok} seeds"
    )
    return (
        f"{task}: best {c.best} ({metric_name(ts)} {value}, {over}); "
        f"{'; '.join(parts)}{tail}."
    )


def summary_notes(ts: TaskSummary) -> list[str]:
    notes = []
    for r in ts.rows:
        if r.studies > 1 and all(x is not None for x in r.selections):
            picks = " | ".join(f"lr {x.lr:.3g}" + "".join(f", {k} {v:.3g}" for k, v in sorted(x.hparams.items()))
                               for x in r.selections if x is not None)
            means = ", ".join(fmt_value(m, ts.metric) for m in r.study_means)
            notes.append(f"{r.spec}: selected per study: {picks}; study means {means}")
        report = edge_report(r)
        if report:
            notes.append(f"{r.spec}: selected setting at the edge of the values tried: {report}")
        if r.selection is not None:
            for e in r.selection.edges:
                notes.append(
                    f"{r.spec}: {e}: the best setting may lie outside the search space; widen it with "
                    f"--space '{r.spec}:{e.split()[0]}=LOW..HIGH'"
                )
            if r.selection.all_diverged:
                notes.append(f"{r.spec}: every tuning trial diverged; its final runs use the smallest lr tried")
        if r.failed:
            left = f"its interval is over the {r.ok} seed(s) that did not fail" if r.ok else "no seed is left"
            notes.append(f"{r.spec}: {r.seeds_text()}; unstable, so not in the best set; {left}")
    for r in ts.rows:
        v = r.verdict
        if v is not None and v.label == "inconclusive" and v.mde is not None:
            notes.append(
                f"{r.spec}: inconclusive: neither shown within {margin_text(ts)} of the best nor shown worse; the "
                f"smallest difference these seeds could detect is {_diff_text(v.mde, ts)} (alpha "
                f"{ts.comparison.alpha:g}, 80 % power): more seeds would decide"
            )
    if ts.study.stale:
        notes.append(f"{ts.study.stale} record(s) in the folder belong to no run of this protocol and are ignored")
    return notes


def format_summary(ts: TaskSummary) -> str:
    """The plain-text answer, protocol line, table and notes (what ``optimlab compare`` prints)."""
    header, rows = summary_table(ts)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [headline_sentence(ts), f"protocol: {ts.study.protocol.describe()}", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    legend = [
        ("95% CI: percentile bootstrap over the seeds that did not fail (10000 resamples, seeded), so inside the "
         "metric's range;" if ts.study.protocol.studies == 1 else
         f"value: median over the {ts.study.protocol.studies} independent tuning studies of each study's mean; 95% "
         "CI: two-level percentile bootstrap (studies, then the seeds that did not fail within each; 10000 "
         "resamples, seeded), so it includes the study-to-study (re-tuning) spread and stays inside the metric's "
         "range; the verdicts take the study means as units;")
        + " seeds: those that diverged or ended at chance (no better than the untrained model by the "
        "margin) are counted there, not averaged in.",
        f"vs best: 'as good' = equivalent within the margin {margin_text(ts)} (TOST of two one-sided Welch t tests, "
        "an intersection-union test at alpha; p-values Holm-adjusted over the optimizers, so a false 'as good' "
        f"anywhere has probability <= {ts.study.protocol.alpha:g}); 'worse' = Welch t against the best, max-t "
        "(Westfall-Young) multiplicity correction; 'inconclusive' = neither, with the minimum detectable effect "
        "(MDE) at 80 % power; 'unstable' = a seed failed (never in the best set). "
        "* after a setting: at the edge of the values tried (see notes).",
        "opt ms/step: optimizer.step() CPU time (median over steps, mean over seeds), and its share of the "
        "model's forward+backward; times to target count training CPU seconds only (median over seeds).",
    ]
    lines += ["", *legend]
    notes = summary_notes(ts)
    if notes:
        lines += ["", "notes:", *(f"  - {n}" for n in notes)]
    return "\n".join(lines)


CSV_COLUMNS = [
    "task",
    "optimizer",
    "tuned",
    "lr",
    "hparams",
    "edges",
    "seeds",
    "diverged",
    "metric",
    "headline_split",
    "headline_mean",
    "headline_low",
    "headline_high",
    "headline_sd",
    "in_best_set",
    "adjusted_p",
    "val_mean",
    "train_loss_mean",
    "gap_mean",
    "gap_low",
    "gap_high",
    "target",
    "reached_target",
    "steps_to_target",
    "cpu_seconds_to_target",
    "step_cpu_ms",
    "fwd_bwd_cpu_ms",
    "overhead_pct",
    "tuning_trials",
    "tuning_cpu_seconds",
    "ok_seeds",
    "at_chance",
    "verdict",
    "equivalence_p",
    "mde",
    "margin",
    "studies",
    "study_means",
    "edge_studies",
]


def write_csv(ts: TaskSummary, path: str | os.PathLike) -> None:
    """One row per optimizer; metrics in their natural units (accuracy as a fraction); the headline interval is
    the bootstrap interval over the seeds that did not fail (``ok_seeds``)."""

    def ci(c: Interval | None) -> list[Any]:
        return ["", "", "", ""] if c is None else [c.mean, c.low, c.high, c.sd]

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in ts.rows:
            sel = r.selection
            gap = ci(r.gap)
            w.writerow(
                [
                    ts.study.task.name,
                    r.spec,
                    bool(sel and sel.tuned),
                    "" if sel is None else repr(sel.lr),
                    "" if sel is None else " ".join(f"{k}={v!r}" for k, v in sorted(sel.hparams.items())),
                    "" if sel is None else "; ".join(sel.edges),
                    r.n,
                    r.diverged,
                    ts.metric,
                    ts.headline_split,
                    *ci(r.headline),
                    r.in_best_set,
                    "" if r.adjusted_p is None else r.adjusted_p,
                    "" if r.val is None else r.val.mean,
                    "" if r.train_loss is None else r.train_loss.mean,
                    gap[0],
                    gap[1],
                    gap[2],
                    "" if ts.target is None else ts.target,
                    r.reached,
                    r.steps_to_target,
                    r.cpu_to_target,
                    "" if r.step_ms is None else r.step_ms.mean,
                    "" if r.fwd_bwd_ms is None else r.fwd_bwd_ms.mean,
                    "" if r.overhead_pct is None else r.overhead_pct.mean,
                    r.tuning_trials,
                    r.tuning_cpu_seconds,
                    r.ok,
                    r.at_chance,
                    "" if r.verdict is None else r.verdict.label,
                    "" if r.verdict is None or r.verdict.equivalence_p is None else r.verdict.equivalence_p,
                    "" if r.verdict is None or r.verdict.mde is None else r.verdict.mde,
                    ts.margin,
                    r.studies,
                    " ".join(repr(m) for m in r.study_means),
                    edge_report(r),
                ]
            )

