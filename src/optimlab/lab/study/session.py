"""One orchestration for what runs studies: ``optimlab compare``, ``optimlab benchmark`` and a reproduce
experiment's ``ctx.tune`` and ``ctx.sweep``.

1. :func:`check_study`: what a study needs before anything runs: every optimizer spec builds and steps at every
   trial setting (:func:`~optimlab.lab.study.tuning.check_specs`) and the task's data loads (a missing data set
   stops here, with its message);
2. :func:`plan_study`: its results folder is checked (:func:`~optimlab.lab.study.folder.check_folder`: writable,
   the lab's, the same protocol), then the runs still to do and their expected time on this machine
   (:func:`~optimlab.lab.study.cost.remaining_configs`, :func:`~optimlab.lab.study.cost.estimate_cost`): a
   :class:`StudyPlan`. A command prints its plans and, with ``--dry-run``, stops there;
3. a :class:`Session` runs them: one executor (local or Ray, as the command's flags say, or a reproduce
   context's local pool), one progress (the runs' bars on a terminal,
   :class:`~optimlab.lab.training.progress.StudyProgress` lines otherwise) and the trackers.
   :meth:`Session.run` runs planned studies, checked once and not again; :meth:`Session.tune` runs a study
   nobody planned (:func:`~optimlab.lab.study.tuning.tune_and_run` checks it); :meth:`Session.sweep` runs plain
   configs.

The command then writes its report.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.tasks import Task, get_task
from optimlab.lab.executors import backends
from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.executors.tracking import guard
from optimlab.lab.study.cost import CostEstimate, estimate_cost, remaining_configs
from optimlab.lab.study.folder import check_folder
from optimlab.lab.study.protocol import Protocol
from optimlab.lab.study.sweep import SweepOutcome, run_sweep
from optimlab.lab.study.tuning import StudyResult, check_specs, run_study, tune_and_run
from optimlab.lab.training.progress import StudyProgress
from optimlab.lab.training.runner import RunConfig

__all__ = ["check_study", "StudyPlan", "plan_study", "Session"]


def check_study(protocol: Protocol, specs: Sequence[str], data_dir: str | None = None) -> Task:
    """Raise ``ValueError`` for a spec that does not build and step at every trial setting of ``protocol``, and the
    data set's own error when the task's data does not load; return the task."""
    check_specs(protocol, specs)
    task = get_task(protocol.task)
    task.load(data_dir)  # fail fast, with the data set's message, before any worker starts
    return task


@dataclass(frozen=True)
class StudyPlan:
    """A study checked before anything runs (its specs, its data, its folder), with what is left to do."""

    task: Task
    protocol: Protocol
    specs: tuple[str, ...]
    out: Path
    todo: tuple[RunConfig, ...]  # the runs still to do (placeholders of the same cost for the refining trials)
    jobs: int  # the workers they can use: the jobs asked for, at most one per run left
    cost: CostEstimate  # their expected time on this machine with ``jobs`` workers


def plan_study(
    protocol: Protocol,
    specs: Sequence[str],
    out: str | os.PathLike,
    *,
    jobs: int,
    data_dir: str | None = None,
    create: bool = True,
) -> StudyPlan:
    """Check ``out`` for ``protocol`` (``create=False``: create nothing, as ``--dry-run``), then find the runs
    still to do and time them with a short probe; the specs and the data are :func:`check_study`'s."""
    out = Path(out)
    check_folder(out, protocol, create=create)
    todo = remaining_configs(protocol, specs, out)
    workers = max(1, min(jobs, len(todo) or 1))
    cost = estimate_cost(protocol, todo, jobs=workers, data_dir=data_dir)
    return StudyPlan(get_task(protocol.task), protocol, tuple(specs), out, tuple(todo), workers, cost)


class Session:
    """How runs go: ``executor(jobs)`` makes the executor (a context manager: leaving it stops its workers),
    ``jobs`` unless a call says otherwise; ``lines``: :class:`~optimlab.lab.training.progress.StudyProgress`
    lines on stdout (bars are the executor's); ``trackers`` log every record as it is written."""

    def __init__(self, executor: Callable[[int], Any], jobs: int, *, lines: bool, trackers: Sequence[Any] = ()):
        self.executor, self.jobs, self.lines = executor, jobs, lines
        self.trackers = guard(trackers)  # one that fails is off for every study of the session

    @classmethod
    def from_args(cls, args: argparse.Namespace, callbacks: Any = None) -> Session:
        """A command's session: ``--backend`` and its flags (:mod:`optimlab.lab.executors.backends`), ``--jobs``,
        ``--data-dir`` (also ``$OPTIMLAB_DATA`` from here on, for the worker processes), bars on a terminal
        unless ``--no-progress`` (lines otherwise, or where stdout is not one), and the trackers of
        ``--tensorboard``/``--mlflow``, made now (none with ``--dry-run``: nothing is contacted).
        ``callbacks``: a picklable factory of per-run callbacks (``compare --diagnostics``)."""
        backends.check_backend_args(args)
        trackers = [] if args.dry_run else backends.trackers_from_args(args)
        if args.data_dir:
            os.environ["OPTIMLAB_DATA"] = args.data_dir  # inherited by the worker processes
        bars = not args.no_progress and sys.stderr.isatty()

        def executor(jobs: int) -> Any:
            return backends.executor_from_args(args, jobs, args.data_dir, bars, callbacks=callbacks)

        return cls(executor, args.jobs, lines=not bars or not sys.stdout.isatty(), trackers=trackers)

    @classmethod
    def local(cls, jobs: int, data_dir: str | None = None, progress: bool = True, callbacks: Any = None) -> Session:
        """The local pool of ``jobs`` workers; ``progress``: lines, and bars where stderr is a terminal
        (``False``: neither)."""

        def executor(n: int) -> LocalExecutor:
            return LocalExecutor(jobs=n, data_dir=data_dir, progress=None if progress else False, callbacks=callbacks)

        return cls(executor, jobs, lines=progress)

    def run(self, plans: Sequence[StudyPlan], *, jobs: int | None = None,
            announce: bool = False) -> dict[str, StudyResult]:
        """Run the planned studies in order on one executor (``announce``: a ``== TASK ==`` line before each);
        stop after one that was interrupted (Ctrl-C). Returns ``{task: StudyResult}``."""
        progress = StudyProgress(sum(p.cost.train_steps for p in plans), lines=self.lines)
        results: dict[str, StudyResult] = {}
        with self.executor(self.jobs if jobs is None else jobs) as executor:
            for plan in plans:
                if announce:
                    print(f"\n== {plan.task.name} ==", flush=True)
                study = run_study(plan.protocol, plan.specs, plan.out, executor=executor, on_event=progress,
                                  trackers=self.trackers)
                results[plan.task.name] = study
                if study.interrupted:
                    break
        return results

    def tune(self, task: str | Task, specs: Sequence[str], protocol: Protocol, out: str | os.PathLike) -> StudyResult:
        """:func:`~optimlab.lab.study.tuning.tune_and_run` (which checks first) on this session's executor."""
        total = len(specs) * protocol.studies * (protocol.trials_per_optimizer() * protocol.trial_steps
                                                 + len(protocol.seeds) * protocol.steps)
        progress = StudyProgress(total, lines=self.lines)
        with self.executor(self.jobs) as executor:
            return tune_and_run(task, specs, protocol, out, executor=executor, on_event=progress,
                                trackers=self.trackers)

    def sweep(self, configs: Iterable[RunConfig], out: str | os.PathLike, phase: str) -> SweepOutcome:
        """:func:`~optimlab.lab.study.sweep.run_sweep` of ``configs`` into ``out``; a progress line names
        ``phase``."""
        configs = list(configs)
        progress = StudyProgress(sum(c.steps for c in configs), lines=self.lines)
        done = 0

        def on_record(record: dict[str, Any]) -> None:
            nonlocal done
            done += 1
            progress("record", record=record, phase=phase, done=done, total=len(configs))

        with self.executor(self.jobs) as executor:
            return run_sweep(configs, out, executor=executor, on_record=on_record, trackers=self.trackers)
