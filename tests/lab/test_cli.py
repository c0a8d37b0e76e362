"""The command line's plumbing: every subcommand comes from a module's ``COMMANDS``, building the parser for
``optimlab list`` loads none of the diagnostics or the reproductions, runs that failed for good on Ray end in
one line, and a command that plans its study checks the specs once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from optimlab.lab.commands import cli, tools
from optimlab.lab.commands.cli import main
from optimlab.lab.commands.command import Command
from optimlab.lab.executors.ray import RunsFailedError

SRC = Path(__file__).resolve().parents[2] / "src"


def test_every_subcommand_comes_from_a_command_module_in_order() -> None:
    assert list(cli.commands()) == ["compare", "benchmark", "report", "lr-find", "schedule", "list", "walk",
                                    "interpolate", "landscape", "histograms", "sharpness", "reproduce"]
    usage = cli.build_parser().format_usage()
    assert "{compare,benchmark,report,lr-find,schedule,list,walk,interpolate,landscape,histograms,sharpness," \
           "reproduce}" in usage.replace("\n", "").replace(" ", "")


def test_optimlab_list_loads_no_diagnostics_and_no_reproduction() -> None:
    code = (
        "import sys\n"
        "from optimlab.lab.commands.cli import main\n"
        "assert main(['list']) == 0\n"
        "heavy = ('optimlab.lab.commands.diagnose_handlers', 'optimlab.lab.training.diagnostic_runs',\n"
        "         'optimlab.lab.present.diagnostic_plots', 'optimlab.lab.reproduce', 'matplotlib')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines()[-1] == "LOADED []"


class _LostRuns(RunsFailedError):
    """A subclass, as a backend of its own might raise."""


@pytest.mark.parametrize("error", [RunsFailedError, _LostRuns])
def test_runs_that_failed_for_good_end_in_one_line_and_status_1(
    error: type[RunsFailedError], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimlab.lab.training.runner import RunConfig

    def handler(args: Any) -> int:
        raise error([(RunConfig("quadratic", "sgd", 0.1, steps=4, batch_size=1, eval_every=2), "WorkerCrashedError")])

    monkeypatch.setitem(tools.COMMANDS, "list", Command("list", tools.configure_nothing, handler))
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("optimlab: error: 1 run(s) failed after their retries: sgd lr=0.1 seed=0") and err.count(
        "\n") == 1


def test_compare_checks_each_spec_once_at_every_trial_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimlab.lab.study import tuning

    checked: list[tuple[str, Any]] = []
    check_spec = tuning.check_spec
    monkeypatch.setattr(tuning, "check_spec", lambda spec, hp=None: (checked.append((spec, hp)), check_spec(spec, hp)))
    args = ["compare", "--task", "quadratic", "--optimizers", "sgd", "adam", "--budget", "2", "--steps", "10",
            "--seeds", "1", "--jobs", "1", "--no-progress", "--out", str(tmp_path / "out")]
    assert main(args) == 0, capsys.readouterr().err
    # each spec, then at its 2 trial settings (sgd tunes the lr alone: no other setting; adam also 1 - beta1)
    assert checked[:4] == [("sgd", None)] * 3 + [("adam", None)]
    assert [spec for spec, _ in checked[4:]] == ["adam"] * 2
    assert all(set(hp) == {"one_minus_beta1"} for _, hp in checked[4:])
