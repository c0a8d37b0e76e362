"""``ScheduleLR``: drive any torch optimizer with a pure schedule (and optionally a momentum schedule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ScheduleLR"]

_NOT_SAVED = ("optimizer", "schedule", "momentum_schedule")


def _set(group: dict[str, Any], key: str, value: float) -> None:
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value)  # in place: a compiled step that reads a tensor lr does not recompile
    else:
        group[key] = value


class ScheduleLR(LRScheduler):
    """Set each group's ``lr = initial_lr * schedule(step)`` and, optionally, its momentum / beta1.

    ``initial_lr`` is the group's lr when the scheduler is created (stored in the group as torch does), so
    groups with different base lrs keep their ratios. Call :meth:`step` after ``optimizer.step()``; the first
    value, ``schedule(0)``, is applied at construction. ``momentum_schedule`` returns absolute values and is
    written to ``group["momentum"]`` (SGD, RMSprop) or ``group["betas"][0]`` (Adam family). Tensor lrs,
    momenta and betas are filled in place. Schedules from :mod:`optimlab.schedules` hold their last value past
    the end of the run, so stepping past the end is defined.

    ``state_dict()`` holds the step and the base lrs (not the schedule functions: re-create the scheduler with
    the same schedules, then ``load_state_dict``); loading also re-applies the lr and momentum of the loaded
    step, so a resumed run continues with exactly the values of an unbroken one.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        schedule: callable ``step -> factor`` of the base lr.
        momentum_schedule: callable ``step -> momentum`` (absolute), or ``None`` to leave momentum alone.
        last_step: index of the last step taken; ``-1`` starts a new run (torch's ``last_epoch``).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Callable[[int], float],
        momentum_schedule: Callable[[int], float] | None = None,
        last_step: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(schedule):
            raise TypeError(f"schedule must be callable step -> factor, got {type(schedule).__name__}")
        if momentum_schedule is not None:
            if not callable(momentum_schedule):
                raise TypeError(
                    "momentum_schedule must be callable step -> momentum, "
                    f"got {type(momentum_schedule).__name__}"
                )
            for i, group in enumerate(optimizer.param_groups):
                if "momentum" not in group and "betas" not in group:
                    raise ValueError(
                        f"momentum_schedule needs 'momentum' or 'betas' in every param group; "
                        f"param_groups[{i}] of {type(optimizer).__name__} has neither"
                    )
        if isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < -1:
            raise ValueError(f"last_step must be an integer >= -1, got {last_step!r}")
        self.schedule = schedule
        self.momentum_schedule = momentum_schedule
        super().__init__(optimizer, last_epoch=last_step)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        factor = float(self.schedule(self.last_epoch))
        return [float(base_lr) * factor for base_lr in self.base_lrs]

    def _apply_momentum(self) -> None:
        if self.momentum_schedule is None:
            return
        m = float(self.momentum_schedule(self.last_epoch))
        for group in self.optimizer.param_groups:
            if "betas" in group:
                beta1 = group["betas"][0]
                if isinstance(beta1, torch.Tensor):
                    beta1.fill_(m)
                else:
                    group["betas"] = (m, *group["betas"][1:])
            else:
                _set(group, "momentum", m)

    def step(self, epoch: None = None) -> None:  # type: ignore[override]
        """Advance one step; ``epoch`` (torch's deprecated jump) is not supported."""
        if epoch is not None:
            raise ValueError(
                "ScheduleLR.step() takes no epoch; build it with last_step=... to start elsewhere"
            )
        super().step()
        self._apply_momentum()

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in _NOT_SAVED}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's, checked first: a state_dict of a scheduler over another number of param groups raises
        ``ValueError`` (saying both counts) and leaves this scheduler as it was."""
        state = {key: value for key, value in state_dict.items() if key not in _NOT_SAVED}
        groups = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if key in state and len(state[key]) != groups:
                raise ValueError(f"ScheduleLR.load_state_dict: the state_dict's {key!r} has {len(state[key])} "
                                 f"values (a scheduler over {len(state[key])} param groups), this optimizer has "
                                 f"{groups} param groups")
        self.__dict__.update(state)
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            _set(group, "lr", lr)
        self._last_lr = [g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"]
                         for g in self.optimizer.param_groups]
        self._apply_momentum()
