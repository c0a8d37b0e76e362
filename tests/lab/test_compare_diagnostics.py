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
