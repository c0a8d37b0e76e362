"""The lab's adapter to the library: the optimizers, wrappers, schedules and LR finder its specs and runs name.

- :func:`create_optimizer`, :func:`lookahead`, :func:`gradient_noise`: what an optimizer spec builds
  (:mod:`optimlab.lab.catalog.presets` parses the spec and calls these);
- the lab's schedule names: :func:`create_schedule` (``constant``, the schedules of :data:`RUN_SCHEDULES` sized to
  the run, or any factory of :mod:`optimlab.schedules` with its own arguments), :func:`schedule_names`,
  :func:`attach_schedule`;
- :func:`lr_find` (the LR range test) and :func:`schedule_free_bn_update` (BatchNorm at a Schedule-Free
  optimizer's evaluation point).

The presets, the tasks, the training loop, the report's schedule figure and the ``lr-find`` and ``schedule``
commands reach the library through these functions, so that a renamed argument there is adjusted here. Not all of
the lab does: the reproduce experiments build the optimizers and wrappers they study directly (``optimlab.Adam``,
``Lookahead``, ``SWA``, ...), and the diagnostics (the diagnostics commands,
:mod:`optimlab.lab.training.diagnostic_runs`) call :mod:`optimlab.diagnostics`. The lab imports the library; the
library never imports the lab.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

import optimlab

__all__ = [
    "create_optimizer",
    "lookahead",
    "create_schedule",
    "schedule_names",
    "attach_schedule",
    "lr_find",
    "RUN_SCHEDULES",
    "schedule_free_bn_update",
]


def create_optimizer(
    name: str, model: torch.nn.Module, *, exclude_from_decay: bool = False, **kwargs: Any
) -> torch.optim.Optimizer:
    """A library optimizer by its registry name (``sgd``, ``adam``, ``radam``, ...) for ``model``."""
    return optimlab.create_optimizer(name, model, exclude_from_decay=exclude_from_decay, **kwargs)


def schedule_free_bn_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Any],
                            num_batches: int = 50) -> None:
    """The library's BatchNorm refresh at a Schedule-Free optimizer's evaluation point (model left in eval mode,
    optimizer in eval mode)."""
    optimlab.schedule_free_bn_update(model, optimizer, batches, num_batches=num_batches)


def lookahead(optimizer: torch.optim.Optimizer, **kwargs: Any) -> torch.optim.Optimizer:
    """Wrap ``optimizer`` in the library's Lookahead (Zhang et al., 2019)."""
    from optimlab.wrappers import Lookahead

    return Lookahead(optimizer, **kwargs)


def gradient_noise(optimizer: torch.optim.Optimizer, **kwargs: Any) -> torch.optim.Optimizer:
    """Wrap ``optimizer`` in the library's annealed Gaussian gradient noise (Neelakantan et al., 2015)."""
    from optimlab.wrappers import GradientNoise

    return GradientNoise(optimizer, **kwargs)


def _steps(value: float, total: int, name: str) -> int:
    """A length given as a fraction of the run (``0 < value < 1``) or as a number of steps."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0 (a fraction of the run or a number of steps), got {value!r}")
    return int(round(value * total)) if value < 1 else int(value)


def _cosine(total: int, end_factor: float = 0.0) -> Callable[[int], float]:
    from optimlab import schedules

    return schedules.cosine_decay(total, end_factor=end_factor)


def _linear(total: int, end_factor: float = 0.0) -> Callable[[int], float]:
    from optimlab import schedules

    return schedules.linear_decay(total, end_factor=end_factor)


def _warmup_cosine(total: int, warmup: float = 0.05, end_factor: float = 0.0) -> Callable[[int], float]:
    from optimlab import schedules

    w = _steps(warmup, total, "warmup")
    if w == 0:  # a run too short for 5 % of it to be a step (or warmup=0): no warm-up
        return schedules.cosine_decay(total, end_factor=end_factor)
    return schedules.warmup(schedules.cosine_decay(max(1, total - w), end_factor=end_factor), warmup_steps=w)


def _wsd(total: int, warmup: float = 0.05, decay: float = 0.2, end_factor: float = 0.0) -> Callable[[int], float]:
    from optimlab import schedules

    return schedules.wsd(total, _steps(warmup, total, "warmup"), _steps(decay, total, "decay"), end_factor=end_factor)


def _one_cycle(total: int, **kwargs: Any) -> Callable[[int], float]:
    from optimlab import schedules

    return schedules.one_cycle(total, **kwargs)


def _step(total: int, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> Callable[[int], float]:
    from optimlab import schedules

    return schedules.multistep_decay([_steps(m, total, "milestones") for m in milestones], gamma=gamma)


# Schedules named relative to the run's length (lengths: a fraction of the run, or a number of steps).
RUN_SCHEDULES: dict[str, Callable[..., Callable[[int], float]]] = {
    "cosine": _cosine,
    "linear": _linear,
    "warmup_cosine": _warmup_cosine,
    "wsd": _wsd,
    "one_cycle": _one_cycle,
    "step": _step,
}


def schedule_names() -> list[str]:
    """Names accepted by :func:`create_schedule`."""
    return ["constant", *RUN_SCHEDULES]


def create_schedule(name: str, total_steps: int, **kwargs: Any) -> Callable[[int], float]:
    """A pure ``step -> LR factor`` function for a run of ``total_steps`` steps.

    ``constant`` is factor 1; the names of :data:`RUN_SCHEDULES` build :mod:`optimlab.schedules` schedules
    sized to the run; any other public factory of :mod:`optimlab.schedules` (e.g. ``sgdr``) is called with
    ``kwargs`` as given.
    """
    if name == "constant":
        if kwargs:
            raise ValueError(f"schedule 'constant' takes no arguments, got {sorted(kwargs)}")
        return _constant
    from optimlab import schedules

    if name in RUN_SCHEDULES:
        factory, first = RUN_SCHEDULES[name], (total_steps,)
    else:
        factory, first = (getattr(schedules, name, None) if name in schedules.__all__ else None), ()
        if factory is None or name in _NOT_SCHEDULES:
            raise ValueError(
                f"unknown schedule {name!r}; available: {', '.join(schedule_names())} "
                "or a factory of optimlab.schedules with its arguments (e.g. sgdr@period=500)"
            )
    _check_arguments(name, factory, first, kwargs)
    try:
        return factory(*first, **kwargs)
    except TypeError as e:  # a value of a type the checks above cannot see (annotations they do not read)
        raise ValueError(f"schedule {name!r}: {e}") from None


_NOT_SCHEDULES = ("ScheduleLR", "Schedule", "plot_schedule", "join", "scale_lr_for_batch_size")


def _check_arguments(name: str, factory: Callable[..., Any], first: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` for an argument ``factory`` does not take, a missing one, or a value whose type is
    not the annotated one (a run-length schedule that forwards ``**kwargs`` is checked against the
    :mod:`optimlab.schedules` factory of the same name)."""
    import inspect

    from optimlab import schedules

    signature = inspect.signature(factory)
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params) and hasattr(schedules, name):
        signature = inspect.signature(getattr(schedules, name))
        params = list(signature.parameters.values())
    named = [p for p in params[len(first):] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes = ", ".join(p.name for p in named) or "none"
    for key in kwargs:
        if key not in {p.name for p in named}:
            raise ValueError(f"schedule {name!r} has no argument {key!r}; its arguments: {takes}")
    try:
        signature.bind(*first, **kwargs)
    except TypeError as e:
        raise ValueError(f"schedule {name!r}: {e}; its arguments: {takes}") from None
    for p in named:
        if p.name in kwargs and _accepts(p.annotation, kwargs[p.name]) is False:
            raise ValueError(
                f"schedule {name!r}: {p.name} must be {_ANNOTATION_WORDS.get(str(p.annotation), p.annotation)}, "
                f"got {kwargs[p.name]!r}"
            )


_ANNOTATION_WORDS = {"float": "a number", "int": "an integer", "bool": "True or False", "str": "a string"}


def _accepts(annotation: Any, value: Any) -> bool | None:
    """Whether ``value`` fits a string annotation made of ``float``, ``int``, ``bool``, ``str``, ``None`` and
    sequences of numbers (``tuple[float, ...]``, ``Sequence[int]``); ``None`` when it names anything else."""

    def number(x: Any, integer: bool = False) -> bool:
        return not isinstance(x, bool) and isinstance(x, int if integer else (int, float))

    fits = False
    for alt in (a.strip() for a in str(annotation).split("|")):
        if alt == "None":
            fits |= value is None
        elif alt in ("float", "int"):
            fits |= number(value, alt == "int")
        elif alt == "bool":
            fits |= isinstance(value, bool)
        elif alt == "str":
            fits |= isinstance(value, str)
        elif alt.startswith(("tuple[", "list[", "Sequence[")) and alt.endswith(("float]", "int]", "float, ...]")):
            fits |= isinstance(value, (list, tuple)) and all(number(x) for x in value)
        else:
            return None
    return fits


def _constant(step: int) -> float:
    return 1.0


def attach_schedule(optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]) -> Any | None:
    """An LR scheduler scaling each group's initial LR by ``schedule(step)``; ``None`` for ``constant``."""
    if schedule is _constant:
        return None
    from optimlab.schedules import ScheduleLR

    return ScheduleLR(optimizer, schedule)


def lr_find(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    data: Iterable[Any],
    *,
    start_lr: float,
    end_lr: float,
    num_steps: int,
) -> Any:
    """The library's LR range test (Smith, 2017); returns its result (``.plot()``, ``.suggestions``)."""
    from optimlab.lr_finder import lr_find as _lr_find

    return _lr_find(model, optimizer, loss_fn, data, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps)
