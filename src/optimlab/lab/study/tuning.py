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

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.presets import check_spec, preset_lr
from optimlab.lab.catalog.space import SearchSpace
from optimlab.lab.catalog.tasks import Task, get_task
from optimlab.lab.executors import Executor
from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.executors.tracking import guard
from optimlab.lab.study.folder import check_folder, read_manifest, register_optimizers
from optimlab.lab.study.protocol import PROTOCOL_FILE, Protocol, default_protocol
from optimlab.lab.study.selection import Selection, select
from optimlab.lab.study.sweep import run_sweep
from optimlab.lab.training.config import RunConfig
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import finished_keys, load_records

__all__ = ["OptimizerResult", "StudyResult", "load_study", "tune_and_run", "check_specs", "run_study"]


@dataclass
class OptimizerResult:
    """One optimizer's tuning and final runs under a protocol."""

    spec: str
    space: SearchSpace | None
    selection: Selection | None  # None while tuning is incomplete
    finals: list[RunRecord] = field(default_factory=list, repr=False)
    expected_finals: int = 0
    # With several studies (Protocol.studies > 1): each study's own result (``selection`` is study 0's, ``finals``
    # every study's); empty with one study
    per_study: list[OptimizerResult] = field(default_factory=list, repr=False)

    @property
    def studies(self) -> list[OptimizerResult]:
        """Each study's result: ``per_study``, or ``[self]`` with one study."""
        return self.per_study or [self]

    @property
    def selections(self) -> list[Selection | None]:
        """Each study's selection (``None`` for a study whose tuning is incomplete)."""
        return [r.selection for r in self.studies]

    @property
    def complete(self) -> bool:
        if self.per_study:
            return all(r.complete for r in self.per_study)
        return self.selection is not None and len(self.finals) == self.expected_finals

    @property
    def tuning_cpu_seconds(self) -> float:
        if self.per_study:
            return sum(r.tuning_cpu_seconds for r in self.per_study)
        return sum(r.train_cpu_seconds or 0.0 for r in self.selection.trials) if self.selection else 0.0


@dataclass
class StudyResult:
    """A protocol's results for a list of optimizers, as found in (or just written to) a results folder."""

    protocol: Protocol
    results: dict[str, OptimizerResult]
    out: Path | None = None
    interrupted: bool = False
    stale: int = 0  # records in the folder that belong to no config of this protocol
    used: set[str] = field(default_factory=set, repr=False)  # the config keys of this protocol seen so far

    @property
    def task(self) -> Task:
        return self.protocol.resolved_task

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.results.values())


def _collect(protocol: Protocol, specs: Sequence[str], records: Sequence[RunRecord]) -> StudyResult:
    if protocol.studies > 1:  # each study collected on its own, then one result per optimizer holding them
        parts = [_collect(p, specs, records) for p in protocol.study_protocols()]
        results = {}
        for spec in specs:
            per = [part.results[spec] for part in parts]
            results[spec] = OptimizerResult(
                spec, per[0].space, per[0].selection, [r for x in per for r in x.finals],
                sum(x.expected_finals for x in per), per_study=per,
            )
        used = {k for part in parts for k in part.used}
        stale = sum(1 for r in {r.key for r in records} if r not in used)
        return StudyResult(protocol, results, stale=stale)
    by_key = {r.key: r for r in records}
    used: set[str] = set()
    task = protocol.resolved_task
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
    study = StudyResult(protocol, results, stale=stale)
    study.used = used
    return study




def load_study(out: str | os.PathLike) -> StudyResult:
    """The study in a results folder (its ``protocol.json`` and ``results.jsonl``)."""
    out = Path(out)
    if not (out / PROTOCOL_FILE).exists() and not (out / "results.jsonl").exists():
        raise FileNotFoundError(f"no results in {out} (expected {out / PROTOCOL_FILE} and {out / 'results.jsonl'})")
    manifest = read_manifest(out)
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
    check_specs(protocol, specs)
    out = Path(out)
    check_folder(out, protocol)
    return run_study(protocol, specs, out, executor=executor, on_event=on_event, trackers=trackers)


def check_specs(protocol: Protocol, specs: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every spec builds and takes a step (:func:`~optimlab.lab.catalog.presets.
    check_spec`) at every trial setting of ``protocol`` and gives its tuning configs: checked before any run."""
    if not specs:
        raise ValueError("Invalid optimizers: []; expected at least one optimizer spec")
    for spec in specs:
        check_spec(spec)
        for point in protocol.trial_settings(spec):
            check_spec(spec, {k: v for k, v in point.items() if k != "lr"} or None)
        protocol.tuning_configs(spec)


def run_study(
    protocol: Protocol,
    specs: Sequence[str],
    out: Path,
    *,
    executor: Executor | None = None,
    on_event: Event | None = None,
    trackers: Sequence[Any] = (),
) -> StudyResult:
    """:func:`tune_and_run` once its checks have passed (:func:`check_specs` and
    :func:`~optimlab.lab.study.folder.check_folder`, as :func:`optimlab.lab.study.session.plan_study` makes
    them): registers ``specs`` in ``out`` and runs what is left."""
    specs = list(dict.fromkeys(specs))
    register_optimizers(out, protocol, specs)
    trackers = guard(trackers)  # one that fails is off for the tuning and the final runs alike
    executor = executor or LocalExecutor()
    emit = on_event or (lambda kind, **info: None)

    studies = protocol.study_protocols()  # one, or the independent tuning studies: each tuned and run on its own
    tuning = [c for p in studies for s in specs for c in p.tuning_configs(s)]
    total = len(specs) * len(studies) * (protocol.trials_per_optimizer() + len(protocol.seeds))
    counter = {"done": 0}
    done_keys = finished_keys(out)
    counter["done"] = sum(1 for c in tuning if c.key() in done_keys)

    def record_seen(phase: str) -> Callable[[RunRecord], None]:
        def handle(record: RunRecord) -> None:
            counter["done"] += 1
            emit("record", record=record, phase=phase, done=counter["done"], total=total)

        return handle

    # The folder is the source of truth: it is read after each sweep (another command may add to it too)
    interrupted = False
    if tuning:
        outcome = run_sweep(tuning, out, executor=executor, on_record=record_seen("tuning"), trackers=trackers)
        interrupted = outcome.interrupted
        if not interrupted and protocol.refine_trials:
            records = {r.key: r for r in load_records(out)}
            refine = []
            for p in studies:
                for spec in specs:
                    first = [records[c.key()] for c in p.tuning_configs(spec)]
                    refine += p.refine_configs(spec, first)
            counter["done"] += sum(1 for c in refine if c.key() in records)
            outcome = run_sweep(refine, out, executor=executor, on_record=record_seen("refining"), trackers=trackers)
            interrupted = outcome.interrupted
    tuned = load_records(out)
    study = _collect(protocol, specs, tuned)
    if interrupted:
        study.out, study.interrupted = out, True
        return study
    finals: list[RunConfig] = []
    done_keys = {r.key for r in tuned}
    for spec, result in study.results.items():
        for p, part in zip(studies, result.studies, strict=True):
            assert part.selection is not None
            if protocol.tuned:
                emit("selected", selection=part.selection, result=part)
            cfgs = p.final_configs(spec, part.selection.lr, part.selection.hparams)
            counter["done"] += sum(1 for c in cfgs if c.key() in done_keys)
            finals += cfgs
    outcome = run_sweep(finals, out, executor=executor, on_record=record_seen("final"), trackers=trackers)
    study = _collect(protocol, specs, load_records(out))
    study.out, study.interrupted = out, outcome.interrupted
    return study


