"""End to end: `optimlab compare` on a tiny budget; the printed table, the CSV and the HTML agree with the
records; the same command twice gives the same numbers; a killed sweep resumes to the unbroken result; every
bad input stops with one message before any run; the other commands."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lab_args import TINY

from optimlab.lab.commands.args import parse_seeds, split_specs
from optimlab.lab.commands.cli import main
from optimlab.lab.executors import local as local_executor
from optimlab.lab.present.stats import bootstrap_ci
from optimlab.lab.present.summary import at_chance
from optimlab.lab.study.protocol import TUNING_SEED_BASE
from optimlab.lab.study.sweep import expand, run_sweep
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import load_records
from optimlab.lab.training.runner import Callback, RunConfig, RunContext, run

# the columns of summary.csv that are pure functions of the configs (timings are not)
DETERMINISTIC = [
    "optimizer",
    "lr",
    "hparams",
    "edges",
    "seeds",
    "diverged",
    "headline_mean",
    "headline_low",
    "headline_high",
    "in_best_set",
    "adjusted_p",
    "val_mean",
    "train_loss_mean",
    "gap_mean",
    "reached_target",
    "steps_to_target",
    "tuning_trials",
]


def _csv(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv") as f:
        return list(csv.DictReader(f))


def _numbers(rec: RunRecord) -> dict:
    h = {k: v for k, v in rec.history.items() if k not in ("time", "cpu")}
    return {"key": rec.key, "history": h, "test": rec.to_json()["test"], "status": rec.status}


def test_tiny_compare_prints_the_answer_and_writes_results_csv_and_report_that_agree(tiny_study) -> None:
    out, printed = tiny_study
    records = load_records(out)
    assert len(records) == 2 * (3 + 3)  # optimizers x (trials + final seeds)
    finals = [r for r in records if r.config.seed < TUNING_SEED_BASE]
    trials = [r for r in records if r.config.seed >= TUNING_SEED_BASE]
    assert len(finals) == 6 and len(trials) == 6
    for r in finals:
        assert r.history["step"] == [0, 20, 40] and r.config.steps == 40
        assert r.environment["torch"] and r.step_cpu_ms > 0 and r.fwd_bwd_cpu_ms > 0
        assert r.code["source_sha256"] == records[0].code["source_sha256"]  # the code that ran, in every record
        assert r.optimizer_settings["lr"] == r.config.lr
    for r in trials:
        assert r.config.steps == 16 and r.test_values is None  # 40 % of the length, no test split

    rows = {row["optimizer"]: row for row in _csv(out)}
    assert set(rows) == {"sgdm", "adam"}
    for name, row in rows.items():
        mine = [r for r in trials if r.config.optimizer == name]
        best = max(mine, key=lambda r: r.history["val_accuracy"][-1])
        assert float(row["lr"]) == best.config.lr  # selected on validation
        chosen = [r for r in finals if r.config.optimizer == name]
        assert {r.config.lr for r in chosen} == {best.config.lr}
        test = [r.test("accuracy") for r in chosen if not at_chance(r, 0.01, True)]  # 40 steps: some at chance
        assert int(row["ok_seeds"]) == len(test) and int(row["at_chance"]) == 3 - len(test)
        assert int(row["tuning_trials"]) == 3
        if not test:
            assert row["headline_mean"] == "" and row["verdict"] == "unstable"
            continue
        assert float(row["headline_mean"]) == pytest.approx(np.mean(test), abs=1e-12)
        ci = bootstrap_ci(test)  # the percentile bootstrap over the seeds, inside the seeds' range
        if len(test) > 1:
            assert (float(row["headline_low"]), float(row["headline_high"])) == pytest.approx((ci.low, ci.high))
            assert min(test) <= ci.low <= ci.high <= max(test)
            shown = f"{100 * np.mean(test):.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
            assert shown in printed and shown in (out / "report.html").read_text()
    # the answer first: the best and those as good as it within the printed margin, then the protocol in one line
    lines = printed.splitlines()
    answer = next(i for i, line in enumerate(lines) if line.startswith("mnist1d-mlp: "))
    assert ("1 pp" in lines[answer] and "bootstrap" in lines[answer]) or "no optimizer is stable" in lines[answer]
    assert lines[answer + 1].startswith("protocol: tuned: 3 quasi-random (Halton) trials")
    assert "selected sgdm: lr" in printed and "tuning cost 3 trials" in printed  # progress: cost per optimizer
    assert "expected about" in printed  # the cost before starting
    page = (out / "report.html").read_text()
    for fig in ("answer", "curves", "lr_sensitivity", "generalization"):
        png = out / f"{fig}_mnist1d-mlp.png"
        assert png.stat().st_size > 5000 and f"src='{png.name}'" in page
    assert "schedules_" not in page  # one schedule for all: a line of text, not a figure
    assert str(out / "report.html") in printed
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["protocol"]["budget"] == 3 and protocol["optimizers"] == ["sgdm", "adam"]


def test_the_same_command_twice_gives_the_same_numbers(tmp_path: Path, capsys) -> None:
    args = ["compare", *TINY, "--optimizers", "sgdm,adamw"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    a, b = _csv(tmp_path / "a"), _csv(tmp_path / "b")
    assert [{k: r[k] for k in DETERMINISTIC} for r in a] == [{k: r[k] for k in DETERMINISTIC} for r in b]
    ra = sorted(map(_numbers, load_records(tmp_path / "a")), key=lambda r: r["key"])
    rb = sorted(map(_numbers, load_records(tmp_path / "b")), key=lambda r: r["key"])
    assert ra == rb


def _count(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))
    except FileNotFoundError:
        return 0


def test_a_sweep_killed_mid_way_resumes_to_the_unbroken_result(tmp_path: Path) -> None:
    args = ["--task", "mnist1d-mlp", "--steps", "300", "--eval-every", "100", "--seeds", "3", "--budget", "3"]
    args += ["--batch-size", "50", "--optimizers", "sgdm,adam", "--jobs", "1", "--no-progress"]
    cmd = [sys.executable, "-m", "optimlab", "compare", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _count(killed / "results.jsonl") < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a hard kill, mid-sweep (no chance to clean up)
    proc.wait()
    partial = _count(killed / "results.jsonl")
    assert proc.returncode == -signal.SIGKILL and 4 <= partial < 12, (partial, proc.stderr.read()[-2000:])
    done = subprocess.run([*cmd, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    unbroken = tmp_path / "unbroken"
    done = subprocess.run([*cmd, "--out", str(unbroken)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = _csv(killed), _csv(unbroken)
    assert [{k: r[k] for k in DETERMINISTIC} for r in a] == [{k: r[k] for k in DETERMINISTIC} for r in b]
    ra = sorted(map(_numbers, load_records(killed)), key=lambda r: r["key"])
    rb = sorted(map(_numbers, load_records(unbroken)), key=lambda r: r["key"])
    assert len(ra) == 12 and ra == rb


def test_interrupted_sweep_keeps_finished_runs_and_resumes(tmp_path: Path, monkeypatch) -> None:
    configs = expand(
        "quadratic", ["sgd", "adam"], {"sgd": [0.05], "adam": [0.1]}, [0, 1], steps=20, batch_size=1, eval_every=10
    )
    real_run = local_executor.run
    calls = []

    def interrupted_after_three(config, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(config.key())
        return real_run(config, **kwargs)

    monkeypatch.setattr(local_executor, "run", interrupted_after_three)
    first = run_sweep(configs, tmp_path, progress=False)
    assert first.interrupted and first.finished == 3
    assert {r.key for r in load_records(tmp_path)} == set(calls)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"key": "torn')  # a record cut short by a hard kill is ignored
    monkeypatch.setattr(local_executor, "run", real_run)
    second = run_sweep(configs, tmp_path, progress=False)
    assert (second.skipped, second.finished, second.interrupted) == (3, 1, False)
    assert {r.key for r in load_records(tmp_path)} == {c.key() for c in configs}
    third = run_sweep(configs, tmp_path, progress=False)
    assert (third.skipped, third.finished) == (4, 0)


class _RecordingExecutor:
    """Another executor (as a distributed backend would be): runs in-process, counts what it ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.progress = False

    def run(self, configs):
        for c in configs:
            self.ran.append(c.key())
            yield run(c)


def test_a_sweep_started_by_one_executor_resumes_with_another(tmp_path: Path, monkeypatch) -> None:
    configs = expand("quadratic", ["sgd"], {"sgd": [0.05, 0.1]}, [0], steps=10, batch_size=1, eval_every=5)
    run_sweep(configs[:1], tmp_path, jobs=1, progress=False)
    other = _RecordingExecutor()
    outcome = run_sweep(configs, tmp_path, executor=other)
    assert outcome.skipped == 1 and other.ran == [configs[1].key()]


def test_report_rebuilds_from_a_folder_and_refuses_other_versions(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    assert (
        main(
            [
                "compare",
                "--task",
                "rosenbrock",
                "--optimizers",
                "adam",
                "lookahead+adam",
                "--steps",
                "60",
                "--budget",
                "2",
                "--jobs",
                "1",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "deterministic task, exact ranking" in printed
    assert "test " not in printed.split("protocol:")[0]  # no test/val columns on a task without data
    assert main(["report", str(out)]) == 0
    assert "lookahead+adam" in capsys.readouterr().out
    assert (out / "trajectories_rosenbrock.png").stat().st_size > 5000
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no results in" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.jsonl").write_text(json.dumps({"version": 1, "key": "abc", "config": {}}) + "\n")
    before = (old / "results.jsonl").read_bytes()
    for argv in (["report", str(old)], ["compare", *TINY, "--out", str(old)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "another optimlab version" in err and "Nothing was changed" in err
    assert (old / "results.jsonl").read_bytes() == before and sorted(p.name for p in old.iterdir()) == ["results.jsonl"]


def test_diverged_runs_are_recorded_and_never_selected(tmp_path: Path) -> None:
    configs = expand("rosenbrock", ["sgd"], {"sgd": [1e-4, 1.0]}, [0], steps=30, batch_size=1, eval_every=10)
    run_sweep(configs, tmp_path, progress=False)
    by_lr = {r.config.lr: r for r in load_records(tmp_path)}
    assert by_lr[1.0].status == "diverged" and by_lr[1.0].steps_done < 30
    assert by_lr[1e-4].status == "ok"
    assert "NaN" not in (tmp_path / "results.jsonl").read_text()  # records stay strict JSON


def test_callbacks_see_every_step_and_store_extras() -> None:
    class DistanceFromInit(Callback):
        def on_run_start(self, ctx: RunContext) -> None:
            self.init = [p.detach().clone() for p in ctx.model.parameters()]
            ctx.extras["distance"] = []

        def after_step(self, ctx: RunContext) -> None:
            d = sum((p.detach() - q).pow(2).sum() for p, q in zip(ctx.model.parameters(), self.init, strict=True))
            ctx.extras["distance"].append(float(d) ** 0.5)

    record = run(RunConfig("mnist1d-mlp", "sgdm", 0.05, steps=5, eval_every=5), callbacks=[DistanceFromInit()])
    assert len(record.extras["distance"]) == 5 and record.extras["distance"][-1] > 0


def test_schedule_free_style_optimizers_evaluate_in_eval_mode(monkeypatch) -> None:
    """An optimizer with train()/eval() (Schedule-Free) is switched to eval() for every evaluation."""
    from optimlab.lab.training import runner

    calls: list[str] = []
    real_build = runner.build_optimizer

    def build(*args, **kwargs):
        opt = real_build(*args, **kwargs)
        opt.eval = lambda: calls.append("eval")
        opt.train = lambda: calls.append("train")
        return opt

    class Spy(Callback):
        def on_eval(self, ctx: RunContext, metrics: dict) -> None:
            calls.append("evaluated")

        def after_step(self, ctx: RunContext) -> None:
            calls.append("step")

    monkeypatch.setattr(runner, "build_optimizer", build)
    run(RunConfig("mnist1d-mlp", "adam", 1e-3, steps=2, eval_every=1), callbacks=[Spy()])
    assert calls == [
        "eval",
        "evaluated",
        "train",
        "step",
        "eval",
        "evaluated",
        "train",
        "step",
        "eval",
        "evaluated",
        "train",
    ]


def test_schedule_and_lr_find_write_into_the_results_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["schedule", "warmup_cosine@warmup=0.1", "--steps", "100"]) == 0
    assert "factor at step 0 = 0" in capsys.readouterr().out
    assert (tmp_path / "optimlab-runs/schedules/schedule_warmup_cosine.png").stat().st_size > 1000
    assert main(["schedule", "cosine", "--steps", "10", "--lr", "0.1"]) == 0
    assert "lr at step 0 = 0.1" in capsys.readouterr().out
    assert main(["lr-find", "--task", "mnist1d-mlp", "--optimizer", "sgdm", "--num-steps", "30"]) == 0
    printed = capsys.readouterr().out
    assert "lowest smoothed loss at lr" in printed and "a tenth of that" in printed
    assert (tmp_path / "optimlab-runs/lr-find/lr_find_mnist1d-mlp_sgdm.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimlab-runs"]  # nothing in the current folder
    config = RunConfig("quadratic", "sgd", 0.05, steps=20, batch_size=1, eval_every=10, schedule="cosine")
    lrs = run(config).history["lr"]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.025) and lrs[-1] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimizers", "adamx"], "unknown optimizer 'adamx'"),
        (["--optimizers", "adam@lrr=1e-3"], "unexpected keyword argument 'lrr'"),
        (["--lr", "0.1", "--tuning", "none"], "--lr conflicts with --tuning none"),
        (["--optimizers", "adam@lr=1e-3", "--lr", "0.1,0.2"], "--lr conflicts with the lr given in optimizer spec"),
        (["--jobs", "0"], "--jobs must be a positive integer"),
        (["--schedule", "nope"], "unknown schedule 'nope'"),
        (["--budget", "0"], "expected at least 1 trial per optimizer"),
        (["--budget", "3", "--tuning", "none"], "--budget conflicts with --tuning none"),
        (["--space", "adam:lr=1e-2..1e-2"], "is empty"),
        (["--space", "adam:lr=1..1e-3"], "is inverted"),
        (["--space", "adam"], "expected OPTIMIZER:NAME=LOW..HIGH"),
        (["--target", "1.5"], "can only reach 0 < target <= 1"),
        (["--seeds", "0"], "a count must be at least 1 (for the single seed 0 write '0,' or '0:1')"),
        (["--seeds", "3:1"], "Invalid --seeds"),
        (["--data-dir", "/no/such/folder"], "is not a folder"),
        (["--task", "rosenbrock", "--seeds", "3"], "deterministic"),
    ],
)
def test_bad_input_stops_with_one_message_before_any_run(argv, message, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["compare", *TINY, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "results.jsonl").exists()  # nothing ran


def test_unknown_task_is_one_line_naming_the_choices(capsys) -> None:
    """``--task`` is open (a user's file or module too), so an unknown name is resolved, then refused in one line
    that lists the built-in tasks and the other forms, with exit status 2."""
    assert main(["compare", "--task", "cifar"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("optimlab: error: unknown task 'cifar'")
    assert "mnist1d-cnn" in err and "path/to/file.py:make_task" in err


def test_an_unwritable_results_folder_is_refused_before_any_run(tmp_path: Path, capsys) -> None:
    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing: use a filesystem that refuses creation
        out = Path("/sys/optimlab-test-results")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked / "out"
    assert main(["compare", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the results folder" in err and "--out" in err


def test_results_of_another_protocol_are_kept_apart(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = [
        "compare",
        "--task",
        "mnist1d-mlp",
        "--optimizers",
        "sgd",
        "--budget",
        "2",
        "--seeds",
        "2",
        "--batch-size",
        "50",
        "--jobs",
        "1",
        "--no-progress",
    ]
    assert main([*base, "--steps", "40"]) == 0
    assert main([*base, "--steps", "30"]) == 0
    printed = capsys.readouterr().out
    folders = sorted(p.name for p in (tmp_path / "optimlab-runs").iterdir())
    assert len(folders) == 2 and all("steps" in f for f in folders)  # default folders differ by protocol
    assert printed.count("note: results go to optimlab-runs/mnist1d-mlp-") == 2
    out = tmp_path / "optimlab-runs" / folders[0]
    assert main([*base, "--steps", "35", "--out", str(out)]) == 2  # an explicit folder of another protocol
    err = capsys.readouterr().err
    assert "another protocol" in err and "steps" in err


def test_seed_syntax() -> None:
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("10:13") == (10, 11, 12)
    assert parse_seeds("0,4,7") == (0, 4, 7)
    assert parse_seeds("7,") == (7,)
    for bad in ("0", "-1", "a", "3:3", "1,1"):
        with pytest.raises(ValueError, match="Invalid --seeds"):
            parse_seeds(bad)
    assert split_specs(["sgdm,adam@lr=1e-3,eps=1e-6", "lookahead+radam"]) == [
        "sgdm",
        "adam@lr=1e-3,eps=1e-6",
        "lookahead+radam",
    ]


def test_help_and_list_are_clean(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "default: the task's) (default" not in text
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "* = in the default comparison" in text and "tuned over lr log-uniform" in text


def test_python_dash_m_optimlab_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "optimlab", "list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mnist1d-cnn" in done.stdout and "lookahead" in done.stdout


def _trajectory_callbacks(config: RunConfig) -> list[Callback]:
    from optimlab.lab.training.runner import TrajectoryCallback

    class Steps(Callback):
        def after_step(self, ctx: RunContext) -> None:
            ctx.extras["steps_seen"] = ctx.step

    return [Steps()] if config.optimizer == "adam" else [TrajectoryCallback()]


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_executor_attaches_callbacks_in_the_process_that_runs(tmp_path: Path, jobs: int) -> None:
    from optimlab.lab.executors.local import LocalExecutor

    lrs = {"sgd": [0.05], "adam": [0.1]}
    configs = expand("quadratic", ["sgd", "adam"], lrs, [0], steps=6, batch_size=1, eval_every=3)
    with LocalExecutor(jobs=jobs, threads=1, progress=False, callbacks=_trajectory_callbacks) as executor:
        run_sweep(configs, tmp_path, executor=executor)
    by_opt = {r.config.optimizer: r for r in load_records(tmp_path)}
    assert by_opt["adam"].extras["steps_seen"] == 6
    assert len(by_opt["sgd"].extras["trajectory"]) == 7


def test_a_plugin_module_adds_subcommands(tmp_path: Path, monkeypatch, capsys) -> None:
    from optimlab.lab.commands import cli

    (tmp_path / "optimlab_test_plugin.py").write_text(
        "from optimlab.lab.commands.command import Command\n"
        "def _configure(p):\n"
        "    p.add_argument('--name', default='world')\n"
        "def _hello(args):\n"
        "    print('hello', args.name)\n"
        "    return 0\n"
        "COMMANDS = {'hello': Command('say hello', _configure, _hello)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = [*cli.COMMAND_MODULES, "optimlab_test_plugin", "optimlab_no_such_plugin"]
    monkeypatch.setattr(cli, "COMMAND_MODULES", modules)
    assert main(["hello", "--name", "lab"]) == 0 and capsys.readouterr().out == "hello lab\n"
    assert main(["list"]) == 0  # the built-in commands are still there
