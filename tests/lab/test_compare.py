"""End to end: `optimlab compare` on a tiny budget, determinism, resume, the report, the other commands."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optimlab.lab import sweep as sweep_module
from optimlab.lab.cli import main, split_specs
from optimlab.lab.report import build_report, summarize
from optimlab.lab.runner import Callback, RunConfig, RunContext, run
from optimlab.lab.sweep import expand, load_records, run_sweep

TINY = ["--task", "mnist1d-mlp", "--steps", "30", "--eval-every", "10", "--seeds", "2", "--no-progress"]


def test_tiny_compare_writes_results_csv_and_a_report_that_agree(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(
        ["compare", *TINY, "--optimizers", "sgdm,adam", "--lr", "0.01,0.1", "--jobs", "1", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    records = load_records(out)
    assert len(records) == 2 * 2 * 2  # optimizers x LRs x seeds
    assert {r["config"]["optimizer"] for r in records} == {"sgdm", "adam"}
    for r in records:
        assert r["history"]["step"] == [0, 10, 20, 30]
        assert r["environment"]["torch"] and r["time_per_step"] > 0 and r["wall_seconds"] > 0
        assert r["optimizer_settings"]["lr"] == r["config"]["lr"]

    rows = {row["optimizer"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"sgdm", "adam"}
    for name, row in rows.items():
        lr = float(row["lr"])
        by_lr = {}
        for r in records:
            if r["config"]["optimizer"] == name:
                by_lr.setdefault(r["config"]["lr"], []).append(r)
        # the selected LR has the best mean final validation accuracy
        val = {k: np.mean([r["history"]["val_accuracy"][-1] for r in v]) for k, v in by_lr.items()}
        assert val[lr] == max(val.values())
        chosen = by_lr[lr]
        test = [r["history"]["test_accuracy"][-1] for r in chosen]
        gap = [r["history"]["train_accuracy"][-1] - r["history"]["test_accuracy"][-1] for r in chosen]
        assert float(row["final_test_mean"]) == pytest.approx(np.mean(test), abs=1e-12)
        assert float(row["final_test_std"]) == pytest.approx(np.std(test, ddof=1), abs=1e-12)
        assert float(row["gap_mean"]) == pytest.approx(np.mean(gap), abs=1e-12)
        assert float(row["best_val_mean"]) == pytest.approx(
            np.mean([max(r["history"]["val_accuracy"]) for r in chosen]), abs=1e-12
        )
        assert int(row["tuning_runs"]) == 4 and row["lr_grid"] == "0.01 0.1"
        # the printed table and the HTML page show the same number
        shown = f"{100 * np.mean(test):.1f} ± {100 * np.std(test, ddof=1):.1f}"
        assert shown in printed
        assert shown in (out / "report.html").read_text()
    for png in (
        "curves_mnist1d-mlp.png",
        "gap_mnist1d-mlp.png",
        "lr_sensitivity_mnist1d-mlp.png",
        "schedules_mnist1d-mlp.png",
    ):
        assert (out / png).stat().st_size > 1000
        assert f"src='{png}'" in (out / "report.html").read_text()
    assert str(out / "report.html") in printed


def test_same_config_gives_the_same_numbers_in_process_and_in_a_worker(tmp_path: Path) -> None:
    config = RunConfig("mnist1d-cnn", "lookahead+adam", 3e-3, seed=3, steps=20, batch_size=32, eval_every=10)
    a, b = run(config), run(config)
    assert a["history"] == {**b["history"], "time": a["history"]["time"]}
    # a spawned worker (--jobs 2, one torch thread each) reproduces the in-process run with one thread
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c = run(config)
    finally:
        torch.set_num_threads(threads)
    other = RunConfig("mnist1d-cnn", "sgdm", 0.05, seed=3, steps=20, batch_size=32, eval_every=10)
    outcome = run_sweep([config, other], tmp_path, jobs=2, threads=1, progress=False)
    assert outcome.finished == 2
    d = next(r for r in load_records(tmp_path) if r["key"] == config.key())
    for key in ("train_loss", "val_accuracy", "test_loss", "lr", "batch_loss"):
        assert d["history"][key] == c["history"][key]


def test_interrupted_sweep_keeps_finished_runs_and_resumes(tmp_path: Path, monkeypatch) -> None:
    configs = expand(
        "quadratic",
        ["sgd", "adam"],
        {"sgd": [0.05], "adam": [0.1]},
        [0, 1],
        steps=20,
        batch_size=1,
        eval_every=10,
    )
    real_run = sweep_module.run
    calls = []

    def interrupted_after_three(config, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(config.key())
        return real_run(config, **kwargs)

    monkeypatch.setattr(sweep_module, "run", interrupted_after_three)
    first = run_sweep(configs, tmp_path, progress=False)
    assert first.interrupted and first.finished == 3
    assert {r["key"] for r in load_records(tmp_path)} == set(calls)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"key": "torn')  # a record cut short by a hard kill is ignored
    monkeypatch.setattr(sweep_module, "run", real_run)
    second = run_sweep(configs, tmp_path, progress=False)
    assert (second.skipped, second.finished, second.interrupted) == (3, 1, False)
    assert {r["key"] for r in load_records(tmp_path)} == {c.key() for c in configs}
    third = run_sweep(configs, tmp_path, progress=False)
    assert (third.skipped, third.finished) == (4, 0)


def test_report_rebuilds_from_a_results_folder(tmp_path: Path, capsys) -> None:
    configs = expand(
        "rosenbrock",
        ["adam", "lookahead+adam"],
        {"adam": [0.02], "lookahead+adam": [0.02]},
        [0],
        steps=40,
        batch_size=1,
        eval_every=20,
    )
    run_sweep(configs, tmp_path, progress=False)
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "rosenbrock" in printed and "lookahead+adam" in printed
    assert (tmp_path / "trajectories_rosenbrock.png").stat().st_size > 1000
    assert (tmp_path / "report.html").exists() and (tmp_path / "summary.csv").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_diverged_runs_are_recorded_and_never_selected(tmp_path: Path) -> None:
    configs = expand("rosenbrock", ["sgd"], {"sgd": [1e-4, 1.0]}, [0], steps=30, batch_size=1, eval_every=10)
    run_sweep(configs, tmp_path, progress=False)
    by_lr = {r["config"]["lr"]: r for r in load_records(tmp_path)}
    assert by_lr[1.0]["status"] == "diverged" and by_lr[1.0]["steps_done"] < 30
    assert by_lr[1e-4]["status"] == "ok"
    (summary,) = summarize(load_records(tmp_path))
    assert summary.lr == 1e-4 and math.isnan(summary.val_by_lr[1.0])
    path, _ = build_report(tmp_path)
    json.dumps(load_records(tmp_path))  # records stay strict JSON (no NaN)
    assert "NaN" not in (tmp_path / "results.jsonl").read_text()
    assert path.exists()


def test_callbacks_see_every_step_and_store_extras() -> None:
    class DistanceFromInit(Callback):
        def on_run_start(self, ctx: RunContext) -> None:
            self.init = [p.detach().clone() for p in ctx.model.parameters()]
            ctx.extras["distance"] = []

        def after_step(self, ctx: RunContext) -> None:
            d = sum(
                (p.detach() - q).pow(2).sum() for p, q in zip(ctx.model.parameters(), self.init, strict=True)
            )
            ctx.extras["distance"].append(float(d) ** 0.5)

    record = run(
        RunConfig("mnist1d-mlp", "sgdm", 0.05, steps=5, eval_every=5), callbacks=[DistanceFromInit()]
    )
    assert len(record["extras"]["distance"]) == 5 and record["extras"]["distance"][-1] > 0


def test_schedule_and_lr_find_commands(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "schedule",
                "warmup_cosine@warmup=0.1",
                "--steps",
                "100",
                "--lr",
                "0.1",
                "--out",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert "lr at step 0 = 0" in capsys.readouterr().out
    assert (
        main(
            [
                "lr-find",
                "--task",
                "mnist1d-mlp",
                "--optimizer",
                "sgdm",
                "--num-steps",
                "30",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "Plot:" in capsys.readouterr().out
    assert (tmp_path / "lr_find_mnist1d-mlp_sgdm.png").stat().st_size > 1000
    config = RunConfig("quadratic", "sgd", 0.05, steps=20, batch_size=1, eval_every=10, schedule="cosine")
    lrs = run(config)["history"]["lr"]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.025) and lrs[-1] == pytest.approx(0.0)


def test_command_line_errors_are_reported(capsys) -> None:
    assert main(["compare", "--optimizers", "adamx", "--steps", "1"]) == 2
    assert "unknown optimizer 'adamx'" in capsys.readouterr().err
    assert main(["compare", "--optimizers", "adam@lr=1e-3", "--lr", "0.1", "--steps", "1"]) == 2
    assert "conflicts" in capsys.readouterr().err
    assert main(["compare", "--jobs", "0", "--steps", "1"]) == 2
    assert "--jobs must be a positive integer" in capsys.readouterr().err
    assert main(["compare", "--schedule", "nope", "--steps", "1"]) == 2
    assert "unknown schedule 'nope'" in capsys.readouterr().err
    assert split_specs(["sgdm,adam@lr=1e-3,eps=1e-6", "lookahead+radam"]) == [
        "sgdm",
        "adam@lr=1e-3,eps=1e-6",
        "lookahead+radam",
    ]


def test_python_dash_m_optimlab_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "optimlab", "list"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "mnist1d-cnn" in done.stdout and "lookahead" in done.stdout
