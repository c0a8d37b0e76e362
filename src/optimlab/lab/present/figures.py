"""What every figure of the lab shares: pyplot on the Agg backend, one way to save a PNG, and a few small helpers.

Every PNG the lab writes (the report's figures, the diagnostics, the reproductions, the command-line tools' plots)
goes through :func:`save_figure`: :data:`DPI` dots per inch, cropped to its content unless told otherwise, the
figure closed, an ``OSError`` (a full disk) naming the file. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.present.style import color_of_label, line_style_of_label
from optimlab.lab.training.results import named

__all__ = [
    "DPI",
    "pyplot",
    "save_figure",
    "tidy_log_axes",
    "floats",
    "float_rows",
    "legend_right",
    "place_labels",
]

DPI = 110


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Any, path: str | os.PathLike, *, tight_layout: bool = False, tidy_log: bool = False, crop: bool = True
) -> Path:
    """Write ``fig`` to ``path`` (a PNG at :data:`DPI`), close it and return the path; the folder is created.

    In this order: ``tight_layout`` calls ``fig.tight_layout()``; ``tidy_log`` relabels short log axes
    (:func:`tidy_log_axes`); ``crop`` saves with ``bbox_inches="tight"`` (the margins trimmed, and what lies outside
    the axes, such as a legend beside them, kept), else the figure's own size. An ``OSError`` names the file.
    """
    path = Path(path)
    try:
        if tight_layout:
            fig.tight_layout()
        if tidy_log:
            tidy_log_axes(fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight" if crop else None)
    except OSError as e:  # a full disk: the error names the figure
        raise named(e, path) from None
    finally:
        pyplot().close(fig)
    return path


def tidy_log_axes(fig: Any) -> None:
    """On log axes spanning less than two decades matplotlib labels minor ticks (2x10^1, 3x10^1, ...), which
    overlap on narrow panels: label 1, 2, 5 x 10^k in plain numbers there instead, minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax in fig.axes:
        for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                                 (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
            lo, hi = sorted(lim)
            if scale != "log" or not (lo > 0 and hi / lo < 100):
                continue
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())


def floats(values: Iterable[Any]) -> np.ndarray:
    """``values`` as a float array, ``None`` as NaN (a diverged or missing value)."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def float_rows(rows: Sequence[Sequence[Any]]) -> np.ndarray:
    """A 2-D float array of ``rows``, ``None`` as NaN; ``(0, 0)`` for no rows."""
    if not rows:
        return np.zeros((0, 0))
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)


def legend_right(fig: Any, labels: Sequence[str]) -> None:
    """One legend for the figure, to the right of the axes (never over data): a line in each run label's colour
    and line style (:func:`~optimlab.lab.present.style.color_of_label`, :func:`~optimlab.lab.present.style.
    line_style_of_label`)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color_of_label(n), ls=line_style_of_label(n), lw=2.2) for n in labels]
    fig.legend(handles, list(labels), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


# where a label may go relative to its point: (dx, dy) directions, and the distances tried, in points
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
_DISTANCES = (3, 8, 14, 22, 32, 44)


def place_labels(
    ax: Any, points: Sequence[tuple[float, float]], texts: Sequence[str], colors: Sequence[str], fontsize: float = 7
) -> list[Any]:
    """Write ``texts[i]`` beside ``points[i]`` (data coordinates) so that no two labels overlap and no label covers
    a point; return the text artists. Call it last, once the axes' limits and scales are final.

    Greedy, in the given order (put the most important first): each label takes the first free place among 8
    directions at growing distances inside the axes (a thin line joins a label set apart to its point); a label
    with no free place goes to a column to the right of the axes, joined to its point by a line.
    """
    fig = ax.figure
    ax.set_xlim(ax.get_xlim())  # fixed from here: the leader lines must not move the data
    ax.set_ylim(ax.get_ylim())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = fig.dpi / 72  # display pixels per point
    marks = [ax.transData.transform(p) for p in points]
    r = 4 * px  # a marker's half-size
    taken = [(x - r, y - r, x + r, y + r) for x, y in marks]

    def free(box: Any) -> bool:
        x0, y0, x1, y1 = box.x0 - px, box.y0 - px, box.x1 + px, box.y1 + px
        inside = x0 >= frame.x0 and x1 <= frame.x1 and y0 >= frame.y0 and y1 <= frame.y1
        return inside and not any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in taken)

    out: list[Any] = []
    spill: list[int] = []
    for i, (point, text, color) in enumerate(zip(points, texts, colors, strict=True)):
        placed = None
        for dist in _DISTANCES:
            for dx, dy in _DIRECTIONS:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                t = ax.annotate(text, point, xytext=(dx * dist, dy * dist), textcoords="offset points", ha=ha,
                                va=va, fontsize=fontsize, color=color)
                box = t.get_window_extent(renderer)
                if free(box):
                    placed = t
                    taken.append((box.x0, box.y0, box.x1, box.y1))
                    if dist > _DISTANCES[1]:
                        _leader(ax, marks[i], box, color)
                    break
                t.remove()
            if placed is not None:
                break
        if placed is None:
            spill.append(i)
        else:
            out.append(placed)
    top = frame.y1
    for i in spill:  # a column right of the axes, top down, each below the one before
        at = (1 + 14 * px / frame.width, (top - frame.y0) / frame.height)  # axes fraction: the same at any dpi
        t = ax.annotate(texts[i], at, xycoords="axes fraction", ha="left", va="top", fontsize=fontsize,
                        color=colors[i], annotation_clip=False)
        box = t.get_window_extent(renderer)
        top = box.y0 - 2 * px
        _leader(ax, marks[i], box, colors[i])
        out.append(t)
    return out


def _leader(ax: Any, mark: Any, box: Any, color: str) -> None:
    """A thin line from a point (display coordinates) to the nearest point of a label's box."""
    x = min(max(mark[0], box.x0), box.x1)
    y = min(max(mark[1], box.y0), box.y1)
    inverse = ax.transData.inverted()
    (x0, y0), (x1, y1) = inverse.transform(mark), inverse.transform((x, y))
    ax.plot([x0, x1], [y0, y1], color=color, lw=0.5, alpha=0.7, clip_on=False, zorder=1)
