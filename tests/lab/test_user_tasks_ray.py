"""A user's task file, written as the docs say, under the whole protocol (tuning, seeds, the report and its
headline) on the local pool and on a local Ray cluster (127.0.0.1 only): the same records on both. The Ray workers
import the task file themselves, by the absolute path the protocol stores."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (scripts/setup.sh test installs it)")

from test_user_tasks import BLOBS, write  # noqa: E402

from optimlab.lab.catalog.tasks import get_task  # noqa: E402
from optimlab.lab.executors.local import LocalExecutor  # noqa: E402
from optimlab.lab.executors.ray import RayExecutor  # noqa: E402
from optimlab.lab.present.report import build_report  # noqa: E402
from optimlab.lab.study.protocol import default_protocol  # noqa: E402
from optimlab.lab.study.tuning import run_study  # noqa: E402

TIMING = ("time", "cpu")
MEASURED = ("train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms", "fwd_bwd_cpu_ms",
            "wall_seconds", "environment")


def numbers(out: Path) -> dict[str, dict[str, Any]]:
    """Every record of the folder without what a run measures of its own speed or machine."""
    found = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        r = {k: v for k, v in r.items() if k not in MEASURED}
        r["history"] = {k: v for k, v in r["history"].items() if k not in TIMING}
        found[r["key"]] = r
    return found


def test_a_users_task_file_gives_the_same_records_on_the_local_pool_and_on_ray(tmp_path: Path) -> None:
    task_file = write(tmp_path / "my_task.py", BLOBS)
    task = get_task(f"{task_file}:make_task")
    protocol = default_protocol(task, steps=30, eval_every=10, budget=2, seeds=(0, 1))
    specs = ["adam", "sgdm"]
    with LocalExecutor(jobs=2, threads=1, progress=False) as ex:
        local = run_study(protocol, specs, tmp_path / "local", executor=ex)
    owner = RayExecutor(num_cpus=2, progress=False, log=io.StringIO())
    owner.start()
    try:
        remote = run_study(protocol, specs, tmp_path / "ray", executor=RayExecutor(progress=False))
    finally:
        owner.close()
    assert not local.interrupted and not remote.interrupted
    a, b = numbers(tmp_path / "local"), numbers(tmp_path / "ray")
    assert len(a) == 2 * 2 + 2 * 2 and a == b
    assert {r["config"]["task"] for r in b.values()} == {f"{task_file}:make_task"}
    _, summary = build_report(tmp_path / "ray")
    assert (tmp_path / "ray" / "report.html").exists()
    assert {row.spec for row in summary.rows} == set(specs)
