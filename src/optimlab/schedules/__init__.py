"""Learning-rate and momentum schedules as pure functions of the step, and ``ScheduleLR`` to apply them.

Convention: an lr schedule returns a *factor* that multiplies each param group's base lr, and the base lr is
the *peak* lr of the run (build the optimizer with ``lr = max_lr``); lower ends are ratios of it
(``init_factor``, ``end_factor``, ``min_factor``). Momentum schedules return absolute momentum / beta1
values. Every schedule is defined for every step >= 0 and holds its final value past the end of its run.

Example::

    sched = warmup(cosine_decay(9_000, end_factor=0.1), warmup_steps=1_000)
    scheduler = ScheduleLR(optimizer, sched)   # lr = base_lr * sched(step), per group
"""

from ._base import Schedule, constant, join, scale_lr_for_batch_size
from ._cyclic import cyclic, cyclic_momentum, one_cycle, one_cycle_momentum, sgdr
from ._decay import (
    cosine_decay,
    exponential_decay,
    exponential_warmup,
    linear_decay,
    linear_warmup,
    multistep_decay,
    step_decay,
    warmup,
    wsd,
)
from ._plot import plot_schedule
from ._scheduler import ScheduleLR

__all__ = [
    "Schedule",
    "ScheduleLR",
    "constant",
    "cosine_decay",
    "cyclic",
    "cyclic_momentum",
    "exponential_decay",
    "exponential_warmup",
    "join",
    "linear_decay",
    "linear_warmup",
    "multistep_decay",
    "one_cycle",
    "one_cycle_momentum",
    "plot_schedule",
    "scale_lr_for_batch_size",
    "sgdr",
    "step_decay",
    "warmup",
    "wsd",
]
