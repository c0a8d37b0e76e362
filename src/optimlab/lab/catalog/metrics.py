"""How a task's metric is shown: accuracy in percent, perplexity and losses with their digits.

Used wherever the lab prints a value (progress lines, tables, figures' axes), so that every place agrees.
"""

from __future__ import annotations

import math

__all__ = ["fmt_value", "scale", "unit"]


def scale(metric: str) -> float:
    return 100.0 if metric == "accuracy" else 1.0


def unit(metric: str) -> str:
    return " %" if metric == "accuracy" else ""


def fmt_value(x: float | None, metric: str) -> str:
    """A metric value for display: accuracy in %, perplexity with 4 digits, a loss with 3 significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if metric == "accuracy":
        return f"{100 * x:.1f}"
    if metric == "perplexity":
        return f"{x:.3f}" if x < 10 else f"{x:.4g}"
    return f"{x:.3g}"
