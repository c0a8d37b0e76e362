"""Log the lab's runs where users already look: TensorBoard event files and MLflow tracking stores.

A tracker turns one *record* (what :func:`~optimlab.lab.training.runner.run` returns and ``results.jsonl`` holds) into
the tracking tool's entries: the run's config as hyperparameters, its curves as metrics at their steps, and its
final numbers. The driver (:func:`~optimlab.lab.study.sweep.run_sweep`) calls :meth:`Tracker.log` after it has
written a record, so the local and the Ray backend log exactly the same; :func:`log_folder` logs a finished
results folder after the fact. Logging is idempotent by config key: a run already in the store is not logged
again (a resumed sweep adds only its new runs). An MLflow store is probed when the tracker is made (no retries,
a few seconds), so an unreachable server fails before any run; a tracker that fails mid-sweep is turned off with
one warning (:class:`GuardedTracker`) and the sweep goes on, its records safe in ``results.jsonl``.

- :class:`TensorBoardTracker` (``pip install 'optimlab[tensorboard]'``: the ``tensorboard`` package, which
  ``torch.utils.tensorboard`` writes with and whose UI reads it): one sub-folder per run,
  ``DIR/<task>/<optimizer>_lr<lr>_s<seed>_<key>``, with scalars ``<split>/<metric>``, ``lr``, ``batch_loss``, and
  the HParams plugin's entry (config -> final metrics).
- :class:`MlflowTracker` (``pip install 'optimlab[mlflow]'``: ``mlflow-skinny``, the client without the
  server's dependencies): one MLflow run per record in experiment ``optimlab/<task>`` (or ``experiment=``), params
  = config, metrics = curves (``step`` = the training step) and finals, tag ``optimlab.key``. The URI is any
  MLflow tracking URI; :data:`DEFAULT_MLFLOW_URI` is a local ``file:`` store, ``./mlruns`` (MLflow 3 calls that
  store "maintenance mode" and wants ``MLFLOW_ALLOW_FILE_STORE=true``, which this tracker sets for ``file:``
  URIs; a ``sqlite:///mlflow.db`` URI needs the full ``mlflow`` package).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from optimlab.lab.catalog.tasks import task_slug
from optimlab.lab.training.record import RunRecord

__all__ = [
    "Tracker",
    "TensorBoardTracker",
    "MlflowTracker",
    "DEFAULT_MLFLOW_URI",
    "run_name",
    "hparams_of",
    "curves_of",
    "finals_of",
    "log_folder",
    "close_all",
    "GuardedTracker",
    "guard",
    "describe",
]

DEFAULT_MLFLOW_URI = "file:./mlruns"
PROBE_TIMEOUT = 5  # seconds the MLflow store has to answer the probe before any run
_NOT_CURVES = ("step", "time", "cpu")


class Tracker(Protocol):
    """Logs records; :meth:`close` flushes."""

    def log(self, record: RunRecord) -> None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------------
# What a record says, in the form trackers want


def run_name(record: RunRecord) -> str:
    c = record.config
    return f"{c.optimizer} lr={c.lr:.3g} seed={c.seed}"


def hparams_of(record: RunRecord) -> dict[str, Any]:
    """The config as flat hyperparameters (strings and numbers): task, optimizer, lr, seed, steps, batch_size,
    eval_every, schedule, splits, and each tuned hparam under its own name."""
    c = record.config
    out: dict[str, Any] = {k: getattr(c, k) for k in ("task", "optimizer", "lr", "seed", "steps", "batch_size",
                                                      "eval_every")}
    out["schedule"] = c.schedule
    out["splits"] = ",".join(c.splits)
    for k, v in c.hparams:
        out[k] = v
    return out


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def curves_of(record: RunRecord) -> dict[str, list[tuple[int, float]]]:
    """Each curve of the record as ``(step, value)`` pairs, named ``train/loss``, ``val/accuracy``, ``lr``,
    ``batch_loss`` (non-finite values, a diverged run's, are left out)."""
    h = record.history
    steps = h["step"]
    out: dict[str, list[tuple[int, float]]] = {}
    for name, values in h.items():
        if name in _NOT_CURVES:
            continue
        split, _, metric = name.partition("_")
        label = f"{split}/{metric}" if split in ("train", "val", "test") and metric else name
        pairs = [(int(s), v) for s, x in zip(steps, values, strict=False) if (v := _number(x)) is not None]
        if pairs:
            out[label] = pairs
    return out


def finals_of(record: RunRecord) -> dict[str, float]:
    """The run's final numbers: the last value of each curve (``final/val/loss``...), the test split's
    (``test/accuracy``...) where the run evaluated it, and its cost (``train_seconds``, ``time_per_step``)."""
    out = {f"final/{k}": v[-1][1] for k, v in curves_of(record).items() if k != "batch_loss"}
    for k, v in (record.test_values or {}).items():
        if (x := _number(v)) is not None:
            out[f"test/{k}"] = x
    for k, v in (("train_seconds", record.train_seconds), ("time_per_step", record.time_per_step),
                 ("steps_done", record.steps_done)):
        if (x := _number(v)) is not None:
            out[k] = x
    out["diverged"] = float(record.status == "diverged")
    return out


# ----------------------------------------------------------------------------------------------------
# TensorBoard


class TensorBoardTracker:
    """One TensorBoard run folder per record under ``log_dir`` (see the module's docstring)."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError:
            raise ImportError(
                "--tensorboard needs TensorBoard: pip install 'optimlab[tensorboard]' (or pip install tensorboard)"
            ) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        check_tensorboard_dir(self.log_dir)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"Invalid --tensorboard: cannot create the folder {log_dir} ({e.strerror or e})") from None

    def run_dir(self, record: RunRecord) -> Path:
        c = record.config
        safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in c.optimizer)
        return self.log_dir / task_slug(c.task) / f"{safe}_lr{c.lr:.3g}_s{c.seed}_{record.key}"

    def log(self, record: RunRecord) -> None:
        from torch.utils.tensorboard.summary import hparams

        folder = self.run_dir(record)
        if folder.exists() and any(folder.iterdir()):
            return  # logged before (a resumed sweep)
        writer = self._writer_class(log_dir=str(folder))
        try:
            for name, pairs in curves_of(record).items():
                for step, value in pairs:
                    writer.add_scalar(name, value, global_step=step)
            finals = finals_of(record)
            for name, value in finals.items():
                writer.add_scalar(name, value, global_step=int(record.steps_done or 0))
            hp = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in hparams_of(record).items()}
            for summary in hparams(hp, finals):
                writer.file_writer.add_summary(summary)
        finally:
            writer.close()

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------
# MLflow


def _root_cause(error: BaseException) -> str:
    """The innermost cause of ``error`` in a few words (``ConnectionRefusedError: [Errno 111] Connection
    refused`` rather than three chained HTTP exceptions), its first line."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    last = seen[-1]
    first = (str(last).strip().splitlines() or [""])[0][:200]
    return f"{type(last).__name__}: {first}" if first else type(last).__name__


def check_tensorboard_dir(log_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` when ``log_dir`` (or a folder above it) is an existing file: checked before any
    run, and by ``--dry-run``, which creates nothing."""
    from optimlab.lab.training.results import nearest_existing

    folder = nearest_existing(log_dir)
    if not folder.is_dir():
        raise ValueError(f"Invalid --tensorboard: {folder} is a file, not a folder; give a folder")


def check_mlflow_uri(uri: str) -> None:
    """Raise ``ValueError`` when a ``file:`` URI (or a bare path) names an existing file: checked before any
    run, and by ``--dry-run``, which contacts no store."""
    resolved = _resolve_uri(uri)
    if resolved.startswith("file:"):
        from urllib.parse import unquote, urlparse

        from optimlab.lab.training.results import nearest_existing

        folder = nearest_existing(unquote(urlparse(resolved).path))
        if not folder.is_dir():
            raise ValueError(f"Invalid --mlflow {uri}: {folder} is a file, not a folder (a file store)")


def _resolve_uri(uri: str) -> str:
    """``file:`` URIs with a relative path made absolute (MLflow wants ``file:///abs``); others unchanged."""
    if uri.startswith("file:") and not uri.startswith("file:///"):
        return Path(uri[len("file:") :]).resolve().as_uri()
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return Path(uri).resolve().as_uri()  # a bare folder
    return uri


class MlflowTracker:
    """One MLflow run per record (see the module's docstring). ``experiment``: the experiment name (default
    ``optimlab/<task>``)."""

    def __init__(self, uri: str = DEFAULT_MLFLOW_URI, experiment: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImportError(
                "--mlflow needs MLflow: pip install 'optimlab[mlflow]' (or pip install mlflow-skinny)"
            ) from None
        self.uri = _resolve_uri(uri)
        if self.uri.startswith("file:"):
            # MLflow 3.x keeps the file store in "maintenance mode" and refuses it unless this is set; it is the
            # store that needs no database package (mlflow-skinny has none), and what --mlflow asks for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        check_mlflow_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        self._experiments: dict[str, str] = {}
        self._logged: dict[str, set[str]] = {}
        self._probe(uri)

    def _probe(self, given: str) -> None:
        """One request to the store, with no retries and a short timeout (MLflow's defaults retry for about
        4 minutes), so that an unreachable server is an error before any run starts."""
        quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT)}
        saved = {k: os.environ.get(k) for k in quick}
        os.environ.update(quick)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as e:
            raise ValueError(
                f"cannot use the MLflow tracking store at {given} ({_root_cause(e)}); nothing has run: start the "
                "server, correct the URI, or leave out --mlflow"
            ) from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            found = self.client.get_experiment_by_name(name)
            eid = found.experiment_id if found is not None else self.client.create_experiment(name)
            self._experiments[name] = eid
            keys: set[str] = set()
            token = None
            while True:  # the keys already there: logging is idempotent
                page = self.client.search_runs([eid], max_results=1000, page_token=token)
                keys.update(r.data.tags.get("optimlab.key", "") for r in page)
                token = page.token
                if not token:
                    break
            self._logged[eid] = keys
        return self._experiments[name]

    def log(self, record: RunRecord) -> None:
        from mlflow.entities import Metric, Param

        eid = self._experiment_id(self.experiment or f"optimlab/{record.config.task}")
        if record.key in self._logged[eid]:
            return
        tags = {
            "optimlab.key": record.key,
            "optimlab.status": record.status,
            "mlflow.runName": run_name(record),
        }
        run = self.client.create_run(eid, run_name=run_name(record), tags=tags)
        run_id = run.info.run_id
        try:
            params = [Param(k, str(v)) for k, v in hparams_of(record).items()]
            now = int(time.time() * 1000)  # when it was logged; the curves are ordered by step
            metrics = [
                Metric(name, value, now, step) for name, pairs in curves_of(record).items() for step, value in pairs
            ]
            last = int(record.steps_done or 0)
            metrics += [Metric(name, value, now, last) for name, value in finals_of(record).items()]
            for i in range(0, max(len(metrics), 1), 1000):  # MLflow's limit per batch
                self.client.log_batch(run_id, metrics=metrics[i : i + 1000], params=params if i == 0 else [])
            self.client.set_terminated(run_id, "FINISHED" if record.status != "diverged" else "FAILED")
        except BaseException:
            self.client.set_terminated(run_id, "KILLED")
            raise
        self._logged[eid].add(record.key)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------
# A tracker that fails mid-sweep must not stop it


class GuardedTracker:
    """A tracker whose first failure in :meth:`log` is a warning, not an error: the tracker is then off for
    the rest of the sweep, which goes on (every record is on disk in ``results.jsonl`` before it is logged;
    :func:`log_folder` logs the folder later). :func:`guard` wraps a sweep's trackers in these."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self.disabled = False

    def log(self, record: RunRecord) -> None:
        if self.disabled:
            return
        try:
            self.tracker.log(record)
        except Exception as e:  # a server gone, a full disk, a bug in a tracker: the runs matter more
            from optimlab.lab.training.results import LabWarning

            self.disabled = True
            warnings.warn(
                f"logging to {describe(self.tracker)} failed ({_root_cause(e)}); it is off for the "
                "rest of this sweep, which goes on: every run is kept in results.jsonl (log them later with "
                "optimlab.lab.executors.tracking.log_folder)",
                LabWarning,
                stacklevel=2,
            )

    def close(self) -> None:
        try:
            self.tracker.close()
        except Exception:
            if not self.disabled:
                raise


def describe(tracker: Any) -> str:
    """``TensorBoard in DIR``, ``MLflow at URI``, or the tracker's class name."""
    if isinstance(tracker, GuardedTracker):
        return describe(tracker.tracker)
    if isinstance(tracker, TensorBoardTracker):
        return f"TensorBoard in {tracker.log_dir}"
    if isinstance(tracker, MlflowTracker):
        return f"MLflow at {tracker.uri}"
    return type(tracker).__name__


def guard(trackers: Iterable[Any]) -> list[GuardedTracker]:
    """Each tracker as a :class:`GuardedTracker` (those already guarded as they are, so that one stays off
    once it has failed)."""
    return [t if isinstance(t, GuardedTracker) else GuardedTracker(t) for t in trackers]


# ----------------------------------------------------------------------------------------------------


def log_folder(out: str | os.PathLike, trackers: Sequence[Tracker]) -> int:
    """Log every record of a results folder (those already logged are skipped); returns how many records."""
    from optimlab.lab.training.results import load_records

    records = load_records(out)
    for record in records:
        for tracker in trackers:
            tracker.log(record)
    return len(records)


def close_all(trackers: Iterable[Tracker]) -> None:
    for tracker in trackers:
        tracker.close()
