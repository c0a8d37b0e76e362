"""Selection: which tuning trial wins (the best final value of the selection split; a diverged trial ranks last),
and whether the winner sits at the edge of its search range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from optimlab.lab.catalog.space import SearchSpace
from optimlab.lab.catalog.tasks import Task
from optimlab.lab.training.record import RunRecord

__all__ = ["Selection", "select"]


@dataclass
class Selection:
    """The setting chosen for one optimizer, from its tuning trials (or its preset, without tuning)."""

    spec: str
    lr: float
    hparams: dict[str, float]
    tuned: bool
    value: float | None = None  # the chosen trial's final selection metric
    trials: list[RunRecord] = field(default_factory=list, repr=False)
    edges: list[str] = field(default_factory=list)  # e.g. "lr: the highest value tried (range 1e-4..1e-1)"
    edge_sides: dict[str, str] = field(default_factory=dict)  # the same, as {"lr": "upper"} ("upper"/"lower")
    all_diverged: bool = False

    @property
    def settings(self) -> dict[str, float]:
        return {"lr": self.lr, **self.hparams}


def select(spec: str, space: SearchSpace | None, trials: Sequence[RunRecord], task: Task) -> Selection:
    """The trial of best final selection-split metric (``val``; diverged trials rank last, ties go to the
    earlier trial), with a flag for every tuned value that is the lowest or highest of those tried."""
    if not trials:
        raise ValueError(f"no tuning trials for {spec!r}")
    sign = 1.0 if task.higher_is_better else -1.0
    scored = []
    for j, rec in enumerate(trials):
        v = rec.final(f"{task.selection_split}_{rec.metric}") if rec.ok else None  # a diverged trial ranks last
        scored.append((-math.inf if v is None else sign * v, -j, rec))
    best_score, _, best = max(scored, key=lambda t: (t[0], t[1]))
    config = best.config
    all_diverged = best_score == -math.inf
    if all_diverged:  # nothing trained: take the smallest lr, the most likely to be stable
        best = min(trials, key=lambda r: r.config.lr)
        config = best.config
    hparams = {k: v for k, v in config.hparams}
    chosen = {"lr": config.lr, **hparams}
    edges = []
    sides: dict[str, str] = {}
    ranges = {p.name: f" (range {p.low:.3g}..{p.high:.3g})" for p in space.params} if space else {}
    for name, value in chosen.items():
        if all_diverged:
            break
        tried = [r.config.lr if name == "lr" else dict(r.config.hparams).get(name) for r in trials]
        tried = [v for v in tried if v is not None]
        if len(set(tried)) < 2:
            continue
        if value == max(tried):
            edges.append(f"{name} {value:.3g} is the highest value tried{ranges.get(name, '')}")
            sides[name] = "upper"
        elif value == min(tried):
            edges.append(f"{name} {value:.3g} is the lowest value tried{ranges.get(name, '')}")
            sides[name] = "lower"
    return Selection(
        spec=spec,
        lr=float(config.lr),
        hparams=hparams,
        tuned=True,
        value=None if all_diverged else sign * best_score,
        trials=list(trials),
        edges=edges,
        edge_sides=sides,
        all_diverged=all_diverged,
    )


