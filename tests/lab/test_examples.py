"""Every file of ``examples/`` runs the whole protocol (tuning, final seeds, the report) on a tiny budget, as a user
who copies it would run it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from optimlab.lab import compare
from optimlab.lab.catalog import tasks as tasks_module
from optimlab.lab.catalog.tasks import get_task
from optimlab.lab.catalog.user_tasks import TaskError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = dict(steps=20, eval_every=10, budget=1, batch_size=8)


def check_study(out: Path, specs: list[str], metric: str) -> None:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(specs) * 2  # one tuning trial and one final seed each
    assert all(r["status"] == "ok" for r in records)
    finals = [r for r in records if "test" in r["config"]["splits"]]
    assert {r["config"]["optimizer"] for r in finals} == set(specs)
    assert all(f"val_{metric}" in r["history"] for r in finals)
    assert (out / "report.html").exists() and (out / "summary.csv").exists()


@pytest.mark.parametrize(("example", "metric"), [("my_cnn.py", "accuracy"), ("tiny_gpt.py", "perplexity")])
def test_example_runs_under_compare(example: str, metric: str, tmp_path: Path) -> None:
    spec = f"{EXAMPLES / example}:make_task"
    study = compare(spec, ["adam", "sgdm"], tmp_path / "out", seeds=[0], **TINY)
    assert study.task.metric == metric
    check_study(tmp_path / "out", ["adam", "sgdm"], metric)


def test_transformers_example_runs_under_compare(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="examples/hf_gpt2.py needs transformers (pip install transformers)")
    spec = f"{EXAMPLES / 'hf_gpt2.py'}:make_task"
    compare(spec, ["adamw"], tmp_path / "out", seeds=[0], **TINY)
    check_study(tmp_path / "out", ["adamw"], "perplexity")


def test_transformers_example_without_transformers_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    monkeypatch.setattr(tasks_module, "_RESOLVED", {})  # resolved afresh, as in a new process
    with pytest.raises(TaskError, match=r"needs transformers \(pip install transformers\)") as info:
        get_task(f"{EXAMPLES / 'hf_gpt2.py'}:make_task")
    assert "\n" not in str(info.value)
