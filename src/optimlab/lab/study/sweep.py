"""A sweep: run configs, keep every finished record, resume by config key.

Two pieces, so that either can be replaced:

- an **executor** runs configs and yields each record as it completes (:class:`~optimlab.lab.executors.Executor`;
  the default, :class:`~optimlab.lab.executors.local.LocalExecutor`, runs them in this process or in a pool of
  spawned processes). An executor never writes anything;
- the **driver**, :func:`run_sweep`, skips the configs whose key is already in ``OUT/results.jsonl``, hands the
  rest to the executor and appends each record it yields, one JSON line, flushed and fsync'ed, as it arrives.
  Only the driver writes records, so a sweep started by one executor can be resumed by another: resume is by
  config key alone. Ctrl-C stops the executor and keeps what has finished; a hard kill loses at most the
  runs in flight (a torn last line is ignored on reading). An executor with ``use_checkpoints(folder)`` is told
  the results folder: its long runs checkpoint into ``OUT/checkpoints/`` and the next attempt at an unfinished
  key continues from there (:mod:`optimlab.lab.training.checkpoint`); a run's checkpoint is deleted once its
  record is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from optimlab.lab.executors import Executor
from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.executors.tracking import guard
from optimlab.lab.training.checkpoint import remove_checkpoint
from optimlab.lab.training.progress import sweep_bar
from optimlab.lab.training.results import append_record, check_writable, finished_keys
from optimlab.lab.training.runner import RunConfig

__all__ = ["expand", "run_sweep", "SweepOutcome"]


def expand(
    task: str,
    optimizers: Sequence[str],
    lrs: dict[str, Sequence[float]],
    seeds: Sequence[int],
    *,
    steps: int,
    batch_size: int,
    eval_every: int,
    schedule: str = "constant",
) -> list[RunConfig]:
    """All configs of a plain grid sweep, seed-major (every optimizer gets seed 0 before any gets seed 1)."""
    return [
        RunConfig(
            task=task,
            optimizer=opt,
            lr=lr,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            eval_every=eval_every,
            schedule=schedule,
        )
        for seed in seeds
        for opt in optimizers
        for lr in lrs[opt]
    ]


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    finished: int
    interrupted: bool


# ----------------------------------------------------------------------------------------------------
# The driver


def run_sweep(
    configs: Iterable[RunConfig],
    out: str | os.PathLike,
    *,
    executor: Executor | None = None,
    jobs: int = 1,
    threads: int | None = None,
    data_dir: str | None = None,
    progress: bool | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    trackers: Sequence[Any] = (),
) -> SweepOutcome:
    """Run every config not yet in ``out`` with ``executor`` (default: a :class:`LocalExecutor` of ``jobs``,
    ``threads``, ``data_dir``, ``progress``), appending each record as it arrives; return counts.

    ``on_record(record)`` is called after each record is safely written (progress lines, selection);
    ``trackers`` (:mod:`optimlab.lab.executors.tracking`) log it then too, so every backend logs the same; a
    tracker that fails is turned off with a warning (:class:`~optimlab.lab.executors.tracking.GuardedTracker`) and
    the sweep goes on.
    """
    trackers = guard(trackers)
    owned = executor is None
    if executor is None:
        executor = LocalExecutor(jobs=jobs, threads=threads, data_dir=data_dir, progress=progress)
    out = check_writable(out)
    use_checkpoints = getattr(executor, "use_checkpoints", None)
    if use_checkpoints is not None:
        use_checkpoints(out)
    configs = list(configs)
    done = finished_keys(out)
    seen: set[str] = set()
    todo = []
    for c in configs:
        if c.key() not in done and c.key() not in seen:
            seen.add(c.key())
            todo.append(c)
    skipped = len(configs) - len(todo)
    show = getattr(executor, "progress", False)
    finished = 0
    interrupted = False
    bar = None
    if show and todo:
        bar = sweep_bar(len(configs), skipped)
        attach = getattr(executor, "attach_bar", None)  # an executor that knows what is running shows it there
        if attach is not None:
            attach(bar)
    stream = executor.run(todo)
    try:
        for record in stream:
            append_record(out, record)
            remove_checkpoint(out, record.key)
            finished += 1
            for tracker in trackers:
                tracker.log(record)
            if bar is not None:
                bar.update(1)
            if on_record is not None:
                on_record(record)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if owned:
            executor.close()  # type: ignore[attr-defined]
        if bar is not None:
            if getattr(executor, "attach_bar", None) is not None:
                executor.attach_bar(None)  # type: ignore[attr-defined]
            bar.close()
    return SweepOutcome(total=len(configs), skipped=skipped, finished=finished, interrupted=interrupted)
