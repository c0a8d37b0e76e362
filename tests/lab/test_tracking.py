"""Experiment tracking: the driver logs each record to TensorBoard event files and an MLflow file store, read
back here with the libraries' own readers (EventAccumulator, MlflowClient); a resumed sweep logs nothing twice;
the flags build the trackers they name, and none by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.study.sweep import run_sweep
from optimlab.lab.training.results import load_records
from optimlab.lab.training.runner import RunConfig

CONFIGS = [RunConfig(task="quadratic", optimizer=o, lr=0.05, seed=2, steps=40, eval_every=10) for o in ("sgd", "adam")]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, list[dict[str, Any]]]:
    """The first config swept with both trackers on, then the sweep resumed (the second config added) with
    fresh trackers on the same stores: (tensorboard dir, results dir, mlflow uri, records)."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from optimlab.lab.executors.tracking import MlflowTracker, TensorBoardTracker

    root = tmp_path_factory.mktemp("tracking")
    tb, out, uri = root / "tb", root / "out", (root / "mlruns").as_uri()
    with LocalExecutor(jobs=1, threads=1, progress=False) as ex:
        run_sweep(CONFIGS[:1], out, executor=ex, trackers=[TensorBoardTracker(tb), MlflowTracker(uri)])
        outcome = run_sweep(CONFIGS, out, executor=ex, trackers=[TensorBoardTracker(tb), MlflowTracker(uri)])
    assert (outcome.skipped, outcome.finished) == (1, 1)
    return tb, out, uri, load_records(out)


def test_tensorboard_events_hold_each_runs_curves_and_hparams(swept: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb, _, _, records = swept
    runs = sorted(p for p in (tb / "quadratic").iterdir())
    assert len(runs) == 2  # one folder per run, none doubled by the resume
    for record in records:
        (folder,) = [p for p in runs if p.name.endswith(record.key)]
        acc = EventAccumulator(str(folder))
        acc.Reload()
        h = record.history
        for tag, name in (("val/loss", "val_loss"), ("train/loss", "train_loss"), ("lr", "lr")):
            events = acc.Scalars(tag)
            assert [e.step for e in events] == h["step"]
            assert [e.value for e in events] == [float(np.float32(v)) for v in h[name]]  # event files hold float32
        assert acc.Scalars("final/val/loss")[0].value == float(np.float32(h["val_loss"][-1]))
        assert len(acc.Scalars("final/val/loss")) == 1
        assert "_hparams_/session_start_info" in acc.summary_metadata  # the HParams plugin's entry
        start = acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content
        assert record.config.optimizer.encode() in start and b"lr" in start


def test_mlflow_store_holds_each_run_once_with_params_and_metrics(swept: Any) -> None:
    from mlflow.tracking import MlflowClient

    _, _, uri, records = swept
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("optimlab/quadratic")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["optimlab.key"] for r in runs) == sorted(r.key for r in records)
    for record in records:
        (run,) = [r for r in runs if r.data.tags["optimlab.key"] == record.key]
        assert run.info.status == "FINISHED"
        c = record.config
        assert run.data.params["optimizer"] == c.optimizer and float(run.data.params["lr"]) == c.lr
        assert int(run.data.params["seed"]) == c.seed and int(run.data.params["steps"]) == c.steps
        history = client.get_metric_history(run.info.run_id, "val/loss")
        assert sorted((m.step, m.value) for m in history) == list(
            zip(record.history["step"], record.history["val_loss"], strict=True)
        )
        assert run.data.metrics["final/val/loss"] == record.final("val_loss")
        assert run.data.metrics["train_seconds"] == record.train_seconds


def test_log_folder_after_the_fact_adds_nothing_twice(swept: Any) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from optimlab.lab.executors.tracking import MlflowTracker, TensorBoardTracker, log_folder

    tb, out, uri, _ = swept
    assert log_folder(out, [TensorBoardTracker(tb), MlflowTracker(uri)]) == 2
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("optimlab/quadratic")
    assert len(client.search_runs([experiment.experiment_id])) == 2
    runs = list((tb / "quadratic").iterdir())
    assert len(runs) == 2
    for folder in runs:  # no event logged twice into a run's folder
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert len(acc.Scalars("final/val/loss")) == 1 and len(acc.Scalars("val/loss")) == 5


def test_flags_build_the_trackers_and_none_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.lab.commands.cli import build_parser
    from optimlab.lab.executors.backends import executor_from_args, trackers_from_args
    from optimlab.lab.executors.tracking import DEFAULT_MLFLOW_URI

    parser = build_parser()
    for command in ("compare", "benchmark"):
        args = parser.parse_args([command])
        assert args.backend == "local" and trackers_from_args(args) == []
        assert type(executor_from_args(args, 2, None, False)).__name__ == "LocalExecutor"
        args = parser.parse_args([command, "--backend", "ray", "--address", "auto", "--cpus-per-run", "2"])
        ex = executor_from_args(args, 2, None, False)  # built, not started: nothing is contacted
        assert (type(ex).__name__, ex.address, ex.cpus_per_run, ex.threads) == ("RayExecutor", "auto", 2, 2)
        with pytest.raises(ValueError, match="--address is for --backend ray"):
            executor_from_args(parser.parse_args([command, "--address", "auto"]), 2, None, False)
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(["compare", "--tensorboard", str(tmp_path / "tb"), "--mlflow"])
    assert args.mlflow == DEFAULT_MLFLOW_URI
    tb, ml = trackers_from_args(args)
    assert type(tb).__name__ == "TensorBoardTracker" and tb.log_dir == tmp_path / "tb"
    assert type(ml).__name__ == "MlflowTracker" and ml.uri == (tmp_path / "mlruns").as_uri()
