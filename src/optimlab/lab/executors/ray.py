"""Run the lab's sweeps on a Ray cluster: :class:`RayExecutor`, a drop-in for the local process pool.

Every run is one Ray task that asks for its CPUs (``cpus_per_run``, also its torch thread count, so a run gives
the same numbers as on the local backend with the same threads) and GPUs (``gpus_per_run``, for runs that use
a device). Like every executor it only *yields* records; the driver (:func:`~optimlab.lab.study.sweep.run_sweep`)
writes each one once, when its run has completed, to the same ``results.jsonl``: a sweep started on one
backend resumes on the other, by config key.

Failures. A worker process that dies mid-run (killed, out of memory, its node lost) costs only that run: Ray
runs the task again, at most ``max_retries`` times (``max_retries=`` of ``ray.remote``; an exception raised by
the run itself is not retried, it stops the sweep as on the local backend). A run still failing after its
retries is counted as failed, the others go on, and :class:`RunsFailedError` is raised at the end: rerunning
the same command resumes with just those. Because a task returns once, a retried run gives one record, never
two. Ctrl-C (or the driver closing the stream early) cancels the tasks in flight; every finished run is
already written.

Progress: the tasks report their pid, attempt and step to a small actor that the driver polls; it feeds the
overall bar of the driver (``running``, ``failed``, ``retried`` beside tqdm's done/total and ETA) and one bar per
running run where the terminal allows (``progress``). :meth:`RayExecutor.running` gives the same snapshot.

Cluster. ``address=None`` starts a private local cluster on loopback only (``127.0.0.1``, no dashboard, no
usage reporting) with ``num_cpus`` CPUs (default: this machine's); ``address="auto"`` or ``"HOST:6379"`` joins
one started with ``ray start --head`` (every node needs optimlab and its data installed). The start-up cost is
printed and kept in :attr:`RayExecutor.startup_seconds`. ``ray`` is imported here only, on first use.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from optimlab.lab.executors import Closing
from optimlab.lab.training.checkpoint import DEFAULT_CHECKPOINTING, Checkpointing
from optimlab.lab.training.progress import run_bar
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.runner import CallbackFactory, RunConfig

__all__ = ["RayExecutor", "RunsFailedError", "RAY_MISSING"]

RAY_MISSING = "the ray backend needs Ray: pip install 'optimlab[ray]' (or pip install ray==2.60.0)"
_POLL = 0.25  # seconds between looks at the tasks in flight


class RunsFailedError(RuntimeError):
    """Runs that still failed after their retries (their workers kept dying); every other run was written."""

    def __init__(self, failed: Sequence[tuple[RunConfig, str]]):
        self.failed = list(failed)
        names = ", ".join(f"{c.optimizer} lr={c.lr:g} seed={c.seed} ({why})" for c, why in self.failed[:5])
        more = f" and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
        super().__init__(
            f"{len(self.failed)} run(s) failed after their retries: {names}{more}; every finished run is kept: "
            "run the same command again to retry only these"
        )


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def _init_on_loopback(ray: Any, **kwargs: Any) -> None:
    """``ray.init`` of a private cluster whose servers listen on 127.0.0.1 only.

    ``_node_ip_address="127.0.0.1"`` alone is not enough on Linux: Ray replaces a loopback address by the
    machine's outward one (``services.resolve_ip_for_localhost``) unless its "no cluster" mode is on, as it is
    by default on Windows and macOS (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). With the node at 127.0.0.1 its
    GCS, raylet and workers bind to loopback. The setting is read at Ray's import, hence both the variable (for
    the processes Ray starts) and the constant (for a Ray imported before). Raises ``RuntimeError`` if the node
    still came up on another address.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # address="local": always a new cluster of this process, whatever $RAY_ADDRESS says
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
    addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
    if addresses != {"127.0.0.1"}:
        ray.shutdown()
        raise RuntimeError(f"the local Ray cluster came up on {sorted(addresses)}, not on 127.0.0.1 only; stopped it")


# ----------------------------------------------------------------------------------------------------
# What runs on the workers


class _ProgressBoard:
    """The driver's view of the runs in flight: each task says when it starts (pid, node), how far it got, and
    when it ends. A Ray actor with no CPU of its own (created by :class:`RayExecutor`)."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.attempts: dict[str, int] = {}

    def start(self, key: str, pid: int, node: str) -> int:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.runs[key] = {"pid": pid, "node": node, "step": 0, "attempt": self.attempts[key]}
        return self.attempts[key]

    def step(self, key: str, step: int) -> None:
        if key in self.runs:
            self.runs[key]["step"] = step

    def end(self, key: str) -> None:
        self.runs.pop(key, None)

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        return self.runs, self.attempts


class _Reporter:
    """The ``progress`` object that :func:`~optimlab.lab.training.runner.run` updates: sends the step to the board at
    most every half second (fire and forget)."""

    def __init__(self, board: Any, key: str):
        self.board, self.key, self.n, self.sent = board, key, 0, 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.sent >= 0.5:
            self.sent = now
            self.board.step.remote(self.key, self.n)

    def set_postfix_str(self, s: str) -> None:
        pass


def _task(
    config: RunConfig,
    threads: int,
    data_dir: str | None,
    callbacks: CallbackFactory | None,
    board: Any,
    device: str = "cpu",
    checkpoint: Checkpointing | None = None,
) -> RunRecord:
    """One run on a Ray worker: its threads, its callbacks, its progress reports; returns the record. Ray gives
    a task that asked for GPUs those GPUs alone (``CUDA_VISIBLE_DEVICES``), so ``cuda`` is the task's own GPU. A
    task that Ray starts again after its worker died finds the run's checkpoint and continues from it."""
    import platform

    import ray
    import torch

    from optimlab.lab.training.runner import run

    key = config.key()
    if board is not None:
        ray.get(board.start.remote(key, os.getpid(), platform.node()))
    torch.set_num_threads(threads)
    if data_dir:
        os.environ["OPTIMLAB_DATA"] = data_dir
    try:
        cbs = list(callbacks(config)) if callbacks is not None else []
        reporter = _Reporter(board, key) if board else None
        return run(config, callbacks=cbs, data_dir=data_dir, progress=reporter, device=device, checkpoint=checkpoint)
    finally:
        if board is not None:
            board.end.remote(key)


# ----------------------------------------------------------------------------------------------------
# The executor


class RayExecutor(Closing):
    """Runs configs as Ray tasks; yields each record as its run completes (see the module's docstring).

    ``address``: ``None`` starts a local cluster on 127.0.0.1 with ``num_cpus`` CPUs; otherwise the address of
    a running cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:10001"``). A Ray already initialised in this
    process is used as it is (and left running). ``cpus_per_run`` (default 1) is each run's CPU request and its
    torch thread count (``threads`` overrides the latter); ``gpus_per_run`` its GPU request (fractions allowed);
    ``max_retries`` (default 2) how often a run whose worker died is started again. ``progress``: the per-run
    bars (``None``: only on a terminal). ``callbacks``: as for :class:`~optimlab.lab.executors.local.LocalExecutor`
    (pickled to the workers). ``log``: where the start-up line goes (default stderr). ``device``: where each run
    trains; ``None`` (default): ``cuda`` when ``gpus_per_run > 0`` (the GPU Ray reserved for it), else ``cpu``.
    ``checkpointing``: as for the local executor; the checkpoints go to the results folder's path on the node that
    runs the task, so a run retried on another node resumes only where that folder is shared (else it starts
    over: slower, never wrong).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        threads: int | None = None,
        max_retries: int = 2,
        data_dir: str | None = None,
        progress: bool | None = None,
        callbacks: CallbackFactory | None = None,
        log: Any = None,
        device: str | None = None,
        checkpointing: Checkpointing | None = DEFAULT_CHECKPOINTING,
    ):
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"Invalid address: {address!r}; expected None (a local cluster) or 'auto' / 'HOST:PORT'")
        for name, value, low in (("cpus_per_run", cpus_per_run, 0), ("gpus_per_run", gpus_per_run, -1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low:
                expected = "a number > 0" if low == 0 else "a number >= 0"
                raise ValueError(f"Invalid {name}: {value!r}; expected {expected}")
        for name, value in (("num_cpus", num_cpus), ("threads", threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"Invalid {name}: {value!r}; expected a positive integer")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"Invalid max_retries: {max_retries!r}; expected an integer >= 0")
        if device is None:
            device = "cuda" if gpus_per_run > 0 else "cpu"
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"Invalid device: {device!r}; expected 'cpu', 'cuda' or 'auto'")
        if device == "cuda" and not gpus_per_run > 0:
            raise ValueError("device 'cuda' on Ray needs gpus_per_run > 0 (Ray hides the GPUs from tasks without)")
        self.device = device
        self.checkpointing = checkpointing
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.threads = threads or max(1, int(cpus_per_run))
        self.max_retries = max_retries
        self.data_dir = data_dir
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.callbacks = callbacks
        self.log = log
        self.startup_seconds: float | None = None
        self.retried = 0  # runs started again after their worker died, over this executor's life
        self.failed: list[tuple[RunConfig, str]] = []
        self._owns_ray = False
        self._board: Any = None
        self._remote: Any = None
        self._bar: Any = None
        self._run_bars: dict[str, Any] = {}
        self._in_flight: dict[str, RunConfig] = {}
        self._snapshot: dict[str, dict[str, Any]] = {}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or join) the cluster; a no-op once started. Prints what it cost."""
        if self._remote is not None:
            return
        ray = _import_ray()
        began = time.perf_counter()
        if ray.is_initialized():
            where = "the Ray already running in this process"
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves this machine
            quiet = {"log_to_driver": False, "configure_logging": False}
            if self.address is None:
                _init_on_loopback(ray, num_cpus=self.num_cpus or os.cpu_count() or 1, **quiet)
                where = "a local Ray cluster on 127.0.0.1"
            else:
                ray.init(address=self.address, **quiet)
                where = f"the Ray cluster at {self.address}"
            self._owns_ray = True
        self._board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
        self._remote = ray.remote(_task)
        ray.get(self._board.snapshot.remote())  # the actor is up
        self.startup_seconds = time.perf_counter() - began
        cpus = ray.cluster_resources().get("CPU", 0)
        gpus = ray.cluster_resources().get("GPU", 0)
        print(
            f"ray: {where}: {cpus:g} CPU(s), {gpus:g} GPU(s), {len(ray.nodes())} node(s); "
            f"start-up {self.startup_seconds:.1f} s",
            file=self.log or sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        """Shut down the cluster if this executor started it (a joined cluster keeps running)."""
        self._close_run_bars()
        if self._remote is None:
            return
        ray = _import_ray()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._remote = self._board = None
        self._owns_ray = False

    def use_checkpoints(self, results_folder: Any) -> None:
        """Save the runs' checkpoints in ``results_folder`` (called by the study's driver before it runs them)."""
        if self.checkpointing is not None:
            self.checkpointing = self.checkpointing.bound(results_folder)

    # -- progress --------------------------------------------------------------------------------

    def attach_bar(self, bar: Any) -> None:
        """The driver's overall bar (tqdm): its postfix shows running / failed / retried while runs go on."""
        self._bar = bar

    def running(self) -> dict[str, dict[str, Any]]:
        """The runs in flight as last polled: key -> ``{"pid", "node", "step", "attempt"}``."""
        return {k: dict(v) for k, v in self._snapshot.items()}

    def status(self) -> dict[str, int]:
        return {"running": len(self._snapshot), "failed": len(self.failed), "retried": self.retried}

    def _poll(self, ray: Any, attempts_seen: dict[str, int]) -> None:
        runs, attempts = ray.get(self._board.snapshot.remote())
        self._snapshot = {k: v for k, v in runs.items() if k in self._in_flight}
        for key, n in attempts.items():
            if key in self._in_flight and n > attempts_seen.get(key, 1):
                self.retried += n - attempts_seen.get(key, 1)
                attempts_seen[key] = n
        if self._bar is not None:
            st = self.status()
            self._bar.set_postfix_str(f"running {st['running']}, failed {st['failed']}, retried {st['retried']}")
        if self.progress:
            self._draw_run_bars()

    def _draw_run_bars(self) -> None:
        for key in list(self._run_bars):
            if key not in self._snapshot:
                self._run_bars.pop(key).close()
        for key, info in self._snapshot.items():
            bar = self._run_bars.get(key)
            if bar is None:
                bar = self._run_bars[key] = run_bar(self._in_flight[key], len(self._run_bars) + 1)
            bar.set(info["step"])

    def _close_run_bars(self) -> None:
        for bar in self._run_bars.values():
            bar.close()
        self._run_bars.clear()

    # -- running ---------------------------------------------------------------------------------

    def run(self, configs: Sequence[RunConfig]) -> Iterator[RunRecord]:
        configs = list(configs)
        if not configs:
            return
        self.start()
        ray = _import_ray()
        remote = self._remote.options(
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )
        callbacks = ray.put(self.callbacks) if self.callbacks is not None else None
        _, before = ray.get(self._board.snapshot.remote())  # starts of these keys in earlier sweeps are no retries
        attempts_seen = {c.key(): before.get(c.key(), 0) + 1 for c in configs}
        pending: dict[Any, RunConfig] = {}
        for c in configs:
            args = (c, self.threads, self.data_dir, callbacks, self._board, self.device, self.checkpointing)
            pending[remote.remote(*args)] = c
        self._in_flight = {c.key(): c for c in configs}
        failed: list[tuple[RunConfig, str]] = []
        last_poll = 0.0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL)
                if time.monotonic() - last_poll >= _POLL or ready:
                    self._poll(ray, attempts_seen)
                    last_poll = time.monotonic()
                for ref in ready:
                    config = pending.pop(ref)
                    self._in_flight.pop(config.key(), None)
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the run itself raised: as on the local backend
                        raise e.as_instanceof_cause() from None
                    except ray.exceptions.RayError as e:  # its worker kept dying: that run alone is lost
                        failed.append((config, type(e).__name__))
                        self.failed.append(failed[-1])
                        continue
                    yield record
        finally:  # done, Ctrl-C, an error, or the driver closing the stream
            for ref in pending:
                ray.cancel(ref, force=True)
            self._in_flight.clear()
            self._snapshot = {}
            self._close_run_bars()
        if failed:
            raise RunsFailedError(failed)
