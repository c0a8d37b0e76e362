"""The run record (:class:`optimlab.lab.training.record.RunRecord`): its round trip, every accessor against the numbers
read by hand from the history, old records of the same format, other formats refused, the code's identity, and the
runner's stop at a target (one training loop)."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from optimlab.lab.commands.cli import main
from optimlab.lab.training.code_identity import code_identity, identity_of
from optimlab.lab.training.record import RECORD_VERSION, RecordError, ResultsVersionError, RunRecord
from optimlab.lab.training.results import RESULTS_FILE, append_record, load_records
from optimlab.lab.training.runner import RunConfig, StopAtTarget, run

CONFIG = RunConfig("mnist1d-mlp", "adam", 3e-3, seed=2, steps=30, batch_size=32, eval_every=10)


@pytest.fixture(scope="module")
def record() -> RunRecord:
    return run(CONFIG)


def _by_hand(**fields: Any) -> dict[str, Any]:
    """A record written by hand, as the lab of commit cb9a581 wrote them (format 2, no code identity)."""
    config = {"task": "mnist1d-mlp", "optimizer": "adam", "lr": 0.001, "seed": 0, "steps": 20, "batch_size": 10,
              "eval_every": 10, "schedule": "constant", "hparams": [], "splits": ["train", "val", "test"]}
    rec = {
        "version": 2, "key": RunConfig.from_dict(config).key(), "config": config, "status": "ok",
        "metric": "accuracy", "higher_is_better": True, "target": 0.6,
        "optimizer_settings": {"class": "Adam", "lr": 0.001},
        "history": {"step": [0, 10, 20], "lr": [0.001] * 3, "time": [0.0, 0.1, 0.2], "cpu": [0.0, 0.1, 0.2],
                    "batch_loss": [None, 2.0, 1.5], "train_loss": [2.3, 1.9, 1.6], "train_accuracy": [0.1, 0.4, 0.5],
                    "val_loss": [2.3, 2.0, 1.7], "val_accuracy": [0.1, 0.5, 0.45]},
        "test": {"loss": 1.8, "accuracy": 0.44},
        "steps_done": 20, "train_seconds": 0.2, "train_cpu_seconds": 0.2, "time_per_step": 0.01,
        "step_cpu_ms": 0.1, "step_wall_ms": 0.1, "fwd_bwd_cpu_ms": 0.5, "wall_seconds": 0.5,
        "environment": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0", "optimlab": "0.1.0",
                        "platform": "Linux", "processor": "x86_64", "cpu_count": 2, "torch_threads": 1},
    }
    rec.update(fields)
    return rec


# ----------------------------------------------------------------------------------------------------
# Round trip


def test_a_runs_record_round_trips_exactly(record: RunRecord, tmp_path: Path) -> None:
    data = record.to_json()
    assert RunRecord.from_json(data) == record and RunRecord.from_line(record.to_line()) == record
    assert json.loads(record.to_line()) == data and RunRecord.from_json(data).to_json() == data
    assert pickle.loads(pickle.dumps(record)) == record  # what a worker process sends back
    append_record(tmp_path, record)
    (back,) = load_records(tmp_path)
    assert back == record and (tmp_path / RESULTS_FILE).read_text() == record.to_line() + "\n"
    data["history"]["train_loss"][-1] = 0.0  # a copy: the record does not change
    assert record.to_json() != data and RunRecord.from_json(record.to_json()) == record
    with pytest.raises(AttributeError):
        record.status = "diverged"  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.history["step"] = []  # type: ignore[index]


# ----------------------------------------------------------------------------------------------------
# Every accessor, against the history read by hand


def test_every_accessor_gives_the_numbers_of_the_history(record: RunRecord) -> None:
    d = record.to_json()
    h = d["history"]
    assert (record.key, record.config, record.status, record.ok) == (CONFIG.key(), CONFIG, "ok", True)
    assert (record.metric, record.higher_is_better, record.target) == ("accuracy", True, d["target"])
    assert record.version == RECORD_VERSION and record.steps_done == 30 and h["step"] == [0, 10, 20, 30]
    assert record.metric_key == "val_accuracy"
    for name in ("train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms",
                 "fwd_bwd_cpu_ms", "wall_seconds"):
        assert getattr(record, name) == d[name] and d[name] > 0
    assert dict(record.optimizer_settings) == d["optimizer_settings"] and record.optimizer_settings["lr"] == 3e-3
    assert dict(record.environment) == d["environment"] and dict(record.extras) == {}
    assert {k: list(v) for k, v in record.history.items()} == h
    # final: the last value of a curve; the test split: once, at the end
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "batch_loss", "lr"):
        assert record.final(key) == h[key][-1]
    assert dict(record.test_values) == d["test"] and set(d["test"]) == {"loss", "accuracy"}
    assert record.test("accuracy") == d["test"]["accuracy"] == record.final("test_accuracy")
    assert record.test("loss") == d["test"]["loss"] and record.test("perplexity") is None
    assert record.final("val_perplexity") is None and record.final("test_perplexity") is None
    # at: the first evaluation at or after the step
    assert record.at("val_loss", 0) == h["val_loss"][0] and record.at("val_loss", 10) == h["val_loss"][1]
    assert record.at("val_loss", 11) == h["val_loss"][2] and record.at("val_loss", 30) == h["val_loss"][3]
    assert record.at("val_loss", 31) is None and record.at("val_perplexity", 0) is None
    # steps and CPU seconds to a target: the first evaluation that reaches it
    values = h["val_accuracy"]
    target = sorted(values)[-2]  # reached, not necessarily at the end
    first = next(i for i, v in enumerate(values) if v >= target)
    assert record.steps_to(target) == h["step"][first] == record.steps_to(target, key="val_accuracy")
    assert record.cpu_seconds_to(target) == h["cpu"][first]
    assert record.steps_to(max(values) + 1e-9) == math.inf
    loss_target = sorted(h["val_loss"])[1]
    first = next(i for i, v in enumerate(h["val_loss"]) if v <= loss_target)
    assert record.steps_to(loss_target, key="val_loss", higher_is_better=False) == h["step"][first]
    with pytest.raises(KeyError, match="val_perplexity"):
        record.steps_to(1.0, key="val_perplexity")


def test_missing_and_non_finite_values_and_a_diverged_run() -> None:
    rec = RunRecord.from_json(_by_hand(
        status="diverged",
        history={"step": [0, 10, 13], "cpu": [0.0, 0.1, 0.13], "train_loss": [2.3, 1.9, None],
                 "val_accuracy": [0.1, 0.7, None], "empty": []},
        test={"loss": None, "accuracy": 0.1}, steps_done=13))
    assert not rec.ok and rec.status == "diverged"
    assert rec.final("train_loss") is None  # the last value, not the last finite one
    assert rec.final("val_accuracy") is None and rec.final("empty") is None and rec.final("nothing") is None
    assert rec.at("train_loss", 5) == 1.9 and rec.at("train_loss", 11) is None and rec.at("train_loss", 14) is None
    assert rec.test("loss") is None and rec.test("accuracy") == 0.1  # read whatever the status: the reader decides
    assert rec.steps_to(0.7) == 10 and rec.steps_to(0.8) == math.inf  # a None never reaches the target
    assert rec.cpu_seconds_to(0.7) == 0.1
    no_test = RunRecord.from_json(_by_hand(test=None))
    assert no_test.test_values is None and no_test.test("accuracy") is None and no_test.final("test_loss") is None
    nan = RunRecord.from_line(json.dumps(_by_hand(history={"step": [0, 10], "val_accuracy": [0.1, math.nan]})))
    assert nan.final("val_accuracy") is None and nan.at("val_accuracy", 10) is None  # NaN in a hand-made line
    synthetic = RunRecord.from_json(_by_hand(metric="loss", higher_is_better=False,
                                             history={"step": [0, 5], "train_loss": [3.0, 1.0]}))
    assert synthetic.metric_key == "train_loss" and synthetic.steps_to(2.0) == 5
    unsaid = RunRecord.from_json({k: v for k, v in _by_hand().items() if k != "higher_is_better"})
    assert unsaid.higher_is_better is None and unsaid.steps_to(0.5, higher_is_better=True) == 10
    with pytest.raises(ValueError, match="higher_is_better"):
        unsaid.steps_to(0.5)


# ----------------------------------------------------------------------------------------------------
# Old records load; other formats and non-records are refused


def test_an_old_record_of_format_2_loads_and_writes_back_unchanged(tmp_path: Path) -> None:
    old = _by_hand()
    line = json.dumps(old)
    (tmp_path / RESULTS_FILE).write_text(line + "\n")
    (rec,) = load_records(tmp_path)
    assert rec.code is None and rec.environment["optimlab"] == "0.1.0" and dict(rec.extras) == {}
    assert rec.to_line() == line and rec.to_json() == old
    assert rec.final("val_accuracy") == 0.45 and rec.steps_to(0.5) == 10 and rec.test("accuracy") == 0.44
    lacking = {k: v for k, v in old.items() if k not in ("environment", "optimizer_settings", "target")}
    rec = RunRecord.from_json(lacking)  # fields the validation does not ask for may be absent
    assert rec.to_json() == lacking and dict(rec.environment) == {} and rec.code is None and rec.target is None


def test_a_record_of_another_format_is_refused(tmp_path: Path) -> None:
    for version in (1, 3, None):
        with pytest.raises(ResultsVersionError, match=f"record format {version!r}; this version reads and writes "
                                                      "format 2"):
            RunRecord.from_json(_by_hand(version=version))
    (tmp_path / RESULTS_FILE).write_text(json.dumps(_by_hand()) + "\n" + json.dumps(_by_hand(version=1)) + "\n")
    with pytest.raises(ResultsVersionError, match="holds results of another optimlab version .record format 1"):
        load_records(tmp_path)
    for value, why in (([], "a JSON list, not a record"), (_by_hand(status=None), "no 'status'"),
                       (_by_hand(history={"lr": [1.0]}), "no 'history' with a 'step' list")):
        assert RunRecord.problem(value) == why
        with pytest.raises(RecordError, match=why.replace("(", r"\(")):
            RunRecord.from_json(value)
    assert RunRecord.problem(_by_hand()) is None


def test_report_reads_a_folder_written_before_records_held_the_code(tiny_study: Any, tmp_path: Path) -> None:
    out = tmp_path / "old"
    shutil.copytree(tiny_study[0], out)
    lines = []
    for line in (out / RESULTS_FILE).read_text().splitlines():
        rec = json.loads(line)
        del rec["environment"]["code"]
        lines.append(json.dumps(rec))
    (out / RESULTS_FILE).write_text("\n".join(lines) + "\n")
    assert all(r.code is None for r in load_records(out))
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 0


# ----------------------------------------------------------------------------------------------------
# The code's identity


def test_every_record_names_the_code_that_ran_and_the_same_code_gives_the_same_identity(record: RunRecord) -> None:
    again = run(RunConfig("quadratic", "sgd", 0.1, steps=3, batch_size=1, eval_every=3))
    code = record.code
    assert code is not None and code == again.code == code_identity()
    assert len(code["source_sha256"]) == 64 and int(code["source_sha256"], 16) >= 0 and code["files"] > 50
    # another process running the same sources computes the same identity
    probe = "import json; from optimlab.lab.training.code_identity import code_identity; print(json.dumps(" \
            "code_identity()))"
    src = str(Path(__import__("optimlab").__file__).parents[1])
    other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert json.loads(other.stdout) == code


def _package(root: Path) -> Path:
    pkg = root / "src" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "sub" / "mod.py").write_text("def f():\n    return 2\n" * 50)
    (pkg / "data.txt").write_text("not a source\n")
    (root / "README").write_text("outside the package\n")
    return pkg


def test_the_source_hash_covers_each_py_file_its_path_and_nothing_else(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    first = identity_of(pkg)
    assert first["files"] == 2 and first["git"] is None  # not in a git checkout
    (pkg / "data.txt").write_text("changed\n")
    assert identity_of(pkg)["source_sha256"] == first["source_sha256"]
    (pkg / "sub" / "mod.py").rename(pkg / "sub" / "mod2.py")  # the same bytes under another name
    assert identity_of(pkg)["source_sha256"] != first["source_sha256"]
    (pkg / "sub" / "mod2.py").rename(pkg / "sub" / "mod.py")
    assert identity_of(pkg) == first
    (pkg / "__init__.py").write_text("X = 2\n")
    assert identity_of(pkg)["source_sha256"] != first["source_sha256"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to make the test repository")
def test_the_git_commit_and_dirty_state_are_read_from_the_repository_files(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        done = subprocess.run(["git", "-C", str(tmp_path / "repo"), *args], capture_output=True, text=True,
                              check=True, env=env)
        return done.stdout.strip()

    pkg = _package(tmp_path / "repo")
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert identity_of(pkg)["git"] == {"commit": head, "ref": "refs/heads/main", "dirty": False}
    (pkg / "data.txt").write_text("changed\n")  # not a source
    (tmp_path / "repo" / "README").write_text("changed\n")  # outside the package
    assert identity_of(pkg)["git"]["dirty"] is False
    with open(pkg / "sub" / "mod.py", "a") as f:
        f.write("def g():\n    return 3\n")
    assert identity_of(pkg)["git"]["dirty"] is True
    git("add", ".")
    assert identity_of(pkg)["git"]["dirty"] is True  # staged is not committed
    git("commit", "-q", "-m", "two")
    git("gc", "-q", "--aggressive")  # packed objects and refs, the changed file stored as a delta
    assert not list((tmp_path / "repo" / ".git" / "refs" / "heads").iterdir())
    second = git("rev-parse", "HEAD")
    assert identity_of(pkg)["git"] == {"commit": second, "ref": "refs/heads/main", "dirty": False}
    (pkg / "new.py").write_text("Y = 1\n")  # untracked
    assert identity_of(pkg)["git"]["dirty"] is True
    (pkg / "new.py").unlink()
    (pkg / "__init__.py").unlink()  # removed
    assert identity_of(pkg)["git"]["dirty"] is True
    git("checkout", "-q", "--", ".")
    git("checkout", "-q", "--detach", head)
    assert identity_of(pkg)["git"] == {"commit": head, "ref": None, "dirty": False}


def _varint(n: int) -> bytes:
    """A size in a delta's header: 7 bits a byte, the lowest first."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_a_pack_delta_copies_and_inserts_as_git_writes_them() -> None:
    from optimlab.lab.training.code_identity import _apply_delta

    base = bytes(range(256)) * 300  # 76,800 bytes
    copy_64k = bytes([0x80])  # a copy without offset or size bytes: offset 0, size 0, which means 0x10000
    copy_two = bytes([0x80 | 0x01 | 0x02 | 0x10, 0x00, 0x2C, 0x02])  # offset 0x2C00, size 2
    insert = bytes([3]) + b"xyz"
    want = base[:0x10000] + base[0x2C00:0x2C02] + b"xyz"
    delta = _varint(len(base)) + _varint(len(want)) + copy_64k + copy_two + insert
    assert _apply_delta(base, delta) == want
    with pytest.raises(ValueError):
        _apply_delta(base[:-1], delta)  # a base of another size


# ----------------------------------------------------------------------------------------------------
# Stop at a target: a callback of the one training loop


def test_stop_at_target_ends_the_same_run_at_the_first_evaluation_that_reaches_it() -> None:
    config = RunConfig("mnist1d-mlp", "schedulefree-adamw", 1e-2, seed=1, steps=40, batch_size=32, eval_every=5)
    full = run(config)  # Schedule-Free: evaluated at x (eval()/train() around each evaluation)
    values = full.history["val_accuracy"]
    target = sorted(values[1:])[len(values) // 2]  # reached after step 0, before the end
    stopped = run(config, callbacks=[StopAtTarget(target)])
    step = full.steps_to(target)
    assert 0 < step < 40 and stopped.steps_done == step == stopped.steps_to(target) and stopped.ok
    assert stopped.extras["stop_at_target"] == {"key": "val_accuracy", "target": target, "step": step}
    n = len(stopped.history["step"])
    assert stopped.history["step"][-1] == step
    for key in ("step", "lr", "batch_loss", "train_loss", "val_loss", "val_accuracy"):
        assert stopped.history[key] == full.history[key][:n], key  # the same run, bit for bit, up to the stop
    assert set(stopped.test_values) == {"loss", "accuracy"}  # the test split: where it stopped
    never = run(config, callbacks=[StopAtTarget(1.01)])
    assert never.steps_done == 40 and never.extras["stop_at_target"]["step"] is None
    numbers = ("step", "lr", "batch_loss", "train_loss", "val_loss", "val_accuracy")
    assert all(never.history[k] == full.history[k] for k in numbers) and never.test_values == full.test_values
    loss = run(config, callbacks=[StopAtTarget(full.history["val_loss"][2], key="val_loss", higher_is_better=False)])
    assert loss.steps_done == full.steps_to(full.history["val_loss"][2], key="val_loss", higher_is_better=False)
    with pytest.raises(ValueError, match="Invalid target"):
        StopAtTarget(math.nan)
