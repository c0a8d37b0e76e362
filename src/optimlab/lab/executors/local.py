"""The local executor: runs configs in this process or in a pool of spawned worker processes.

Every executor follows :class:`optimlab.lab.executors.Executor`: it runs configs and yields their records as they
complete; it never writes (the study's driver does).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.executors import Closing
from optimlab.lab.training.checkpoint import DEFAULT_CHECKPOINTING, Checkpointing
from optimlab.lab.training.device import worker_device
from optimlab.lab.training.progress import run_bar, share_bars, use_shared_bars
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.runner import CallbackFactory, RunConfig, run

__all__ = ["LocalExecutor"]

# ----------------------------------------------------------------------------------------------------
# The local executor: this process, or a pool of spawned processes


_WORKER: dict[str, Any] = {}


def _init_worker(
    threads: int,
    data_dir: str | None,
    slots: Any,
    lock: Any,
    show_progress: bool,
    callbacks: CallbackFactory | None,
    device: str,
    checkpoint: Checkpointing | None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    import torch

    torch.set_num_threads(threads)
    slot = slots.get()
    _WORKER.update(data_dir=data_dir, slot=slot, show_progress=show_progress, callbacks=callbacks)
    _WORKER.update(device=worker_device(device, slot), checkpoint=checkpoint)  # worker i: GPU i mod n
    if lock is not None:
        use_shared_bars(lock)


def _worker_run(config: RunConfig) -> RunRecord:
    bar = run_bar(config, _WORKER["slot"] + 1, _WORKER["show_progress"])
    try:
        factory = _WORKER["callbacks"]
        callbacks = list(factory(config)) if factory is not None else []
        return run(
            config,
            callbacks=callbacks,
            data_dir=_WORKER["data_dir"],
            progress=bar,
            device=_WORKER["device"],
            checkpoint=_WORKER["checkpoint"],
        )
    finally:
        if bar is not None:
            bar.close()


class LocalExecutor(Closing):
    """Runs configs on this machine: in this process (``jobs == 1``) or in ``jobs`` spawned worker processes
    with ``threads`` torch threads each (default: CPU count // jobs, at least 1). ``progress``: per-run tqdm
    bars (``None``: only on a terminal). ``callbacks``: a function ``config -> [Callback, ...]`` called for every
    run, in the process that runs it (with ``jobs > 1`` it must be picklable: a module-level function), e.g. the
    diagnostics that ``compare --diagnostics`` attaches; whatever they put in ``ctx.extras`` is in the record.
    ``device``: ``cpu``, ``cuda`` or ``auto`` (:mod:`optimlab.lab.training.device`); with CUDA, worker ``i`` of the
    pool trains on GPU ``i mod n``. ``checkpointing``: when runs save their state
    (:class:`~optimlab.lab.training.checkpoint.Checkpointing`; ``None``: never); the study's driver names the
    folder (:meth:`use_checkpoints`).

    The worker pool is started on first use and kept for later calls (a tuning phase and a final phase share
    it); :meth:`close` (or leaving a ``with`` block) stops it. Ctrl-C or an error terminates it.
    """

    def __init__(
        self,
        jobs: int = 1,
        threads: int | None = None,
        data_dir: str | None = None,
        progress: bool | None = None,
        callbacks: CallbackFactory | None = None,
        device: str = "cpu",
        checkpointing: Checkpointing | None = DEFAULT_CHECKPOINTING,
    ):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.jobs = jobs
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        self.data_dir = data_dir
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.callbacks = callbacks
        self.device = device
        self.checkpointing = checkpointing
        self._pool: Any = None

    def use_checkpoints(self, results_folder: Any) -> None:
        """Save the runs' checkpoints in ``results_folder`` (called by the study's driver before it runs them)."""
        if self.checkpointing is not None and self.checkpointing.folder != Path(results_folder):
            self.checkpointing = self.checkpointing.bound(results_folder)
            self.close()  # the pool's workers hold the policy they were started with

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def _terminate(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def run(self, configs: Sequence[RunConfig]) -> Iterator[RunRecord]:
        configs = list(configs)
        if not configs:
            return
        if self.jobs == 1:
            yield from self._serial(configs)
        else:
            yield from self._parallel(configs)

    def _serial(self, configs: list[RunConfig]) -> Iterator[RunRecord]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for config in configs:
                bar = run_bar(config, 1, self.progress)
                callbacks = list(self.callbacks(config)) if self.callbacks is not None else []
                try:
                    record = run(
                        config,
                        callbacks=callbacks,
                        data_dir=self.data_dir,
                        progress=bar,
                        device=self.device,
                        checkpoint=self.checkpointing,
                    )
                finally:
                    if bar is not None:
                        bar.close()
                yield record
        finally:
            torch.set_num_threads(previous)

    def _start(self) -> Any:
        if self._pool is None:
            ctx = mp.get_context("spawn")
            slots = ctx.Queue()
            for i in range(self.jobs):
                slots.put(i)
            lock = share_bars(ctx) if self.progress else None
            self._pool = ctx.Pool(
                self.jobs,
                initializer=_init_worker,
                initargs=(
                    self.threads,
                    self.data_dir,
                    slots,
                    lock,
                    self.progress,
                    self.callbacks,
                    self.device,
                    self.checkpointing,
                ),
            )
        return self._pool

    def _parallel(self, configs: list[RunConfig]) -> Iterator[RunRecord]:
        pool = self._start()
        try:
            yield from pool.imap_unordered(_worker_run, configs)
        except BaseException:  # Ctrl-C, an error in a run, or the driver closing this generator early
            self._terminate()
            raise


