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
from optimlab.lab.present.stats import Interval
from optimlab.lab.present.summary import Row, TaskSummary

__all__ = [
    "headline_sentence",
    "format_summary",
    "summary_table",
    "summary_notes",
    "metric_name",
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
    if row.diverged:
        return f"diverged {row.diverged}/{row.n}"
    if not row.complete:
        return f"incomplete {row.n}/{row.expected}"
    if ts.best is None or row.adjusted_p is None:
        return "-"
    if row.spec == ts.best.best:
        return "best"
    if not ts.best.tested:
        return "tie" if row.in_best_set else "worse"
    return f"{'≈ ' if row.in_best_set else 'worse '}p={row.adjusted_p:.2g}"


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
        "vs best",
    ]
    has_val = ts.study.task.selection_split == "val"
    if has_val:
        header.append(f"val {ts.metric}{unit}")
    header += ["train loss", f"to val {target_text(ts)}" if has_val else f"to {target_text(ts)}"]
    header += ["opt ms/step (% of fwd+bwd)", "tuning"]
    rows = []
    for r in ts.rows:
        cells = [r.spec, settings_text(r), _fmt_ci(r.headline, ts.metric), _vs_best(r, ts)]
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
    """The answer in one sentence: the best optimizer, its number, and who is indistinguishable from it."""
    task = ts.study.task.name
    if ts.best is None:
        return f"{task}: no optimizer has a complete set of final runs yet."
    best = next(r for r in ts.rows if r.spec == ts.best.best)
    value = _fmt_ci(best.headline, ts.metric) + _unit(ts.metric)
    others = [m for m in ts.best.members if m != ts.best.best]
    n = best.n
    if not ts.best.tested:
        tie = f"; tied: {', '.join(others)}" if others else ""
        return f"{task}: best {ts.best.best} ({metric_name(ts)} {value}; deterministic task, exact ranking{tie})."
    same = (
        f"indistinguishable from it: {', '.join(others)}"
        if others
        else "no other optimizer is indistinguishable from it"
    )
    return (
        f"{task}: best {ts.best.best} ({metric_name(ts)} {value}, mean [95% CI] over {n} seeds); {same} "
        f"(Welch t against the best, max-t multiplicity correction, alpha {ts.best.alpha:g})."
    )


def summary_notes(ts: TaskSummary) -> list[str]:
    notes = []
    for r in ts.rows:
        if r.selection is not None:
            for e in r.selection.edges:
                notes.append(
                    f"{r.spec}: {e}: the best setting may lie outside the search space; widen it with "
                    f"--space '{r.spec}:{e.split()[0]}=LOW..HIGH'"
                )
            if r.selection.all_diverged:
                notes.append(f"{r.spec}: every tuning trial diverged; its final runs use the smallest lr tried")
        if r.diverged:
            notes.append(f"{r.spec}: {r.diverged} of {r.n} final seeds diverged; it cannot be in the best set")
    best = next((r for r in ts.rows if ts.best is not None and r.spec == ts.best.best), None)
    if best is not None and ts.best.tested and best.headline is not None and best.headline.n > 1:
        b = best.headline.half_width
        for r in ts.rows:
            if r.in_best_set and r is not best and r.headline is not None and r.headline.half_width > 3 * b:
                unit = " pp" if ts.metric == "accuracy" else ""
                s = _scale(ts.metric)
                notes.append(
                    f"{r.spec} is in the indistinguishable set because its seeds vary widely (95% CI ±"
                    f"{s * r.headline.half_width:.3g}{unit} against ±{s * b:.3g}{unit} for {best.spec}), not "
                    "because it is as good: more seeds would be needed to separate them"
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
        "vs best: 'p' is the multiplicity-adjusted p-value of 'as good as the best' (≈: indistinguishable); "
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
]


def write_csv(ts: TaskSummary, path: str | os.PathLike) -> None:
    """One row per optimizer; metrics in their natural units (accuracy as a fraction)."""

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
                ]
            )

