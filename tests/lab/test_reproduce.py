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

from optimlab.lab.commands.cli import main
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
    plan,
    run_experiment,
    table,
    verdict_from_checks,
)
from optimlab.lab.reproduce.base import EVIDENCE_FILE, Experiment, estimate
from optimlab.lab.reproduce.report import claims_table, write_report


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
    assert (ctx.computed, ctx.reused) == (2, 2) == (outcome.computed, outcome.reused)
    assert claims_table([outcome])[1][0][3].endswith("(2 pieces computed, 2 found done in the results folder)")
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
    assert (again.computed, again.reused) == (0, 4)


def test_training_pieces_are_counted_computed_then_reused(tmp_path: Path) -> None:
    """ctx.sweep and ctx.tune count their runs: all computed on the first call, all reused on the next."""
    from optimlab.lab.study.protocol import Protocol
    from optimlab.lab.training.runner import RunConfig

    exp = Experiment.from_module(_fake_module([]))
    runs = [RunConfig(task="quadratic", optimizer=o, lr=0.05, seed=0, steps=5, eval_every=5) for o in ("sgd", "adam")]
    grid = Protocol("quadratic", 5, 5, 5, tuning="grid", budget=2, lrs=(1e-2, 1e-1), seeds=(0,))
    for computed, reused in ((2 + 3, 0), (0, 2 + 3)):  # 2 sweep runs; 2 trials + 1 final
        ctx = make_context(exp, tmp_path, progress=False)
        ctx.sweep(runs)
        ctx.tune("quadratic", ["sgd"], grid, "study")
        assert (ctx.computed, ctx.reused) == (computed, reused)


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
    assert "(2 pieces computed)" in first_table and "reused" not in first_table  # a fresh run reuses nothing
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
    m = _fake_module([])
    m.cost = lambda protocol: (4, 10.0)  # seconds measured on some machine: the old API, refused, not ignored
    with pytest.raises(ValueError, match=r"cost\(\) is no longer read; declare work"):
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


def test_dry_run_cost_counts_the_seeds_asked_for(tmp_path: Path) -> None:
    """--seeds changes the plan's cost as it changes the plan: lookahead's 70 runs are 14 per seed."""
    for seeds, runs in ((None, 70), ("10", 140), ("0,1", 28)):
        code, text = _cli("lookahead", "--dry-run", "--out", str(tmp_path), *(["--seeds", seeds] if seeds else []))
        assert code == 0 and f"lookahead: {runs} runs" in text and "on this machine with --jobs 1" in text, text
        assert "ms/step on mnist1d-mlp (batch 100" in text  # the probe's measurement is shown
    exp = load_experiment("lookahead")
    assert plan(exp) == (70, 70 * 1500) and plan(exp, seeds=range(10)) == (140, 140 * 1500)
    e5, e10 = estimate(exp), estimate(exp, seeds=range(10))
    e2, e4 = estimate(exp, seeds=range(2)), estimate(exp, seeds=range(4))
    assert (e5.runs, e10.runs) == (70, 140) and e10.seconds > e5.seconds > e4.seconds > e2.seconds
    # the probes are measured once in a process, so the seconds grow linearly with the seeds
    assert e4.seconds - e2.seconds == pytest.approx((e10.seconds - e4.seconds) / 3)


# the runs of every claim at the quick size (large-batch: 16 asked for, 4 of them the tuning's, found again)
QUICK_RUNS = {"adam-step-bound": 3, "amsgrad-counterexample": 4, "adam-vs-sgdm": 16, "swats": 18, "radam-warmup": 8,
              "lookahead": 16, "large-batch": 12, "schedules": 8, "walk-with-sgd": 6, "gradient-noise": 6,
              "landscape": 6, "helps-optimization": 56, "next-adam": 45}


def test_every_claim_declares_its_work_and_the_model_prices_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every registered claim's work is computable from its protocol at the quick size without running anything
    (no data loaded: the probes are stand-ins here), and priced positive; it holds no seconds of its own."""
    from optimlab.lab.study import cost
    from optimlab.lab.training.runner import RunConfig

    probed: list[str] = []

    def probe(task: str, batch_size: int, *, threads: int, data_dir: str | None = None, steps: int = 20) -> Any:
        probed.append(task)
        return cost.Probe(task, batch_size, threads, 0.01, {"train": 0.1, "val": 0.1, "test": 0.1}, 1e-5)

    def probe_optimizer(optimizer: str, numel: int = 1, *, threads: int, steps: int = 200) -> Any:
        return cost.StepProbe(optimizer, numel, threads, 1e-5)

    monkeypatch.setattr(cost, "probe", probe)
    monkeypatch.setattr(cost, "probe_optimizer", probe_optimizer)
    assert set(available()) == set(QUICK_RUNS)
    for name in available():
        exp = load_experiment(name)
        assert exp.work is not None and not hasattr(exp.module, "HARDWARE") and not hasattr(exp.module, "cost"), name
        work = exp.work(exp.protocol_for(quick=True))
        assert all(isinstance(w, (RunConfig, cost.Training, cost.Steps)) for w in work), name
        runs, steps = plan(exp, quick=True)
        assert (runs, len(work) <= runs, steps > 0) == (QUICK_RUNS[name], True, True), name
        est = estimate(exp, quick=True, jobs=2)
        assert est.runs == runs and est.train_steps == steps and est.seconds > 0, name
        assert "measured" in est.probe and est.ms_per_step > 0, name
    assert {"fmnist-resnet", "shakespeare-char", "mnist1d-cnn", "mnist1d-deep-mlp"} <= set(probed)


def test_a_claim_runs_the_configs_it_declares(tmp_path: Path) -> None:
    """gradient-noise on a tiny protocol: the runs ``run`` does are the RunConfigs ``work`` declares, key by key."""
    from optimlab.lab.study.cost import count_work
    from optimlab.lab.training.results import load_records

    exp = load_experiment("gradient-noise")
    ctx = make_context(exp, tmp_path, quick=True, progress=False)
    ctx.protocol.update(etas=[0.0, 1.0], steps=12, eval_every=6, seeds=[0])
    ctx.seeds = (0,)
    run_experiment(exp, ctx)
    declared = exp.work(ctx.protocol)
    assert count_work(declared) == (ctx.computed, 2 * 12) == (2, 24)
    assert sorted(r.key for r in load_records(ctx.folder / "runs")) == sorted(c.key() for c in declared)


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


# ----------------------------------------------------------------------------------------------------
# Claim 2: amsgrad-counterexample (the verdict rule on hand-made evidence; the quick run takes ~15 CPU s)


def _counterexample_evidence(adam_x: float, ams_x: float, adam_r: float, ams_r: float) -> dict[str, Any]:
    run = {"adam": {"final_x": [adam_x] * 3, "final_avg_regret": [adam_r] * 3},
           "amsgrad": {"final_x": [ams_x] * 3, "final_avg_regret": [ams_r] * 3}}
    return {"tolerance": 0.05, "runs": {"section3": copy.deepcopy(run), "experiment": copy.deepcopy(run)}}


def test_amsgrad_counterexample_verdict_rule() -> None:
    exp = load_experiment("amsgrad-counterexample")
    assert exp.verdict(_counterexample_evidence(0.99, -0.98, 0.6, 0.02)).value == REPRODUCED
    v = exp.verdict(_counterexample_evidence(0.99, -0.90, 0.6, 0.02))  # AMSGrad not yet at -1
    assert v.value == MIXED and "✗ section3: AMSGrad ends within 0.05 of -1" in v.reason
    assert exp.verdict(_counterexample_evidence(-0.99, 0.99, 0.01, 0.6)).value == NOT_REPRODUCED


def test_amsgrad_counterexample_simulation_matches_a_scalar_reference() -> None:
    """The vectorised runs (one tensor element per seed) equal a plain scalar AMSGrad/Adam written here."""
    from optimlab.lab.reproduce.experiments import amsgrad_counterexample as m

    s = {"C": 3.0, "small": 1.0, "period": 3, "beta1": 0.0, "beta2": 0.1, "alpha": 1.0, "steps": 60}

    class Bar:
        def update(self, n: int) -> None: ...

    for name in ("adam", "amsgrad"):
        got = m._simulate(name, s, 1e-8, [0, 1], 5, Bar())
        for i, x in enumerate(got["x0"]):
            m_, v, vmax, reg = 0.0, 0.0, 0.0, 0.0
            for t in range(1, s["steps"] + 1):
                g = s["C"] if t % 3 == 1 else -s["small"]
                reg += g * x + g
                m_ = s["beta1"] * m_ + (1 - s["beta1"]) * g
                v = s["beta2"] * v + (1 - s["beta2"]) * g * g
                vmax = max(vmax, v)
                vv = vmax if name == "amsgrad" else v
                step = s["alpha"] / math.sqrt(t) / (1 - s["beta1"] ** t)
                x -= step * m_ / (math.sqrt(vv / (1 - s["beta2"] ** t)) + 1e-8)
                x = min(1.0, max(-1.0, x))
            assert math.isclose(got["final_x"][i], x, rel_tol=1e-12, abs_tol=1e-14)
            assert math.isclose(got["final_avg_regret"][i], reg / s["steps"], rel_tol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Claims 4 and 6 (training runs: too long for CI at any honest size; their rules on hand-made evidence)


def test_swats_verdict_rule() -> None:
    exp = load_experiment("swats")
    switched = {"switch_steps": [120, 180], "sgd_lrs": [0.5, 0.7], "beta1": 0.9}
    never = {"switch_steps": [None, 180], "sgd_lrs": [None, 0.7], "beta1": 0.9}
    ev = {"alpha": 0.05, "switches": [switched] * 3,
          "test": {"swats": [0.90, 0.91, 0.92], "sgdm": [0.90, 0.91, 0.92], "adam": [0.88, 0.89, 0.90]}}
    assert exp.verdict(ev).value == REPRODUCED
    ev2 = {**ev, "switches": [switched, never, switched]}
    v = exp.verdict(ev2)
    assert v.value == MIXED and "2/3 runs fully switched" in v.reason
    ev3 = {"alpha": 0.05, "switches": [never] * 3,
           "test": {"swats": [0.80, 0.81, 0.82], "sgdm": [0.90, 0.91, 0.92], "adam": [0.88, 0.89, 0.90]}}
    assert exp.verdict(ev3).value == NOT_REPRODUCED


def test_lookahead_verdict_rule_and_noisy_quadratic() -> None:
    from optimlab.lab.reproduce.experiments import lookahead as m

    exp = load_experiment("lookahead")
    q = {"h": [1.0, 20.0], "sigma": [1.0, 1.0], "lr": 0.09, "steps": 200, "k": 5, "alpha": 0.5, "replicas": 20}
    sgd, la = m._noisy(q, False, 0), m._noisy(q, True, 0)
    # SGD's stationary loss on this model: 1/2 sum h sigma^2 (1 + lr^2 h^2 / (1 - (1 - lr h)^2)) ~ 100.5
    stationary = sum(0.5 * h * (1 + (0.09 * h) ** 2 / (1 - (1 - 0.09 * h) ** 2)) for h in (1.0, 20.0))
    assert abs(sum(sgd["steady"]) / 20 - stationary) < 0.15 * stationary
    ev = {"methods": ["adam", "la"], "seed_sd": {"adam": 0.02, "la": 0.01}, "lr_spread": {"adam": 0.3, "la": 0.1},
          "noisy": {"sgd": sgd, "lookahead+sgd": la}}
    assert exp.verdict(ev).value == REPRODUCED
    ev["seed_sd"] = {"adam": 0.01, "la": 0.02}
    assert exp.verdict(ev).value == MIXED
    ev["lr_spread"] = {"adam": 0.1, "la": 0.3}
    ev["noisy"] = {"sgd": la, "lookahead+sgd": sgd}
    assert exp.verdict(ev).value == NOT_REPRODUCED


# ----------------------------------------------------------------------------------------------------
# Claim 10: gradient-noise (the lab spec, the task, the rule)


def test_noise_wrapper_spec_and_deep_task() -> None:
    import torch

    from optimlab.lab.catalog.presets import build_optimizer
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.wrappers import GradientNoise

    task = get_task("mnist1d-deep-mlp")
    torch.manual_seed(0)
    model = task.model(task.load())
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 21 and all(m.out_features == 50 for m in linears[:-1])
    w, b = linears[3].weight.detach(), linears[3].bias.detach()
    assert abs(float(w.std()) - 0.1) < 0.01 and float(b.abs().max()) == 0.0
    opt = build_optimizer("noise@eta=0.3+adam", model, lr=1e-3)
    assert isinstance(opt, GradientNoise) and opt.eta == 0.3 and opt.gamma == 0.55


def test_gradient_noise_verdict_rule() -> None:
    exp = load_experiment("gradient-noise")
    base = [0.30, 0.31, 0.32]
    ev = {"alpha": 0.05, "test": {"no noise": base, "η = 0.01": [0.29, 0.30, 0.31], "η = 1": [0.50, 0.51, 0.52]}}
    assert exp.verdict(ev).value == REPRODUCED
    ev["test"]["η = 1"] = [0.25, 0.36, 0.34]  # higher mean, not significant
    assert exp.verdict(ev).value == MIXED
    ev["test"]["η = 1"] = [0.20, 0.21, 0.22]
    v = exp.verdict(ev)
    assert v.value == NOT_REPRODUCED and "no η beats no noise" in v.reason
