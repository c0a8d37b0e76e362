"""The report's figures, one function each: ``(summary, path) -> bool``, writing the PNG and returning
``True``, or writing nothing and returning ``False`` when the figure would carry no information.

The answer (headline metric, 95 % intervals, the best set), learning curves with 95 % bands, steps and CPU seconds
to the validation target, lr sensitivity over the tuning trials, generalization (test metric against the training
loss, so that underfitting shows), trajectories on the 2-D tasks, and the schedules when optimizers ran different
ones. Every optimizer has its colour and line style (:func:`optimlab.lab.present.style.color_for`,
:func:`~optimlab.lab.present.style.line_style_for`). The answer's axis spans the competitive optimizers
(:func:`competitive_range`), whatever lies beyond it is marked at the edge with its values, and no interval is drawn
outside the metric's range (:func:`metric_range`); labels beside points never overlap
(:func:`optimlab.lab.present.figures.place_labels`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.catalog.metrics import scale as _scale
from optimlab.lab.catalog.metrics import unit as _unit
from optimlab.lab.present.figures import place_labels, pyplot, save_figure
from optimlab.lab.present.style import color_for, line_style_for
from optimlab.lab.present.summary import Row, TaskSummary, headline_value
from optimlab.lab.present.tables import metric_name, settings_text, target_text
from optimlab.lab.training.record import RunRecord

__all__ = ["PLOTS", "FIGURES", "competitive_range", "metric_range"]


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


def _complete_rows(ts: TaskSummary) -> list[Row]:
    return [r for r in ts.rows if r.n > 0]


def metric_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take, in its display units: accuracy [0, 100] %, perplexity >= 1, a loss >= 0."""
    if metric == "accuracy":
        return 0.0, 100.0
    return (1.0 if metric == "perplexity" else 0.0), math.inf


def competitive_range(
    means: list[float], lows: list[float], highs: list[float], *, higher_is_better: bool, log: bool = False
) -> tuple[float, float]:
    """The span of an answer figure's axis: where the competitive optimizers are, not where the worst one is.

    In display units; on a log axis (``log``) computed on the logarithms. The *scale* is the spread of the better
    half's means (the best minus the worst of the ``ceil(n / 2)`` best means), or the median half-width of their
    intervals if larger. Competitive: an optimizer whose mean is within 4 scales of the best mean. The axis covers
    the competitive optimizers' means and intervals (NaN ends, for one seed, are ignored), but reaches no further
    than 6 scales from the best mean, so that a competitive optimizer with a very wide interval does not stretch
    it either; then 4 % of its width is added on each side. Everything else is drawn at the edge, with its value.
    """
    if not means:
        raise ValueError("Invalid means: []; expected at least one")
    f = np.log if log else np.asarray
    m = np.asarray(f(np.asarray(means, dtype=float)), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.asarray(f(np.asarray(lows, dtype=float)), dtype=float)
        hi = np.asarray(f(np.asarray(highs, dtype=float)), dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    order = np.argsort(-sign * m, kind="stable")
    best = m[order[0]]
    top = order[: math.ceil(len(m) / 2)]
    halves = (hi[top] - lo[top]) / 2
    halves = halves[np.isfinite(halves)]
    scale = max(float(np.max(np.abs(m[top] - best))), float(np.median(halves)) if halves.size else 0.0)
    if scale <= 0:
        scale = max(abs(best) * 0.01, 1e-3)
    competitive = np.abs(m - best) <= 4 * scale + 1e-12
    ends = np.concatenate([m[competitive], lo[competitive], hi[competitive]])
    ends = ends[np.isfinite(ends)]
    a = max(float(ends.min()), best - 6 * scale)
    b = min(float(ends.max()), best + 6 * scale)
    pad = 0.04 * (b - a)
    a, b = a - pad, b + pad
    if log:
        return float(np.exp(a)), float(np.exp(b))
    return a, b


def _plot_answer(ts: TaskSummary, path: Path) -> bool:
    """Mean and 95 % interval of the headline metric per optimizer; filled: in the best set.

    The axis spans the competitive optimizers (:func:`competitive_range`); an interval, a mean or seeds beyond it
    end at the edge in an arrow, with the values written beside it. Intervals are clipped to the metric's range
    (:func:`metric_range`), and the title says so when one was."""
    rows = [r for r in ts.rows if r.headline is not None]
    if not rows:
        return False
    plt = pyplot()
    s = _scale(ts.metric)
    log = ts.metric in ("perplexity", "loss")
    floor, ceiling = metric_range(ts.metric)
    clipped = False
    means, lows, highs = [], [], []
    for r in rows:
        ci = r.headline
        low, high = (s * ci.low, s * ci.high) if ci.n > 1 else (math.nan, math.nan)
        if low < floor or high > ceiling:
            clipped = True
        means.append(s * ci.mean)
        lows.append(min(max(low, floor), ceiling) if math.isfinite(low) else low)
        highs.append(min(max(high, floor), ceiling) if math.isfinite(high) else high)
    if log:  # a log axis shows no value <= 0: such an end is off the axis, at its left edge
        lows = [v if v > 0 else math.nan for v in lows]
    a, b = competitive_range(means, lows, highs, higher_is_better=ts.higher_is_better, log=log)
    a, b = max(a, floor), min(b, ceiling)
    if log and a <= 0:
        a = min(v for v in means if v > 0) / 2
    n_lost = sum(r.headline is None and r.n > 0 for r in ts.rows)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * (len(rows) + n_lost) + 1.4))
    best = next((r for r in rows if ts.best and r.spec == ts.best.best), None)
    if best is not None and best.headline.n > 1:
        band = [min(max(s * best.headline.low, a), b), min(max(s * best.headline.high, a), b)]
        ax.axvspan(*band, color="0.85", zorder=0, lw=0)

    def inside(v: float) -> float:
        return min(max(v, a), b)

    for i, (r, mean, low, high) in enumerate(zip(rows, means, lows, highs, strict=True)):
        c = color_for(r.spec)
        off: list[str] = []
        if log and r.headline.n > 1 and not math.isfinite(low) and math.isfinite(high):
            low = -math.inf  # an end <= 0 on a log axis: drawn to the left edge
        if math.isfinite(high) and not math.isnan(low):
            ax.plot([inside(low), inside(high)], [i, i], color=c, lw=2.2, solid_capstyle="butt")
        if low < a:  # False for NaN (one seed)
            ax.plot([a], [i], "<", color=c, ms=7, clip_on=False, zorder=4)
            off.append("low")
        if math.isfinite(high) and high > b:
            ax.plot([b], [i], ">", color=c, ms=7, clip_on=False, zorder=4)
            off.append("high")
        values = [s * v for v in (headline_value(rec) for rec in r.records) if v is not None]
        shown = [v for v in values if a <= v <= b]
        ax.plot(shown, [i] * len(shown), "|", color=c, ms=7, alpha=0.6)
        beyond = len(values) - len(shown)
        filled = r.in_best_set
        if a <= mean <= b:
            ax.plot([mean], [i], "o", ms=7, color=c, mfc=c if filled else "white", mew=1.6, zorder=3)
        else:
            ax.plot([inside(mean)], [i], "<" if mean < a else ">", ms=9, color=c, mfc="white", mew=1.6,
                    clip_on=False, zorder=5)
            off.append("mean")
        if off or beyond:
            text = f"{_fmt_axis(mean, ts.metric)}"
            if math.isfinite(low) and math.isfinite(high):
                text += f" [{_fmt_axis(low, ts.metric)}, {_fmt_axis(high, ts.metric)}]"
            if beyond:
                text += f"; {beyond} seed{'s' if beyond > 1 else ''} off the axis"
            left = mean < a or (mean <= b and "low" in off and "high" not in off) or (beyond and mean < (a + b) / 2)
            ax.annotate(text, (a if left else b, i), xytext=(9 if left else -9, -7), textcoords="offset points",
                        ha="left" if left else "right", va="center", fontsize=7, color=c,
                        annotation_clip=False)
    lost = [r for r in ts.rows if r.headline is None and r.n > 0]  # a seed diverged: no mean to draw
    for i, r in enumerate(lost, start=len(rows)):
        c = color_for(r.spec)
        values = [s * v for v in (headline_value(rec) for rec in r.records) if v is not None]
        shown = [v for v in values if a <= v <= b]
        ax.plot(shown, [i] * len(shown), "|", color=c, ms=7, alpha=0.6)
        off = len(values) - len(shown)
        ax.annotate(f"no mean: {r.diverged} of {r.n} seeds diverged; {off} seed{'s' * (off != 1)} off the axis",
                    (a, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7, color=c)
    rows = rows + lost
    ax.set_xlim(a, b)
    ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.set_yticks(np.arange(len(rows)), [r.spec + ("" if not r.diverged else f" ({r.diverged} div.)") for r in rows])
    ax.set_xlabel(f"{metric_name(ts)}{_unit(ts.metric)}")
    if log:
        _log_x(ax)
    ax.grid(axis="x", alpha=0.3)
    n = max(r.n for r in rows)
    tested = ts.best is not None and ts.best.tested
    if tested:
        title = (
            f"{ts.study.task.name}: {metric_name(ts)}, mean and 95% CI over {n} seeds\n"
            "filled: in the best set (grey band: the best's CI); ticks: seeds"
        )
    else:
        title = f"{ts.study.task.name}: {metric_name(ts)} of one run per optimizer\nfilled: the best (and exact ties)"
    title += "\naxis: the competitive range; arrows: beyond it (values written)"
    if clipped:
        rng = f"[{floor:g}, {ceiling:g}]{_unit(ts.metric)}" if math.isfinite(ceiling) else f">= {floor:g}"
        title += f"; intervals clipped to {rng}"
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
    return True


def _fmt_axis(v: float, metric: str) -> str:
    """A value already in display units, as the tables write it."""
    if not math.isfinite(v):
        return "-"
    return f"{v:.1f}" if metric == "accuracy" else f"{v:.3g}"


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
    plt = pyplot()
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
            ax.plot(x, s * mean, color=c, ls=line_style_for(r.spec), lw=1.5, label=r.spec)
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
    save_figure(fig, path)
    return True


def _plot_time_to_target(ts: TaskSummary, path: Path) -> bool:
    """Median steps and CPU seconds to the target, bars from zero; nothing when no optimizer reaches it."""
    rows = _complete_rows(ts)
    if ts.target is None or not any(math.isfinite(r.steps_to_target) for r in rows):
        return False

    plt = pyplot()
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
        f"{task.name}: steps and training CPU seconds to validation {target_text(ts)} (evaluation excluded)\n"
        "bar: median over seeds; ticks: each seed that reached it",
        fontsize=10,
    )
    save_figure(fig, path)
    return True


def _plot_lr_sensitivity(ts: TaskSummary, path: Path) -> bool:
    rows = [r for r in ts.rows if r.selection is not None and r.selection.tuned and r.selection.trials]
    if not rows:
        return False
    plt = pyplot()
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
    save_figure(fig, path)
    return True


def _plot_generalization(ts: TaskSummary, path: Path) -> bool:
    """Test metric against the final training loss (log scale): fitting and generalization together, so that an
    optimizer with a small generalization gap because it barely fits the training data is seen for what it is."""
    from optimlab.lab.present.stats import mean_ci

    rows = [r for r in _complete_rows(ts) if r.headline is not None and r.train_loss is not None]
    if not rows or ts.headline_split != "test":
        return False
    plt = pyplot()
    m = ts.metric
    s = _scale(m)
    floor, ceiling = metric_range(m)
    fig, ax = plt.subplots(figsize=(8, 5.4))
    points, labels, colors = [], [], []
    for r in rows:
        c = color_for(r.spec)
        losses = [rec.final("train_loss") for rec in r.records]
        if any(v is None or not v > 0 for v in losses):
            continue
        logs = mean_ci([math.log(v) for v in losses])
        xs, ys = math.exp(logs.mean), s * r.headline.mean
        if logs.n > 1:
            ax.plot([math.exp(logs.low), math.exp(logs.high)], [ys, ys], color=c, lw=1)
            low, high = max(s * r.headline.low, floor), min(s * r.headline.high, ceiling)  # inside the range
            ax.plot([xs, xs], [low, high], color=c, lw=1)
        ax.plot([xs], [ys], "o", color=c, ms=6, mfc=c if r.in_best_set else "white", mew=1.5)
        gap = f", gap {s * r.gap.mean:+.1f}{'' if m != 'accuracy' else ' pp'}" if r.gap is not None else ""
        points.append((xs, ys))
        labels.append(f"{r.spec}{gap}")
        colors.append(c)
    ax.set_xscale("log")
    ax.set_xlabel("final training loss (fixed training subset; geometric mean, 95% CI)")
    if m in ("perplexity", "loss"):
        _log_y(ax)
    elif m == "accuracy":
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, 0.0), min(hi, 100.0))
    ax.set_ylabel(f"{metric_name(ts)}{_unit(m)} (mean, 95% CI)")
    ax.set_title(
        f"{ts.study.task.name}: generalization against fit\npoints to the right fit the training data less; "
        "gap: train minus test (a small gap far right is underfitting, not generalization)",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    place_labels(ax, points, labels, colors)  # last: the limits are final
    save_figure(fig, path)
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
    plt = pyplot()
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
                traj[:, 0],
                traj[:, 1],
                color=color_for(r.spec),
                ls=line_style_for(r.spec),
                lw=1.3,
                label=f"{r.spec} ({settings_text(r)})",
            )
    ax.plot(*task.start, "ko", ms=5, label="start")
    ax.plot(*task.minimum, "r*", ms=12, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{task.name}: trajectories at the selected settings (contours: log10 of the function)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the data
    save_figure(fig, path)
    return True


def _plot_schedules(ts: TaskSummary, path: Path) -> bool:
    """Only when optimizers ran different schedules (else the schedule is one line of text)."""
    from optimlab.lab.catalog import adapter
    from optimlab.lab.training.runner import parse_schedule

    rows = _complete_rows(ts)
    schedules = {r.records[0].config.schedule for r in rows if r.records}
    if len(schedules) < 2:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        cfg = r.records[0].config
        name, kwargs = parse_schedule(cfg.schedule)
        fn = adapter.create_schedule(name, cfg.steps, **kwargs)
        x = np.arange(cfg.steps + 1)
        ax.plot(
            x,
            [cfg.lr * fn(int(t)) for t in x],
            color=color_for(r.spec),
            ls=line_style_for(r.spec),
            label=f"{r.spec} ({cfg.schedule})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate (selected lr x schedule factor)")
    ax.set_title(f"{ts.study.task.name}: learning-rate schedules")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
    return True


# name -> (the figure, its caption), in the page's order; a figure's file is NAME_TASK.png
PLOTS: dict[str, tuple[Callable[[TaskSummary, Path], bool], str]] = {
    "answer": (
        _plot_answer,
        "The answer: headline metric per optimizer, mean and 95% interval; the axis spans the competitive "
        "optimizers, and one beyond it is marked at the edge with its values",
    ),
    "curves": (_plot_curves, "Learning curves (each optimizer keeps its colour and line style in every figure)"),
    "time_to_target": (_plot_time_to_target, "Time to the validation target"),
    "lr_sensitivity": (_plot_lr_sensitivity, "Learning-rate sensitivity over the tuning trials"),
    "generalization": (_plot_generalization, "Generalization: training against test"),
    "trajectories": (_plot_trajectories, "Trajectories"),
    "schedules": (_plot_schedules, "Schedules"),
}
FIGURES = tuple(PLOTS)
