"""A run's config: :class:`RunConfig`, everything that determines a run's numbers, and the schedule specs it names
(:func:`parse_schedule`, :func:`build_schedule`)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from optimlab.lab.catalog import adapter
from optimlab.lab.catalog.presets import parse_kwargs, parse_spec
from optimlab.lab.catalog.tasks import get_task

__all__ = ["SPLITS", "RunConfig", "parse_schedule", "build_schedule"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. ``key()`` is its identity for resume.

    ``hparams``: tuned settings besides the lr, as sorted ``(name, value)`` pairs (e.g. ``(("weight_decay",
    3e-3),)``). ``splits``: the splits evaluated (tuning runs name no ``test``: they never see it).
    """

    task: str
    optimizer: str
    lr: float
    seed: int = 0
    steps: int = 1000
    batch_size: int = 100
    eval_every: int = 100
    schedule: str = "constant"
    hparams: tuple[tuple[str, float], ...] = ()
    splits: tuple[str, ...] = SPLITS

    def __post_init__(self) -> None:
        get_task(self.task)
        parse_spec(self.optimizer)
        if isinstance(self.lr, bool) or not (
            isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)
        ):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        hp = tuple((str(k), v) for k, v in self.hparams)
        if list(hp) != sorted(hp) or len({k for k, _ in hp}) != len(hp) or "lr" in dict(hp):
            raise ValueError(f"hparams must be sorted (name, value) pairs without 'lr', got {self.hparams!r}")
        for k, v in hp:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"hparams: {k} must be a finite number, got {v!r}")
        if not self.splits or any(s not in SPLITS for s in self.splits) or len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits must be distinct names among {SPLITS}, got {self.splits!r}")
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        # an unknown schedule or a bad argument fails here, not in a worker
        build_schedule(self.schedule, self.steps)

    def key(self) -> str:
        """A stable hash of the config (16 hex digits)."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunConfig:
        """The config stored in a record (JSON turned tuples into lists)."""
        d = dict(d)
        d["hparams"] = tuple((k, v) for k, v in d.get("hparams", ()))
        d["splits"] = tuple(d.get("splits", SPLITS))
        return RunConfig(**d)


def parse_schedule(spec: str) -> tuple[str, dict[str, Any]]:
    """``'name@k=v,...'`` -> ``(name, kwargs)``, with the same literal syntax as optimizer specs."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"schedule must be a non-empty string, got {spec!r}")
    name, _, args = spec.replace(" ", "").partition("@")
    return name, dict(parse_kwargs(args, spec, "schedule spec")) if args else {}


def build_schedule(spec: str, steps: int) -> Any:
    """The ``step -> factor`` function of a schedule spec for a run of ``steps`` steps; a bad name, an unknown
    argument or a value of the wrong type raises one ``ValueError`` that names the spec."""
    name, kwargs = parse_schedule(spec)
    try:
        return adapter.create_schedule(name, steps, **kwargs)
    except ValueError as e:
        raise ValueError(f"schedule spec {spec!r}: {e}") from None
