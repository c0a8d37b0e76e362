"""The claims of ``optimlab reproduce`` on the landscape and the newer optimizers (walk-with-sgd, landscape,
helps-optimization, next-adam): each verdict rule on hand-made evidence (every verdict value), the helpers the rules
read, the task variants, and walk-with-sgd end to end in ``--quick``."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from optimlab.lab.catalog.tasks import get_task
from optimlab.lab.reproduce import MIXED, NOT_REPRODUCED, REPRODUCED, load_experiment, make_context, run_experiment
from optimlab.lab.reproduce.experiments import helps_optimization as helps
from optimlab.lab.reproduce.experiments import landscape, next_adam, walk_with_sgd
from optimlab.lab.study.cost import count_work

# ----------------------------------------------------------------------------------------------------
# walk-with-sgd


def _walk_evidence(good: bool) -> dict[str, Any]:
    def run(cos: float, dist: float, interior: float, height: float) -> dict[str, list[float]]:
        return {"late_cos": [cos] * 3, "dist_sq": [dist] * 3, "interior_fraction": [interior] * 3,
                "height": [height] * 3}

    per = {"gd": run(-0.95, 10.0, 1.0, 0.1), "sgd-b500": run(-0.5, 20.0, 1.0, 0.1),
           "sgd-b50": run(-0.2, 40.0, 1.0, 0.1), "sgd-b50-small-lr": run(0.1, 1.0, 0.0, 0.001)}
    if not good:
        per["gd"] = run(0.0, 100.0, 0.5, 0.1)
        per["sgd-b50"]["height"] = [0.0] * 3
    return {"per_seed": per, "gd": "gd", "sgd": "sgd-b50", "small_lr": "sgd-b50-small-lr",
            "batches": {"gd": 3600, "sgd-b500": 500, "sgd-b50": 50, "sgd-b50-small-lr": 50}}


def test_walk_verdict_rule_gives_each_value() -> None:
    assert walk_with_sgd.verdict(_walk_evidence(True)).value == REPRODUCED
    assert walk_with_sgd.verdict(_walk_evidence(False)).value == NOT_REPRODUCED
    ev = _walk_evidence(True)
    ev["per_seed"]["gd"]["late_cos"][1] = -0.4  # one seed of GD does not settle: check 1 fails, the others hold
    v = walk_with_sgd.verdict(ev)
    assert v.value == MIXED and "✗ GD's late mean cosine < -0.5" in v.reason


def test_walk_summary_reads_the_valley() -> None:
    piece = {"cos_prev": [None, 0.5, -1.0, -1.0], "dist_init_sq": [1.0, 4.0],
             "segment_loss": [[1.0, 0.5, 0.8], [1.0, 0.9, 0.7], [None, 0.1, 0.2]]}
    s = walk_with_sgd.summarize(piece, 0.5)
    assert s["late_cos"] == -1.0 and s["dist_sq"] == 4.0
    assert s["interior_fraction"] == pytest.approx(1 / 3)  # the second has its minimum at an end; the third is NaN
    assert s["height"] == pytest.approx(((1.0 + 0.8) / 2 - 0.5 + (1.0 + 0.7) / 2 - 0.7) / 2)


def test_walk_quick_end_to_end(tmp_path: Path) -> None:
    exp = load_experiment("walk-with-sgd")
    p = {**exp.protocol_for(quick=True), "steps": 30, "segment_start": 25, "segments": 2, "seeds": [0, 1]}
    exp = copy.copy(exp)
    object.__setattr__(exp, "quick", p)
    ctx = make_context(exp, tmp_path, quick=True, progress=False)
    out = run_experiment(exp, ctx)
    assert out.verdict.value in (REPRODUCED, MIXED, NOT_REPRODUCED)
    per = out.evidence["per_seed"]
    assert set(per) == {"gd", "sgd-b50", "sgd-b50-small-lr"}
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in per["gd"].values())
    assert per["gd"]["dist_sq"] != per["sgd-b50"]["dist_sq"]  # GD and SGD are different runs
    assert out.figure is not None and out.figure.read_bytes()[:4] == b"\x89PNG"
    assert count_work(exp.work(ctx.protocol)) == (ctx.computed, 6 * 30) == (6, 180)  # the declared work ran
    again = run_experiment(exp, make_context(exp, tmp_path, quick=True, progress=False))
    assert again.evidence["per_seed"] == per  # read back from the cache


# ----------------------------------------------------------------------------------------------------
# landscape


def _landscape_evidence(eig: dict[str, float], sharp: dict[str, float], acc: dict[str, float]) -> dict[str, Any]:
    return {"per_seed": {m: {"top_eigenvalue": [eig[m], eig[m] * 1.1], "sharpness_1d": [sharp[m], sharp[m] * 1.1],
                             "test_accuracy": [acc[m], acc[m]], "train_loss": [0.1, 0.1]} for m in eig}}


def test_landscape_verdict_rule_gives_each_value() -> None:
    good = _landscape_evidence({"swa": 5, "sgdm": 10, "adam": 20}, {"swa": 0.1, "sgdm": 0.2, "adam": 0.3},
                               {"swa": 0.9, "sgdm": 0.8, "adam": 0.7})
    bad = _landscape_evidence({"swa": 30, "sgdm": 20, "adam": 10}, {"swa": 0.3, "sgdm": 0.2, "adam": 0.1},
                              {"swa": 0.7, "sgdm": 0.8, "adam": 0.9})
    assert landscape.verdict(good).value == REPRODUCED
    assert landscape.verdict(bad).value == NOT_REPRODUCED
    mixed = copy.deepcopy(good)
    mixed["per_seed"]["adam"]["top_eigenvalue"][1] = 1.0  # one seed where Adam is flatter than SGDM
    v = landscape.verdict(mixed)
    assert v.value == MIXED and "✗ SGDM's top eigenvalue < Adam's" in v.reason


def test_one_d_sharpness() -> None:
    grid = [-1.0, -0.5, 0.0, 0.5, 1.0]
    curves = [[5.0, 2.0, 1.0, 4.0, 9.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    assert landscape.one_d_sharpness(curves, grid, 0.5) == pytest.approx(((2 + 4) / 2 - 1 + 0.0) / 2)


# ----------------------------------------------------------------------------------------------------
# helps-optimization


def _helps_evidence(with_better: list[bool]) -> dict[str, Any]:
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    tasks = {"mnist1d-mlp": 0.80, "mnist1d-mlp-fixed-order": 0.80, "mnist1d-mlp-bn": 0.80, "mnist1d-mlp-dropout": 0.80}
    for t, acc in tasks.items():
        per[t] = {s: {"test_accuracy": [acc, acc + 0.005, acc - 0.005]} for s in ("sgdm", "adam")}
    k = 0
    for with_, without in helps.FACTORS.values():
        for s in ("sgdm", "adam"):
            if with_better[k]:  # a clear improvement on the side with the factor
                base = per[without][s]["test_accuracy"]
                per[with_][s] = {"test_accuracy": [v + 0.05 for v in base]}
                if with_ == "mnist1d-mlp":  # reshuffling: lower the fixed-order side instead
                    per[with_][s] = {"test_accuracy": list(base)}
                    per[without][s] = {"test_accuracy": [v - 0.05 for v in base]}
            k += 1
    return {"per": per, "optimizers": ["sgdm", "adam"], "alpha": 0.05,
            "factors": {f: list(v) for f, v in helps.FACTORS.items()}}


def test_helps_verdict_rule_gives_each_value() -> None:
    assert helps.verdict(_helps_evidence([True] * 6)).value == REPRODUCED
    assert helps.verdict(_helps_evidence([False] * 6)).value == NOT_REPRODUCED
    noisy = _helps_evidence([False] * 6)
    for with_, _ in helps.FACTORS.values():  # higher means on the factor's side, but within the noise
        noisy["per"][with_]["sgdm"] = {"test_accuracy": [0.82, 0.75, 0.86]}
    assert helps.verdict(noisy).value == NOT_REPRODUCED  # not significant: does not count as helping
    v = helps.verdict(_helps_evidence([True, True, False, False, True, True]))
    assert v.value == MIXED and "✗ batchnorm helps sgdm" in v.reason and "✓ dropout helps adam" in v.reason


def test_task_variants_change_one_factor() -> None:
    base, fixed = get_task("mnist1d-mlp"), get_task("mnist1d-mlp-fixed-order")
    data = base.load()
    n = len(data.y_train)
    b = n // 2  # two batches per epoch

    def labels(task: Any) -> list[list[int]]:
        stream = task.batches(data, b, torch.Generator().manual_seed(0))
        return [next(stream)[1].tolist() for _ in range(4)]

    a, f = labels(base), labels(fixed)
    assert a[:2] == f[:2]  # the same first epoch
    assert f[2:] == f[:2] and a[2:] != a[:2]  # fixed order repeats it, the default reshuffles
    torch.manual_seed(0)
    bn = get_task("mnist1d-mlp-bn").model(data)
    torch.manual_seed(0)
    drop = get_task("mnist1d-mlp-dropout").model(data)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in bn.modules()) == 2
    assert sum(isinstance(m, torch.nn.Dropout) for m in drop.modules()) == 2
    drop.eval()
    x = data.x_val[:8]
    assert torch.equal(drop(x), drop(x))  # dropout is off at evaluation


# ----------------------------------------------------------------------------------------------------
# next-adam


def test_speedup_interval() -> None:
    r = next_adam.speedup_interval([400.0, 400.0, 400.0], [200.0, 200.0, 200.0])
    assert r["ratio"] == pytest.approx(2.0) and r["low"] == pytest.approx(2.0) and r["high"] == pytest.approx(2.0)
    r = next_adam.speedup_interval([400.0, 800.0], [400.0, 200.0])
    assert r["ratio"] == pytest.approx(math.sqrt(400 * 800) / math.sqrt(400 * 200))
    assert r["low"] < r["ratio"] < r["high"]
    r = next_adam.speedup_interval([400.0, 500.0], [math.inf, math.inf])
    assert math.isnan(r["ratio"]) and r["other_reached"] == 0


def _next_evidence(speedups: dict[str, tuple[float, float, float]], reached: list[float]) -> dict[str, Any]:
    tasks = {}
    for task in ("shakespeare-char", "mnist1d-cnn"):
        tasks[task] = {"speedup": {s: {"ratio": r, "low": lo, "high": hi} for s, (r, lo, hi) in speedups.items()},
                       "best_baseline": "adamw", "best_reached": reached}
    return {"tasks": tasks, "threshold": 1.5}


def test_next_adam_verdict_rule_gives_each_value() -> None:
    small = {"muon": (1.2, 0.9, 1.6), "lion": (0.8, 0.6, 1.1)}
    big = {"muon": (3.0, 2.0, 4.0), "lion": (0.8, 0.6, 1.1)}
    assert next_adam.verdict(_next_evidence(small, [300.0, 400.0])).value == REPRODUCED
    assert next_adam.verdict(_next_evidence(big, [300.0, 400.0])).value == NOT_REPRODUCED
    assert next_adam.verdict(_next_evidence(small, [math.inf, math.inf])).value == MIXED  # baseline never got there
    ev = _next_evidence(small, [300.0, 400.0])
    ev["tasks"]["mnist1d-cnn"]["speedup"] = {s: {"ratio": r, "low": lo, "high": hi} for s, (r, lo, hi) in big.items()}
    v = next_adam.verdict(ev)
    assert v.value == MIXED and "✗ mnist1d-cnn: no speedup interval wholly above 1.5x" in v.reason


def test_next_adam_specs_exist() -> None:
    from optimlab.lab.catalog.presets import check_spec, search_space

    for spec in (*next_adam.BASELINES, *next_adam.CHALLENGERS):
        check_spec(spec)
        assert search_space(spec).lr.low < search_space(spec).lr.high
