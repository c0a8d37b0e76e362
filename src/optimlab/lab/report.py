"""Summaries, figures and an HTML report from a results folder (``OUT/results.jsonl``).

Runs are grouped by (task, optimizer, schedule, steps, batch size). Within a group the LR is selected by the
best mean *final validation* metric over seeds (a diverged run counts as the worst possible); the summary then
reports that LR's runs, together with the tuning budget spent on the whole group (runs and training seconds).

The generalization gap is stated in the task's metric so that a positive gap means "better on train than on
test": train minus test accuracy (percentage points), or test minus train perplexity.
"""

from __future__ import annotations

import csv
import html
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.sweep import load_records

__all__ = ["Summary", "summarize", "write_csv", "format_table", "build_report", "SUMMARY_FILE", "REPORT_FILE"]

SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.html"


@dataclass
class Summary:
    """One optimizer's result on one task, over seeds, at its selected LR."""

    task: str
    optimizer: str
    schedule: str
    lr: float
    metric: str
    higher_is_better: bool
    seeds: int
    diverged: int
    final_test: tuple[float, float]  # (mean, std) of the final test metric
    best_val: tuple[float, float]
    final_val: tuple[float, float]
    gap: tuple[float, float]
    train_loss: tuple[float, float]  # final loss on the fixed training subset
    target: float | None
    reached: int  # seeds that reached the target on validation
    steps_to_target: float | None  # mean over the seeds that reached it
    seconds_to_target: float | None
    ms_per_step: float
    tuning_runs: int
    tuning_seconds: float
    lr_grid: list[float] = field(default_factory=list)
    val_by_lr: dict[float, float] = field(
        default_factory=dict
    )  # mean final val metric per LR (NaN: diverged)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    if arr.size == 0 or np.isnan(arr).any():
        return (math.nan, math.nan)
    return (float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def _last(values: list[Any]) -> float | None:
    return values[-1] if values else None


def _best(values: list[float | None], higher: bool) -> float | None:
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return max(finite) if higher else min(finite)


def _gap(rec: dict[str, Any]) -> float | None:
    h, m = rec["history"], rec["metric"]
    train, test = _last(h.get(f"train_{m}", [])), _last(h.get(f"test_{m}", []))
    if train is None or test is None or m == "loss":
        return None if m != "loss" else 0.0
    return train - test if rec["higher_is_better"] else test - train


def _time_to_target(rec: dict[str, Any]) -> tuple[int, float] | None:
    target, h = rec["target"], rec["history"]
    if target is None:
        return None
    for step, t, v in zip(h["step"], h["time"], h[f"val_{rec['metric']}"], strict=True):
        if v is not None and (v >= target if rec["higher_is_better"] else v <= target):
            return step, t
    return None


def _score(recs: list[dict[str, Any]]) -> float:
    """Mean final validation metric, oriented so that larger is better; diverged -> -inf."""
    vals = [_last(r["history"][f"val_{r['metric']}"]) for r in recs]
    if any(v is None for v in vals) or any(r["status"] != "ok" for r in recs):
        return -math.inf
    mean = float(np.mean(vals))
    return mean if recs[0]["higher_is_better"] else -mean


def summarize(records: Sequence[dict[str, Any]]) -> list[Summary]:
    """One :class:`Summary` per (task, optimizer, schedule, steps, batch size), in order of appearance."""
    groups: dict[tuple, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        c = rec["config"]
        groups[(c["task"], c["optimizer"], c["schedule"], c["steps"], c["batch_size"])][c["lr"]].append(rec)
    out = []
    for (task, optimizer, schedule, _, _), by_lr in groups.items():
        for recs in by_lr.values():
            recs.sort(key=lambda r: r["config"]["seed"])
        best_lr = max(by_lr, key=lambda lr: (_score(by_lr[lr]), -lr))
        recs = by_lr[best_lr]
        first = recs[0]
        m, higher = first["metric"], first["higher_is_better"]
        reached = [t for t in (_time_to_target(r) for r in recs) if t is not None]
        all_recs = [r for rs in by_lr.values() for r in rs]
        sign = 1.0 if higher else -1.0
        out.append(
            Summary(
                task=task,
                optimizer=optimizer,
                schedule=schedule,
                lr=best_lr,
                metric=m,
                higher_is_better=higher,
                seeds=len(recs),
                diverged=sum(r["status"] != "ok" for r in recs),
                final_test=_mean_std([_last(r["history"][f"test_{m}"]) for r in recs]),
                best_val=_mean_std([_best(r["history"][f"val_{m}"], higher) for r in recs]),
                final_val=_mean_std([_last(r["history"][f"val_{m}"]) for r in recs]),
                gap=_mean_std([_gap(r) for r in recs]),
                train_loss=_mean_std([_last(r["history"]["train_loss"]) for r in recs]),
                target=first["target"],
                reached=len(reached),
                steps_to_target=float(np.mean([s for s, _ in reached])) if reached else None,
                seconds_to_target=float(np.mean([t for _, t in reached])) if reached else None,
                ms_per_step=1e3
                * float(np.mean([r["time_per_step"] for r in recs if r["time_per_step"] is not None])),
                tuning_runs=len(all_recs),
                tuning_seconds=float(sum(r["train_seconds"] for r in all_recs)),
                lr_grid=sorted(by_lr),
                val_by_lr={
                    lr: (sign * s if math.isfinite(s := _score(rs)) else math.nan)
                    for lr, rs in sorted(by_lr.items())
                },
                records=recs,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------
# Tables


CSV_COLUMNS = [
    "task",
    "optimizer",
    "schedule",
    "lr",
    "lr_grid",
    "metric",
    "seeds",
    "diverged",
    "final_test_mean",
    "final_test_std",
    "best_val_mean",
    "best_val_std",
    "final_val_mean",
    "final_val_std",
    "gap_mean",
    "gap_std",
    "train_loss_mean",
    "train_loss_std",
    "target",
    "reached_target",
    "steps_to_target",
    "seconds_to_target",
    "ms_per_step",
    "tuning_runs",
    "tuning_seconds",
]


def write_csv(summaries: Sequence[Summary], path: str | os.PathLike) -> None:
    """The summary table, one row per optimizer; metrics in their natural units (accuracy as a fraction)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for s in summaries:
            w.writerow(
                [
                    s.task,
                    s.optimizer,
                    s.schedule,
                    repr(s.lr),
                    " ".join(f"{x:g}" for x in s.lr_grid),
                    s.metric,
                    s.seeds,
                    s.diverged,
                    *s.final_test,
                    *s.best_val,
                    *s.final_val,
                    *s.gap,
                    *s.train_loss,
                    "" if s.target is None else s.target,
                    s.reached,
                    "" if s.steps_to_target is None else s.steps_to_target,
                    "" if s.seconds_to_target is None else s.seconds_to_target,
                    s.ms_per_step,
                    s.tuning_runs,
                    s.tuning_seconds,
                ]
            )


def _fmt_metric(s: Summary, ms: tuple[float, float], gap: bool = False) -> str:
    mean, std = ms
    if math.isnan(mean):
        return "diverged" if not gap else "-"
    if s.metric == "accuracy":
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{mean:.4g} ± {std:.2g}"


def _target_header(s: Summary) -> str:
    if s.target is None:
        return "to target"
    value = f"{100 * s.target:g}%" if s.metric == "accuracy" else f"{s.target:g}"
    return f"to val {value}"


def _rows(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    s0 = summaries[0]
    unit = " %" if s0.metric == "accuracy" else ""
    header = [
        "optimizer",
        "lr",
        f"test {s0.metric}{unit}",
        f"best val{unit}",
        "gap" + (" pp" if unit else ""),
        "train loss",
        _target_header(s0),
        "ms/step",
        "tuning",
    ]
    rows = []
    for s in summaries:
        if s.steps_to_target is None:
            target = f"- (0/{s.seeds})"
        else:
            target = f"{s.steps_to_target:.0f} st {s.seconds_to_target:.1f}s ({s.reached}/{s.seeds})"
        rows.append(
            [
                s.optimizer,
                f"{s.lr:g}",
                _fmt_metric(s, s.final_test),
                _fmt_metric(s, s.best_val),
                _fmt_metric(s, s.gap, gap=True),
                f"{s.train_loss[0]:.3g}" if not math.isnan(s.train_loss[0]) else "-",
                target,
                f"{s.ms_per_step:.2f}",
                f"{s.tuning_runs} runs {s.tuning_seconds:.0f}s",
            ]
        )
    return header, rows


def _sorted(summaries: Sequence[Summary]) -> list[Summary]:
    def key(s: Summary) -> float:
        m = s.final_test[0]
        return math.inf if math.isnan(m) else (-m if s.higher_is_better else m)

    return sorted(summaries, key=key)


def _by_task(summaries: Sequence[Summary]) -> dict[str, list[Summary]]:
    out: dict[str, list[Summary]] = defaultdict(list)
    for s in summaries:
        out[s.task].append(s)
    return {t: _sorted(ss) for t, ss in out.items()}


def format_table(summaries: Sequence[Summary]) -> str:
    """A plain-text table per task, best final test metric first."""
    blocks = []
    for task, ss in _by_task(summaries).items():
        header, rows = _rows(ss)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            f"{task}: mean ± std over {max(s.seeds for s in ss)} seed(s), LR selected on validation",
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        ]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------------------------------
# Figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


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


def _series(recs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Step axis, mean and std over seeds of history[key], on the steps all seeds have."""
    n = min(len(r["history"]["step"]) for r in recs)
    if n == 0:
        return None
    steps = np.array(recs[0]["history"]["step"][:n], dtype=float)
    vals = np.array([[np.nan if v is None else v for v in r["history"][key][:n]] for r in recs], dtype=float)
    return steps, np.nanmean(vals, axis=0), np.nanstd(vals, axis=0)


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Lay out, write the PNG the report embeds, and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(ss: list[Summary], path: Path) -> None:
    plt = _plt()
    m = ss[0].metric
    panels = [("train_loss", "train loss (fixed subset)"), (f"val_{m}", f"validation {m}")]
    if m == "loss":
        panels = [("train_loss", "loss")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for s, color in zip(ss, _colors(len(ss)), strict=True):
            series = _series(s.records, key)
            if series is None:
                continue
            x, mean, std = series
            scale = 100.0 if key.endswith("accuracy") else 1.0
            ax.plot(x, scale * mean, color=color, label=s.optimizer, lw=1.4)
            ax.fill_between(x, scale * (mean - std), scale * (mean + std), color=color, alpha=0.18, lw=0)
        ax.set_xlabel("step")
        ax.set_title(title + (" (%)" if key.endswith("accuracy") else ""))
        if key.endswith("loss") or key.endswith("perplexity"):
            _log_y(ax)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle(f"{ss[0].task}: mean ± std over seeds")
    _save(plt, fig, path)


def _plot_gap(ss: list[Summary], path: Path) -> None:
    plt = _plt()
    scale = 100.0 if ss[0].metric == "accuracy" else 1.0
    names = [s.optimizer for s in ss]
    y = np.arange(len(ss))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(ss) + 1.6), sharey=True)
    for ax, attr, title in (
        (axes[0], "final_test", f"final test {ss[0].metric}"),
        (
            axes[1],
            "gap",
            "generalization gap (train - test)"
            if ss[0].higher_is_better
            else "generalization gap (test - train)",
        ),
    ):
        mean = np.array([getattr(s, attr)[0] for s in ss]) * scale
        std = np.array([getattr(s, attr)[1] for s in ss]) * scale
        ax.barh(y, np.nan_to_num(mean), xerr=np.nan_to_num(std), color=_colors(len(ss)), alpha=0.85)
        ax.set_title(
            title + (" (%)" if scale == 100.0 and attr == "final_test" else " (pp)" if scale == 100.0 else "")
        )
        ax.grid(axis="x", alpha=0.3)
    if ss[0].metric == "accuracy":
        lo = np.nanmin([s.final_test[0] for s in ss]) * 100
        axes[0].set_xlim(max(0.0, lo - 5), 100)
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    _save(plt, fig, path)


def _plot_lr_sensitivity(ss: list[Summary], path: Path) -> None:
    plt = _plt()
    scale = 100.0 if ss[0].metric == "accuracy" else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, color in zip(ss, _colors(len(ss)), strict=True):
        lrs = np.array(list(s.val_by_lr))
        vals = np.array(list(s.val_by_lr.values())) * scale
        ax.plot(lrs, vals, "o-", color=color, label=s.optimizer, ms=3, lw=1.2)
        ax.plot([s.lr], [s.final_val[0] * scale], "*", color=color, ms=11)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"final validation {ss[0].metric}" + (" (%)" if scale == 100.0 else ""))
    if not ss[0].higher_is_better:
        _log_y(ax)
    ax.set_title(f"{ss[0].task}: LR sensitivity (star: selected; missing point: diverged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def _plot_schedules(ss: list[Summary], path: Path) -> None:
    from optimlab.lab import library
    from optimlab.lab.runner import parse_schedule

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for s, color in zip(ss, _colors(len(ss)), strict=True):
        steps = s.records[0]["config"]["steps"]
        name, kwargs = parse_schedule(s.schedule)
        fn = library.create_schedule(name, steps, **kwargs)
        x = np.arange(steps + 1)
        ax.plot(x, [s.lr * fn(int(t)) for t in x], color=color, label=f"{s.optimizer} ({s.schedule})", lw=1.3)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{ss[0].task}: learning-rate schedules (selected LR)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def _plot_trajectories(ss: list[Summary], path: Path) -> None:
    import torch

    from optimlab.lab.tasks import SyntheticTask, get_task

    task = get_task(ss[0].task)
    assert isinstance(task, SyntheticTask)
    plt = _plt()
    x0, x1, y0, y1 = task.bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    with torch.no_grad():
        z = task.fn(torch.tensor(np.stack([gx, gy]))).numpy()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    ax.contour(gx, gy, np.log10(z + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
    for s, color in zip(ss, _colors(len(ss)), strict=True):
        traj = np.array(s.records[0].get("extras", {}).get("trajectory", []), dtype=float)
        if traj.size:
            ax.plot(traj[:, 0], traj[:, 1], "-", color=color, lw=1.3, label=f"{s.optimizer} (lr {s.lr:g})")
    ax.plot(*task.start, "ko", ms=5)
    ax.plot(*task.minimum, "r*", ms=12)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(f"{task.name}: trajectories (seed 0)")
    ax.legend(fontsize=7, loc="lower right")
    _save(plt, fig, path)


# ----------------------------------------------------------------------------------------------------
# HTML


def _html_table(ss: list[Summary]) -> str:
    header, rows = _rows(ss)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;margin:1em 0}
code,pre{background:#f6f6f6}pre{padding:.6em;overflow-x:auto;font-size:12px}"""


def build_report(out: str | os.PathLike) -> tuple[Path, list[Summary]]:
    """Write ``summary.csv``, the PNG figures and ``report.html`` into ``out``; return the path and rows."""
    from optimlab.lab.tasks import SyntheticTask, get_task

    out = Path(out)
    records = load_records(out)
    if not records:
        raise FileNotFoundError(f"no results in {out} (expected {out / 'results.jsonl'})")
    summaries = summarize(records)
    write_csv(summaries, out / SUMMARY_FILE)
    parts = [
        f"<h1>optimlab report</h1><p>{len(records)} runs from <code>{html.escape(str(out))}</code>. "
        f"Summary table: <a href='{SUMMARY_FILE}'>{SUMMARY_FILE}</a>; all runs: "
        f"<a href='results.jsonl'>results.jsonl</a>.</p>"
    ]
    for task_name, ss in _by_task(summaries).items():
        task = get_task(task_name)
        figures = [(f"curves_{task_name}.png", _plot_curves, "Learning curves (bands: ± std over seeds)")]
        if not isinstance(task, SyntheticTask):
            figures.append((f"gap_{task_name}.png", _plot_gap, "Final test metric and generalization gap"))
        if isinstance(task, SyntheticTask):
            figures.append((f"trajectories_{task_name}.png", _plot_trajectories, "Trajectories"))
        if any(len(s.lr_grid) > 1 for s in ss):
            figures.append((f"lr_sensitivity_{task_name}.png", _plot_lr_sensitivity, "LR sensitivity"))
        figures.append((f"schedules_{task_name}.png", _plot_schedules, "Schedules"))
        parts.append(
            f"<h2>{html.escape(task_name)}</h2><p>{html.escape(task.description)}. "
            f"{ss[0].records[0]['config']['steps']} steps, batch size "
            f"{ss[0].records[0]['config']['batch_size']}. LR selected by final validation "
            f"{html.escape(ss[0].metric)}; 'tuning' is the budget spent on all LRs tried.</p>"
        )
        parts.append(_html_table(ss))
        for name, plot, caption in figures:
            plot(ss, out / name)
            parts.append(f"<h3>{html.escape(caption)}</h3><img src='{name}' alt='{html.escape(caption)}'>")
        settings = "\n".join(f"{s.optimizer}: {s.records[0]['optimizer_settings']}" for s in ss)
        parts.append(
            f"<details><summary>Optimizer settings</summary><pre>{html.escape(settings)}</pre></details>"
        )
    env = records[0]["environment"]
    parts.append(
        "<h2>Environment</h2><pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in env.items())) + "</pre>"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>optimlab report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / REPORT_FILE
    path.write_text(page)
    return path, summaries
