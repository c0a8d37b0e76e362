"""The tuning protocol as data: what a comparison's numbers depend on (task budget, tuning method and budget, trial
length, study number, final seeds), checked when made, saved in a results folder's ``protocol.json``.

The protocol itself (tuning, selection, final runs) is described in :mod:`optimlab.lab.study.tuning`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any

from optimlab.lab.catalog.presets import parse_spec, search_space
from optimlab.lab.catalog.space import METHODS, Param, SearchSpace, trial_points
from optimlab.lab.catalog.tasks import Task, get_task
from optimlab.lab.study.selection import select
from optimlab.lab.training.config import RunConfig
from optimlab.lab.training.record import RunRecord

__all__ = [
    "PROTOCOL_FILE", "PROTOCOL_VERSION", "TUNING_METHODS",
    "TUNING_SEED_BASE", "ProtocolMismatchError", "Protocol", "default_protocol", "default_margin",
    "ANALYSIS_FIELDS", "EXTENSIBLE_FIELDS", "STUDY_SEED_STRIDE", "MAX_STUDIES"]

# Fields that change how the records are read, not which runs exist: a results folder accepts a new value.
ANALYSIS_FIELDS = ("alpha", "margin")
# Fields whose change adds or drops runs without changing any other: a results folder accepts a new value and
# runs only what is new (the records of the other runs stay valid; records no longer asked for are ignored).
EXTENSIBLE_FIELDS = ("seeds", "studies")

PROTOCOL_FILE = "protocol.json"
PROTOCOL_VERSION = 1
TUNING_METHODS = (*METHODS, "none")
TUNING_SEED_BASE = 1_000_000  # tuning trial j of study k uses seed TUNING_SEED_BASE + 1000 * k + j
# With ``studies`` > 1, study s (0-based) of a protocol is study number ``study + s`` (its own Halton shift and
# tuning seeds) and runs its final seeds shifted by ``s * STUDY_SEED_STRIDE``: seed sets disjoint across studies,
# and study 0 is exactly the protocol's runs with one study (same config keys: older folders stay valid).
STUDY_SEED_STRIDE = 10_000
MAX_STUDIES = 99


class ProtocolMismatchError(ValueError):
    """A results folder that holds the results of another protocol."""


@dataclass(frozen=True)
class Protocol:
    """Everything a comparison's numbers depend on, apart from the optimizers compared.

    ``studies``: how many independent tuning studies each optimizer gets (:meth:`study_protocols`); the answer is
    the median over studies of each study's mean, with an interval that includes the study-to-study spread.
    ``task``: the task's name (what ``protocol.json`` saves); :attr:`resolved_task` is the task itself, looked up
    once. ``spaces``: per-optimizer search-space overrides, ``((spec, (Param, ...)), ...)``; ``lrs``: an explicit lr
    grid for every optimizer (``--lr``), which replaces the lr range (the budget is then its length).
    """

    task: str
    steps: int
    batch_size: int
    eval_every: int
    schedule: str = "warmup_cosine"
    tuning: str = "quasirandom"
    budget: int = 8
    refine: int = 2
    trial_fraction: float = 0.4
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    study: int = 0
    studies: int = 1  # independent tuning studies per optimizer (AlgoPerf's rule): see study_protocols
    alpha: float = 0.05
    lrs: tuple[float, ...] = ()
    spaces: tuple[tuple[str, tuple[Param, ...]], ...] = ()
    target: float | None = None  # the validation target for time-to-target; None: the task's
    margin: float | None = None  # equivalence margin, in the metric's units; None: default_margin(task)

    def __post_init__(self) -> None:
        task = self.resolved_task  # an unknown name fails here
        if self.target is not None:
            _check_target(task, self.target)
        for name in ("steps", "batch_size", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Invalid {name}: {v!r}; expected a positive integer")
        if self.tuning not in TUNING_METHODS:
            raise ValueError(f"Invalid tuning: {self.tuning!r}; expected one of {', '.join(TUNING_METHODS)}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(
                f"Invalid budget: {self.budget!r}; expected at least 1 trial per optimizer "
                "(use tuning 'none' for the presets without tuning)"
            )
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"Invalid refine: {self.refine!r}; expected an integer >= 0")
        if not (isinstance(self.trial_fraction, (int, float)) and 0 < self.trial_fraction <= 1):
            raise ValueError(f"Invalid trial_fraction: {self.trial_fraction!r}; expected 0 < trial_fraction <= 1")
        seeds = self.seeds
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"Invalid seeds: {seeds!r}; expected at least one non-negative integer")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"Invalid seeds: {seeds!r}; expected distinct seeds")
        if any(s >= TUNING_SEED_BASE for s in seeds):
            raise ValueError(f"Invalid seeds: {seeds!r}; expected seeds below {TUNING_SEED_BASE} (the tuning seeds)")
        if isinstance(self.study, bool) or not isinstance(self.study, int) or not 0 <= self.study < 1000:
            raise ValueError(f"Invalid study: {self.study!r}; expected an integer in 0..999")
        st = self.studies
        if isinstance(st, bool) or not isinstance(st, int) or not 1 <= st <= MAX_STUDIES:
            raise ValueError(f"Invalid studies: {st!r}; expected an integer in 1..{MAX_STUDIES}")
        if st > 1:
            if self.study + st > 1000:
                raise ValueError(
                    f"Invalid studies: {st!r}; study {self.study} + {st} studies passes the last study number (999)"
                )
            if not self.tuned:
                raise ValueError(
                    f"Invalid studies: {st!r}; without tuning (tuning 'none') a study is only more seeds: "
                    "use more seeds instead"
                )
            if max(seeds) >= STUDY_SEED_STRIDE:
                raise ValueError(
                    f"Invalid seeds: {list(seeds)!r}; with several studies the seeds must be below "
                    f"{STUDY_SEED_STRIDE} (study s runs them shifted by s * {STUDY_SEED_STRIDE})"
                )
        if not 0 < self.alpha < 1:
            raise ValueError(f"Invalid alpha: {self.alpha!r}; expected 0 < alpha < 1")
        if self.margin is not None and (
            isinstance(self.margin, bool)
            or not isinstance(self.margin, (int, float))
            or not (math.isfinite(self.margin) and self.margin > 0)
        ):
            raise ValueError(f"Invalid margin: {self.margin!r}; expected a positive number in the metric's units")
        if self.margin is not None and task.metric == "accuracy" and self.margin >= 1:
            raise ValueError(
                f"Invalid margin: {self.margin!r}; accuracy is a fraction, so a margin of 1 point is 0.01"
            )
        for lr in self.lrs:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
                raise ValueError(f"Invalid lrs: {list(self.lrs)!r}; expected positive finite numbers")
        if task.deterministic and len(seeds) > 1:
            raise ValueError(
                f"Invalid seeds: {list(seeds)!r}; {self.task} is deterministic (no data sampling: every seed gives "
                "the same run), so use one seed"
            )

    # ------------------------------------------------------------------------------------------------
    @cached_property
    def resolved_task(self) -> Task:
        """The :class:`~optimlab.lab.catalog.tasks.Task` that :attr:`task` names (looked up once, when the protocol
        is made)."""
        return get_task(self.task)

    def __getstate__(self) -> dict[str, Any]:
        """The fields alone (a copy or a pickle looks the task up again: not every task pickles)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def target_value(self) -> float | None:
        """The validation target times to target are measured to: ``target``, else the task's."""
        return self.resolved_task.target if self.target is None else self.target

    @property
    def margin_value(self) -> float:
        """The equivalence margin "as good as the best" is tested with: ``margin``, else :func:`default_margin`."""
        return default_margin(self.resolved_task) if self.margin is None else float(self.margin)

    @property
    def trial_steps(self) -> int:
        return max(1, round(self.steps * self.trial_fraction))

    @property
    def tuned(self) -> bool:
        return self.tuning != "none"

    def trials_per_optimizer(self) -> int:
        if not self.tuned:
            return 0
        return len(self.lrs) if self.lrs else self.budget

    @property
    def refine_trials(self) -> int:
        """Trials that refine the best lr of the first ones (quasi-random tuning only; at most a quarter of the
        budget, so 8 trials are 6 + 2 and fewer than 4 are all quasi-random)."""
        if self.tuning != "quasirandom" or self.lrs:
            return 0
        return min(self.refine, self.budget // 4)

    def study_protocols(self) -> list[Protocol]:
        """The protocol's independent tuning studies, each a one-study protocol: study ``s`` (0-based) is study
        number ``study + s`` (its own quasi-random shift and tuning seeds) with the final seeds shifted by
        ``s * STUDY_SEED_STRIDE`` (disjoint seed sets). Study 0 is the protocol itself with ``studies=1``: its
        runs' config keys are those of a one-study protocol, so a folder made before keeps its records."""
        if self.studies == 1:
            return [self]
        return [
            replace(self, studies=1, study=self.study + s, seeds=tuple(x + s * STUDY_SEED_STRIDE for x in self.seeds))
            for s in range(self.studies)
        ]

    def space_for(self, spec: str) -> SearchSpace:
        """The search space of ``spec``: an override from ``spaces``, else its preset's."""
        base = search_space(spec)
        for name, params in self.spaces:
            if name == spec or name == parse_spec(spec).base:
                given = {p.name: p for p in params}
                merged = [given.pop(p.name, p) for p in base.params]
                return SearchSpace((*merged, *given.values()))
        return base

    def schedule_for(self, spec: str) -> str:
        return parse_spec(spec).preset.schedule or self.schedule

    def trial_settings(self, spec: str) -> list[dict[str, float]]:
        """The first trials' settings for ``spec`` (``[]`` without tuning): the quasi-random or grid points, or
        the explicit lrs; the refining trials follow from their results (:meth:`refine_settings`)."""
        if not self.tuned:
            return []
        if self.lrs:
            return [{"lr": float(lr)} for lr in self.lrs]
        return trial_points(self.space_for(spec), self.budget - self.refine_trials, self.tuning, self.study)

    def refine_settings(self, spec: str, first: Sequence[RunRecord]) -> list[dict[str, float]]:
        """The refining trials after the first ones (records ``first``): around the best lr, half the points'
        spacing to either side; or, when the best is the highest (lowest) lr tried or everything diverged,
        one and two spacings beyond it, past the range's edge if need be. Other hyperparameters: the best's."""
        n = self.refine_trials
        if n == 0:
            return []
        space = self.space_for(spec)
        step = space.lr.decades / (self.budget - n)  # the first points' spacing, in decades
        best = select(spec, space, first, self.resolved_task)
        tried = [r.config.lr for r in first]
        if best.all_diverged or best.lr == min(tried):
            offsets = [-step * (i + 1) for i in range(n)]
        elif best.lr == max(tried):
            offsets = [step * (i + 1) for i in range(n)]
        else:
            offsets = [(1 if i % 2 == 0 else -1) * step / 2 ** (1 + i // 2) for i in range(n)]
        return [{"lr": float(f"{best.lr * 10**o:.4g}"), **best.hparams} for o in offsets]

    def _trial_config(self, spec: str, point: dict[str, float], j: int) -> RunConfig:
        steps = self.trial_steps
        return RunConfig(
            task=self.task,
            optimizer=spec,
            lr=point["lr"],
            seed=TUNING_SEED_BASE + 1000 * self.study + j,
            steps=steps,
            batch_size=self.batch_size,
            eval_every=steps,
            schedule=self.schedule_for(spec),
            hparams=tuple(sorted((k, v) for k, v in point.items() if k != "lr")),
            splits=(self.resolved_task.selection_split,),
        )

    def tuning_configs(self, spec: str) -> list[RunConfig]:
        """The first tuning trials of ``spec`` (one seed each, ``trial_steps`` long, no test split)."""
        return [self._trial_config(spec, point, j) for j, point in enumerate(self.trial_settings(spec))]

    def refine_configs(self, spec: str, first: Sequence[RunRecord]) -> list[RunConfig]:
        """The refining trials of ``spec``, given the records of its first trials."""
        k = len(self.trial_settings(spec))
        return [self._trial_config(spec, p, k + i) for i, p in enumerate(self.refine_settings(spec, first))]

    def final_configs(self, spec: str, lr: float, hparams: dict[str, float]) -> list[RunConfig]:
        splits = self.resolved_task.final_splits
        return [
            RunConfig(
                task=self.task,
                optimizer=spec,
                lr=lr,
                seed=seed,
                steps=self.steps,
                batch_size=self.batch_size,
                eval_every=min(self.eval_every, self.steps),
                schedule=self.schedule_for(spec),
                hparams=tuple(sorted(hparams.items())),
                splits=splits,
            )
            for seed in self.seeds
        ]

    def describe(self) -> str:
        """The protocol in one line (printed in the plan, stored with the results, shown in the report)."""
        task = self.resolved_task
        seeds = _describe_seeds(self.seeds)
        run = f"{self.steps} steps, batch {self.batch_size}, schedule {self.schedule}"
        if not self.tuned:
            return f"presets, not tuned (one setting per optimizer); {run}; final seeds {seeds}"
        n = self.refine_trials
        if self.lrs:
            what = f"lr grid {', '.join(f'{x:g}' for x in self.lrs)}"
        elif self.tuning == "grid":
            what = f"{self.budget} grid trials"
        elif n:
            what = (
                f"{self.budget} trials ({self.budget - n} quasi-random (Halton) + {n} refining the best lr, past "
                "the range's edge when the best is at it)"
            )
        else:
            what = f"{self.budget} quasi-random (Halton) trials"
        split = "validation" if task.selection_split == "val" else "training loss (no data splits)"
        if task.deterministic:
            finals = "then one final run at the selected setting (a deterministic task: every seed is the same run)"
        else:
            finals = f"then {len(self.seeds)} fresh seed(s) {seeds} at the selected setting"
        if self.studies > 1:
            finals = finals.replace("then ", "then in each study ", 1) + f" ({seeds} in study 0)"
        if self.studies > 1:
            last = self.study + self.studies - 1
            return (
                f"tuned in {self.studies} independent studies ({self.study}..{last}: each its own quasi-random "
                f"shift, tuning seed and final seeds, seeds shifted by {STUDY_SEED_STRIDE} per study): {what} per "
                f"optimizer and study, {self.trial_steps} steps each, 1 seed, selected on {split}; {finals}; "
                f"answer: median over studies of each study's mean; {run}"
            )
        return (
            f"tuned: {what} per optimizer, {self.trial_steps} steps each, 1 seed, study {self.study}, selected on "
            f"{split}; {finals}; {run}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["lrs"] = list(self.lrs)
        d["spaces"] = [
            [name, [{"name": p.name, "low": p.low, "high": p.high, "log": p.log} for p in ps]]
            for name, ps in self.spaces
        ]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Protocol:
        d = dict(d)
        d["seeds"] = tuple(d["seeds"])
        d["lrs"] = tuple(d.get("lrs", ()))
        d["spaces"] = tuple(
            (name, tuple(Param(p["name"], p["low"], p["high"], p["log"]) for p in ps))
            for name, ps in d.get("spaces", ())
        )
        return Protocol(**d)


def default_margin(task: Task) -> float:
    """The default equivalence margin of ``task``'s metric, in its units: 1 point of accuracy (0.01), else 2 % of
    the task's target (a perplexity of 6: 0.12; an MSE of 0.02: 0.0004), else 1e-3.

    A point of accuracy is 4 of MNIST-1D's 400 validation examples, and smaller than what re-tuning alone moved in
    the reproductions (SWATS, that was Adam, 1.3 points from Adam). Set it with ``--margin``."""
    if task.metric == "accuracy":
        return 0.01
    if task.target is not None and task.target > 0:
        return 0.02 * float(task.target)
    return 1e-3


def _check_target(task: Task, target: Any) -> None:
    """A target the task's metric can reach: accuracy in (0, 1], perplexity >= 1, a loss >= 0."""
    ok = isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target)
    allowed = {
        "accuracy": ("0 < target <= 1 (a fraction: 0.9 for 90 %)", lambda t: 0 < t <= 1),
        "perplexity": ("target >= 1 (no perplexity is below 1)", lambda t: t >= 1),
        "loss": ("target >= 0 (the loss is never negative)", lambda t: t >= 0),
    }[task.metric]
    if not ok or not allowed[1](target):
        raise ValueError(f"Invalid target: {target!r}; the {task.metric} of {task.name} can only reach {allowed[0]}")


def _describe_seeds(seeds: Sequence[int]) -> str:
    s = list(seeds)
    if s == list(range(s[0], s[0] + len(s))) and len(s) > 2:
        return f"{s[0]}..{s[-1]}"
    return ",".join(map(str, s))


def default_protocol(task: str | Task, **overrides: Any) -> Protocol:
    """The lab's default protocol for ``task``: its default budget (steps, batch size, evaluation interval),
    warm-up (5 %) + cosine decay, 8 trials per optimizer (6 quasi-random + 2 refining the best lr) at 40 % of the
    length, 5 final seeds (1 for a deterministic task). ``overrides`` replace any field."""
    t = get_task(task) if isinstance(task, str) else task
    fields: dict[str, Any] = dict(
        task=t.name,
        steps=t.steps,
        batch_size=t.batch_size,
        eval_every=min(t.eval_every, t.steps),
        seeds=(0,) if t.deterministic else (0, 1, 2, 3, 4),
    )
    fields.update(overrides)
    return Protocol(**fields)


