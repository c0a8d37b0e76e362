"""The report of a study folder: the answer first, then the evidence (``summary.csv``, PNG figures, ``report.html``).

It leads with the answer: the best optimizer and those indistinguishable from it, with the protocol and budget
in one line. Then: the headline metric with 95 % intervals, learning curves with 95 % bands, steps and CPU
seconds to the validation target, lr sensitivity over the tuning trials, generalization (train against test,
so underfitting shows), and the tuning cost. Every optimizer has one colour in every figure
(:func:`optimlab.lab.present.style.color_for`). Nothing is plotted that carries no information (the schedule is a line
of text unless optimizers ran different ones).
"""

from __future__ import annotations

import csv
import html
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.catalog.metrics import fmt_value
from optimlab.lab.catalog.metrics import scale as _scale
from optimlab.lab.catalog.metrics import unit as _unit
from optimlab.lab.catalog.presets import ABBREVIATIONS
from optimlab.lab.present.stats import Interval
from optimlab.lab.present.style import color_for
from optimlab.lab.present.summary import Row, TaskSummary, headline_value, summarize_study
from optimlab.lab.study.tuning import load_study
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import check_writable, named

__all__ = [
    "build_report",
    "format_summary",
    "headline_sentence",
    "write_csv",
    "fmt_value",
    "SUMMARY_FILE",
    "REPORT_FILE",
    "FIGURES",
]

SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.html"
FIGURES = ("answer", "curves", "time_to_target", "lr_sensitivity", "generalization", "trajectories", "schedules")


# ----------------------------------------------------------------------------------------------------
# Numbers as text


def _fmt_ci(ci: Interval | None, metric: str) -> str:
    if ci is None:
        return "-"
    if ci.n < 2:
        return fmt_value(ci.mean, metric)
    return f"{fmt_value(ci.mean, metric)} [{fmt_value(ci.low, metric)}, {fmt_value(ci.high, metric)}]"


def _metric_name(ts: TaskSummary) -> str:
    split = "test" if ts.headline_split == "test" else "final"
    return f"{split} {ts.metric}"


def _target_text(ts: TaskSummary) -> str:
    if ts.target is None:
        return "target"
    return f"{'≥' if ts.higher_is_better else '≤'} {fmt_value(ts.target, ts.metric)}{_unit(ts.metric)}"


def _settings_text(row: Row) -> str:
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


def _table(ts: TaskSummary) -> tuple[list[str], list[list[str]]]:
    unit = _unit(ts.metric)
    header = [
        "optimizer",
        "selected" if ts.study.protocol.tuned else "preset",
        f"{_metric_name(ts)}{unit} [95% CI]",
        "vs best",
    ]
    has_val = ts.study.task.selection_split == "val"
    if has_val:
        header.append(f"val {ts.metric}{unit}")
    header += ["train loss", f"to val {_target_text(ts)}" if has_val else f"to {_target_text(ts)}"]
    header += ["opt ms/step (% of fwd+bwd)", "tuning"]
    rows = []
    for r in ts.rows:
        cells = [r.spec, _settings_text(r), _fmt_ci(r.headline, ts.metric), _vs_best(r, ts)]
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
        return f"{task}: best {ts.best.best} ({_metric_name(ts)} {value}; deterministic task, exact ranking{tie})."
    same = (
        f"indistinguishable from it: {', '.join(others)}"
        if others
        else "no other optimizer is indistinguishable from it"
    )
    return (
        f"{task}: best {ts.best.best} ({_metric_name(ts)} {value}, mean [95% CI] over {n} seeds); {same} "
        f"(Welch t against the best, max-t multiplicity correction, alpha {ts.best.alpha:g})."
    )


def _notes(ts: TaskSummary) -> list[str]:
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
    header, rows = _table(ts)
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
    notes = _notes(ts)
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


# ----------------------------------------------------------------------------------------------------
# Figures


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_y(ax: Any) -> None:
    """A log y axis labelled with plain numbers (0.3, 1, 2); minor ticks labelled when it spans < 1.5 decades.

    Call after plotting, so that the data limits are known."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _save(plt: Any, fig: Any, path: Path) -> None:
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as e:  # a full disk: the error names the figure
        raise named(e, path) from None
    finally:
        plt.close(fig)


def _complete_rows(ts: TaskSummary) -> list[Row]:
    return [r for r in ts.rows if r.n > 0]


def _plot_answer(ts: TaskSummary, path: Path) -> bool:
    """Mean and 95 % interval of the headline metric per optimizer; filled: indistinguishable from the best."""
    rows = [r for r in ts.rows if r.headline is not None]
    if not rows:
        return False
    plt = _plt()
    s = _scale(ts.metric)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    y = np.arange(len(rows))
    best = next((r for r in rows if ts.best and r.spec == ts.best.best), None)
    if best is not None and best.headline.n > 1:
        ax.axvspan(s * best.headline.low, s * best.headline.high, color="0.85", zorder=0, lw=0)
    for i, r in enumerate(rows):
        c = color_for(r.spec)
        ci = r.headline
        if ci.n > 1:
            ax.plot([s * ci.low, s * ci.high], [i, i], color=c, lw=2.2, solid_capstyle="butt")
        values = [headline_value(rec) for rec in r.records]
        ax.plot(
            [s * v for v in values if v is not None],
            [i] * sum(v is not None for v in values),
            "|",
            color=c,
            ms=7,
            alpha=0.6,
        )
        filled = r.in_best_set
        ax.plot([s * ci.mean], [i], "o", ms=7, color=c, mfc=c if filled else "white", mew=1.6, zorder=3)
    ax.set_yticks(y, [r.spec + ("" if not r.diverged else f" ({r.diverged} div.)") for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{_metric_name(ts)}{_unit(ts.metric)}")
    if ts.metric in ("perplexity", "loss"):
        _log_x(ax)
    ax.grid(axis="x", alpha=0.3)
    n = max(r.n for r in rows)
    tested = ts.best is not None and ts.best.tested
    if tested:
        title = (
            f"{ts.study.task.name}: {_metric_name(ts)}, mean and 95% CI over {n} seeds\n"
            "filled: indistinguishable from the best (grey band: its CI); ticks: seeds"
        )
    else:
        title = f"{ts.study.task.name}: {_metric_name(ts)} of one run per optimizer\nfilled: the best (and exact ties)"
    ax.set_title(title, fontsize=10)
    _save(plt, fig, path)
    return True


def _log_x(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)


def _band(
    recs: list[RunRecord], key: str, x_key: str = "step", log: bool = False
) -> tuple[np.ndarray, ...] | None:
    """x, mean and 95 % band over seeds of ``history[key]`` on the evaluations every seed has; with ``log``,
    the mean and band of the logarithm (a geometric mean, whose band stays positive on a log axis)."""
    from optimlab.lab.present.stats import t_quantile

    recs = [r for r in recs if key in r.history]
    if not recs:
        return None
    n = min(len(r.history["step"]) for r in recs)
    if n == 0:
        return None
    x = np.array(recs[0].history[x_key][:n], dtype=float)
    v = np.array([[np.nan if a is None else a for a in r.history[key][:n]] for r in recs], dtype=float)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(np.where(v > 0, v, np.nan))
    back = np.exp if log else (lambda a: a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an evaluation at which every seed had diverged
        mean = np.nanmean(v, axis=0)
        if len(recs) < 2:
            return x, back(mean), back(mean), back(mean)
        half = t_quantile(0.975, len(recs) - 1) * np.nanstd(v, axis=0, ddof=1) / math.sqrt(len(recs))
    return x, back(mean), back(mean - half), back(mean + half)


def _plot_curves(ts: TaskSummary, path: Path) -> bool:
    rows = _complete_rows(ts)
    if not rows:
        return False
    plt = _plt()
    m = ts.metric
    panels = [("train_loss", "training loss (fixed training subset), geometric mean")]
    if ts.study.task.selection_split == "val":
        kind = "mean" if m == "accuracy" else "geometric mean"
        panels.append((f"val_{m}", f"validation {m}{_unit(m)}, {kind}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 1.6, 4.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        s = _scale(m) if key.endswith("accuracy") else 1.0
        log = key.endswith("loss") or key.endswith("perplexity")
        for r in rows:
            band = _band(r.records, key, log=log)
            if band is None:
                continue
            x, mean, lo, hi = band
            c = color_for(r.spec)
            ax.plot(x, s * mean, color=c, lw=1.4, label=r.spec)
            ax.fill_between(x, s * lo, s * hi, color=c, alpha=0.15, lw=0)
        if key.startswith("val") and ts.target is not None:
            ax.axhline(s * ts.target, color="k", ls="--", lw=0.8, label="target")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        if log:
            _log_y(ax)
        if key.endswith("accuracy"):  # the interesting range: from the worst final value to the top
            finals = [s * r.val.mean for r in rows if r.val is not None]
            if finals:
                ax.set_ylim(max(0.0, min(finals) - 10), min(100.0, max(finals) + 2))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the data
    n = max(r.n for r in rows)
    fig.suptitle(f"{ts.study.task.name}: mean and 95% band over {n} seed(s), at the selected settings", fontsize=11)
    _save(plt, fig, path)
    return True


def _plot_time_to_target(ts: TaskSummary, path: Path) -> bool:
    """Median steps and CPU seconds to the target, bars from zero; nothing when no optimizer reaches it."""
    rows = _complete_rows(ts)
    if ts.target is None or not any(math.isfinite(r.steps_to_target) for r in rows):
        return False
    plt = _plt()
    task = ts.study.task
    key = f"{task.selection_split}_{ts.metric}"
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.8), sharey=True)
    for ax, x_key, label in ((axes[0], "step", "steps"), (axes[1], "cpu", "training CPU seconds")):
        limit = max(max(rec.history[x_key][-1] for rec in r.records) for r in rows)
        for i, r in enumerate(rows):
            c = color_for(r.spec)
            time_to = RunRecord.steps_to if x_key == "step" else RunRecord.cpu_seconds_to
            times = [time_to(rec, ts.target, key=key, higher_is_better=ts.higher_is_better) for rec in r.records]
            hit = [t for t in times if math.isfinite(t)]
            med = float(np.median(times))
            if math.isfinite(med):
                ax.barh(i, med, color=c, alpha=0.8, height=0.6)
            else:
                ax.text(
                    0,
                    i,
                    f" missed by {len(times) - len(hit)} of {len(times)} seeds",
                    va="center",
                    fontsize=7,
                    color="0.35",
                )
            ax.plot(hit, [i] * len(hit), "|", color="k", ms=8)
        ax.set_xlim(0, max(limit, 1e-9) * 1.02)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(np.arange(len(rows)), [r.spec for r in rows])
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    fig.suptitle(
        f"{task.name}: steps and training CPU seconds to validation {_target_text(ts)} (evaluation excluded)\n"
        "bar: median over seeds; ticks: each seed that reached it",
        fontsize=10,
    )
    _save(plt, fig, path)
    return True


def _plot_lr_sensitivity(ts: TaskSummary, path: Path) -> bool:
    rows = [r for r in ts.rows if r.selection is not None and r.selection.tuned and r.selection.trials]
    if not rows:
        return False
    plt = _plt()
    task = ts.study.task
    m = ts.metric
    s = _scale(m)
    key = f"{task.selection_split}_{m}"
    cols = min(5, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.7 * cols, 2.5 * nrows + 0.9), sharey=True, squeeze=False)
    fig.subplots_adjust(hspace=0.55, wspace=0.12)
    values_all = []
    for r in rows:
        for rec in r.selection.trials:
            v = rec.final(key)
            if v is not None and rec.ok:
                values_all.append(s * v)
    if not values_all:
        plt.close(fig)
        return False
    worst = min(values_all) if ts.higher_is_better else max(values_all)
    for ax, r in zip(axes.flat, rows, strict=False):
        c = color_for(r.spec)
        pts = []
        for rec in r.selection.trials:
            v = rec.final(key)
            pts.append((rec.config.lr, None if v is None or not rec.ok else s * v))
        pts.sort()
        ok = [(x, v) for x, v in pts if v is not None]
        if ok:
            ax.plot([x for x, _ in ok], [v for _, v in ok], "o-", color=c, ms=3.5, lw=1.2)
        div = [x for x, v in pts if v is None]
        if div:
            ax.plot(div, [worst] * len(div), "x", color="r", ms=6, label="diverged")
        ax.plot(
            [r.selection.lr],
            [s * r.selection.value] if r.selection.value is not None else [worst],
            "*",
            color=c,
            ms=13,
            mec="k",
            mew=0.6,
        )
        tried = [x for x, _ in pts]
        low, high = min(tried), max(tried)
        if ts.study.results[r.spec].space is not None:
            lr = ts.study.results[r.spec].space.lr
            ax.axvspan(lr.low, lr.high, color=c, alpha=0.08, lw=0)
            low, high = min(low, lr.low), max(high, lr.high)  # refining trials may lie past the range's edge
        ax.set_xlim(low / 1.6, high * 1.6)
        ax.set_xscale("log")
        ax.set_title(r.spec + (" (edge)" if r.selection.edges else ""), fontsize=9, color=c)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{task.selection_split} {m}{_unit(m)}", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("learning rate", fontsize=8)
    if m in ("perplexity", "loss"):
        _log_y(axes[0][0])
    p = ts.study.protocol
    fig.suptitle(
        f"{task.name}: final {task.selection_split} {m} of each tuning trial ({p.trial_steps} steps, 1 seed) "
        "against its lr\nstar: selected; x: diverged; shaded: the search space (refining trials may go past it)",
        fontsize=10,
        y=0.995 + 0.02 / nrows,
    )
    _save(plt, fig, path)
    return True


def _plot_generalization(ts: TaskSummary, path: Path) -> bool:
    """Test metric against the final training loss (log scale): fitting and generalization together, so that an
    optimizer with a small generalization gap because it barely fits the training data is seen for what it is."""
    from optimlab.lab.present.stats import mean_ci

    rows = [r for r in _complete_rows(ts) if r.headline is not None and r.train_loss is not None]
    if not rows or ts.headline_split != "test":
        return False
    plt = _plt()
    m = ts.metric
    s = _scale(m)
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for r in rows:
        c = color_for(r.spec)
        losses = [rec.final("train_loss") for rec in r.records]
        if any(v is None or not v > 0 for v in losses):
            continue
        logs = mean_ci([math.log(v) for v in losses])
        xs, ys = math.exp(logs.mean), s * r.headline.mean
        if logs.n > 1:
            ax.plot([math.exp(logs.low), math.exp(logs.high)], [ys, ys], color=c, lw=1)
            ax.plot([xs, xs], [s * r.headline.low, s * r.headline.high], color=c, lw=1)
        ax.plot([xs], [ys], "o", color=c, ms=6, mfc=c if r.in_best_set else "white", mew=1.5)
        gap = f", gap {s * r.gap.mean:+.1f}{'' if m != 'accuracy' else ' pp'}" if r.gap is not None else ""
        ax.annotate(f"{r.spec}{gap}", (xs, ys), fontsize=7, xytext=(4, 3), textcoords="offset points", color=c)
    ax.set_xscale("log")
    ax.set_xlabel("final training loss (fixed training subset; geometric mean, 95% CI)")
    if m in ("perplexity", "loss"):
        _log_y(ax)
    elif m == "accuracy":
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, min(hi, 100.0))
    ax.set_ylabel(f"{_metric_name(ts)}{_unit(m)} (mean, 95% CI)")
    ax.set_title(
        f"{ts.study.task.name}: generalization against fit\npoints to the right fit the training data less; "
        "gap: train minus test (a small gap far right is underfitting, not generalization)",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    _save(plt, fig, path)
    return True


def _plot_trajectories(ts: TaskSummary, path: Path) -> bool:
    import torch

    from optimlab.lab.catalog.tasks import SyntheticTask

    task = ts.study.task
    if not isinstance(task, SyntheticTask):
        return False
    rows = _complete_rows(ts)
    if not rows:
        return False
    plt = _plt()
    x0, x1, y0, y1 = task.bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    with torch.no_grad():
        z = task.fn(torch.tensor(np.stack([gx, gy]))).numpy()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    ax.contour(gx, gy, np.log10(z + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
    for r in rows:
        traj = np.array(r.records[0].extras.get("trajectory", []), dtype=float)
        if traj.size:
            ax.plot(
                traj[:, 0], traj[:, 1], "-", color=color_for(r.spec), lw=1.3, label=f"{r.spec} ({_settings_text(r)})"
            )
    ax.plot(*task.start, "ko", ms=5, label="start")
    ax.plot(*task.minimum, "r*", ms=12, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{task.name}: trajectories at the selected settings (contours: log10 of the function)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the data
    _save(plt, fig, path)
    return True


def _plot_schedules(ts: TaskSummary, path: Path) -> bool:
    """Only when optimizers ran different schedules (else the schedule is one line of text)."""
    from optimlab.lab.catalog import adapter
    from optimlab.lab.training.runner import parse_schedule

    rows = _complete_rows(ts)
    schedules = {r.records[0].config.schedule for r in rows if r.records}
    if len(schedules) < 2:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        cfg = r.records[0].config
        name, kwargs = parse_schedule(cfg.schedule)
        fn = adapter.create_schedule(name, cfg.steps, **kwargs)
        x = np.arange(cfg.steps + 1)
        ax.plot(x, [cfg.lr * fn(int(t)) for t in x], color=color_for(r.spec), label=f"{r.spec} ({cfg.schedule})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate (selected lr x schedule factor)")
    ax.set_title(f"{ts.study.task.name}: learning-rate schedules")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)
    return True


_PLOTS = {
    "answer": (_plot_answer, "The answer: headline metric per optimizer"),
    "curves": (_plot_curves, "Learning curves"),
    "time_to_target": (_plot_time_to_target, "Time to the validation target"),
    "lr_sensitivity": (_plot_lr_sensitivity, "Learning-rate sensitivity over the tuning trials"),
    "generalization": (_plot_generalization, "Generalization: training against test"),
    "trajectories": (_plot_trajectories, "Trajectories"),
    "schedules": (_plot_schedules, "Schedules"),
}


# ----------------------------------------------------------------------------------------------------
# HTML


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12.5px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;margin:.6em 0}
.answer{font-size:1.15em;background:#f4f8ff;border-left:4px solid #1f77b4;padding:.6em 1em}
.notes{background:#fff8e6;border-left:4px solid #e6a100;padding:.4em 1em}
code,pre{background:#f6f6f6}pre{padding:.6em;overflow-x:auto;font-size:12px}.in{font-weight:600}"""


def _html_table(ts: TaskSummary) -> str:
    header, rows = _table(ts)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for r, cells in zip(ts.rows, rows, strict=True):
        swatch = f"<span style='color:{color_for(r.spec)}'>&#9632;</span> "
        tds = [f"<td class='{'in' if r.in_best_set else ''}'>{swatch}{html.escape(cells[0])}</td>"]
        tds += [f"<td>{html.escape(c)}</td>" for c in cells[1:]]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _task_section(ts: TaskSummary, out: Path, prefix: str = "") -> list[str]:
    task = ts.study.task
    p = ts.study.protocol
    parts = [
        f"<h2>{html.escape(task.name)}</h2>",
        f"<p class='answer'>{html.escape(headline_sentence(ts))}</p>",
        f"<p><b>Protocol</b>: {html.escape(p.describe())}. {html.escape(task.description)}. Validation target "
        f"{html.escape(_target_text(ts))}"
        + (f" ({html.escape(task.target_note)})" if task.target_note else "")
        + ".</p>",
    ]
    cost = sum(r.tuning_cpu_seconds for r in ts.rows)
    total = cost + sum(r.final_cpu_seconds for r in ts.rows)
    if p.tuned and total > 0:
        parts.append(
            f"<p><b>Tuning cost</b>: {cost:.0f} training CPU seconds over {sum(r.tuning_trials for r in ts.rows)} "
            f"trials ({100 * cost / total:.0f}% of the study's training time); the same for every optimizer "
            "in trials and steps (the table's last column).</p>"
        )
    notes = _notes(ts)
    if notes:
        parts.append(
            "<div class='notes'><b>Notes</b><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>"
        )
    figures = {}
    for name, (plot, caption) in _PLOTS.items():
        file = f"{prefix}{name}_{task.name}.png"
        if plot(ts, out / file):
            figures[name] = (file, caption)
        elif (out / file).exists():
            (out / file).unlink()  # a figure of an earlier build that no longer applies
    if "answer" in figures:
        file, caption = figures.pop("answer")
        parts.append(f"<img src='{file}' alt='{html.escape(caption)}' data-figure='answer'>")
    parts.append(_html_table(ts))
    parts.append(
        "<p style='font-size:12px'>vs best: the multiplicity-adjusted p-value of “as good as the best” (Welch t "
        "statistics against the best, calibrated by simulating the choice of the best under equal means, stepped "
        "down; ≈: indistinguishable at alpha "
        f"{p.alpha:g}). opt ms/step: <code>optimizer.step()</code> CPU time (median over steps, mean over seeds) "
        "and its share of the model's forward+backward CPU time in the same runs; CPU time is what a busy machine "
        "inflates least. Times to target: training CPU seconds only, median over seeds.</p>"
    )
    if "time_to_target" not in figures and ts.target is not None:
        parts.append(
            f"<p>Time to target: no optimizer reached validation {html.escape(_target_text(ts))} in most of its "
            "seeds, so there is no figure.</p>"
        )
    if "schedules" not in figures:
        parts.append(f"<p>Schedule: <code>{html.escape(p.schedule)}</code> for every optimizer.</p>")
    for name, (file, caption) in figures.items():
        parts.append(
            f"<h3>{html.escape(caption)}</h3><img src='{file}' alt='{html.escape(caption)}' data-figure='{name}'>"
        )
    detail = []
    for r in ts.rows:
        res = ts.study.results[r.spec]
        space = res.space.describe() if res.space else ("presets" if not p.tuned else "lr grid " + str(list(p.lrs)))
        settings = dict(r.records[0].optimizer_settings) if r.records else {}
        detail.append(f"{r.spec}: searched {space}\n    ran with {settings}")
    parts.append(
        "<details><summary>Search spaces and settings</summary><pre>"
        + html.escape("\n".join(detail))
        + "</pre></details>"
    )
    return parts


def _page(title: str, parts: Sequence[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def _diagnostics_section(ts: TaskSummary, out: Path) -> list[str]:
    """The panels of ``compare --diagnostics`` (issue 10's :func:`~optimlab.lab.present.diagnostic_plots.
    diagnostics_panels`) from the final runs that carry them; nothing when none does."""
    records = [rec for r in ts.rows for rec in r.records if "diagnostics" in rec.extras]
    if not records:
        return []
    from optimlab.lab.present.diagnostic_plots import diagnostics_panels

    _, fragment = diagnostics_panels(records, out)
    return ["<h2>Diagnostics</h2>" + fragment] if fragment else []


def build_report(out: str | os.PathLike) -> tuple[Path, TaskSummary]:
    """Write ``summary.csv``, the figures and ``report.html`` into the study folder ``out``; return the page's
    path and the summary. The folder is checked for writing before anything is computed."""
    out = Path(out)
    study = load_study(out)
    check_writable(out)
    try:
        return _write_report(out, study)
    except OSError as e:  # a full disk: the error names the folder (or the figure)
        raise named(e, out) from None


def _write_report(out: Path, study: Any) -> tuple[Path, TaskSummary]:
    ts = summarize_study(study)
    write_csv(ts, out / SUMMARY_FILE)
    parts = [
        "<h1>optimlab report</h1>",
        f"<p>{sum(len(r.records) + r.tuning_trials for r in ts.rows)} runs from <code>{html.escape(str(out))}"
        f"</code>. Table: <a href='{SUMMARY_FILE}'>{SUMMARY_FILE}</a>; every run: "
        "<a href='results.jsonl'>results.jsonl</a>; protocol: <a href='protocol.json'>protocol.json</a>.</p>",
    ]
    parts += _task_section(ts, out)
    parts += _diagnostics_section(ts, out)
    env = next((rec.environment for r in ts.rows for rec in r.records), None)
    if env:
        parts.append(
            "<h2>Environment</h2><pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in env.items())) + "</pre>"
        )
    path = out / REPORT_FILE
    path.write_text(_page("optimlab report", parts))
    return path, ts
