"""Plot a schedule over a run (matplotlib is imported lazily: it is an optional dependency)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core import validation

__all__ = ["plot_schedule"]


def plot_schedule(
    schedule: Callable[[int], float],
    total_steps: int,
    ax: Any = None,
    momentum: Callable[[int], float] | None = None,
    *,
    base_lr: float = 1.0,
    label: str | None = None,
    log_scale: bool = False,
) -> Any:
    """Draw ``base_lr * schedule(t)`` for ``t = 0 .. total_steps - 1`` and, if given, ``momentum(t)``.

    The momentum is drawn on a second y axis sharing the step axis. Returns the matplotlib ``Figure``.

    Args:
        schedule: callable ``step -> factor``.
        total_steps: number of steps to draw (>= 1).
        ax: a matplotlib ``Axes`` to draw on; a new figure is made when ``None``.
        momentum: callable ``step -> momentum`` (absolute values), or ``None``.
        base_lr: multiplies the factors (1.0 plots the factor itself).
        label: legend label for the lr curve (default: ``repr(schedule)``).
        log_scale: log-scaled lr axis.
    """
    n = validation.check_int("total_steps", total_steps, 1)
    base_lr = validation.check_real("base_lr", base_lr, 0.0, low_open=True)
    import matplotlib.pyplot as plt  # lazy: optional dependency

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.5))
    else:
        fig = ax.figure
    steps = np.arange(n)
    lrs = np.array([base_lr * schedule(int(t)) for t in steps])
    ax.plot(steps, lrs, color="C0", label=repr(schedule) if label is None else label)
    ax.set_xlabel("step")
    ax.set_ylabel("lr" if base_lr != 1.0 else "lr factor")
    if log_scale:
        ax.set_yscale("log")
    if momentum is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, [momentum(int(t)) for t in steps], color="C1", linestyle="--", label="momentum")
        ax2.set_ylabel("momentum")
    return fig
