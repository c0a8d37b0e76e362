"""``optimlab reproduce``: the framework on a tiny fake experiment (cache, resume after an interrupt, report,
verdict values), the cli, and the claims' verdict rules on hand-made evidence; the cheap claims end to end in
``--quick``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import types
from pathlib import Path
from typing import Any

import pytest

from optimlab.lab.cli import main
from optimlab.lab.reproduce import (
    EXPERIMENTS,
    MIXED,
    NOT_REPRODUCED,
    REPRODUCED,
    Check,
    Verdict,
    available,
    comparison_row,
    interval_row,
    load_experiment,
    make_context,
    run_experiment,
    table,
    verdict_from_checks,
)
from optimlab.lab.reproduce.base import EVIDENCE_FILE, Experiment
from optimlab.lab.reproduce.report import write_report


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["reproduce", *argv])
    return code, out.getvalue()


# ----------------------------------------------------------------------------------------------------
# A fake experiment: the mean of a seed-dependent number, cached per seed


def _fake_module(calls: list[int], interrupt_at: int | None = None) -> types.ModuleType:
    m = types.ModuleType("fake_claim")
    m.NAME, m.TITLE, m.CLAIM, m.CITATION = "fake", "A fake claim", "x is near 1", "Nobody 2026"
    m.HARDWARE = "anything"
    m.PROTOCOL = {"scale": 1.0, "seeds": [0, 1, 2, 3]}
    m.QUICK = {"scale": 2.0}
    m.RULE = "reproduced if the mean x is within 0.5 of 1"

    def piece(seed: int, scale: float) -> dict[str, float]:
        if seed == interrupt_at:
            raise KeyboardInterrupt
        calls.append(seed)
        return {"x": scale * (1 + 0.01 * seed)}

    def run(ctx: Any) -> dict[str, Any]:
        xs = [ctx.cached({"seed": s, "scale": ctx.protocol["scale"]}, lambda s=s: piece(s, ctx.protocol["scale"]))["x"]
              for s in ctx.seeds]
        rows = [interval_row("x", xs)]
        return {"xs": xs, "tables": [table("x over seeds", ["", "n", "mean", "95% t interval"], rows)]}

    def verdict(ev: dict[str, Any]) -> Verdict:
        mean = sum(ev["xs"]) / len(ev["xs"])
        return verdict_from_checks([Check("mean x within 0.5 of 1", abs(mean - 1) <= 0.5, f"mean {mean:.3g}")])

    def figure(ev: dict[str, Any], path: Path) -> None:
        path.write_bytes(b"\x89PNG fake")

    m.run, m.verdict, m.figure = run, verdict, figure
    return m


def test_fake_experiment_runs_caches_and_resumes_after_interrupt(tmp_path: Path) -> None:
    calls: list[int] = []
    exp = Experiment.from_module(_fake_module(calls, interrupt_at=2))
    ctx = make_context(exp, tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, ctx)
    assert calls == [0, 1]  # seeds 0 and 1 finished before the interrupt
    exp = Experiment.from_module(_fake_module(calls))
    ctx = make_context(exp, tmp_path, progress=False)
    outcome = run_experiment(exp, ctx)
    assert calls == [0, 1, 2, 3]  # the rerun computed only what was missing
    assert (ctx.computed, ctx.reused) == (2, 2)
    assert outcome.verdict.value == REPRODUCED
    assert outcome.evidence["xs"] == [1.0, 1.01, 1.02, 1.03]
    stored = json.loads((tmp_path / "fake" / EVIDENCE_FILE).read_text())
    assert stored["verdict"]["value"] == REPRODUCED and stored["seeds"] == [0, 1, 2, 3]
    assert {"optimlab", "torch", "python"} <= set(stored["environment"])
    cached = [json.loads(p.read_text()) for p in (tmp_path / "fake" / "cache").glob("*.json")]
    assert len(cached) == 4 and all({"torch", "python"} <= set(c["environment"]) for c in cached)
    # a third run recomputes nothing and gives the same numbers
    again = run_experiment(exp, make_context(exp, tmp_path, progress=False))
    assert calls == [0, 1, 2, 3] and again.evidence == outcome.evidence


def test_quick_override_seeds_and_report(tmp_path: Path) -> None:
    calls: list[int] = []
    exp = Experiment.from_module(_fake_module(calls))
    assert exp.protocol_for(quick=True)["scale"] == 2.0 and exp.protocol["scale"] == 1.0
    ctx = make_context(exp, tmp_path, quick=True, seeds=(5, 6))
    assert ctx.folder.name == "fake-quick" and ctx.seeds == (5, 6)
    outcome = run_experiment(exp, ctx)
    assert outcome.verdict.value == NOT_REPRODUCED  # mean 2.11: more than 0.5 from 1
    assert "mean 2.11" in outcome.verdict.reason
    page = write_report([outcome], tmp_path, not_built=["other"])
    md = page.with_suffix(".md").read_text()
    first_table = md.split("\n\n")[2]
    assert "| fake | x is near 1 | not reproduced |" in first_table and "| other |" in first_table
    assert exp.rule in md and "After Nobody 2026." in md and "fake-quick/figure.png" in md
    assert "95% t interval" in md and "not reproduced" in page.read_text()


def test_experiment_module_is_checked() -> None:
    m = _fake_module([])
    del m.RULE
    with pytest.raises(ValueError, match="missing RULE"):
        Experiment.from_module(m)
    m = _fake_module([])
    m.QUICK = {"nope": 1}
    with pytest.raises(ValueError, match="unknown keys"):
        Experiment.from_module(m)


def test_verdict_from_checks_gives_each_value() -> None:
    yes, no = Check("a", True, "1"), Check("b", False, "2")
    assert verdict_from_checks([yes, yes]).value == REPRODUCED
    assert verdict_from_checks([no, no]).value == NOT_REPRODUCED
    v = verdict_from_checks([yes, no])
    assert v.value == MIXED and v.reason.startswith("1/2 checks hold") and "✗ b (2)" in v.reason
    with pytest.raises(ValueError):
        Verdict("probably", "")
    with pytest.raises(ValueError):
        verdict_from_checks([])


def test_evidence_rows() -> None:
    row = interval_row("x", [1.0, 2.0, 3.0])
    assert row[:3] == ["x", "3", "2"] and row[3].startswith("[")
    lo, hi = (float(v) for v in row[3].strip("[]").split(","))
    assert math.isclose(hi - 2, 2 - lo, rel_tol=1e-3) and math.isclose(hi - 2, 4.303 / math.sqrt(3), rel_tol=1e-3)
    assert interval_row("y", [1.0])[3] == "–"
    c = comparison_row("a - b", [1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert c[1] == "-1" and float(c[3]) < 0.01


def test_registry_and_cli_errors(tmp_path: Path) -> None:
    assert EXPERIMENTS[0] == "adam-step-bound" and len(EXPERIMENTS) == 13
    assert "adam-step-bound" in available()
    code, text = _cli("--list")
    assert code == 0 and "adam-step-bound:" in text and "rule: reproduced if" in text
    assert main(["reproduce", "no-such-claim"]) == 2
    assert main(["reproduce"]) == 2
    assert main(["reproduce", "adam-step-bound", "--all"]) == 2
    code, text = _cli("adam-step-bound", "--quick", "--dry-run", "--out", str(tmp_path))
    assert code == 0 and "3 runs" in text and not (tmp_path / "adam-step-bound-quick").exists()


# ----------------------------------------------------------------------------------------------------
# Claim 1: adam-step-bound


@pytest.fixture(scope="module")
def step_bound(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("reproduce")
    code, text = _cli("adam-step-bound", "--quick", "--out", str(out), "--no-progress")
    assert code == 0, text
    return out / "adam-step-bound-quick", text


def test_adam_step_bound_quick_end_to_end(step_bound: Any) -> None:
    folder, text = step_bound
    assert "adam-step-bound: REPRODUCED" in text
    ev = json.loads((folder / EVIDENCE_FILE).read_text())
    adam = ev["evidence"]["exact"]["adam"]
    # the closed form with bias correction (v_hat = 1 before the big gradient), eps = 1e-8
    b2, g = 0.999, 1e5
    n = ev["evidence"]["big_step"]
    v_big = b2 * (1 - b2 ** (n - 1)) + (1 - b2) * g * g
    assert math.isclose(adam["big"], g / (math.sqrt(v_big / (1 - b2**n)) + 1e-8), rel_tol=1e-12)
    assert math.isclose(adam["before"], 999 / (1 + 1e-8), rel_tol=1e-12)
    assert (folder / "figure.png").stat().st_size > 10_000 and (folder / "report.md").exists()


def test_adam_step_bound_verdict_rule(step_bound: Any) -> None:
    folder, _ = step_bound
    ev = json.loads((folder / EVIDENCE_FILE).read_text())["evidence"]
    exp = load_experiment("adam-step-bound")
    assert exp.verdict(ev).value == REPRODUCED
    off = copy.deepcopy(ev)
    off["exact"]["adam"]["big"] *= 1.02  # 2% off the lecture and off the closed form
    v = exp.verdict(off)
    assert v.value == MIXED and "✗ Adam: the informative step" in v.reason
    bad = copy.deepcopy(ev)
    for k in ("before", "big", "next"):
        bad["exact"]["adam"][k] *= 3
    bad["exact"]["adabound"]["next"] *= 1 + 1e-6
    assert exp.verdict(bad).value == NOT_REPRODUCED
