"""Argument checks with one message format: ``Invalid <name>: <value>; expected <range>``.

The optimizers' hyperparameters (``check_lr``, ``check_betas``, ...; a number or a 1-element tensor), and the plain
arguments of the schedules and the LR finder (:func:`check_int`, :func:`check_real`, which return the value as an
``int`` or a ``float``). A value of the wrong type raises ``TypeError``, a value out of range ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Container
from numbers import Integral, Real
from typing import Any

import torch

__all__ = [
    "check_beta",
    "check_bool",
    "check_betas",
    "check_choice",
    "check_in_range",
    "check_int",
    "check_lr",
    "check_moment_dtype",
    "check_nonneg",
    "check_positive",
    "check_real",
    "fail",
]


def fail(name: str, value: Any, expected: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"Invalid {name}: {value!r}; expected {expected}")


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:  # a tensor of the wrong size: ValueError, as torch ("Tensor lr must be 1-element")
            fail(name, value, "a number or a 1-element tensor")
        return float(value.detach().reshape(()).item())
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(name, value, "a real number", TypeError)
    if math.isnan(value):
        fail(name, value, "a number, not NaN")
    return float(value)


def check_lr(value: Any, name: str = "lr") -> None:
    if _as_number(name, value) < 0.0:
        fail(name, value, "lr >= 0")


def check_nonneg(name: str, value: Any) -> None:
    if _as_number(name, value) < 0.0:
        fail(name, value, f"{name} >= 0")


def check_positive(name: str, value: Any) -> None:
    if not _as_number(name, value) > 0.0:
        fail(name, value, f"{name} > 0")


def check_in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                   hi_open: bool = True) -> None:
    v = _as_number(name, value)
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (ok_lo and ok_hi):
        fail(name, value, f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")


def check_beta(name: str, value: Any) -> None:
    check_in_range(name, value, 0.0, 1.0)


def check_betas(value: Any, name: str = "betas") -> None:
    """A pair of numbers in [0, 1): both Python numbers or both 1-element tensors (torch refuses a mix)."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        fail(name, value, "a pair (beta1, beta2)", TypeError)
    if isinstance(value[0], torch.Tensor) != isinstance(value[1], torch.Tensor):
        fail(name, value, "both floats or both tensors")
    check_beta(f"{name}[0]", value[0])
    check_beta(f"{name}[1]", value[1])


def check_bool(name: str, value: Any) -> None:
    """``TypeError`` unless ``value`` is a bool (a flag such as ``cautious``; ``1`` or ``"yes"`` are refused)."""
    if not isinstance(value, bool):
        fail(name, value, "a bool", TypeError)


def check_choice(name: str, value: Any, choices: Container[Any]) -> None:
    if value not in choices:  # type: ignore[operator]
        fail(name, value, f"one of {sorted(choices)}")  # type: ignore[arg-type]


def check_moment_dtype(value: Any, beta1: float) -> None:
    """``moment_dtype``: None (the parameters' dtype), float32, or bfloat16 with a first-moment beta <= 0.95.

    An exponential average stored in bfloat16 (8 significant bits, rounded to nearest) stops moving once
    ``(1 - beta) * |g - m|`` falls below half a unit in the last place of ``m``: with beta 0.999 it never moves,
    with 0.99 it settles 40% off, with 0.9 about 3% (``tests/test_moment_dtype.py``). Hence the bound on beta1,
    and no bfloat16 second moment (beta2 is typically 0.999).
    """
    if value is None or value == torch.float32:
        return
    if value != torch.bfloat16:
        fail("moment_dtype", value, "None, torch.float32 or torch.bfloat16", TypeError)
    if beta1 > 0.95:
        fail("moment_dtype", value, f"betas[0] <= 0.95 for a bfloat16 first moment (betas[0] is {beta1}): "
             "an average stored in bfloat16 stalls when 1 - beta is below its precision")


def check_int(name: str, value: Any, minimum: int) -> int:
    """An integer (a Python or numpy integer, not a bool) ``>= minimum``, returned as an ``int``."""
    expected = f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        fail(name, value, expected, TypeError)
    if value < minimum:
        fail(name, value, expected)
    return int(value)


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(low) and math.isinf(high):
        return ""
    if math.isinf(high):
        return f" {'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_real(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
               high_open: bool = False, expected: str | None = None) -> float:
    """A finite real number (not a bool) between ``low`` and ``high`` (each bound included unless ``*_open``),
    returned as a ``float``. ``expected`` names the range in the message where the bounds alone do not say it
    (``"> start_lr = 1e-07"``)."""
    bounds = f" {expected}" if expected is not None else _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(name, value, f"a real number{bounds}", TypeError)
    v = float(value)
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)):
        fail(name, value, f"a finite number{bounds}")
    return v
