"""A sweep: run configs, keep every finished record, resume by config key.

Two pieces, so that either can be replaced:

- an **executor** runs configs and yields each record as it completes (:class:`Executor`; the default,
  :class:`LocalExecutor`, runs them in this process or in a pool of spawned processes). An executor never writes
  anything;
- the **driver**, :func:`run_sweep`, skips the configs whose key is already in ``OUT/results.jsonl``, hands the
  rest to the executor and appends each record it yields, one JSON line, flushed and fsync'ed, as it arrives.
  Only the driver writes records, so a sweep started by one executor can be resumed by another: resume is by
  config key alone. Ctrl-C stops the executor and keeps what has finished; a hard kill loses at most the
  runs in flight (a torn last line is ignored on reading).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from optimlab.lab.training.runner import RECORD_VERSION, Callback, RunConfig, run

__all__ = [
    "RESULTS_FILE",
    "Executor",
    "LocalExecutor",
    "expand",
    "load_records",
    "finished_keys",
    "run_sweep",
    "SweepOutcome",
    "check_writable",
    "ResultsVersionError",
    "LabWarning",
    "record_problem",
    "named",
    "nearest_existing",
]

RESULTS_FILE = "results.jsonl"


class ResultsVersionError(ValueError):
    """A results folder written by another version of the lab's record format."""


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


class LabWarning(UserWarning):
    """Something the lab skipped or worked around and says so (``optimlab`` prints it as one line)."""


def _number(x: Any, none: bool = True) -> bool:
    return (none and x is None) or (isinstance(x, (int, float)) and not isinstance(x, bool))


_NUMBERS = ("steps_done", "train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms",
            "fwd_bwd_cpu_ms", "wall_seconds", "target")


def record_problem(rec: Any) -> str | None:
    """Why ``rec`` (one parsed line of ``results.jsonl``) is not a record of this version that the lab can use,
    or ``None``: a dict with a string ``key``, a ``config`` that :meth:`RunConfig.from_dict` accepts, string
    ``status`` and ``metric``, a ``history`` of lists of numbers (``None`` where a value was not finite) with
    a ``step`` list, a ``test`` dict of numbers or ``None``, and numbers (or ``None``) for its costs."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record"
    if not isinstance(rec.get("key"), str):
        return "no 'key'"
    try:
        RunConfig.from_dict(rec["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"no valid 'config' ({e})"
    for name in ("status", "metric"):
        if not isinstance(rec.get(name), str):
            return f"no {name!r}"
    history = rec.get("history")
    if not isinstance(history, dict) or not isinstance(history.get("step"), list):
        return "no 'history' with a 'step' list"
    for name, values in history.items():
        if not isinstance(values, list) or not all(map(_number, values)):
            return f"history {name!r} is not a list of numbers"
    test = rec.get("test")
    if test is not None and (not isinstance(test, dict) or not all(map(_number, test.values()))):
        return "'test' is not a dict of numbers"
    for name in _NUMBERS:
        if not _number(rec.get(name)):
            return f"{name!r} is not a number"
    return None


def _lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


def load_records(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records in ``out/results.jsonl`` (the last one wins per key).

    Lines that are not records (:func:`record_problem`: not UTF-8 text, not JSON such as a line cut short by a
    hard kill, or valid JSON that is not a record) are skipped with a :class:`LabWarning` that names the file
    and their line numbers; those runs count as not done, so a resumed sweep runs them again. Raises
    :class:`ResultsVersionError` when the folder holds records of another format version.
    """
    path = Path(out) / RESULTS_FILE
    records: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[int]] = {}
    if path.exists():
        with open(path, "rb") as f:
            lines = list(f)
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                skipped.setdefault("not UTF-8 text", []).append(number)
                continue
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                skipped.setdefault("not JSON (cut short?)", []).append(number)
                continue
            if isinstance(rec, dict) and "key" in rec and rec.get("version") != RECORD_VERSION:
                raise ResultsVersionError(
                    f"{path} holds results of another optimlab version (record format "
                    f"{rec.get('version')!r}; this version reads and writes format {RECORD_VERSION}). "
                    "Nothing was changed: move that folder away or choose another one with --out."
                )
            problem = record_problem(rec)
            if problem is not None:
                skipped.setdefault(problem, []).append(number)
                continue
            records[rec["key"]] = rec
    if skipped:
        n = sum(map(len, skipped.values()))
        why = "; ".join(f"{_lines(numbers)}: {problem}" for problem, numbers in skipped.items())
        message = f"{path}: {n} line(s) that are not records skipped ({why}); a run they held counts as not done"
        warnings.warn(message, LabWarning, stacklevel=2)
    return list(records.values())


def finished_keys(out: str | os.PathLike) -> set[str]:
    return {r["key"] for r in load_records(out)}


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the nearest folder above it that does (what a command that creates nothing
    yet, ``--dry-run``, checks)."""
    path = Path(path)
    return next(p for p in (path, *path.absolute().parents) if p.exists())


def check_writable(out: str | os.PathLike, create: bool = True) -> Path:
    """Create ``out`` if needed and make sure files can be written there (raises ``PermissionError`` with
    a clear message otherwise): checked before any run starts, so no computation is lost to it.
    ``create=False`` (``--dry-run``) creates nothing: ``out``, or the nearest folder above it that exists,
    must be a folder this process may write in."""
    out = Path(out)
    if not create:
        existing = nearest_existing(out)
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            what = "is not a folder" if not existing.is_dir() else "is not writable"
            raise PermissionError(
                f"cannot write to the results folder {out} ({existing} {what}); choose a writable folder with --out"
            )
        results = out / RESULTS_FILE
        if results.exists() and not os.access(results, os.W_OK):
            raise PermissionError(f"cannot write to the results folder {out} ({results} is read-only)")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)  # a unique name: threads share a pid
        os.close(fd)
        os.unlink(probe)
        results = out / RESULTS_FILE
        if results.exists() and not os.access(results, os.W_OK):
            raise PermissionError(f"{results} is read-only")
    except OSError as e:
        raise PermissionError(
            f"cannot write to the results folder {out} ({e.strerror or e}); choose a writable folder with --out"
        ) from None
    return out


def named(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` with ``path`` as its file name when it has none (a failed ``write`` names no file), so that
    ``optimlab`` can say which file and folder it concerns."""
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))


def _append(out: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, fsync'ed. A failed write (a full disk) is undone before the error is
    raised, so no torn line is left; the run is done again on resume."""
    path = out / RESULTS_FILE
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    data = (("\n" if torn else "") + json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise named(e, path) from None
    finally:
        os.close(fd)


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    finished: int
    interrupted: bool


class Executor(Protocol):
    """Runs configs and yields each run's record as it completes, in any order; writes nothing.

    Closing the returned iterator early (Ctrl-C in the driver) must stop the runs still in flight.
    """

    def run(self, configs: Sequence[RunConfig]) -> Iterator[dict[str, Any]]: ...


# ----------------------------------------------------------------------------------------------------
# The local executor: this process, or a pool of spawned processes


_WORKER: dict[str, Any] = {}


CallbackFactory = Callable[[RunConfig], Sequence[Callback]]


def _init_worker(
    threads: int, data_dir: str | None, slots: Any, lock: Any, show_progress: bool, callbacks: CallbackFactory | None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(data_dir=data_dir, slot=slots.get(), show_progress=show_progress, callbacks=callbacks)
    if lock is not None:
        from tqdm.auto import tqdm

        tqdm.set_lock(lock)


def _progress_bar(config: RunConfig, position: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=config.steps,
        desc=f"{config.optimizer} lr={config.lr:.3g} s{config.seed}",
        position=position,
        leave=False,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _worker_run(config: RunConfig) -> dict[str, Any]:
    bar = _progress_bar(config, _WORKER["slot"] + 1, _WORKER["show_progress"])
    try:
        factory = _WORKER["callbacks"]
        callbacks = list(factory(config)) if factory is not None else []
        return run(config, callbacks=callbacks, data_dir=_WORKER["data_dir"], progress=bar)
    finally:
        if bar is not None:
            bar.close()


class LocalExecutor:
    """Runs configs on this machine: in this process (``jobs == 1``) or in ``jobs`` spawned worker processes
    with ``threads`` torch threads each (default: CPU count // jobs, at least 1). ``progress``: per-run tqdm
    bars (``None``: only on a terminal). ``callbacks``: a function ``config -> [Callback, ...]`` called for every
    run, in the process that runs it (with ``jobs > 1`` it must be picklable: a module-level function), e.g. the
    diagnostics that ``compare --diagnostics`` attaches; whatever they put in ``ctx.extras`` is in the record.

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
        self._pool: Any = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

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

    def run(self, configs: Sequence[RunConfig]) -> Iterator[dict[str, Any]]:
        configs = list(configs)
        if not configs:
            return
        if self.jobs == 1:
            yield from self._serial(configs)
        else:
            yield from self._parallel(configs)

    def _serial(self, configs: list[RunConfig]) -> Iterator[dict[str, Any]]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for config in configs:
                bar = _progress_bar(config, 1, self.progress)
                callbacks = list(self.callbacks(config)) if self.callbacks is not None else []
                try:
                    record = run(config, callbacks=callbacks, data_dir=self.data_dir, progress=bar)
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
            lock = None
            if self.progress:
                from tqdm.auto import tqdm

                lock = ctx.RLock()
                tqdm.set_lock(lock)
            self._pool = ctx.Pool(
                self.jobs,
                initializer=_init_worker,
                initargs=(self.threads, self.data_dir, slots, lock, self.progress, self.callbacks),
            )
        return self._pool

    def _parallel(self, configs: list[RunConfig]) -> Iterator[dict[str, Any]]:
        pool = self._start()
        try:
            yield from pool.imap_unordered(_worker_run, configs)
        except BaseException:  # Ctrl-C, an error in a run, or the driver closing this generator early
            self._terminate()
            raise


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
    from optimlab.lab.executors.tracking import guard

    trackers = guard(trackers)
    owned = executor is None
    if executor is None:
        executor = LocalExecutor(jobs=jobs, threads=threads, data_dir=data_dir, progress=progress)
    out = check_writable(out)
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
    sweep_bar = None
    if show and todo:
        from tqdm.auto import tqdm

        sweep_bar = tqdm(total=len(configs), initial=skipped, desc="sweep", unit="run", position=0, dynamic_ncols=True)
        attach = getattr(executor, "attach_bar", None)  # an executor that knows what is running shows it there
        if attach is not None:
            attach(sweep_bar)
    stream = executor.run(todo)
    try:
        for record in stream:
            _append(out, record)
            finished += 1
            for tracker in trackers:
                tracker.log(record)
            if sweep_bar is not None:
                sweep_bar.update(1)
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
        if sweep_bar is not None:
            if getattr(executor, "attach_bar", None) is not None:
                executor.attach_bar(None)  # type: ignore[attr-defined]
            sweep_bar.close()
    return SweepOutcome(total=len(configs), skipped=skipped, finished=finished, interrupted=interrupted)
