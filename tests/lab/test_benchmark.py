"""End to end: ``optimlab benchmark --quick`` on two tasks of the suite (a tiny stand-in Fashion-MNIST): every
task's records are the protocol's runs, the profiles figure and the report exist and hold the tasks and the
optimizers, and the same command again re-runs nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from optimlab.lab.commands.benchmark import BENCHMARK_FILE, QUICK_OPTIMIZERS, suite_protocols
from optimlab.lab.commands.cli import main
from optimlab.lab.present.summary import summarize_study
from optimlab.lab.study.tuning import load_study
from optimlab.lab.training.results import RESULTS_FILE, load_records

# two corners of the suite, the small ones: the MNIST-1D CNN (data made in code) and the Fashion-MNIST
# autoencoder (the tiny stand-in files of conftest); --quick: 24 steps, 2 trials, seeds 0 and 1, sgdm and adam
TASKS = ("mnist1d-cnn", "fmnist-autoencoder")


@pytest.fixture
def benchmark_args(tmp_path: Path, tiny_fashion_mnist: Path, isolated_data: Path) -> list[str]:
    out = tmp_path / "bench"  # a folder that does not exist yet
    return ["benchmark", "--quick", "--tasks", *TASKS, "--jobs", "1", "--no-progress",
            "--data-dir", str(tiny_fashion_mnist), "--out", str(out)]


def test_benchmark_quick_runs_the_suite_writes_the_report_and_resumes(
    benchmark_args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPTIMLAB_DATA", raising=False)  # the command sets it for its workers; undone after
    out = Path(benchmark_args[-1])
    assert main(benchmark_args) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / BENCHMARK_FILE).read_text())
    assert manifest == {"format": 1, "tasks": list(TASKS), "optimizers": list(QUICK_OPTIMIZERS), "quick": True}

    protocols = suite_protocols(TASKS, quick=True)
    for task, protocol in protocols.items():
        study = load_study(out / task)
        assert study.protocol == protocol and study.complete and list(study.results) == list(QUICK_OPTIMIZERS)
        records = load_records(out / task)
        per_optimizer = protocol.trials_per_optimizer() + len(protocol.seeds)
        assert len(records) == per_optimizer * len(QUICK_OPTIMIZERS)
        assert {r.config.task for r in records} == {task}
        for spec, result in study.results.items():  # the final runs: the selected setting on seeds 0 and 1
            assert sorted(r.config.seed for r in result.finals) == [0, 1]
            assert {(r.config.optimizer, r.config.lr, r.config.steps) for r in result.finals} == {
                (spec, result.selection.lr, 24)}
        assert (out / task / "report.html").exists()
        # the answer figure draws the optimizers with a headline; in --quick's 24 steps every seed of a task can end
        # "at chance" (no better than the untrained model by the margin), and then there is no interval to draw
        if any(r.headline is not None for r in summarize_study(study).rows):
            assert (out / task / f"answer_{task}.png").exists()

    profiles = out / "profiles.png"
    assert profiles.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "<h1>optimlab benchmark</h1>" in page and "src='profiles.png'" in page and "--quick" in page
    for task in TASKS:
        assert f"<a href='{task}/report.html'>report</a>" in page and f"<h2>{task}</h2>" in page
    for spec in QUICK_OPTIMIZERS:
        assert f"<tr><td>{spec}</td>" in page
    assert "optimlab benchmark (--quick: a smoke test, not a result)" in printed
    table = printed[printed.index("optimizer  "):]
    assert table.splitlines()[0].split("  ")[:3] == ["optimizer", "score (CPU s)", "score (steps)"]
    assert {line.split()[0] for line in table.splitlines()[2:4]} == set(QUICK_OPTIMIZERS)
    assert f"Report: {out / 'report.html'}" in printed

    # resume: the same command again runs nothing and rebuilds the same report
    before = {task: (out / task / RESULTS_FILE).read_bytes() for task in TASKS}
    assert main(benchmark_args) == 0
    again = capsys.readouterr().out
    assert again.count("still to do: 0 runs, 0 training steps") == len(TASKS)
    assert {task: (out / task / RESULTS_FILE).read_bytes() for task in TASKS} == before
    assert not re.search(r"^\[ *\d+/\d+\]", again, re.MULTILINE)  # no progress line: no run
    assert re.search(r"^\[ *\d+/\d+\]", printed, re.MULTILINE)  # as the first time printed
