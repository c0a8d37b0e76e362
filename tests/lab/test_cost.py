"""The lab's one cost model (:mod:`optimlab.lab.study.cost`): how each kind of work is priced from the probes, the
probes themselves (real, short, cached for the process), and a tuned study's planned runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optimlab.lab.study import cost
from optimlab.lab.study.cost import (
    Probe,
    StepProbe,
    Steps,
    Training,
    count_work,
    estimate_work,
    planned_configs,
    remaining_configs,
)
from optimlab.lab.study.protocol import default_protocol
from optimlab.lab.training.runner import RunConfig


@pytest.fixture
def fake_probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Probes with round numbers (seconds): a step 0.01, evaluations train 1 / val 2 / test 4, a forward example
    0.001, a toy step 1e-4; records what was probed."""
    asked: list[tuple] = []

    def probe(task: str, batch_size: int, *, threads: int, data_dir: str | None = None, steps: int = 20) -> Probe:
        asked.append(("task", task, batch_size, threads))
        return Probe(task, batch_size, threads, 0.01, {"train": 1.0, "val": 2.0, "test": 4.0}, 0.001)

    def probe_optimizer(optimizer: str, numel: int = 1, *, threads: int, steps: int = 200) -> StepProbe:
        asked.append(("steps", optimizer, numel, threads))
        return StepProbe(optimizer, numel, threads, 1e-4)

    monkeypatch.setattr(cost, "probe", probe)
    monkeypatch.setattr(cost, "probe_optimizer", probe_optimizer)
    monkeypatch.setattr(cost.os, "cpu_count", lambda: 4)
    return asked


def test_each_kind_of_work_is_priced_from_its_probe(fake_probes: list[tuple]) -> None:
    # a RunConfig: 100 steps, evaluations at 0, 25, 50, 75, 100 of train and val, test once
    config = RunConfig(task="mnist1d-mlp", optimizer="adam", lr=1e-3, steps=100, eval_every=25)
    one = 100 * 0.01 + 5 * (1.0 + 2.0) + 4.0
    est = estimate_work([config])
    assert est.seconds == pytest.approx(one) and (est.runs, est.train_steps) == (1, 100)
    assert fake_probes == [("task", "mnist1d-mlp", 100, 4)]  # one worker: every core's thread
    assert not est.upper_bound and est.expected.startswith("expected about")
    # four of them on two workers (2 threads each): half the seconds, plus one pool's start
    fake_probes.clear()
    est = estimate_work([config] * 4, jobs=2)
    assert est.seconds == pytest.approx(4 * one / 2 + cost.WORKER_START_SECONDS)
    assert {a[3] for a in fake_probes} == {2}
    # Training in this process: its own threads, evaluations, forward and backward examples (a step's share each)
    t = Training("mnist1d-mlp", 50, 200, runs=3, evals=(("val", 4), ("test", 1)), forward=1000, backward=500,
                 threads=1, until_target=True)
    est = estimate_work([t], jobs=2)
    per_run = 200 * 0.01 + 4 * 2.0 + 4.0 + 1000 * 0.001 + 500 * 0.01 / 50
    assert est.seconds == pytest.approx(3 * per_run) and (est.runs, est.train_steps) == (3, 600)
    assert fake_probes[-1] == ("task", "mnist1d-mlp", 50, 1) and est.upper_bound
    assert est.expected.startswith("at most about")
    # Steps: optimizer steps on a small tensor, no worker start
    est = estimate_work([Steps("amsgrad", 1000, numel=5, runs=2), config], jobs=2)
    assert est.seconds == pytest.approx(2 * 1000 * 1e-4 + one)  # one RunConfig: one worker, no pool
    assert ("steps", "amsgrad", 5, torch.get_num_threads()) in fake_probes
    assert count_work([Steps("amsgrad", 1000, runs=2), config, t]) == (2 + 1 + 3, 2000 + 100 + 600)


def test_training_of_a_config_counts_its_evaluations_as_the_config_does(fake_probes: list[tuple]) -> None:
    config = RunConfig(task="mnist1d-mlp", optimizer="sgd", lr=0.1, steps=30, batch_size=20, eval_every=30)
    t = Training.of(config, forward=10, threads=1)
    assert (t.task, t.batch_size, t.steps, t.runs) == ("mnist1d-mlp", 20, 30, 1)
    assert dict(t.evals) == {"train": 2, "val": 2, "test": 1} and (t.forward, t.threads) == (10, 1)
    # the same seconds as the config through the executor, apart from the forward examples
    assert estimate_work([t]).seconds == pytest.approx(estimate_work([config]).seconds + 10 * 0.001)
    with pytest.raises(ValueError, match="runs must be a positive integer"):
        Training("mnist1d-mlp", 20, 30, runs=0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        Steps("adam", 0)


def test_planned_configs_are_the_remaining_ones_of_an_empty_folder(tmp_path: Path) -> None:
    protocol = default_protocol("mnist1d-mlp", steps=40, eval_every=20, budget=8, seeds=(0, 1), batch_size=50)
    planned = planned_configs(protocol, ["sgdm", "adam"])
    assert planned == remaining_configs(protocol, ["sgdm", "adam"], tmp_path / "nothing-here")
    per_optimizer = protocol.trials_per_optimizer() + len(protocol.seeds)
    assert len(planned) == 2 * per_optimizer == 2 * (8 + 2)
    assert sum(c.steps for c in planned) == 2 * (8 * protocol.trial_steps + 2 * 40)


def test_probes_are_real_short_and_cached() -> None:
    p = cost.probe("quadratic", 1, threads=1, steps=5)
    assert p.step_seconds > 0 and set(p.eval_seconds) == {"train"} and p.forward_seconds > 0
    assert cost.probe("quadratic", 1, threads=1, steps=5) is p  # measured once in a process
    s = cost.probe_optimizer("adabound", 3, threads=1, steps=20)
    assert s.step_seconds > 0 and cost.probe_optimizer("adabound", 3, threads=1, steps=20) is s
    assert "adabound" in s.describe() and "quadratic" in p.describe()
