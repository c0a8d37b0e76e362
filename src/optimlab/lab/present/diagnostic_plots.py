"""Figures and HTML for the diagnostics commands and for the diagnostics panels of a ``compare`` report.

Every optimizer keeps one colour across every figure (:func:`optimlab.lab.present.style.color_for`); legends sit
outside the axes; quantities that span decades are on log axes; each figure's caption in the report cites the
paper it reproduces. The functions take plain data (lists, arrays, dicts from the recorder and the
diagnostics) and write one PNG each. The landscape figures (interpolation, 1-D/2-D/3-D, trajectory) are
:mod:`optimlab.lab.present.landscape_plots`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.present.figures import float_rows, floats, legend_right, pyplot, save_figure
from optimlab.lab.present.landscape_plots import (
    plot_interpolation,
    plot_landscape_1d,
    plot_landscape_2d,
    plot_landscape_3d,
    plot_trajectory,
)
from optimlab.lab.present.pages import figure_html, html_page, html_table
from optimlab.lab.present.style import color_of_label, line_style_of_label
from optimlab.lab.training.record import RunRecord

__all__ = [
    "CITATIONS",
    "plot_walk",
    "plot_layer_rates",
    "plot_segments",
    "plot_waterfall",
    "plot_sharpness",
    "write_report",
    "diagnostics_panels",
    # for commands/diagnose.py, until it takes them from their homes (present.landscape_plots, present.pages)
    "plot_interpolation",
    "plot_landscape_1d",
    "plot_landscape_2d",
    "plot_landscape_3d",
    "plot_trajectory",
    "html_table",
    "figure_html",
]

CITATIONS = {
    "walk": "Xing, Arpit, Tsirigotis &amp; Bengio, <i>A Walk with SGD</i>, 2018 "
            "(<a href='https://arxiv.org/abs/1802.08770'>arXiv:1802.08770</a>)",
    "interpolation": "Goodfellow, Vinyals &amp; Saxe, <i>Qualitatively characterizing neural network optimization "
                     "problems</i>, ICLR 2015 (<a href='https://arxiv.org/abs/1412.6544'>arXiv:1412.6544</a>)",
    "landscape": "Li, Xu, Taylor, Studer &amp; Goldstein, <i>Visualizing the Loss Landscape of Neural Nets</i>, "
                 "NeurIPS 2018 (<a href='https://arxiv.org/abs/1712.09913'>arXiv:1712.09913</a>)",
    "histograms": "Liu et al., <i>On the Variance of the Adaptive Learning Rate and Beyond</i> (RAdam), ICLR 2020, "
                  "Figure 2 (<a href='https://arxiv.org/abs/1908.03265'>arXiv:1908.03265</a>)",
    "sharpness": "Yao, Gholami, Keutzer &amp; Mahoney, <i>PyHessian</i>, 2020 "
                 "(<a href='https://arxiv.org/abs/1912.07145'>arXiv:1912.07145</a>); Keskar et al., <i>On "
                 "Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima</i>, ICLR 2017 "
                 "(<a href='https://arxiv.org/abs/1609.04836'>arXiv:1609.04836</a>)",
    "stability": "Cohen, Kaur, Li, Kolter &amp; Talwalkar, <i>Gradient Descent on Neural Networks Typically Occurs "
                 "at the Edge of Stability</i>, ICLR 2021 (<a href='https://arxiv.org/abs/2103.00065'>"
                 "arXiv:2103.00065</a>)",
    "trust": "You, Gitman &amp; Ginsburg, <i>Large Batch Training of Convolutional Networks</i> (LARS), 2017 "
             "(<a href='https://arxiv.org/abs/1708.03888'>arXiv:1708.03888</a>); You et al., <i>Large Batch "
             "Optimization for Deep Learning</i> (LAMB), ICLR 2020 (<a href='https://arxiv.org/abs/1904.00962'>"
             "arXiv:1904.00962</a>)",
    "noise": "McCandlish, Kaplan, Amodei et al., <i>An Empirical Model of Large-Batch Training</i>, 2018 "
             "(<a href='https://arxiv.org/abs/1812.06162'>arXiv:1812.06162</a>)",
}


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < window:
        return y
    ok = np.isfinite(y)
    filled = np.where(ok, y, 0.0)
    kernel = np.ones(window)
    num = np.convolve(filled, kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _auto_log_y(ax: Any, values: Sequence[np.ndarray]) -> None:
    """A log y axis where the positive data span more than a decade and a half; else linear, plain ticks."""
    from matplotlib.ticker import FuncFormatter

    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values]) if values else np.array([])
    if finite.size and finite.max() / finite.min() > 30:
        ax.set_yscale("log")
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))


# ----------------------------------------------------------------------------------------------------
# Walk with SGD


def plot_walk(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Per optimizer: cosine of consecutive updates, squared distance from the initialization, update norm, and
    (when recorded) the gradient noise scale. ``runs``: ``(label, recorder.to_dict())``."""
    plt = pyplot()
    noise = any(h.get("noise", {}).get("step") for _, h in runs)
    ncols = 4 if noise else 3
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 3.9))
    for label, h in runs:
        color, dash = color_of_label(label), line_style_of_label(label)
        step = np.asarray(h["step"], dtype=float)
        cos = floats(h["cos_prev"])
        if step.size == 0:
            continue
        window = max(1, step.size // 40)
        axes[0].plot(step, cos, color=color, lw=0.6, alpha=0.3)
        axes[0].plot(step, _smooth(cos, window), color=color, lw=1.6, ls=dash)
        axes[1].plot(step, floats(h["dist_init_sq"]), color=color, lw=1.6, ls=dash)
        axes[2].plot(step, floats(h["update_norm"]), color=color, lw=1.1, ls=dash)
        if noise and h.get("noise", {}).get("step"):
            ns = h["noise"]
            axes[3].plot(ns["step"], floats(ns["b_simple"]), ".", color=color, ms=3, alpha=0.4)
            axes[3].plot(ns["step"], floats(ns["b_simple_ema"]), color=color, lw=1.6, ls=dash)
    axes[0].set_ylim(-1.05, 1.05)
    axes[0].axhline(-1, color="0.5", lw=0.7, ls=":")
    axes[0].axhline(0, color="0.5", lw=0.7)
    axes[0].set_title("cos(Δθ_t, Δθ_{t-1})")
    axes[1].set_title("‖θ_t − θ_0‖²")
    axes[2].set_title("update norm ‖Δθ_t‖")
    for ax in axes[1:3]:
        ax.set_yscale("log")
    if noise:
        axes[3].set_title("gradient noise scale B_simple")
        axes[3].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if max((len(h["step"]) for _, h in runs), default=0) > 50:
            ax.set_xscale("log")
    legend_right(fig, [r[0] for r in runs])
    fig.suptitle(title or "A walk with the optimizer: update angles and distance travelled")
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


def plot_layer_rates(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Per optimizer, the effective lr per layer ``‖Δθ‖/‖g‖`` (median over layers, band: min to max) and, for
    LAMB/LARS, the trust ratios (median and band)."""
    plt = pyplot()
    trust = [(label, h) for label, h in runs if np.isfinite(float_rows(h["layer"]["trust_ratio"])).any()]
    ncols = 2 if trust else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.6 * ncols, 3.9), squeeze=False)
    for ax, key, items, name in ((axes[0][0], "effective_lr", runs, "effective lr per layer ‖Δθ‖ / ‖g‖"),
                                 *(((axes[0][1], "trust_ratio", trust, "trust ratio per layer"),) if trust else ())):
        for label, h in items:
            step = np.asarray(h["step"], dtype=float)
            vals = float_rows(h["layer"][key])
            if vals.size == 0:
                continue
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    med = np.nanmedian(vals, axis=1)
                    lo, hi = np.nanmin(vals, axis=1), np.nanmax(vals, axis=1)
            color = color_of_label(label)
            ax.plot(step, med, color=color, lw=1.5, ls=line_style_of_label(label))
            ax.fill_between(step, lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    legend_right(fig, [r[0] for r in runs])
    fig.suptitle(title or "Per-layer step sizes (median over layers, band: min to max)")
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


def plot_segments(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Loss on the straight line between consecutive iterates. ``runs``: ``(label, {"steps": [t0, t1, ...],
    "alphas": [...], "loss": [[...] per segment]})``: segment ``k`` runs from the iterate after step
    ``steps[k]`` to the one after ``steps[k] + 1``."""
    plt = pyplot()
    n = len(runs)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.4 * n + 0.8), sharex=True, squeeze=False)
    for ax, (label, seg) in zip(axes[:, 0], runs, strict=True):
        color = color_of_label(label)
        alphas = np.asarray(seg["alphas"], dtype=float)
        floor_x, floor_y, ys = [], [], []
        for t, loss in zip(seg["steps"], seg["loss"], strict=True):
            y = floats(loss)
            ys.append(y)
            ax.plot(t + alphas, y, color=color, lw=1.2)
            ax.plot([t], [y[0]], "o", color=color, ms=2.5)
            if np.isfinite(y).any():
                k = int(np.nanargmin(y))
                floor_x.append(t + alphas[k])
                floor_y.append(y[k])
        ax.plot(floor_x, floor_y, "v", color="0.25", ms=3.5, label="lowest point of each segment (valley floor)")
        ax.set_ylabel("train loss")
        ax.set_title(label, loc="left", fontsize=9, color=color)
        _auto_log_y(ax, ys)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.12), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("step t + α: the loss along (1 − α) θ_t + α θ_{t+1}, α ∈ [0, 1]")
    fig.suptitle(title or "Loss between consecutive iterates", y=1.0)
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


# ----------------------------------------------------------------------------------------------------
# Histograms


def _blend(color: str, t: float) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (1 - t) * 0.85 + t * r, (1 - t) * 0.85 + t * g, (1 - t) * 0.85 + t * b


_HIST_TITLES = {"grad": "|g|", "update": "|Δθ|", "step_size": "|Δθ_i| / |g_i|"}


def plot_waterfall(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, kinds: Sequence[str] = ("grad",),
                   title: str = "", max_lines: int = 30) -> Path:
    """Histograms on log bins stacked along y by step (the RAdam paper's Figure 2): one row per optimizer, one
    column per kind (``"grad"``, ``"update"``, ``"step_size"``). ``runs``: ``(label, {"steps": [...],
    "bins": {"low", "high", "per_decade"}, kind: [[counts] per step]})``; later steps are drawn darker."""
    plt = pyplot()
    n, m = len(runs), len(kinds)
    wrap = min(n, 4) if m == 1 else 1  # a single kind: the optimizers side by side, 4 to a row
    rows_, cols_ = (math.ceil(n / wrap), wrap) if m == 1 else (n, m)
    fig, grid = plt.subplots(rows_, cols_, figsize=(4.3 * cols_ + 0.6, 2.6 * rows_ + 0.9), squeeze=False,
                             sharex="all" if m == 1 else "col", layout="constrained")
    for ax in list(grid.flat)[n * m:]:
        ax.set_visible(False)
    axes = [[grid.flat[i]] for i in range(n)] if m == 1 else grid
    for col, kind in enumerate(kinds):  # one x range per column, over every run: the histograms line up
        rows_all = [np.asarray(r, dtype=float) / max(sum(r), 1) for _, h in runs for r in h[kind] if r is not None]
        mass = np.sum(rows_all, axis=0) if rows_all else np.zeros(0)
        b = runs[0][1]["bins"] if runs else None
        if np.size(mass) and mass.sum() > 0 and b is not None:  # the bins holding 99.8 % of the mass, plus one
            cdf = np.cumsum(mass) / mass.sum()
            lo = max(int(np.searchsorted(cdf, 0.001)) - 1, 0)
            hi = min(int(np.searchsorted(cdf, 0.999)) + 2, mass.size)
            axes[0][col].set_xlim(10.0 ** (b["low"] + lo / b["per_decade"]), 10.0 ** (b["low"] + hi / b["per_decade"]))
    for row, (label, h) in enumerate(runs):
        color = color_of_label(label)
        b = h["bins"]
        count = int(round((b["high"] - b["low"]) * b["per_decade"]))
        centres = 10.0 ** (b["low"] + (np.arange(count) + 0.5) / b["per_decade"])
        steps = list(h["steps"])
        pick = np.unique(np.linspace(0, len(steps) - 1, min(max_lines, len(steps))).round().astype(int)) \
            if steps else np.array([], dtype=int)
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            rows = [h[kind][i] for i in pick if h[kind][i] is not None]
            shown = [steps[i] for i in pick if h[kind][i] is not None]
            if not rows:
                ax.set_visible(False)
                continue
            dens = np.array(rows, dtype=float)
            dens = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1)
            lo, hi = 0, count
            scale = 2.5 / max(dens.max(), 1e-12)
            for k in range(len(rows) - 1, -1, -1):  # earliest on top, so the first steps stay visible
                y0 = k
                ax.fill_between(centres[lo:hi], y0, y0 + scale * dens[k, lo:hi], color=_blend(color, 0.25 + 0.75 *
                                k / max(len(rows) - 1, 1)), lw=0.6, edgecolor="white",
                                zorder=1 + (len(rows) - k) / (len(rows) + 1))  # ordered, under the spines
            ax.set_xscale("log")
            # where every step was shown and then only some (compare's first steps, then a few): a dashed line
            gaps = np.diff(shown)
            jumps = [k for k in range(1, len(shown)) if gaps[k - 1] > 1 and k >= 2 and gaps[k - 2] == 1]
            for k in jumps:
                ax.axhline(k - 0.3, color="0.35", lw=0.8, ls="--", zorder=2.6)
            ticks = np.linspace(0, len(rows) - 1, min(6, len(rows))).round().astype(int)
            ticks = sorted({int(t) for t in ticks if all(abs(t - j) > 1.5 for j in jumps)} | set(jumps))
            ax.set_yticks(ticks, [str(shown[t]) for t in ticks])
            ax.set_ylabel("step")
            ax.set_xlabel(_HIST_TITLES.get(kind, kind))
            if m == 1:
                ax.set_title(label, color=color, fontsize=10)
                ax.xaxis.set_tick_params(labelbottom=True)  # every panel labelled (some have no panel below)
                continue
            if row == 0:
                ax.set_title(_HIST_TITLES.get(kind, kind))
            if col == 0:
                ax.text(-0.28, 0.5, label, transform=ax.transAxes, rotation=90, va="center", ha="center",
                        color=color, fontsize=10)
    fig.suptitle(title or "Histograms over the first steps (stacked along y; log x)")
    return save_figure(fig, path, tidy_log=True)


# ----------------------------------------------------------------------------------------------------
# Sharpness


def plot_sharpness(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, metric: str | None = None,
                   title: str = "") -> Path:
    """``runs``: ``(label, {"top": [values over seeds], "trace": [...] (optional), "test": [metric values]
    (optional), "during": {"step": [...], "top": [...]} (optional), "lr": lr, "sgd": bool})``.

    Left: the top Hessian eigenvalue per optimizer (log x; diamond: mean, dots: seeds). Middle (when test metrics
    are given): sharpness against the final test metric. Right (when tracked): the top eigenvalue during training,
    with the edge-of-stability line 2/lr for plain SGD (Cohen et al., 2021)."""
    plt = pyplot()
    during = any(r.get("during") for _, r in runs)
    test = metric is not None and any(r.get("test") for _, r in runs)
    ncols = 1 + int(test) + int(during)
    fig, axes = plt.subplots(1, ncols, figsize=(5.0 * ncols + 0.6, max(3.6, 0.42 * len(runs) + 1.6)),
                             squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    y = np.arange(len(runs))
    finite_tops = [np.abs(floats(r["top"])) for _, r in runs if np.isfinite(floats(r["top"])).any()]
    hi_all = float(np.nanmax([np.nanmax(v) for v in finite_tops])) if finite_tops else 1.0
    lo_all = float(np.nanmin([np.nanmin(v) for v in finite_tops])) if finite_tops else 1.0
    hi_all, lo_all = (hi_all, lo_all) if lo_all > 0 else (max(hi_all, 1.0), max(hi_all, 1.0) * 1e-3)
    for i, (label, r) in enumerate(runs):
        vals = np.abs(floats(r["top"]))
        color = color_of_label(label)
        if not np.isfinite(vals).any():
            ax.text(0.02, i, " diverged / not finite", va="center", fontsize=7, transform=ax.get_yaxis_transform())
            continue
        mean = float(np.nanmean(vals))
        ax.hlines(i, np.nanmin(vals), np.nanmax(vals), color=color, lw=2, alpha=0.5)
        ax.plot(vals, np.full(vals.size, i), "o", color="black", ms=3, zorder=3)
        ax.plot([mean], [i], "D", color=color, ms=9, mec="white", zorder=4)
        tr = floats(r.get("trace", []))
        note = f"   tr H ≈ {np.nanmean(tr):.3g}" if tr.size and np.isfinite(tr).any() else ""
        ax.annotate(f"{mean:.3g}{note}", (np.nanmax(vals), i), xytext=(8, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_xscale("log")  # before the limits: a linear autoscale can leave a non-positive left limit
    ax.set_xlim(lo_all / 2, hi_all * 3)  # room on the right for the annotations
    ax.set_yticks(y, [label for label, _ in runs])
    ax.set_xlabel("top Hessian eigenvalue |λ_max| (log)")
    ax.set_title("sharpness of the final weights")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(len(runs) - 0.5, -0.5)
    if test:
        ax2 = axes.pop(0)
        for label, r in runs:
            vals, tv = np.abs(floats(r["top"])), floats(r.get("test", []))
            k = min(vals.size, tv.size)
            if k:
                ax2.plot(vals[:k], 100 * tv[:k] if metric == "accuracy" else tv[:k], "o", color=color_of_label(label),
                         ms=6)
        ax2.set_xscale("log")
        ax2.set_xlabel("|λ_max| (log)")
        ax2.set_ylabel(f"final test {metric}" + (" (%)" if metric == "accuracy" else ""))
        ax2.set_title("flat minima generalize better?")
        ax2.grid(alpha=0.3)
    if during:
        ax3 = axes.pop(0)
        for label, r in runs:
            d = r.get("during")
            if not d:
                continue
            ax3.plot(d["step"], np.abs(floats(d["top"])), "-o", color=color_of_label(label), ms=3, lw=1.4)
            if r.get("sgd") and r.get("lr"):
                ax3.axhline(2.0 / r["lr"], color=color_of_label(label), ls="--", lw=1.0)
        ax3.set_yscale("log")
        ax3.set_xlabel("step")
        ax3.set_ylabel("|λ_max| (log)")
        ax3.set_title("sharpness during training (dashed: 2/lr for SGD)")
        ax3.grid(alpha=0.3)
    legend_right(fig, [label for label, _ in runs])
    fig.suptitle(title or "Sharpness (power iteration with Hessian-vector products)")
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


# ----------------------------------------------------------------------------------------------------
# HTML


def write_report(out: Path, title: str, intro_html: str, body_html: Sequence[str]) -> Path:
    """``out/report.html`` with the given parts (figures are referenced by file name, next to it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(html_page(title, [f"<h1>{html.escape(title)}</h1>", intro_html, *body_html]))
    return path


# ----------------------------------------------------------------------------------------------------
# The panels of a comparison report (compare --diagnostics)


def diagnostics_panels(records: Sequence[RunRecord], out: Path, key: str = "diagnostics",
                       prefix: str = "") -> tuple[list[Path], str]:
    """Per-optimizer diagnostics panels for a comparison report, from records whose ``extras[key]`` was filled by
    :class:`optimlab.lab.training.diagnostic_runs.DiagnosticsCallback`.

    Writes into ``out``: ``{prefix}diag_walk_{task}.png`` (seed 0 of each optimizer), ``diag_histograms`` (the
    ``|g|`` waterfall of the first steps, seed 0), ``diag_sharpness`` (top eigenvalue over seeds against the final
    test metric) and ``diag_interpolation`` (seed 0). Returns the PNG paths and an HTML fragment (one ``<h3>``
    section per figure, captions citing the papers) to insert into the report. Records without the extras are
    skipped; with none at all the result is ``([], "")``.
    """
    out = Path(out)
    by_task: dict[str, dict[str, list[RunRecord]]] = {}
    for rec in records:
        if key not in rec.extras:
            continue
        by_task.setdefault(rec.config.task, {}).setdefault(rec.config.optimizer, []).append(rec)
    paths: list[Path] = []
    parts: list[str] = []
    for task, groups in by_task.items():
        for recs in groups.values():
            recs.sort(key=lambda r: r.config.seed)
        first = {name: recs[0].extras[key] for name, recs in groups.items()}
        metric = next(iter(groups.values()))[0].metric
        walks = [(name, {**d["walk"], "layer": d["layer"]}) for name, d in first.items()]
        p = plot_walk(walks, out / f"{prefix}diag_walk_{task}.png", f"{task}: a walk with each optimizer (seed 0)")
        paths.append(p)
        parts.append("<h3>Walk with the optimizer</h3>" + figure_html(
            p, "Cosine between consecutive updates (thin: per record, thick: running mean), squared distance from the "
               f"initialization and update norm. Full-batch GD settles at −1 across a valley; SGD wanders. After "
               f"{CITATIONS['walk']}."))
        hists = [(name, {"steps": d["histograms"]["step"], "bins": d["histograms"]["bins"],
                         "grad": d["histograms"]["grad"]}) for name, d in first.items() if d["histograms"]["step"]]
        if hists:
            p = plot_waterfall(hists, out / f"{prefix}diag_histograms_{task}.png", ("grad",),
                               f"{task}: |g| over the first steps (seed 0)")
            paths.append(p)
            parts.append("<h3>Gradient histograms</h3>" + figure_html(
                p, "Histograms of |g| on fixed log bins, stacked along y by step, earliest lightest (the recorded "
                   "steps: each of the first ones, then a few spread over the run, as labelled). After "
                   f"{CITATIONS['histograms']}."))
        sharp = []
        for name, recs in groups.items():
            tops = [r.extras[key].get("sharpness", {}).get("value") for r in recs]
            if not any(v is not None for v in tops):
                continue
            test = [r.test(metric) for r in recs]
            sharp.append((name, {"top": tops, "test": test if metric != "loss" else []}))
        if sharp:
            p = plot_sharpness(sharp, out / f"{prefix}diag_sharpness_{task}.png", metric if metric != "loss" else None,
                               f"{task}: sharpness of the final weights")
            paths.append(p)
            parts.append("<h3>Sharpness</h3>" + figure_html(
                p, "Top Hessian eigenvalue of the training loss at the final weights (power iteration on a fixed "
                   f"training batch; dots: seeds), against the final test metric. {CITATIONS['sharpness']}."))
        lines = [(name, {"train": d["interpolation"]}) for name, d in first.items() if "interpolation" in d]
        if lines:
            p = plot_interpolation(lines, out / f"{prefix}diag_interpolation_{task}.png",
                                   metric if metric not in (None, "loss", "perplexity") else None,
                                   f"{task}: from the initialization to the solution (seed 0)")
            paths.append(p)
            parts.append("<h3>Initialization to solution</h3>" + figure_html(
                p, f"Training loss on the straight line from the initial to the final weights. After "
                   f"{CITATIONS['interpolation']}."))
    return paths, "".join(parts)
