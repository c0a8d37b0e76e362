"""Figures of the loss along lines and planes through the weights: the line from the initialization to the solution
(Goodfellow et al., 2015), 1-D, 2-D and 3-D landscapes around a solution and the optimization path on the PCA
plane of its checkpoints (Li et al., 2018): for ``optimlab interpolate`` and ``optimlab landscape``, and the
``compare --diagnostics`` panels (the interpolation).

As in :mod:`optimlab.lab.present.diagnostic_plots`: one colour per optimizer, the legend beside the axes, the loss
on a log scale; the functions take plain data (``to_dict()`` of the diagnostics' results) and write one PNG each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.present.figures import float_rows, floats, legend_right, pyplot, save_figure
from optimlab.lab.present.style import color_of_label, line_style_of_label

__all__ = ["plot_interpolation", "plot_landscape_1d", "plot_landscape_2d", "plot_landscape_3d", "plot_trajectory"]


def _loss_ticks(levels: np.ndarray) -> tuple[list[float], list[str]]:
    """Ticks for a colour bar (or z axis) in log10(loss): at losses 1, 2, 5 x 10^k (1..9 x 10^k on a short
    range), labelled with the loss itself."""
    lo, hi = float(levels[0]), float(levels[-1])
    for subs in ((1, 2, 5), tuple(range(1, 10))):
        vals = [m * 10.0**k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in subs]
        pos = [math.log10(v) for v in vals if lo - 1e-9 <= math.log10(v) <= hi + 1e-9]
        if len(pos) >= 3:
            break
    if len(pos) < 2:
        pos = list(np.linspace(lo, hi, 4))
    return pos, [f"{10 ** x:.3g}" for x in pos]


def _loss_colorbar(fig: Any, cs: Any, axes: Any, levels: np.ndarray) -> None:
    cb = fig.colorbar(cs, ax=axes.ravel().tolist(), shrink=0.85)
    pos, labels = _loss_ticks(levels)
    cb.set_ticks(pos, labels=labels)
    cb.set_label("train loss (log scale)")


def plot_interpolation(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, metric: str | None,
                       title: str = "") -> Path:
    """``runs``: ``(label, {"train": interpolation.to_dict(), "val": ...})``; solid: train, dashed: validation."""
    plt = pyplot()
    ncols = 2 if metric else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.8 * ncols, 4.0), squeeze=False)
    axes = axes[0]
    for label, res in runs:
        color = color_of_label(label)
        for split, ls in (("train", "-"), ("val", "--")):
            if split not in res:
                continue
            a = np.asarray(res[split]["alphas"], dtype=float)
            axes[0].plot(a, floats(res[split]["loss"]), ls, color=color, lw=1.5)
            if metric:
                axes[1].plot(a, 100 * floats(res[split]["metric"]), ls, color=color, lw=1.5)
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    if metric:
        axes[1].set_ylabel(f"{metric} (%)")
    for ax in axes:
        ax.axvline(0, color="0.5", lw=0.7, ls=":")
        ax.axvline(1, color="0.5", lw=0.7, ls=":")
        ax.set_xlabel("α: (1 − α) θ_init + α θ_final")
        ax.grid(alpha=0.3)
    legend_right(fig, [r[0] for r in runs])
    if any("val" in res for _, res in runs):
        fig.text(1.0, 0.12, "solid: train subset\ndashed: validation", fontsize=8, ha="left")
    fig.suptitle(title or "From the initialization to the solution")
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


def plot_landscape_1d(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, metric: str | None,
                      title: str = "") -> Path:
    """``runs``: ``(label, landscape.to_dict())`` of 1-D landscapes (solid: loss; right panel: metric)."""
    plt = pyplot()
    ncols = 2 if metric else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.8 * ncols, 4.0), squeeze=False)
    axes = axes[0]
    for label, res in runs:
        x = np.asarray(res["coords"][0], dtype=float)
        axes[0].plot(x, floats(res["loss"]), color=color_of_label(label), lw=1.6, ls=line_style_of_label(label))
        if metric:
            axes[1].plot(
                x, 100 * floats(res["metric"]), color=color_of_label(label), lw=1.6, ls=line_style_of_label(label)
            )
    axes[0].set_ylabel("train loss")
    axes[0].set_yscale("log")
    if metric:
        axes[1].set_ylabel(f"train {metric} (%)")
    for ax in axes:
        ax.set_xlabel("α along a filter-normalized random direction")
        ax.axvline(0, color="0.5", lw=0.7, ls=":")
        ax.grid(alpha=0.3)
    legend_right(fig, [r[0] for r in runs])
    fig.suptitle(title or "1-D loss landscape around each solution")
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


def _grid(res: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(res["coords"][0], dtype=float)
    y = np.asarray(res["coords"][1], dtype=float)
    z = float_rows(res["loss"])  # (x, y)
    return x, y, z


def _levels(zs: Sequence[np.ndarray]) -> np.ndarray:
    finite = np.concatenate([z[np.isfinite(z) & (z > 0)] for z in zs]) if zs else np.array([])
    if finite.size == 0:
        return np.linspace(0, 1, 5)
    lo = np.log10(finite.min())
    hi = min(np.log10(np.percentile(finite, 98)), lo + 4)  # at most 4 decades: the rim would swamp the basin
    if hi <= lo:
        hi = lo + 1
    return np.linspace(lo, hi, 22)


def plot_landscape_2d(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "",
                      xlabel: str = "δ (filter-normalized)", ylabel: str = "η (filter-normalized)") -> Path:
    """Contours of log10(loss), one panel per optimizer, on shared levels; the centre marked."""
    plt = pyplot()
    n = len(runs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols + 1.2, 4.0 * rows), squeeze=False, layout="constrained")
    grids = [_grid(r) for _, r in runs]
    levels = _levels([g[2] for g in grids])
    cs = None
    for ax, (label, _), (x, y, z) in zip(axes.flat, runs, grids, strict=False):
        with np.errstate(divide="ignore", invalid="ignore"):
            lz = np.log10(z).T
        lz = np.where(np.isfinite(lz), np.clip(lz, levels[0], levels[-1]), levels[-1])
        cs = ax.contourf(x, y, lz, levels=levels, cmap="viridis", extend="max")
        ax.contour(x, y, lz, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.6)
        ax.plot(0, 0, "*", color=color_of_label(label), ms=13, mec="white", mew=1.0)
        ax.set_title(label, color=color_of_label(label), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal", adjustable="box")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if cs is not None:
        _loss_colorbar(fig, cs, axes, levels)
    fig.suptitle(title or "2-D loss landscape around each solution")
    return save_figure(fig, path, tidy_log=True)


def plot_landscape_3d(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Surfaces of the loss on a log z axis over the 2-D grid, one panel per optimizer (Li et al.'s 3-D pictures)."""
    plt = pyplot()
    n = len(runs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(4.8 * cols, 4.2 * rows))
    grids = [_grid(r) for _, r in runs]
    levels = _levels([g[2] for g in grids])
    for i, ((label, _), (x, y, z)) in enumerate(zip(runs, grids, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        with np.errstate(divide="ignore", invalid="ignore"):
            lz = np.log10(z).T
        lz = np.where(np.isfinite(lz), np.clip(lz, levels[0], levels[-1]), levels[-1])
        gx, gy = np.meshgrid(x, y)
        ax.plot_surface(gx, gy, lz, cmap="viridis", vmin=levels[0], vmax=levels[-1], rstride=1, cstride=1,
                        linewidth=0.1, edgecolor="0.3", antialiased=True)
        ax.set_zlim(levels[0], levels[-1])
        pos, labels = _loss_ticks(levels)
        ax.set_zticks(pos, labels=labels)
        ax.set_title(label, color=color_of_label(label), fontsize=10)
        ax.set_xlabel("δ")
        ax.set_ylabel("η")
        ax.set_zlabel("train loss (log scale)")
        ax.view_init(elev=32, azim=-55)
    fig.suptitle(title or "Loss surfaces (train loss on a log z axis)")
    return save_figure(fig, path, tight_layout=True, tidy_log=True)


def plot_trajectory(runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Each optimizer's path projected on the first two principal directions of its checkpoints, over the
    loss on that plane. ``runs``: ``(label, {"landscape": landscape.to_dict(), "coords": [[x, y], ...],
    "explained": [r1, r2]})``."""
    plt = pyplot()
    n = len(runs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 1.2, 4.0 * rows), squeeze=False, layout="constrained")
    grids = [_grid(r["landscape"]) for _, r in runs]
    levels = _levels([g[2] for g in grids])
    cs = None
    for ax, (label, r), (x, y, z) in zip(axes.flat, runs, grids, strict=False):
        with np.errstate(divide="ignore", invalid="ignore"):
            lz = np.log10(z).T
        lz = np.where(np.isfinite(lz), np.clip(lz, levels[0], levels[-1]), levels[-1])
        cs = ax.contourf(x, y, lz, levels=levels, cmap="Greys_r", extend="max", alpha=0.85)
        ax.contour(x, y, lz, levels=levels[::2], colors="white", linewidths=0.4, alpha=0.7)
        c = np.asarray(r["coords"], dtype=float)
        color = color_of_label(label)
        ax.plot(c[:, 0], c[:, 1], "-o", color=color, ms=3, lw=1.6, mec="white", mew=0.5)
        ax.plot(c[0, 0], c[0, 1], "s", color=color, ms=7, mec="white", label="start")
        ax.plot(c[-1, 0], c[-1, 1], "*", color=color, ms=13, mec="white", label="end")
        ex = r.get("explained", [math.nan, math.nan])
        ax.set_xlabel(f"1st PC ({100 * ex[0]:.1f} % of the path's variance)")
        ax.set_ylabel(f"2nd PC ({100 * ex[1]:.1f} %)")
        ax.set_title(label, color=color, fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if cs is not None:
        _loss_colorbar(fig, cs, axes, levels)
    fig.suptitle(title or "Optimization paths on the PCA plane of their checkpoints (square: start, star: end)")
    return save_figure(fig, path, tidy_log=True)
