"""A sweep: the grid of run configs, executed serially or in parallel processes, resumable.

Finished runs are appended, one JSON record per line, to ``OUT/results.jsonl`` as soon as each finishes (only
the parent process writes it). Re-running the same sweep skips every config whose key is already there. Ctrl-C
stops the workers and keeps what has finished.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.lab.runner import RunConfig, run

__all__ = ["RESULTS_FILE", "expand", "load_records", "finished_keys", "run_sweep", "SweepOutcome"]

RESULTS_FILE = "results.jsonl"


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
    """All configs of a sweep, seed-major (every optimizer gets seed 0 before any gets seed 1)."""
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


def load_records(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records in ``out/results.jsonl`` (the last one wins per key; a torn last line is ignored)."""
    path = Path(out) / RESULTS_FILE
    records: dict[str, dict[str, Any]] = {}
    if path.exists():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a hard kill
                records[rec["key"]] = rec
    return list(records.values())


def finished_keys(out: str | os.PathLike) -> set[str]:
    return {r["key"] for r in load_records(out)}


def _append(out: Path, record: dict[str, Any]) -> None:
    path = out / RESULTS_FILE
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    finished: int
    interrupted: bool


# ----------------------------------------------------------------------------------------------------
# Worker side


_WORKER: dict[str, Any] = {}


def _init_worker(threads: int, data_dir: str | None, slots: Any, lock: Any, show_progress: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(data_dir=data_dir, slot=slots.get(), show_progress=show_progress)
    if lock is not None:
        from tqdm.auto import tqdm

        tqdm.set_lock(lock)


def _progress_bar(config: RunConfig, position: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=config.steps,
        desc=f"{config.optimizer} lr={config.lr:g} s{config.seed}",
        position=position,
        leave=False,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _worker_run(config: RunConfig) -> dict[str, Any]:
    bar = _progress_bar(config, _WORKER["slot"] + 1, _WORKER["show_progress"])
    try:
        return run(config, data_dir=_WORKER["data_dir"], progress=bar)
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------------------------------
# Parent side


def run_sweep(
    configs: Iterable[RunConfig],
    out: str | os.PathLike,
    *,
    jobs: int = 1,
    threads: int | None = None,
    data_dir: str | None = None,
    progress: bool | None = None,
) -> SweepOutcome:
    """Run every config not yet in ``out``; return counts. ``progress=None`` shows bars only on a terminal.

    With ``jobs > 1`` runs go to ``jobs`` spawned processes with ``threads`` torch threads each (default:
    CPU count // jobs, at least 1). ``jobs == 1`` runs in this process.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = list(configs)
    done = finished_keys(out)
    todo = [c for c in configs if c.key() not in done]
    skipped = len(configs) - len(todo)
    show = sys.stderr.isatty() if progress is None else progress
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    finished = 0
    interrupted = False
    sweep_bar = None
    if show:
        from tqdm.auto import tqdm

        sweep_bar = tqdm(
            total=len(configs), initial=skipped, desc="sweep", unit="run", position=0, dynamic_ncols=True
        )
    try:
        if jobs == 1:
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for config in todo:
                    bar = _progress_bar(config, 1, show)
                    try:
                        record = run(config, data_dir=data_dir, progress=bar)
                    finally:
                        if bar is not None:
                            bar.close()
                    _append(out, record)
                    finished += 1
                    if sweep_bar is not None:
                        sweep_bar.update(1)
            finally:
                torch.set_num_threads(previous)
        elif todo:
            ctx = mp.get_context("spawn")
            slots = ctx.Queue()
            for i in range(jobs):
                slots.put(i)
            lock = None
            if show:
                from tqdm.auto import tqdm

                lock = ctx.RLock()
                tqdm.set_lock(lock)
            pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(threads, data_dir, slots, lock, show))
            try:
                for record in pool.imap_unordered(_worker_run, todo):
                    _append(out, record)
                    finished += 1
                    if sweep_bar is not None:
                        sweep_bar.update(1)
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if sweep_bar is not None:
            sweep_bar.close()
    return SweepOutcome(total=len(configs), skipped=skipped, finished=finished, interrupted=interrupted)
