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

from optimlab.lab.present.style import color_of_label
from optimlab.lab.training.results import named

__all__ = ["DPI", "pyplot", "save_figure", "tidy_log_axes", "floats", "float_rows", "legend_right"]

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
    (:func:`~optimlab.lab.present.style.color_of_label`)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color_of_label(n), lw=2.2) for n in labels]
    fig.legend(handles, list(labels), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
