"""A user's own task: the protocol's checks, the ways in (a file, a module, the generic text and array tasks, the
Python API), and one line naming the fix for each mistake, never a traceback."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from optimlab.lab.catalog import tasks as tasks_module
from optimlab.lab.catalog.generic import ArrayFileTask, TextFileTask
from optimlab.lab.catalog.tasks import Task, get_task, task_slug
from optimlab.lab.catalog.user_tasks import TaskError
from optimlab.lab.commands.cli import main
from optimlab.lab.training.runner import RunConfig, run

ROOT = Path(__file__).resolve().parents[2]

# a complete task in a few lines: the docstring's example of optimlab.lab.Task, as a user would copy it
BLOBS = textwrap.dedent('''
    from dataclasses import dataclass, replace

    import torch
    import torch.nn.functional as F
    from torch import nn

    from optimlab.lab import Task


    @dataclass(frozen=True)
    class Data:
        x_train: torch.Tensor
        y_train: torch.Tensor
        x_val: torch.Tensor
        y_val: torch.Tensor
        x_test: torch.Tensor | None
        y_test: torch.Tensor | None


    class Blobs(Task):
        description = "two Gaussian blobs in 8 dimensions, a linear classifier"
        metric, higher_is_better = "accuracy", True
        steps, batch_size, eval_every, target = 200, 32, 50, 0.9

        def load(self, data_dir=None):
            g = torch.Generator().manual_seed(0)  # the same data in every worker
            y = torch.randint(0, 2, (1200,), generator=g)
            x = torch.randn(1200, 8, generator=g) + 1.5 * y[:, None]
            return Data(x[:1000], y[:1000], x[1000:1100], y[1000:1100], x[1100:], y[1100:])

        def hide_test(self, data):
            return replace(data, x_test=None, y_test=None)

        def model(self, data):
            return nn.Linear(8, 2)

        def loss_fn(self, output, target):
            return F.cross_entropy(output, target)

        def batches(self, data, batch_size, generator):
            n = len(data.y_train)
            while True:
                idx = torch.randperm(n, generator=generator)[:batch_size].to(data.x_train.device)
                yield data.x_train[idx], data.y_train[idx]

        @torch.no_grad()
        def evaluate(self, model, data, split):
            x, y = {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
                    "test": (data.x_test, data.y_test)}[split]
            out = model(x)
            return {"loss": F.cross_entropy(out, y).item(), "accuracy": (out.argmax(1) == y).float().mean().item()}


    def make_task():
        return Blobs()
''')


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    return write(tmp_path / "blobs.py", BLOBS)


def test_the_docstring_example_is_the_tested_one() -> None:
    """The example in Task's docstring is BLOBS, line for line (so the documented one is known to run)."""
    after = Task.__doc__.split("--optimizers adam sgdm --seeds 2``)::\n")[1]
    block = []
    for line in after.splitlines():
        if line.strip() and not line.startswith(" " * 8):
            break
        block.append(line)
    assert textwrap.dedent("\n".join(block)).strip() == BLOBS.strip()


def test_a_task_file_resolves_to_an_absolute_name_once_per_process(
    blobs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(blobs.parent)
    task = get_task("blobs.py:make_task")
    assert task.name == f"{blobs}:make_task"
    assert get_task(task.name) is task and get_task("blobs.py:make_task") is task
    record = run(RunConfig(task=task.name, optimizer="adam", lr=0.05, seed=0, steps=40, eval_every=20, batch_size=32))
    assert record.status == "ok" and record.config.task == task.name
    assert record.history["val_accuracy"][-1] > 0.8  # two blobs 1.5 apart in 8 dims: a linear model separates them
    assert record.test_values["accuracy"] > 0.8
    again = run(RunConfig(task=task.name, optimizer="adam", lr=0.05, seed=0, steps=40, eval_every=20, batch_size=32))
    assert again.history["val_loss"] == record.history["val_loss"]


def test_a_module_factory_is_imported_by_name(blobs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(blobs.parent))
    task = get_task("blobs:make_task")
    assert task.name == "blobs:make_task" and task.metric == "accuracy"
    sys.modules.pop("blobs", None)


@pytest.mark.parametrize(
    ("source", "spec", "expected"),
    [
        (None, "missing.py:make_task", "missing.py not found"),
        ("import nonexistent_package_xyz\n", "bad.py:make_task", "failed to import: ModuleNotFoundError"),
        ("def make_task(:\n", "bad.py:make_task", "failed to import: SyntaxError"),
        ("def other():\n    pass\n", "bad.py:make_task", "has no 'make_task'; define a function make_task()"),
        ("make_task = 3\n", "bad.py:make_task", "is a int, not a function"),
        ("def make_task(width):\n    pass\n", "bad.py:make_task",
         "make_task(width) cannot be called with no arguments, as the lab calls it"),
        ("def make_task():\n    raise RuntimeError('no data here')\n", "bad.py:make_task",
         "make_task() failed: RuntimeError: no data here"),
        ("def make_task():\n    return 3\n", "bad.py:make_task",
         "returned a int, not a Task; subclass optimlab.lab.Task"),
        ("from optimlab.lab import Task\nclass T(Task):\n    metric, higher_is_better = 'loss', False\n"
         "    steps = batch_size = eval_every = 1\n    target = None\n    def load(self, d=None): pass\n"
         "def make_task():\n    return T()\n", "bad.py:make_task", "without model, loss_fn, batches, evaluate()"),
        (BLOBS.replace("steps, batch_size, eval_every, target = 200, 32, 50, 0.9",
                       "steps, batch_size, eval_every, target = 200, 0, 50, 0.9"), "bad.py:make_task",
         "whose batch_size is 0; set it to a positive integer"),
        (BLOBS.replace('metric, higher_is_better = "accuracy", True', 'higher_is_better = True'), "bad.py:make_task",
         "without the attribute metric"),
        (None, "bad.py:make-task", "'make-task' is not a Python name"),
    ],
)
def test_a_bad_factory_is_one_line_naming_the_file_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], source: str | None,
    spec: str, expected: str,
) -> None:
    if source is not None:
        write(tmp_path / "bad.py", source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError) as info:
        get_task(spec)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert rc_and_line(["compare", "--task", spec, "--dry-run", "--optimizers", "adam"], capsys) == (2, str(info.value))


def rc_and_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``optimlab ARGV``'s exit status and its one error line (stderr is that line only: no traceback)."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return rc, err.removeprefix("optimlab: error: ")


def test_a_module_that_is_not_there_says_to_set_pythonpath(capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = rc_and_line(["compare", "--task", "no_such_module_xyz:make_task", "--dry-run"], capsys)
    assert rc == 2 and "task module 'no_such_module_xyz' not found" in line and "PYTHONPATH" in line


def test_an_unknown_name_lists_the_ways_in(capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = rc_and_line(["compare", "--task", "mnist1d-cnnn", "--dry-run"], capsys)
    assert rc == 2 and "unknown task 'mnist1d-cnnn'" in line and "path/to/file.py:make_task" in line


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX file owners and modes")
def test_code_others_can_write_is_not_loaded(blobs: Path, tmp_path: Path) -> None:
    blobs.chmod(0o666)
    with pytest.raises(TaskError, match="is writable by others.*chmod go-w.*not loaded"):
        get_task(f"{blobs}:make_task")
    blobs.chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # others can write the folder (no sticky bit): they could replace the file
    inside = write(shared / "blobs.py", BLOBS)
    with pytest.raises(TaskError, match="which others can write"):
        get_task(f"{inside}:make_task")
    shared.chmod(0o1777)  # the sticky bit, as /tmp: others cannot replace what is not theirs
    assert get_task(f"{inside}:make_task").metric == "accuracy"


def test_task_slug_is_a_plain_file_name() -> None:
    assert task_slug("mnist1d-cnn") == "mnist1d-cnn"
    for name in ("/a/b/my model.py:make_task", "text:/x/y/z.txt@level=byte", "arrays:/d/e.npz", "pkg.mod:make"):
        slug = task_slug(name)
        assert "/" not in slug and ":" not in slug and " " not in slug and "@" not in slug
    assert task_slug("/a/b/m.py:make_task").startswith("m-make_task-")
    assert task_slug("/a/b/m.py:make_task") != task_slug("/a/c/m.py:make_task")


# ----------------------------------------------------------------------------------------------------
# The generic tasks


def test_text_task_splits_by_position_and_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog é\n" for i in range(60))
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    task = get_task("text:corpus.txt@block=16")
    assert isinstance(task, TextFileTask) and task.name == f"text:{tmp_path / 'corpus.txt'}@block=16"
    data = task.load()
    assert data.vocab == "".join(sorted(set(text)))
    decoded = "".join(data.vocab[i] for i in torch.cat([data.train, data.val, data.test]).tolist())
    assert decoded == text  # the three splits are the file in order
    assert len(data.train) == int(len(text) * 0.9) and len(data.val) == int(len(text) * 0.95) - len(data.train)
    record = run(RunConfig(task=task.name, optimizer="adam", lr=3e-3, seed=0, steps=30, eval_every=15,
                           batch_size=8))
    assert record.status == "ok" and record.history["val_perplexity"][-1] < record.history["val_perplexity"][0]
    byte = get_task(f"text:{tmp_path / 'corpus.txt'}@level=byte,block=16").load()
    assert len(byte.vocab) == 256 and len(torch.cat([byte.train, byte.val, byte.test])) == len(text.encode())


@pytest.mark.parametrize(
    ("content", "spec_tail", "expected"),
    [
        (b"\xff\xfe not utf-8 " * 200, "", "is not UTF-8"),
        (b"too short", "", "is too short"),
        (b"x" * 5000, "@level=word", "level='word'; expected char or byte"),
        (b"x" * 5000, "@blocks=3", "unknown option(s) blocks"),
        (None, "", "not found"),
    ],
)
def test_text_task_errors(tmp_path: Path, content: bytes | None, spec_tail: str, expected: str) -> None:
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TaskError) as info:
        get_task(f"text:{path}{spec_tail}").load()
    assert expected in str(info.value)


def _blobs_arrays(n: int = 400, image: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6, 6) if image else (n, 10)).astype(np.float32)
    if image:
        x[:, 2, :] += 2.0 * y[:, None]
    else:
        x[:, 0] += 3.0 * y
    return x, y


def test_arrays_task_npz_and_pt_give_the_same_task(tmp_path: Path) -> None:
    x, y = _blobs_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
    a, b = get_task(f"arrays:{tmp_path / 'd.npz'}"), get_task(f"arrays:{tmp_path / 'd.pt'}")
    assert isinstance(a, ArrayFileTask)
    da, db = a.load(), b.load()
    assert (len(da.y_train), len(da.y_val), len(da.y_test)) == (320, 40, 40) and da.num_classes == 3
    assert torch.equal(da.x_train, db.x_train) and torch.equal(da.y_test, db.y_test)
    # the split is a permutation of the rows: every row once
    rows = torch.cat([da.x_train, da.x_val, da.x_test])
    assert sorted(rows[:, 1].tolist()) == sorted(x[:, 1].tolist())
    assert isinstance(a.model(da)[0], torch.nn.Flatten)  # 1-D inputs: the MLP
    record = run(RunConfig(task=a.name, optimizer="adam", lr=1e-2, seed=0, steps=40, eval_every=20, batch_size=32))
    assert record.status == "ok" and record.history["val_accuracy"][-1] > 0.8


def test_arrays_task_picks_a_cnn_for_images_and_takes_a_model_factory(tmp_path: Path) -> None:
    x, y = _blobs_arrays(image=True)
    np.savez(tmp_path / "img.npz", x_train=x[:300], y_train=y[:300], x_val=x[300:350], y_val=y[300:350],
             x_test=x[350:], y_test=y[350:])
    task = get_task(f"arrays:{tmp_path / 'img.npz'}")
    data = task.load()
    assert len(data.y_train) == 300 and torch.equal(data.y_test, torch.from_numpy(y[350:]))  # the file's splits
    model = task.model(data)
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.modules()) and model(data.x_val).shape == (50, 3)
    write(tmp_path / "models.py", "from torch import nn\n\ndef tiny(shape, classes):\n"
          "    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1], classes))\n")
    custom = get_task(f"arrays:{tmp_path / 'img.npz'}@model={tmp_path / 'models.py'}:tiny")
    assert [type(m).__name__ for m in custom.model(custom.load())] == ["Flatten", "Linear"]
    with pytest.raises(TaskError, match=r"has no 'nope'; define a function nope\(input_shape, num_classes\)"):
        get_task(f"arrays:{tmp_path / 'img.npz'}@model={tmp_path / 'models.py'}:nope")
    write(tmp_path / "models2.py", "def one(shape):\n    pass\n")
    with pytest.raises(TaskError, match=r"one\(shape\) cannot be called with \(input_shape, num_classes\)"):
        get_task(f"arrays:{tmp_path / 'img.npz'}@model={tmp_path / 'models2.py'}:one")


def test_arrays_task_errors(tmp_path: Path) -> None:
    x, y = _blobs_arrays()
    np.savez(tmp_path / "keys.npz", inputs=x, labels=y)
    with pytest.raises(TaskError, match=r"has inputs, labels; expected x and y \(name others with"):
        get_task(f"arrays:{tmp_path / 'keys.npz'}").load()
    assert get_task(f"arrays:{tmp_path / 'keys.npz'}@x=inputs,y=labels").load().num_classes == 3
    np.savez(tmp_path / "float_labels.npz", x=x, y=y.astype(np.float32))
    with pytest.raises(TaskError, match="labels must be one integer per input"):
        get_task(f"arrays:{tmp_path / 'float_labels.npz'}").load()
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10, dtype=np.int64))
    with pytest.raises(TaskError, match="without pickle"):
        get_task(f"arrays:{tmp_path / 'pickled.npz'}").load()
    torch.save({"x": torch.zeros(4), "y": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(TaskError, match="weights_only|dict of tensors"):
        get_task(f"arrays:{tmp_path / 'list.pt'}").load()
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(TaskError, match="neither .npz nor .pt"):
        get_task(f"arrays:{tmp_path / 'd.csv'}").load()


# ----------------------------------------------------------------------------------------------------
# The Python API and the command give the same folder


def numbers(out: Path) -> dict[str, dict]:
    timing = ("time", "cpu")
    found = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        found[r["key"]] = {"config": r["config"], "test": r.get("test"),
                           "history": {k: v for k, v in r["history"].items() if k not in timing}}
    return found


def test_python_api_equals_the_command(blobs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optimlab.lab import compare

    spec = f"{blobs}:make_task"
    study = compare(spec, ["adam", "sgd"], tmp_path / "api", seeds=[0, 1], steps=30, eval_every=10, budget=2)
    assert study.task.name == spec and set(study.results) == {"adam", "sgd"}
    assert (tmp_path / "api" / "report.html").exists() and (tmp_path / "api" / "summary.csv").exists()
    rc = main(["compare", "--task", spec, "--optimizers", "adam", "sgd", "--seeds", "0,1", "--steps", "30",
               "--eval-every", "10", "--budget", "2", "--jobs", "1", "--no-progress", "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert rc == 0 and "best" in out  # the headline
    api, cli = numbers(tmp_path / "api"), numbers(tmp_path / "cli")
    assert len(api) == 2 * 2 + 2 * 2 and api == cli


def test_python_api_names_a_factory_by_its_module(blobs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.lab.api import task_name

    monkeypatch.syspath_prepend(str(blobs.parent))
    import blobs as module  # type: ignore[import-not-found]

    assert task_name(module.make_task) == "blobs:make_task"
    with pytest.raises(TypeError, match="cannot be sent to the workers"):
        task_name(module.make_task())
    with pytest.raises(TypeError, match="top level of a module"):
        task_name(lambda: module.make_task())
    sys.modules.pop("blobs", None)


def test_resolved_tasks_are_cached_per_process(blobs: Path) -> None:
    calls = len(tasks_module._RESOLVED)
    get_task(f"{blobs}:make_task")
    get_task(f"{blobs}:make_task")
    assert len(tasks_module._RESOLVED) == calls + 1


def test_benchmark_takes_several_user_tasks_and_profiles_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """"Which optimizer across my models?": two task files of one user, the performance profile over both."""
    write(tmp_path / "linear.py", BLOBS)
    write(tmp_path / "mlp.py", BLOBS.replace("return nn.Linear(8, 2)",
                                             "return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    rc = main(["benchmark", "--quick", "--tasks", "linear.py:make_task", "mlp.py:make_task", "--optimizers", "adam",
               "sgd", "--jobs", "1", "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text[-2000:]
    manifest = json.loads((out / "benchmark.json").read_text())
    assert manifest["tasks"] == [f"{tmp_path / 'linear.py'}:make_task", f"{tmp_path / 'mlp.py'}:make_task"]
    for name in manifest["tasks"]:
        assert (out / task_slug(name) / "report.html").exists()
    assert (out / "profiles.png").exists() and "score" in text
    page = (out / "report.html").read_text()
    assert f"{task_slug(manifest['tasks'][0])}/report.html" in page
