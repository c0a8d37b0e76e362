"""``optimlab compare --diagnostics`` end to end: the final runs carry issue 10's diagnostics in their records
(tuning trials do not: they only select), and the report gets the panels."""

from __future__ import annotations

import json
from pathlib import Path

from optimlab.lab.commands.cli import main
from optimlab.lab.commands.compare import FinalRunDiagnostics
from optimlab.lab.training.runner import RunConfig

SMALL = ["--task", "mnist1d-mlp", "--steps", "20", "--eval-every", "10", "--seeds", "2", "--budget", "1"]
SMALL += ["--batch-size", "50", "--no-progress", "--jobs", "1"]


def test_compare_with_diagnostics_records_them_and_reports_the_panels(tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert main(["compare", *SMALL, "--optimizers", "adam", "--diagnostics", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    finals = [r for r in records if "test" in r["config"]["splits"]]
    trials = [r for r in records if "test" not in r["config"]["splits"]]
    assert len(finals) == 2 and len(trials) == 1
    for r in finals:
        d = r["extras"]["diagnostics"]
        assert len(d["walk"]["step"]) >= 10 and d["walk"]["dist_init"][-1] > 0
        assert d["sharpness"]["value"] > 0 and d["histograms"]["step"]
    assert not any("diagnostics" in r.get("extras", {}) for r in trials)
    page = (out / "report.html").read_text()
    assert "<h2>Diagnostics</h2>" in page
    for figure in ("diag_walk", "diag_histograms", "diag_sharpness", "diag_interpolation"):
        assert (out / f"{figure}_mnist1d-mlp.png").stat().st_size > 0 and f"{figure}_mnist1d-mlp.png" in page


def test_diagnostics_go_to_final_runs_only() -> None:
    factory = FinalRunDiagnostics()
    assert factory(RunConfig("mnist1d-mlp", "adam", 1e-3, splits=("val",))) == []
    assert [type(c).__name__ for c in factory(RunConfig("mnist1d-mlp", "adam", 1e-3))] == ["DiagnosticsCallback"]


def test_diagnostics_on_a_finished_folder_runs_what_the_panels_need(tmp_path: Path, capsys) -> None:
    """Issue 22: ``--diagnostics`` on a folder finished without it reruns its final runs with the diagnostics
    attached (nothing else), keeps the stored numbers, adds the panels; a second call runs nothing."""
    out = tmp_path / "study"
    assert main(["compare", *SMALL, "--optimizers", "adam", "--out", str(out)]) == 0
    before = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert "<h2>Diagnostics</h2>" not in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["compare", *SMALL, "--optimizers", "adam", "--diagnostics", "--dry-run", "--out", str(out)]) == 0
    assert "diagnostics: 2 finished final run(s) have none; they run again" in capsys.readouterr().out
    assert (out / "results.jsonl").read_text().splitlines() == [json.dumps(r) for r in before]  # dry run: nothing
    assert main(["compare", *SMALL, "--optimizers", "adam", "--diagnostics", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "diagnostics: 2 of 2 run(s) diagnosed" in text and "did not reproduce" not in text
    after = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    added = after[len(before):]
    finals = {r["key"]: r for r in before if "test" in r["config"]["splits"]}
    assert sorted(r["key"] for r in added) == sorted(finals)  # the final runs, once each, no tuning trial
    for r in added:
        old = finals[r["key"]]
        assert r["test"] == old["test"] and r["history"] == old["history"]  # the stored numbers, kept
        d = r["extras"]["diagnostics"]
        assert d["sharpness"]["value"] > 0 and len(d["walk"]["step"]) >= 10 and "rerun_differs" not in d
    page = (out / "report.html").read_text()
    assert "<h2>Diagnostics</h2>" in page and "diag_walk_mnist1d-mlp.png" in page
    assert main(["compare", *SMALL, "--optimizers", "adam", "--diagnostics", "--out", str(out)]) == 0
    assert "diagnos" not in capsys.readouterr().out.split("protocol:")[1].split("\n\n")[0]  # nothing more to run
    assert len((out / "results.jsonl").read_text().splitlines()) == len(after)
