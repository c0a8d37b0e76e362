"""The schedule protocol, composition and the batch-size scaling rule.

A schedule is a pure function of the step. Learning-rate schedules return a *factor* that multiplies each
parameter group's base lr (the lr the optimizer was built with, which is the *peak* lr of every schedule
here); momentum schedules return absolute momentum / beta1 values.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

from ..core import validation

__all__ = ["Schedule", "constant", "join", "scale_lr_for_batch_size"]


class Schedule:
    """A pure function ``step -> value`` with a readable ``repr``.

    ``step`` is the number of optimizer steps taken so far (0 for the first step). It may be an ``int`` or a
    non-negative ``float`` (fractional epochs, plotting). Every schedule is defined for every step >= 0:
    past the end of its run it holds its final value.

    Args:
        fn: the function of a float step ``>= 0``.
        description: what ``repr`` shows, e.g. ``"cosine_decay(decay_steps=100, end_factor=0.0)"``.
        end_step: the step from which the value stays constant, or ``None`` if it never does.
    """

    __slots__ = ("_fn", "_description", "end_step")

    def __init__(self, fn: Callable[[float], float], description: str, end_step: float | None) -> None:
        self._fn = fn
        self._description = description
        self.end_step = end_step

    def __call__(self, step: float) -> float:
        s = float(step)
        if not (s >= 0.0 and math.isfinite(s)):
            raise ValueError(f"step must be a finite number >= 0, got {step!r}")
        return float(self._fn(s))

    def __repr__(self) -> str:
        return self._description


# ---------------------------------------------------------------------------------------------- combinators


def constant(factor: float = 1.0) -> Schedule:
    """A constant factor of the base lr."""
    factor = validation.check_real("factor", factor, 0.0)
    return Schedule(lambda s: factor, f"constant(factor={factor})", 0.0)


def join(schedules: Sequence[Schedule | Callable[[float], float]], boundaries: Sequence[float]) -> Schedule:
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, ... (optax ``join_schedules``).

    Each schedule restarts its own count at its boundary: for ``boundaries[i-1] <= step < boundaries[i]`` the
    value is ``schedules[i](step - boundaries[i-1])``. The join is continuous at a boundary exactly when the
    schedule ending there finishes at the value the next one starts with (``linear_warmup`` ends at 1 and
    every decay here starts at 1, so ``join([linear_warmup(w), cosine_decay(n - w)], [w])`` is continuous).

    Args:
        schedules: at least one schedule (any callable ``step -> value``).
        boundaries: ``len(schedules) - 1`` strictly increasing steps > 0.
    """
    schedules = list(schedules)
    boundaries = [float(b) for b in boundaries]
    if not schedules:
        raise ValueError("schedules must hold at least one schedule, got none")
    for i, sch in enumerate(schedules):
        if not callable(sch):
            raise TypeError(f"schedules[{i}] must be callable step -> value, got {type(sch).__name__}")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"boundaries must have len(schedules) - 1 = {len(schedules) - 1} entries, got {len(boundaries)}"
        )
    prev = 0.0
    for i, b in enumerate(boundaries):
        if not (math.isfinite(b) and b > prev):
            raise ValueError(
                f"boundaries must be finite and strictly increasing from > 0, got boundaries[{i}]={b}"
            )
        prev = b
    starts = [0.0, *boundaries]

    def fn(s: float) -> float:
        i = bisect.bisect_right(boundaries, s)
        return schedules[i](s - starts[i])

    last_end = getattr(schedules[-1], "end_step", None)
    end_step = None if last_end is None else starts[-1] + last_end
    return Schedule(fn, f"join({schedules!r}, boundaries={boundaries})", end_step)


def scale_lr_for_batch_size(
    base_lr: float, base_batch_size: int, batch_size: int, rule: str = "linear"
) -> float:
    """Scale a learning rate tuned at ``base_batch_size`` to ``batch_size``.

    ``rule="linear"``: the linear scaling rule of Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training
    ImageNet in 1 Hour" (arXiv:1706.02677): "when the minibatch size is multiplied by k, multiply the learning
    rate by k" (use it together with a gradual warm-up, e.g. ``linear_warmup``; the paper warms up over 5
    epochs).
    ``rule="sqrt"``: multiply by sqrt(k) (Krizhevsky 2014, "One weird trick..."; Hoffer et al. 2017), the rule
    usually preferred for Adam-type optimizers.

    Returns:
        ``base_lr * k`` or ``base_lr * sqrt(k)`` with ``k = batch_size / base_batch_size``.
    """
    base_lr = validation.check_real("base_lr", base_lr, 0.0, low_open=True)
    base_batch_size = validation.check_int("base_batch_size", base_batch_size, 1)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    validation.check_choice("rule", rule, ("linear", "sqrt"))
    k = batch_size / base_batch_size
    return base_lr * (k if rule == "linear" else math.sqrt(k))
