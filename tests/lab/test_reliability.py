"""Issue 19, the lab's part ("never silently wrong"): every mistake a user can fix ends in one line and no
traceback, and nothing the lab reads or writes is lost or misread silently.

M1 an unreachable or failing tracker; M2 a full disk; M3 a corrupt cached piece of ``reproduce``; M4 lines of
``results.jsonl`` that are not records, a bad ``protocol.json``; M5 ``--out`` at the user's own folder; and the
lab's LOW items (schedule specs, ``schedule --out DIR``, tracker paths that are files, an unused ``--space``,
backend flags under ``--dry-run``, concurrent ``protocol.json`` updates, ``adamw@wd=``, doubled spec prefixes,
argparse's usage screens, folders left by ``--dry-run``). Tiny runs: the quadratic task, 20 steps, one seed.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from optimlab.lab.commands.cli import main
from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.study import folder as folder_module
from optimlab.lab.study.protocol import default_protocol as make_protocol
from optimlab.lab.study.sweep import run_sweep
from optimlab.lab.training import results as results_module
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import LabWarning, load_records
from optimlab.lab.training.runner import RunConfig

QUICK = ["--task", "quadratic", "--steps", "20", "--seeds", "1", "--tuning", "none", "--jobs", "1", "--no-progress"]


def compare(out: Path, *extra: str, optimizers: str = "sgd,adam") -> int:
    return main(["compare", *QUICK, "--optimizers", optimizers, "--out", str(out), *extra])


def one_error_line(err: str) -> str:
    """The stderr of a refused command: exactly one ``optimlab...error:`` line and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors == [lines[-1]], err
    return errors[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-run study (sgd, adam); tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("study") / "out"
    assert compare(out) == 0
    return out


def copy_of(study: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(study, tmp_path / "copy"))


# ----------------------------------------------------------------------------------------------------
# M1: trackers


def test_an_unreachable_mlflow_server_is_one_line_before_any_run(tmp_path: Path, capsys) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    out = tmp_path / "out"
    start = time.perf_counter()
    assert compare(out, "--mlflow", "http://127.0.0.1:9") == 2  # loopback, a port nothing listens on
    assert time.perf_counter() - start < 60  # not MLflow's 4 minutes of retries
    line = one_error_line(capsys.readouterr().err)
    assert "http://127.0.0.1:9" in line and "nothing has run" in line
    assert not (out / "results.jsonl").exists()


class FailingTracker:
    """Logs ``ok`` records, then raises (a server that went away mid-sweep)."""

    def __init__(self, ok: int = 0) -> None:
        self.ok, self.logged = ok, []

    def log(self, record: RunRecord) -> None:
        if len(self.logged) >= self.ok:
            raise ConnectionError("the tracking server went away")
        self.logged.append(record.key)

    def close(self) -> None:
        pass


def test_a_tracker_failing_mid_sweep_warns_once_and_the_sweep_goes_on(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimlab.lab.executors import backends

    tracker = FailingTracker(ok=1)
    monkeypatch.setattr(backends, "trackers_from_args", lambda args: [tracker])
    out = tmp_path / "out"
    assert compare(out, optimizers="sgd,adam,nadam") == 0
    err = capsys.readouterr().err
    assert err.count("optimlab: warning: logging to FailingTracker failed") == 1 and "went away" in err
    assert len(tracker.logged) == 1 and len(load_records(out)) == 3  # every run done and kept


def test_with_two_jobs_a_failing_tracker_loses_no_run_in_flight(tmp_path: Path) -> None:
    configs = [RunConfig("quadratic", opt, 0.01, steps=20, batch_size=1, eval_every=20) for opt in ("sgd", "adam")]
    configs += [RunConfig("quadratic", "sgd", lr, steps=20, batch_size=1, eval_every=20) for lr in (0.02, 0.03)]
    with LocalExecutor(jobs=2, progress=False) as executor, pytest.warns(LabWarning, match="went away"):
        outcome = run_sweep(configs, tmp_path, executor=executor, trackers=[FailingTracker()])
    assert outcome.finished == 4 and not outcome.interrupted
    assert {r.key for r in load_records(tmp_path)} == {c.key() for c in configs}


# ----------------------------------------------------------------------------------------------------
# M2: a full disk


class FullDisk:
    """``os`` for the sweep module, whose ``write`` fails with ENOSPC (after writing part of the line) from
    the ``fail_from``-th call on."""

    def __init__(self, fail_from: int) -> None:
        self.fail_from, self.calls = fail_from, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self.calls += 1
        if self.calls >= self.fail_from:
            os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


def test_a_full_disk_is_one_line_keeps_finished_runs_and_the_same_command_resumes(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(results_module, "os", FullDisk(fail_from=2))
    assert compare(out) != 0
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(out) in line and "same command" in line
    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 1  # the finished run, and no torn line
    monkeypatch.undo()
    assert compare(out) == 0
    printed = capsys.readouterr()
    assert "still to do: 1 runs" in printed.out and "warning" not in printed.err
    assert len(load_records(out)) == 2


def test_a_full_disk_while_writing_a_figure_names_the_folder(
    study: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    out = copy_of(study, tmp_path)

    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write fails: no file name

    monkeypatch.setattr(Figure, "savefig", full)
    assert main(["report", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(out) in line


def test_main_says_an_os_error_in_one_line(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.lab.commands import tools
    from optimlab.lab.commands.command import Command

    def handler(args: Any) -> int:
        raise IsADirectoryError(errno.EISDIR, "Is a directory", "some/where")

    monkeypatch.setitem(tools.COMMANDS, "list", Command("list", tools.configure_nothing, handler))
    assert main(["list"]) == 2
    assert "Is a directory" in one_error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------------------------------
# M3: reproduce's cached pieces


def context(folder: Path) -> Any:
    from optimlab.lab.reproduce.base import Context

    return Context("claim", {}, (0,), folder, progress=False)


@pytest.mark.parametrize("damage", ["", '{"version": 1, "key"', "[1, 2]", "\udcff"])
def test_an_empty_or_corrupt_cached_piece_is_computed_again_with_a_warning(tmp_path: Path, damage: str) -> None:
    calls = []

    def piece() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    assert context(tmp_path).cached({"k": 1}, piece) == {"answer": 42}
    (path,) = (tmp_path / "cache").glob("*.json")
    path.write_bytes(damage.encode("utf-8", "surrogateescape"))  # a power loss; or a bad byte
    ctx = context(tmp_path)
    with pytest.warns(LabWarning, match=path.name):
        assert ctx.cached({"k": 1}, piece) == {"answer": 42}
    assert len(calls) == 2 and ctx.computed == 1
    assert context(tmp_path).cached({"k": 1}, piece) == {"answer": 42} and len(calls) == 2  # written again


def test_cached_pieces_are_fsynced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).suffix}"), replace(a, b))[1])
    context(tmp_path).cached({"k": 2}, lambda: 1)
    assert events == ["fsync", "replace .json"]


# ----------------------------------------------------------------------------------------------------
# M4 and L10: lines of results.jsonl that are not records; a bad protocol.json


def _edit_history(line: str) -> str:
    rec = json.loads(line)
    rec["history"]["train_loss"][-1] = "x"
    return json.dumps(rec)


def _drop(key: str) -> Any:
    def edit(line: str) -> str:
        rec = json.loads(line)
        del rec[key]
        return json.dumps(rec)

    return edit


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda line: "[]", "a JSON list"),
        (lambda line: "1", "a JSON int"),
        (lambda line: '{"version": 2}', "no 'key'"),
        (_drop("key"), "no 'key'"),
        (_drop("history"), "no 'history'"),
        (_edit_history, "history 'train_loss' is not a list of numbers"),
        (lambda line: line[: len(line) // 2], "not JSON"),  # a garbled line mid-file (L10: said now)
    ],
)
def test_a_line_that_is_not_a_record_is_skipped_with_a_warning_naming_it(
    study: Path, tmp_path: Path, capsys, edit: Any, why: str
) -> None:
    out = copy_of(study, tmp_path)
    first, second = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(f"{edit(first)}\n{second}\n")
    with pytest.warns(LabWarning, match="line 1: " + why.replace("(", r"\(")):
        assert [r.key for r in load_records(out)] == [json.loads(second)["key"]]
    assert main(["report", str(out)]) == 0  # the report is built, and says what it skipped
    printed = capsys.readouterr()
    assert f"optimlab: warning: {out / 'results.jsonl'}: 1 line(s)" in printed.err and "line 1:" in printed.err
    assert "incomplete 0/1" in printed.out
    assert compare(out) == 0  # resume runs the skipped run again
    with pytest.warns(LabWarning, match="line 1: "):  # the line is left as it was, and said again
        assert len(load_records(out)) == 2


def test_a_non_utf8_line_is_skipped_naming_the_file(study: Path, tmp_path: Path, capsys) -> None:
    out = copy_of(study, tmp_path)
    with open(out / "results.jsonl", "ab") as f:
        f.write(b"\xff\xfe\x00garbage\n")
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "results.jsonl: 1 line(s)" in err and "line 3: not UTF-8 text" in err and "codec" not in err


@pytest.mark.parametrize(
    ("manifest", "message"),
    [("[]", "not a protocol of optimlab (a JSON list)"), ('{"format": 1, "record_version": 2}', "no 'protocol'")],
)
def test_a_bad_protocol_json_is_one_line_naming_it(
    study: Path, tmp_path: Path, capsys, manifest: str, message: str
) -> None:
    out = copy_of(study, tmp_path)
    (out / "protocol.json").write_text(manifest)
    for argv in (["report", str(out)], ["compare", *QUICK, "--optimizers", "sgd", "--out", str(out)]):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert message in line and str(out / "protocol.json") in line


def test_a_bad_benchmark_json_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "benchmark.json").write_text("")
    argv = ["benchmark", "--tasks", "quadratic", "--quick", "--seeds", "1", "--dry-run", "--out", str(tmp_path)]
    for command in (argv, ["report", str(tmp_path)]):
        assert main(command) == 2
        assert str(tmp_path / "benchmark.json") in one_error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------------------------------
# M5: --out at a folder of the user's


def test_out_at_a_folder_that_is_not_a_results_folder_is_refused(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mydocs"
    mine.mkdir()
    (mine / "summary.csv").write_text("my precious table\n")
    (mine / "report.html").write_text("<p>my page</p>\n")
    for argv in (
        ["compare", *QUICK, "--optimizers", "sgd", "--out", str(mine)],
        ["compare", *QUICK, "--optimizers", "sgd", "--out", str(mine), "--dry-run"],
        ["benchmark", "--tasks", "quadratic", "--quick", "--seeds", "1", "--out", str(mine), "--dry-run"],
    ):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(mine) in line and "not a" in line
    assert sorted(p.name for p in mine.iterdir()) == ["report.html", "summary.csv"]
    assert (mine / "summary.csv").read_text() == "my precious table\n"


def test_out_at_an_empty_folder_or_one_with_hidden_files_only_is_used(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".keep").write_text("")
    assert compare(empty, optimizers="sgd") == 0
    assert compare(empty, optimizers="sgd,adam") == 0  # and then it is ours: resume, another optimizer
    assert len(load_records(empty)) == 2


# ----------------------------------------------------------------------------------------------------
# LOW


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("cosine@foo=1", "schedule 'cosine' has no argument 'foo'; its arguments: end_factor"),
        ("warmup_cosine@warmup='x'", "warmup must be a number, got 'x'"),
        ("warmup_cosine@warmup=abc", "value of 'warmup' is not a literal"),
        ("one_cycle@pct=0.3", "schedule 'one_cycle' has no argument 'pct'"),
        ("sgdr", "missing a required argument: 'period'"),
    ],
)
def test_a_bad_schedule_spec_is_one_line_naming_it_as_a_schedule_even_under_dry_run(
    tmp_path: Path, capsys, schedule: str, message: str
) -> None:
    out = tmp_path / "out"
    assert compare(out, "--schedule", schedule, "--dry-run", optimizers="sgd") == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"optimlab: error: schedule spec {schedule!r}: ") and message in line
    assert "optimizer spec" not in line and not out.exists()
    assert main(["schedule", schedule, "--out", str(tmp_path / "s.png")]) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_good_schedule_specs_still_work(tmp_path: Path) -> None:
    for schedule in ("one_cycle@pct_start=0.2", "step@milestones=(0.3,0.6)", "wsd@warmup=0.1", "sgdr@period=5"):
        assert compare(tmp_path / "out", "--schedule", schedule, "--dry-run", optimizers="sgd") == 0


def test_schedule_out_a_folder_writes_the_plot_in_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("plots").mkdir()
    for out in ("plots", "new-plots"):  # an existing folder; a path without an extension
        assert main(["schedule", "cosine", "--out", out]) == 0
        assert f"Plot: {Path(out) / 'schedule_cosine.png'}" in capsys.readouterr().out
        assert (Path(out) / "schedule_cosine.png").is_file() and not Path(out + ".png").exists()


def test_tracker_paths_that_are_files_are_one_line(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    for flags in (["--tensorboard", str(afile)], ["--mlflow", f"file:{afile}"]):
        assert compare(tmp_path / "out", *flags) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(afile) in line and "is a file" in line
        assert compare(tmp_path / "out", *flags, "--dry-run") == 2  # checked under --dry-run too
        one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_space_for_an_optimizer_not_compared_is_refused(tmp_path: Path, capsys) -> None:
    argv = ["compare", "--task", "quadratic", "--steps", "20", "--seeds", "1", "--tuning", "grid", "--dry-run"]
    assert main([*argv, "--optimizers", "adam", "--space", "sgd:lr=1e-3..1", "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--space for 'sgd'" in line and "adam" in line
    assert main([*argv, "--optimizers", "adam@eps=1e-6", "--space", "adam:lr=1e-3..1", "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--address", "auto"], "--address is for --backend ray"),
        (["--backend", "ray", "--cpus-per-run=-1"], "Invalid --cpus-per-run: -1"),
        (["--backend", "ray", "--max-retries=-1"], "Invalid --max-retries: -1"),
    ],
)
def test_dry_run_checks_the_backend_flags(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    assert compare(tmp_path / "out", *flags, "--dry-run") == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_two_commands_registering_optimizers_at_once_keep_both(tmp_path: Path, monkeypatch) -> None:
    protocol = make_protocol("quadratic", steps=20, seeds=(0,), tuning="none")
    check = folder_module.check_folder

    def slow_check(*args: Any, **kwargs: Any) -> list[str]:  # widens the read-modify-write window
        registered = check(*args, **kwargs)
        time.sleep(0.3)
        return registered

    monkeypatch.setattr(folder_module, "check_folder", slow_check)
    threads = [
        threading.Thread(target=folder_module.register_optimizers, args=(tmp_path, protocol, [spec]))
        for spec in ("sgd", "adam")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manifest = json.loads((tmp_path / "protocol.json").read_text())
    assert sorted(manifest["optimizers"]) == ["adam", "sgd"]


def test_the_summary_tables_abbreviation_is_refused_naming_the_argument(tmp_path: Path, capsys) -> None:
    assert compare(tmp_path / "out", "--dry-run", optimizers="adamw@wd=0.1") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'wd' is the summary table's short name" in line and "adamw@weight_decay=0.1" in line


@pytest.mark.parametrize("spec", ["adam@lr=abc", "adm", "lookahed+adam", "adam@lr"])
def test_spec_errors_name_the_spec_once(tmp_path: Path, capsys, spec: str) -> None:
    from optimlab.lab.catalog.presets import check_spec

    assert compare(tmp_path / "out", "--dry-run", optimizers=spec) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.count(f"spec {spec!r}") == 1, line
    with pytest.raises(ValueError) as e:  # the library's check too
        check_spec(spec)
    assert str(e.value).count(f"spec {spec!r}") == 1, str(e.value)


@pytest.mark.parametrize("argv", [["--steps", "-1"], ["--steps", "x"]])  # --task: test_compare.py
def test_argument_errors_are_one_line_not_the_usage(capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["compare", *argv])
    assert e.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("optimlab compare: error: argument") and "optimlab compare --help" in line


def test_dry_run_creates_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "deep" / "out"
    assert compare(out, "--dry-run") == 0
    bench = tmp_path / "bench"
    argv = ["benchmark", "--tasks", "quadratic", "--quick", "--seeds", "1", "--jobs", "1", "--dry-run"]
    assert main([*argv, "--out", str(bench)]) == 0
    assert list(tmp_path.iterdir()) == []


def test_threads_checking_one_folder_at_once_do_not_trip_each_other(tmp_path: Path) -> None:
    """check_writable's probe file has a unique name: threads of one process share a pid, and a probe named after
    it was removed by one thread under another (892 of 2400 checks failed with 8 threads before the fix)."""
    from optimlab.lab.training.results import check_writable

    errors: list[Exception] = []

    def work() -> None:
        for _ in range(100):
            try:
                check_writable(tmp_path)
            except Exception as e:  # noqa: BLE001 - any failure is the defect
                errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == []
