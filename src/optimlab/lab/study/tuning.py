"""The tuning protocol: every optimizer tuned with the same budget, selected on validation, then run on fresh seeds.

A :class:`Protocol` fixes everything a comparison's numbers depend on: the task's budget (steps, batch size,
schedule), the tuning (method, trials per optimizer, their length, the study number) and the final seeds. For
each optimizer:

1. **tuning**: ``budget`` trials at the points of its search space (:func:`optimlab.lab.catalog.presets.search_space`,
   quasi-random or grid), each one seed, ``trial_fraction`` of the full length with the same schedule shape; a
   tuning run evaluates the selection split only (validation; the training loss for the data-free 2-D tasks) and
   never receives the test split;
2. **selection** (:func:`select`): the trial with the best final validation metric (a diverged trial ranks last);
   a selected value at the edge of its range is flagged;
3. **final runs**: the selected setting on the final seeds (never the tuning seeds, so the reported numbers are
   not the lucky draw that won the selection), full length, with the test split evaluated once, at the end.

``tuning="none"`` skips 1-2 and runs the presets. :func:`tune_and_run` does all of it resumably in a results
folder (``protocol.json`` + ``results.jsonl``) and returns a :class:`StudyResult`; :func:`load_study` reads one
back. Both are library functions: ``optimlab compare``, ``optimlab benchmark`` and later experiments call them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.presets import check_spec, parse_spec, preset_lr, search_space
from optimlab.lab.catalog.space import METHODS, Param, SearchSpace, trial_points
from optimlab.lab.catalog.tasks import Task, get_task
from optimlab.lab.executors import Executor
from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.executors.tracking import guard
from optimlab.lab.study.sweep import run_sweep
from optimlab.lab.training.results import check_writable, load_records
from optimlab.lab.training.runner import RECORD_VERSION, RunConfig

__all__ = [
    "Protocol",
    "Selection",
    "OptimizerResult",
    "StudyResult",
    "ProtocolMismatchError",
    "default_protocol",
    "select",
    "tune_and_run",
    "load_study",
    "estimate_cost",
    "remaining_configs",
    "check_folder",
    "check_ours",
    "register_optimizers",
    "folder_lock",
    "CostEstimate",
    "PROTOCOL_FILE",
    "TUNING_METHODS",
    "TUNING_SEED_BASE",
]

PROTOCOL_FILE = "protocol.json"
PROTOCOL_VERSION = 1
TUNING_METHODS = (*METHODS, "none")
TUNING_SEED_BASE = 1_000_000  # tuning trial j of study k uses seed TUNING_SEED_BASE + 1000 * k + j


class ProtocolMismatchError(ValueError):
    """A results folder that holds the results of another protocol."""


@dataclass(frozen=True)
class Protocol:
    """Everything a comparison's numbers depend on, apart from the optimizers compared.

    ``spaces``: per-optimizer search-space overrides, ``((spec, (Param, ...)), ...)``; ``lrs``: an explicit lr
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
    alpha: float = 0.05
    lrs: tuple[float, ...] = ()
    spaces: tuple[tuple[str, tuple[Param, ...]], ...] = ()
    target: float | None = None  # the validation target for time-to-target; None: the task's

    def __post_init__(self) -> None:
        task = get_task(self.task)
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
        if not 0 < self.alpha < 1:
            raise ValueError(f"Invalid alpha: {self.alpha!r}; expected 0 < alpha < 1")
        for lr in self.lrs:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
                raise ValueError(f"Invalid lrs: {list(self.lrs)!r}; expected positive finite numbers")
        if task.deterministic and len(seeds) > 1:
            raise ValueError(
                f"Invalid seeds: {list(seeds)!r}; {self.task} is deterministic (no data sampling: every seed gives "
                "the same run), so use one seed"
            )

    # ------------------------------------------------------------------------------------------------
    @property
    def target_value(self) -> float | None:
        """The validation target times to target are measured to: ``target``, else the task's."""
        return get_task(self.task).target if self.target is None else self.target

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

    def refine_settings(self, spec: str, first: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """The refining trials after the first ones (records ``first``): around the best lr, half the points'
        spacing to either side; or, when the best is the highest (lowest) lr tried or everything diverged,
        one and two spacings beyond it, past the range's edge if need be. Other hyperparameters: the best's."""
        n = self.refine_trials
        if n == 0:
            return []
        space = self.space_for(spec)
        step = space.lr.decades / (self.budget - n)  # the first points' spacing, in decades
        best = select(spec, space, first, get_task(self.task))
        tried = [r["config"]["lr"] for r in first]
        if best.all_diverged or best.lr == min(tried):
            offsets = [-step * (i + 1) for i in range(n)]
        elif best.lr == max(tried):
            offsets = [step * (i + 1) for i in range(n)]
        else:
            offsets = [(1 if i % 2 == 0 else -1) * step / 2 ** (1 + i // 2) for i in range(n)]
        return [{"lr": float(f"{best.lr * 10**o:.4g}"), **best.hparams} for o in offsets]

    def _trial_config(self, spec: str, point: dict[str, float], j: int) -> RunConfig:
        task = get_task(self.task)
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
            splits=(task.selection_split,),
        )

    def tuning_configs(self, spec: str) -> list[RunConfig]:
        """The first tuning trials of ``spec`` (one seed each, ``trial_steps`` long, no test split)."""
        return [self._trial_config(spec, point, j) for j, point in enumerate(self.trial_settings(spec))]

    def refine_configs(self, spec: str, first: Sequence[dict[str, Any]]) -> list[RunConfig]:
        """The refining trials of ``spec``, given the records of its first trials."""
        k = len(self.trial_settings(spec))
        return [self._trial_config(spec, p, k + i) for i, p in enumerate(self.refine_settings(spec, first))]

    def final_configs(self, spec: str, lr: float, hparams: dict[str, float]) -> list[RunConfig]:
        task = get_task(self.task)
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
                splits=task.final_splits,
            )
            for seed in self.seeds
        ]

    def describe(self) -> str:
        """The protocol in one line (printed in the plan, stored with the results, shown in the report)."""
        task = get_task(self.task)
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


# ----------------------------------------------------------------------------------------------------
# Selection


@dataclass
class Selection:
    """The setting chosen for one optimizer, from its tuning trials (or its preset, without tuning)."""

    spec: str
    lr: float
    hparams: dict[str, float]
    tuned: bool
    value: float | None = None  # the chosen trial's final selection metric
    trials: list[dict[str, Any]] = field(default_factory=list, repr=False)
    edges: list[str] = field(default_factory=list)  # e.g. "lr: the highest value tried (range 1e-4..1e-1)"
    all_diverged: bool = False

    @property
    def settings(self) -> dict[str, float]:
        return {"lr": self.lr, **self.hparams}


def _final_value(rec: dict[str, Any], split: str) -> float | None:
    values = rec["history"].get(f"{split}_{rec['metric']}", [])
    v = values[-1] if values else None
    return None if v is None or rec["status"] != "ok" else v


def select(spec: str, space: SearchSpace | None, trials: Sequence[dict[str, Any]], task: Task) -> Selection:
    """The trial of best final selection-split metric (``val``; diverged trials rank last, ties go to the
    earlier trial), with a flag for every tuned value that is the lowest or highest of those tried."""
    if not trials:
        raise ValueError(f"no tuning trials for {spec!r}")
    sign = 1.0 if task.higher_is_better else -1.0
    scored = []
    for j, rec in enumerate(trials):
        v = _final_value(rec, task.selection_split)
        scored.append((-math.inf if v is None or not math.isfinite(v) else sign * v, -j, rec))
    best_score, _, best = max(scored, key=lambda t: (t[0], t[1]))
    config = best["config"]
    all_diverged = best_score == -math.inf
    if all_diverged:  # nothing trained: take the smallest lr, the most likely to be stable
        best = min(trials, key=lambda r: r["config"]["lr"])
        config = best["config"]
    hparams = {k: v for k, v in config["hparams"]}
    chosen = {"lr": config["lr"], **hparams}
    edges = []
    ranges = {p.name: f" (range {p.low:.3g}..{p.high:.3g})" for p in space.params} if space else {}
    for name, value in chosen.items():
        if all_diverged:
            break
        tried = [r["config"]["lr"] if name == "lr" else dict(r["config"]["hparams"]).get(name) for r in trials]
        tried = [v for v in tried if v is not None]
        if len(set(tried)) < 2:
            continue
        if value == max(tried):
            edges.append(f"{name} {value:.3g} is the highest value tried{ranges.get(name, '')}")
        elif value == min(tried):
            edges.append(f"{name} {value:.3g} is the lowest value tried{ranges.get(name, '')}")
    return Selection(
        spec=spec,
        lr=float(config["lr"]),
        hparams=hparams,
        tuned=True,
        value=None if all_diverged else sign * best_score,
        trials=list(trials),
        edges=edges,
        all_diverged=all_diverged,
    )


# ----------------------------------------------------------------------------------------------------
# Results


@dataclass
class OptimizerResult:
    """One optimizer's tuning and final runs under a protocol."""

    spec: str
    space: SearchSpace | None
    selection: Selection | None  # None while tuning is incomplete
    finals: list[dict[str, Any]] = field(default_factory=list, repr=False)
    expected_finals: int = 0

    @property
    def complete(self) -> bool:
        return self.selection is not None and len(self.finals) == self.expected_finals

    @property
    def tuning_cpu_seconds(self) -> float:
        return sum(r.get("train_cpu_seconds", 0.0) for r in self.selection.trials) if self.selection else 0.0

    @property
    def tuning_wall_seconds(self) -> float:
        return sum(r.get("wall_seconds", 0.0) for r in self.selection.trials) if self.selection else 0.0


@dataclass
class StudyResult:
    """A protocol's results for a list of optimizers, as found in (or just written to) a results folder."""

    protocol: Protocol
    results: dict[str, OptimizerResult]
    out: Path | None = None
    interrupted: bool = False
    stale: int = 0  # records in the folder that belong to no config of this protocol

    @property
    def task(self) -> Task:
        return get_task(self.protocol.task)

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.results.values())


def _collect(protocol: Protocol, specs: Sequence[str], records: Sequence[dict[str, Any]]) -> StudyResult:
    by_key = {r["key"]: r for r in records}
    used: set[str] = set()
    task = get_task(protocol.task)
    results: dict[str, OptimizerResult] = {}
    for spec in specs:
        if protocol.tuned:
            space = protocol.space_for(spec) if not protocol.lrs else None
            configs = protocol.tuning_configs(spec)
            trials = [by_key[c.key()] for c in configs if c.key() in by_key]
            used.update(c.key() for c in configs)
            if len(trials) < len(configs):
                results[spec] = OptimizerResult(spec, space, None, [], len(protocol.seeds))
                continue
            more = protocol.refine_configs(spec, trials)
            used.update(c.key() for c in more)
            refined = [by_key[c.key()] for c in more if c.key() in by_key]
            if len(refined) < len(more):
                results[spec] = OptimizerResult(spec, space, None, [], len(protocol.seeds))
                continue
            selection = select(spec, space, trials + refined, task)
        else:
            space = None
            selection = Selection(spec, preset_lr(spec), {}, tuned=False)
        finals_cfg = protocol.final_configs(spec, selection.lr, selection.hparams)
        used.update(c.key() for c in finals_cfg)
        finals = [by_key[c.key()] for c in finals_cfg if c.key() in by_key]
        results[spec] = OptimizerResult(spec, space, selection, finals, len(finals_cfg))
    stale = sum(1 for k in by_key if k not in used)
    return StudyResult(protocol, results, stale=stale)


# ----------------------------------------------------------------------------------------------------
# The results folder


def _manifest(protocol: Protocol, specs: Sequence[str]) -> dict[str, Any]:
    return {
        "format": PROTOCOL_VERSION,
        "record_version": RECORD_VERSION,
        "protocol": protocol.to_dict(),
        "description": protocol.describe(),
        "optimizers": list(specs),
        "spaces": {s: protocol.space_for(s).describe() for s in specs} if protocol.tuned and not protocol.lrs else {},
    }


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / PROTOCOL_FILE
    if not path.exists():
        if (out / "results.jsonl").exists():
            load_records(out)  # a folder of another version says so
            raise ProtocolMismatchError(
                f"{out} holds results but no {PROTOCOL_FILE} (written by another optimlab version or by a plain "
                "sweep); nothing was changed: choose another folder with --out"
            )
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8 text
        raise ProtocolMismatchError(f"{path} is unreadable ({e}); nothing was changed: choose another --out") from None
    if not isinstance(manifest, dict):
        raise ProtocolMismatchError(
            f"{path} is not a protocol of optimlab (a JSON {type(manifest).__name__}); nothing was changed: "
            "choose another --out"
        )
    if manifest.get("format") != PROTOCOL_VERSION or manifest.get("record_version") != RECORD_VERSION:
        raise ProtocolMismatchError(
            f"{out} was written by another optimlab version (protocol format {manifest.get('format')!r}, record "
            f"format {manifest.get('record_version')!r}; this version uses {PROTOCOL_VERSION} and {RECORD_VERSION}). "
            "Nothing was changed: move that folder away or choose another with --out"
        )
    optimizers = manifest.get("optimizers", [])
    try:
        Protocol.from_dict(manifest["protocol"])
        if not isinstance(optimizers, list) or not all(isinstance(o, str) for o in optimizers):
            raise ValueError(f"'optimizers' is {optimizers!r}, not a list of specs")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = "no 'protocol'" if isinstance(e, KeyError) else str(e)
        raise ProtocolMismatchError(
            f"{path} is not a valid protocol of optimlab ({what}); nothing was changed: repair or move it, or "
            "choose another --out"
        ) from None
    return manifest


# What makes a folder one of ours: a file only the lab writes. An existing folder that holds none of them (and
# anything but hidden files) is the user's: the lab would overwrite their summary.csv, report.html or figures.
RESULTS_MARKERS = (PROTOCOL_FILE, "results.jsonl")


def check_ours(out: Path, markers: Sequence[str] = RESULTS_MARKERS, what: str = "results folder") -> None:
    """Raise ``ValueError`` when ``out`` is an existing folder that is not empty (hidden files aside) and holds
    none of ``markers``: not a folder the lab wrote, so its files are not the lab's to overwrite. A new path or
    an empty folder is fine."""
    if not out.is_dir() or any((out / m).exists() for m in markers):
        return
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if files:
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        raise ValueError(
            f"--out {out} is a folder that holds files ({shown}) but is not a {what} of optimlab (no "
            f"{' or '.join(markers)}); nothing was written, so that its files are not overwritten: choose a new or "
            "empty folder with --out"
        )


def check_folder(out: str | os.PathLike, protocol: Protocol, create: bool = True) -> list[str]:
    """Check before anything runs that ``out`` is writable, is new, empty or a results folder of the lab
    (:func:`check_ours`), and holds nothing of another protocol; return the optimizers already registered
    there. Raises :class:`ProtocolMismatchError` naming the differing fields. ``create=False``
    (``--dry-run``): create nothing."""
    out = Path(out)
    if out.exists():
        check_ours(out)
        manifest = _read_manifest(out)
        if manifest is not None:
            theirs = manifest["protocol"]
            ours = protocol.to_dict()
            diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
            if diff:
                shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in diff)
                raise ProtocolMismatchError(
                    f"{out} holds results of another protocol ({shown}). Nothing was changed: results of different "
                    "protocols are not comparable, so they are kept apart; choose another folder with --out"
                )
            check_writable(out, create)
            return list(manifest.get("optimizers", []))
    check_writable(out, create)
    return []


LOCK_FILE = ".protocol.lock"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``flock`` on ``out/.protocol.lock``; no lock where ``fcntl`` is
    missing) for a read-modify-write of its ``protocol.json`` by several processes at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux or macOS
        yield
        return
    with open(out / LOCK_FILE, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def register_optimizers(out: str | os.PathLike, protocol: Protocol, specs: Sequence[str]) -> list[str]:
    """Check ``out`` (:func:`check_folder`) and add ``specs`` to the optimizers its ``protocol.json`` lists,
    under :func:`folder_lock`, so that two commands starting together on one folder keep each other's;
    returns the optimizers listed."""
    out = check_writable(out)
    with folder_lock(out):
        listed = list(dict.fromkeys([*check_folder(out, protocol), *specs]))
        _write_manifest(out, protocol, listed)
    return listed


def _write_manifest(out: Path, protocol: Protocol, specs: Sequence[str]) -> None:
    tmp = out / (PROTOCOL_FILE + ".tmp")
    tmp.write_text(json.dumps(_manifest(protocol, specs), indent=1) + "\n")
    os.replace(tmp, out / PROTOCOL_FILE)


def load_study(out: str | os.PathLike) -> StudyResult:
    """The study in a results folder (its ``protocol.json`` and ``results.jsonl``)."""
    out = Path(out)
    if not (out / PROTOCOL_FILE).exists() and not (out / "results.jsonl").exists():
        raise FileNotFoundError(f"no results in {out} (expected {out / PROTOCOL_FILE} and {out / 'results.jsonl'})")
    manifest = _read_manifest(out)
    assert manifest is not None
    protocol = Protocol.from_dict(manifest["protocol"])
    study = _collect(protocol, manifest["optimizers"], load_records(out))
    study.out = out
    return study


Event = Callable[..., None]


def tune_and_run(
    task: str | Task,
    optimizers: Sequence[str],
    protocol: Protocol | None = None,
    out: str | os.PathLike = "optimlab-runs/study",
    *,
    executor: Executor | None = None,
    on_event: Event | None = None,
    trackers: Sequence[Any] = (),
) -> StudyResult:
    """Tune every optimizer under ``protocol`` (default: :func:`default_protocol`), select on validation, run
    the final seeds, all resumably in ``out``; return the :class:`StudyResult`.

    ``on_event(kind, **info)`` reports progress: ``("record", record=..., phase="tuning"|"final", done=...,
    total=...)`` after each run, ``("selected", selection=..., result=...)`` when an optimizer's tuning is
    complete. ``trackers`` (:mod:`optimlab.lab.executors.tracking`) log each new record as the driver writes it.
    Everything checkable is checked before the first run: the optimizer specs (each is built and
    stepped once on a tiny model, at every trial setting), the folder (writable, same protocol).
    """
    t = get_task(task) if isinstance(task, str) else task
    protocol = protocol or default_protocol(t)
    if protocol.task != t.name:
        raise ValueError(f"Invalid protocol: it is for task {protocol.task!r}, not {t.name!r}")
    specs = list(dict.fromkeys(optimizers))
    if not specs:
        raise ValueError("Invalid optimizers: []; expected at least one optimizer spec")
    for spec in specs:
        check_spec(spec)
        for point in protocol.trial_settings(spec):
            check_spec(spec, {k: v for k, v in point.items() if k != "lr"} or None)
    out = Path(out)
    check_folder(out, protocol)
    register_optimizers(out, protocol, specs)
    trackers = guard(trackers)  # one that fails is off for the tuning and the final runs alike
    executor = executor or LocalExecutor()
    emit = on_event or (lambda kind, **info: None)

    tuning = [c for s in specs for c in protocol.tuning_configs(s)]
    total = len(specs) * (protocol.trials_per_optimizer() + len(protocol.seeds))
    counter = {"done": 0}
    done_keys = {r["key"] for r in load_records(out)}
    counter["done"] = sum(1 for c in tuning if c.key() in done_keys)

    def record_seen(phase: str) -> Callable[[dict[str, Any]], None]:
        def handle(record: dict[str, Any]) -> None:
            counter["done"] += 1
            emit("record", record=record, phase=phase, done=counter["done"], total=total)

        return handle

    interrupted = False
    if tuning:
        outcome = run_sweep(tuning, out, executor=executor, on_record=record_seen("tuning"), trackers=trackers)
        interrupted = outcome.interrupted
        if not interrupted and protocol.refine_trials:
            records = {r["key"]: r for r in load_records(out)}
            refine = []
            for spec in specs:
                first = [records[c.key()] for c in protocol.tuning_configs(spec)]
                refine += protocol.refine_configs(spec, first)
            counter["done"] += sum(1 for c in refine if c.key() in records)
            outcome = run_sweep(refine, out, executor=executor, on_record=record_seen("refining"), trackers=trackers)
            interrupted = outcome.interrupted
    study = _collect(protocol, specs, load_records(out))
    if interrupted:
        study.out, study.interrupted = out, True
        return study
    finals: list[RunConfig] = []
    done_keys = {r["key"] for r in load_records(out)}
    for spec, result in study.results.items():
        assert result.selection is not None
        if protocol.tuned:
            emit("selected", selection=result.selection, result=result)
        cfgs = protocol.final_configs(spec, result.selection.lr, result.selection.hparams)
        counter["done"] += sum(1 for c in cfgs if c.key() in done_keys)
        finals += cfgs
    outcome = run_sweep(finals, out, executor=executor, on_record=record_seen("final"), trackers=trackers)
    study = _collect(protocol, specs, load_records(out))
    study.out, study.interrupted = out, outcome.interrupted
    return study


# ----------------------------------------------------------------------------------------------------
# Cost


@dataclass(frozen=True)
class CostEstimate:
    """What a protocol will cost on this machine, from a short probe run."""

    seconds: float  # expected wall time with ``jobs`` workers
    runs: int
    train_steps: int
    ms_per_step: float  # measured on the probe (one worker's threads)
    probe: str

    def describe(self) -> str:
        return (
            f"{self.runs} runs, {self.train_steps:,} training steps; expected about {_duration(self.seconds)} "
            f"({self.probe}; a busy machine runs slower)"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def remaining_configs(protocol: Protocol, optimizers: Sequence[str], out: str | os.PathLike) -> list[RunConfig]:
    """The runs ``protocol`` still has to do in ``out`` for ``optimizers``: the unfinished tuning trials and
    final runs (an optimizer still being tuned counts its final runs at its preset, as placeholders of the
    same cost)."""
    out = Path(out)
    records = load_records(out) if (out / "results.jsonl").exists() else []
    done = {r["key"] for r in records}
    study = _collect(protocol, optimizers, records)
    todo: list[RunConfig] = []
    by_key = {r["key"]: r for r in records}
    for spec, result in study.results.items():
        first = protocol.tuning_configs(spec)
        todo += [c for c in first if c.key() not in done]
        if all(c.key() in by_key for c in first):
            todo += [c for c in protocol.refine_configs(spec, [by_key[c.key()] for c in first]) if c.key() not in done]
        else:  # placeholders of the same cost for the refining trials still to be placed
            todo += [first[i % len(first)] for i in range(protocol.refine_trials)] if first else []
        sel = result.selection
        finals = protocol.final_configs(spec, sel.lr if sel else preset_lr(spec), sel.hparams if sel else {})
        todo += [c for c in finals if c.key() not in done]
    return todo


def estimate_cost(
    protocol: Protocol,
    configs: Sequence[RunConfig],
    *,
    jobs: int = 1,
    threads: int | None = None,
    data_dir: str | None = None,
    probe_steps: int = 20,
) -> CostEstimate:
    """Time ``probe_steps`` steps and one evaluation of each split of the task with Adam, in this process with
    the threads a worker gets, and scale to ``configs`` (e.g. :func:`remaining_configs`) on ``jobs`` workers."""
    import torch

    from optimlab.lab.catalog.presets import build_optimizer

    task = get_task(protocol.task)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = task.load(data_dir)
        torch.manual_seed(0)
        model = task.model(data)
        opt = build_optimizer("adam", model)
        batches = task.batches(data, protocol.batch_size, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for i in range(probe_steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            x, y = next(batches)
            loss = task.loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        per_step = (time.perf_counter() - t0) / probe_steps
        model.eval()
        eval_cost = {}
        for split in task.final_splits:
            t0 = time.perf_counter()
            task.evaluate(model, data, split)
            eval_cost[split] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    seconds, steps = 0.0, 0
    for c in configs:
        evals = c.steps // c.eval_every + 1
        seconds += c.steps * per_step + evals * sum(eval_cost.get(s, 0.0) for s in c.splits if s != "test")
        seconds += eval_cost.get("test", 0.0) if "test" in c.splits else 0.0
        steps += c.steps
    workers = max(1, min(jobs, len(configs)))
    startup = 6.0 if workers > 1 and configs else 0.0  # spawning workers, importing torch, loading data
    return CostEstimate(
        seconds=seconds / workers + startup,
        runs=len(configs),
        train_steps=steps,
        ms_per_step=1e3 * per_step,
        probe=f"measured {1e3 * per_step:.1f} ms/step with {threads} thread(s) per worker, {workers} worker(s)",
    )
