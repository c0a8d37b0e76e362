"""The Ray backend on a real local cluster (2 CPUs, listening on 127.0.0.1 only): its records equal the local
backend's, a worker killed mid-run costs one retry and no record is lost or doubled, Ctrl-C keeps the finished
runs, and a sweep resumes on the other backend. One cluster serves the whole module (Ray's start-up is the cost
of this file)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (scripts/setup.sh test installs it)")

from optimlab.lab.executors.local import LocalExecutor  # noqa: E402
from optimlab.lab.executors.ray import RayExecutor, RunsFailedError  # noqa: E402
from optimlab.lab.study.sweep import run_sweep  # noqa: E402
from optimlab.lab.training.checkpoint import Checkpointing  # noqa: E402
from optimlab.lab.training.record import RunRecord  # noqa: E402
from optimlab.lab.training.results import RESULTS_FILE, load_records  # noqa: E402
from optimlab.lab.training.runner import Callback, RunConfig, RunContext  # noqa: E402

# what a run measures of its own speed differs between any two runs; everything else must be equal
TIMING = ("train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms", "fwd_bwd_cpu_ms")
TIMING += ("wall_seconds",)


def numbers(record: RunRecord) -> dict[str, Any]:
    """A record without what is measured rather than computed: timings, and the date its environment was taken."""
    r = {k: v for k, v in record.to_json().items() if k not in TIMING}
    r["environment"] = {k: v for k, v in r.get("environment", {}).items() if k != "date"}
    r["history"] = {k: v for k, v in record.history.items() if k not in ("time", "cpu")}
    return r


def configs(steps: int, n: int = 4) -> list[RunConfig]:
    opts = ["sgd", "adam", "rmsprop", "adagrad", "lion", "nadam"][:n]
    return [RunConfig(task="quadratic", optimizer=o, lr=0.05, seed=1, steps=steps, eval_every=steps // 4) for o in opts]


SHORT = configs(60)
LONG = configs(2000, n=2)  # slowed by _slow_steps to at least 2 s a run: long enough to be killed mid-run


class _SlowSteps(Callback):
    """Sleeps 1 ms after every step, so that a LONG run lasts at least 2 s on any machine (a quadratic step takes
    microseconds: unslowed, a fast machine finished the runs before the killer saw one). Changes no number."""

    def after_step(self, ctx: RunContext) -> None:
        time.sleep(0.001)


def _slow_steps(config: RunConfig) -> list[Callback]:
    return [_SlowSteps()]


# the workers cannot import this test module: send the callback's code along with it
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def listening_addresses() -> set[str]:
    """The addresses every process of this test and its children (Ray's) listens on, TCP and UDP."""
    import psutil  # Ray depends on it

    me = psutil.Process()
    found = set()
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr):  # 2: SOCK_DGRAM
                    found.add(conn.laddr.ip)
    return found


@pytest.fixture(scope="module")
def cluster() -> Any:
    log = io.StringIO()
    owner = RayExecutor(num_cpus=2, progress=False, log=log)
    owner.start()
    assert "127.0.0.1" in log.getvalue() and "start-up" in log.getvalue(), log.getvalue()
    assert ray.cluster_resources()["CPU"] == 2
    assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker is up too
    assert listening_addresses() <= {"127.0.0.1", "::ffff:127.0.0.1"}  # GCS, raylet, workers, this driver
    yield owner
    owner.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The local backend's records (in this process, 1 thread: what a Ray task with 1 CPU uses)."""
    out = tmp_path_factory.mktemp("local")
    with LocalExecutor(jobs=1, threads=1, progress=False) as ex:
        run_sweep(SHORT + LONG, out, executor=ex)
    return {r.key: numbers(r) for r in load_records(out)}


def lines(out: Path) -> list[RunRecord]:
    """Every line of the folder's results file (a run written twice is there twice)."""
    return [RunRecord.from_line(s) for s in (out / RESULTS_FILE).read_text().splitlines() if s.strip()]


def test_records_equal_local_and_resume_from_local(
    cluster: Any, reference: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalExecutor(jobs=1, threads=1, progress=False) as ex:  # half the sweep on the local backend
        run_sweep(SHORT[:2], tmp_path, executor=ex)
    ex = RayExecutor(progress=True)  # joins the module's cluster; the bars go to the captured stderr
    outcome = run_sweep(SHORT, tmp_path, executor=ex)
    err = capsys.readouterr().err
    assert "sweep" in err and "4/4" in err and "running" in err and "failed 0" in err, err[-2000:]
    assert (outcome.skipped, outcome.finished, outcome.interrupted) == (2, 2, False)
    got = lines(tmp_path)
    assert len(got) == 4 and len({r.key for r in got}) == 4
    for record in got:
        assert numbers(record) == reference[record.key], record.config
    assert ex.status() == {"running": 0, "failed": 0, "retried": 0}


def _kill_one_run(ex: RayExecutor, killed: list[int], stop: threading.Event) -> None:
    """From the test: SIGKILL the worker process of the first run seen past step 100, once."""
    while not stop.is_set() and not killed:
        for info in ex.running().values():
            if info["attempt"] == 1 and info["step"] >= 100:
                os.kill(info["pid"], signal.SIGKILL)
                killed.append(info["pid"])
                return
        time.sleep(0.05)


def _sweep_killing_one_worker(ex: RayExecutor, out: Path) -> tuple[Any, list[int]]:
    """Run the LONG sweep on ``ex`` while a thread SIGKILLs the worker of one run seen past step 100."""
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_run, args=(ex, killed, stop), daemon=True)
    killer.start()
    try:
        outcome = run_sweep(LONG, out, executor=ex)
    finally:
        stop.set()
        killer.join()
    return outcome, killed


def test_killed_worker_is_retried_once_without_duplicates(cluster: Any, reference: Any, tmp_path: Path) -> None:
    ex = RayExecutor(progress=False, max_retries=2, callbacks=_slow_steps)
    outcome, killed = _sweep_killing_one_worker(ex, tmp_path)
    assert len(killed) == 1, "no run was seen running past step 100"
    assert ex.retried == 1 and not ex.failed
    assert outcome.finished == 2 and not outcome.interrupted
    got = lines(tmp_path)
    assert sorted(r.key for r in got) == sorted(c.key() for c in LONG)  # complete, each once
    for record in got:  # the retried run starts over: the same numbers as an unbroken one
        assert numbers(record) == reference[record.key]


class _ResumableSlowSteps(_SlowSteps):
    resumable = True  # its state: none


def _resumable_slow_steps(config: RunConfig) -> list[Callback]:
    return [_ResumableSlowSteps()]


def test_a_killed_worker_resumes_its_run_from_the_checkpoint(cluster: Any, reference: Any, tmp_path: Path) -> None:
    """Ray's retry of a run whose worker was SIGKILLed at step >= 100 continues from its last checkpoint (every 50
    steps) and gives the unbroken run's record; the checkpoint is gone once the record is written."""
    every = Checkpointing(every_steps=50, every_minutes=None)
    ex = RayExecutor(progress=False, max_retries=2, callbacks=_resumable_slow_steps, checkpointing=every)
    outcome, killed = _sweep_killing_one_worker(ex, tmp_path)
    assert len(killed) == 1 and ex.retried == 1 and outcome.finished == 2
    got = lines(tmp_path)
    assert sorted(r.key for r in got) == sorted(c.key() for c in LONG)
    resumed = [r.environment["resumed_at"] for r in got if "resumed_at" in r.environment]
    assert len(resumed) == 1 and resumed[0][0] >= 100 and resumed[0][0] % 50 == 0, resumed
    for record in got:
        mine, theirs = numbers(record), dict(reference[record.key])
        mine.pop("environment"), theirs.pop("environment")  # the resumed one's says where it resumed
        assert mine == theirs
    assert not any((tmp_path / "checkpoints").iterdir())


def test_no_retries_left_loses_only_that_run(cluster: Any, reference: Any, tmp_path: Path) -> None:
    ex = RayExecutor(progress=False, max_retries=0, callbacks=_slow_steps)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_run, args=(ex, killed, stop), daemon=True)
    killer.start()
    try:
        with pytest.raises(RunsFailedError, match="1 run\\(s\\) failed after their retries"):
            run_sweep(LONG, tmp_path, executor=ex)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1 and len(ex.failed) == 1
    got = lines(tmp_path)
    assert [r.key for r in got] == [c.key() for c in LONG if c.key() != ex.failed[0][0].key()]
    assert numbers(got[0]) == reference[got[0].key]


def test_ctrl_c_keeps_finished_runs_and_local_resumes(cluster: Any, reference: Any, tmp_path: Path, request) -> None:
    # a command's driver has Python's Ctrl-C handler: install it again (at the C level too, which signal.signal
    # does), since something an earlier test in this process loaded may have replaced it underneath Python
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    ex = RayExecutor(progress=False)
    # a run far longer than this test, first in line so that it is in flight when Ctrl-C comes
    huge = RunConfig(task="quadratic", optimizer="sgd", lr=0.01, seed=3, steps=100_000, eval_every=50_000)

    def interrupt_after_first(record: dict[str, Any]) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C of the driver, while runs are in flight

    outcome = run_sweep([huge, *SHORT], tmp_path, executor=ex, on_record=interrupt_after_first)
    assert outcome.interrupted and outcome.finished == 1
    kept = lines(tmp_path)
    assert len(kept) == 1 and numbers(kept[0]) == reference[kept[0].key]
    deadline = time.monotonic() + 15  # the runs in flight were cancelled: the cluster is free long before huge ends
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2
    with LocalExecutor(jobs=1, threads=1, progress=False) as local:
        resumed = run_sweep(SHORT, tmp_path, executor=local)
    assert (resumed.skipped, resumed.finished) == (1, 3)
    got = lines(tmp_path)
    assert sorted(r.key for r in got) == sorted(c.key() for c in SHORT)
    for record in got:
        assert numbers(record) == reference[record.key]


def test_compare_cli_on_ray_equals_local(cluster: Any, tmp_path: Path) -> None:
    from optimlab.lab.commands.cli import main

    args = ["compare", "--task", "quadratic", "--optimizers", "sgd,adam", "--steps", "40", "--budget", "2"]
    args += ["--seeds", "1", "--no-progress", "--jobs", "2", "--backend", "ray", "--out", str(tmp_path / "ray")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    assert "local Ray cluster" in printed.getvalue() and "results.jsonl" in printed.getvalue()
    on_ray = {r.key: r for r in load_records(tmp_path / "ray")}
    assert len(on_ray) >= 4  # tuning trials and the final run of each optimizer
    # the same configs on the local backend, with the threads --jobs 2 gives each local worker (1)
    with LocalExecutor(jobs=1, threads=1, progress=False) as ex:
        run_sweep([r.config for r in on_ray.values()], tmp_path / "local", executor=ex)
    local = {r.key: numbers(r) for r in load_records(tmp_path / "local")}
    assert {k: numbers(r) for k, r in on_ray.items()} == local
