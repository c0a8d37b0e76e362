"""Long runs: a run interrupted mid-way and resumed from its checkpoint gives, bit for bit, the record and the final
weights of an unbroken run (a classification task with dropout and a cosine schedule, Schedule-Free with its
BatchNorm refresh, the language task with Adam and with Lookahead); the sweep resumes an interrupted run and deletes
its checkpoint once the record is written; checkpoints that cannot be trusted are ignored, not loaded."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.study.sweep import run_sweep
from optimlab.lab.training.checkpoint import (
    CHECKPOINTS_DIR,
    Checkpointing,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import LabWarning, load_records
from optimlab.lab.training.runner import Callback, RunConfig, RunContext, run

# what a run measures rather than computes: excluded from the comparison, which is exact for everything else
MEASURED = {"train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms", "fwd_bwd_cpu_ms",
            "wall_seconds", "environment"}
MEASURED_CURVES = {"time", "cpu"}


class Interrupt(Callback):
    """Raises ``KeyboardInterrupt`` after step ``at`` (``None``: never), as Ctrl-C would; keeps the final weights."""

    resumable = True

    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.weights: list[torch.Tensor] = []

    def after_step(self, ctx: RunContext) -> None:
        if ctx.step == self.at:
            raise KeyboardInterrupt

    def on_run_end(self, ctx: RunContext) -> None:
        self.weights = [p.detach().clone() for p in ctx.model.parameters()]


def computed(record: RunRecord) -> dict[str, Any]:
    data = {k: v for k, v in record.to_json().items() if k not in MEASURED}
    data["history"] = {k: v for k, v in data["history"].items() if k not in MEASURED_CURVES}
    return data


def unbroken(config: RunConfig) -> tuple[RunRecord, list[torch.Tensor]]:
    keep = Interrupt()
    return run(config, [keep]), keep.weights


def interrupted_then_resumed(config: RunConfig, folder: Path, at: int, every: int) -> tuple[RunRecord, list[Any]]:
    policy = Checkpointing(every_steps=every, every_minutes=None).bound(folder)
    with pytest.raises(KeyboardInterrupt):
        run(config, [Interrupt(at)], checkpoint=policy)
    assert checkpoint_path(folder, config.key()).is_file()  # the state of step (at // every) * every
    keep = Interrupt()
    return run(config, [keep], checkpoint=policy), keep.weights


CASES = [
    # task, optimizer, schedule, steps, batch size, eval every, interrupted after, checkpoint every
    ("mnist1d-mlp-dropout", "adam", "cosine", 14, 32, 5, 11, 4),  # dropout: the torch RNG; cosine: the scheduler
    ("mnist1d-mlp-bn", "schedulefree-adamw", "constant", 14, 32, 5, 11, 4),  # its z/x state and eval()/train()
    ("shakespeare-char", "adam", "constant", 8, 4, 3, 7, 3),
    ("shakespeare-char", "lookahead@k=3+adam", "constant", 8, 4, 3, 7, 3),  # the slow weights of Lookahead
]


@pytest.mark.parametrize("task,optimizer,schedule,steps,batch,every_eval,at,every", CASES)
def test_a_resumed_run_gives_the_record_and_weights_of_an_unbroken_run(
    tmp_path: Path, task: str, optimizer: str, schedule: str, steps: int, batch: int, every_eval: int, at: int,
    every: int,
) -> None:
    config = RunConfig(task=task, optimizer=optimizer, lr=1e-3, steps=steps, batch_size=batch, eval_every=every_eval,
                       schedule=schedule, seed=3)
    whole, whole_weights = unbroken(config)
    resumed, resumed_weights = interrupted_then_resumed(config, tmp_path, at, every)
    assert resumed.environment["resumed_at"] == [at // every * every]
    assert computed(resumed) == computed(whole)
    assert len(resumed_weights) == len(whole_weights)
    for a, b in zip(resumed_weights, whole_weights, strict=True):
        assert torch.equal(a, b)
    # the measurements: the timings of every kept step, summed or taken the median of, never those of lost steps
    assert resumed.steps_done == steps and resumed.train_seconds > 0 and resumed.step_cpu_ms is not None
    assert resumed.history["time"] == sorted(resumed.history["time"])


def test_a_run_resumed_twice_is_still_the_unbroken_one(tmp_path: Path) -> None:
    config = RunConfig(task="mnist1d-mlp-dropout", optimizer="adam", lr=1e-3, steps=14, batch_size=32, eval_every=5,
                       schedule="cosine")
    whole, whole_weights = unbroken(config)
    policy = Checkpointing(every_steps=3, every_minutes=None).bound(tmp_path)
    for at in (5, 10):
        with pytest.raises(KeyboardInterrupt):
            run(config, [Interrupt(at)], checkpoint=policy)
    keep = Interrupt()
    resumed = run(config, [keep], checkpoint=policy)
    assert resumed.environment["resumed_at"] == [3, 9]
    assert computed(resumed) == computed(whole)
    assert all(torch.equal(a, b) for a, b in zip(keep.weights, whole_weights, strict=True))


def test_the_sweep_resumes_an_interrupted_run_and_then_deletes_its_checkpoint(tmp_path: Path) -> None:
    config = RunConfig(task="mnist1d-mlp-dropout", optimizer="adam", lr=1e-3, steps=14, batch_size=32, eval_every=5)
    whole, _ = unbroken(config)
    policy = Checkpointing(every_steps=4, every_minutes=None)
    out = tmp_path / "out"
    first = run_sweep([config], out, executor=LocalExecutor(callbacks=_interrupt_at_11, checkpointing=policy))
    assert first.interrupted and first.finished == 0  # Ctrl-C: no record, the checkpoint of step 8 is kept
    assert checkpoint_path(out, config.key()).is_file()
    again = run_sweep([config], out, executor=LocalExecutor(callbacks=_no_interrupt, checkpointing=policy))
    assert again.finished == 1 and not again.interrupted
    (record,) = load_records(out)
    assert record.environment["resumed_at"] == [8]
    assert computed(record) == computed(whole)
    assert not any((out / CHECKPOINTS_DIR).iterdir())  # deleted once the record was written


def _interrupt_at_11(config: RunConfig) -> list[Callback]:
    return [Interrupt(11)]


def _no_interrupt(config: RunConfig) -> list[Callback]:
    return [Interrupt()]


def test_a_run_under_the_time_interval_writes_no_checkpoint_and_callbacks_not_resumable_turn_it_off(
    tmp_path: Path,
) -> None:
    config = RunConfig(task="mnist1d-mlp", optimizer="adam", lr=1e-3, steps=6, batch_size=32, eval_every=3)
    saved: list[int] = []

    class Spy(Interrupt):
        def after_step(self, ctx: RunContext) -> None:
            saved.append(len(list((tmp_path / CHECKPOINTS_DIR).glob("*.pt"))) if (tmp_path / CHECKPOINTS_DIR).exists()
                         else 0)

    run(config, [Spy()], checkpoint=Checkpointing().bound(tmp_path))  # the default: every 10 minutes
    assert saved and max(saved) == 0

    class NotResumable(Spy):
        resumable = False

    run(config, [NotResumable()], checkpoint=Checkpointing(every_steps=1).bound(tmp_path))
    assert max(saved) == 0


def _checkpoint_of(tmp_path: Path, config: RunConfig) -> Path:
    with pytest.raises(KeyboardInterrupt):
        run(config, [Interrupt(5)], checkpoint=Checkpointing(every_steps=4).bound(tmp_path))
    return checkpoint_path(tmp_path, config.key())


@pytest.mark.parametrize("tamper", ["group-writable", "symlink", "another run's", "torn"])
def test_a_checkpoint_that_cannot_be_trusted_is_ignored_and_the_run_starts_over(tmp_path: Path, tamper: str) -> None:
    config = RunConfig(task="mnist1d-mlp", optimizer="adam", lr=1e-3, steps=8, batch_size=32, eval_every=4)
    path = _checkpoint_of(tmp_path, config)
    assert (os.stat(path.parent).st_mode & 0o777) == 0o700
    if tamper == "group-writable":
        os.chmod(path, 0o664)
    elif tamper == "symlink":
        elsewhere = tmp_path / "elsewhere.pt"
        path.rename(elsewhere)
        path.symlink_to(elsewhere)
    elif tamper == "another run's":
        state = torch.load(path, weights_only=True)
        state["key"] = "0" * 16
        save_checkpoint(tmp_path, config.key(), state)
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(LabWarning, match="starts from step 0"):
        resumed = run(config, [Interrupt()], checkpoint=Checkpointing(every_steps=4).bound(tmp_path))
    assert "resumed_at" not in resumed.environment
    assert computed(resumed) == computed(unbroken(config)[0])


def test_checkpoints_are_written_atomically_in_a_private_folder(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "ab12", {"format": 1, "key": "ab12", "x": torch.arange(3)})
    save_checkpoint(tmp_path, "ab12", {"format": 1, "key": "ab12", "x": torch.arange(4)})
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS_DIR).iterdir()) == ["ab12.pt"]  # no temporary file left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_checkpoint(tmp_path, "ab12")["x"], torch.arange(4))  # type: ignore[index]
    with pytest.raises(ValueError, match="run key"):
        checkpoint_path(tmp_path, "../results")
    with pytest.raises(ValueError, match="every_steps"):
        Checkpointing(every_steps=0)
    with pytest.raises(ValueError, match="every_minutes"):
        Checkpointing(every_minutes=float("nan"))


def test_a_checkpoint_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path: Path) -> None:
    config = RunConfig(task="quadratic", optimizer="adam", lr=0.1, steps=6, eval_every=3)
    (tmp_path / CHECKPOINTS_DIR).write_text("a file where the folder would go")
    with pytest.warns(LabWarning, match="no more checkpoints"):
        record = run(config, [Interrupt()], checkpoint=Checkpointing(every_steps=2).bound(tmp_path))
    assert computed(record) == computed(unbroken(config)[0])
