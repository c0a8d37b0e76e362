"""The training-recipe claims of ``optimlab reproduce`` (adam-vs-sgdm, radam-warmup, large-batch, schedules): each
verdict rule on hand-made evidence, every verdict value; the two cheap claims end to end on a tiny protocol
(MNIST-1D, a few seconds each)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from optimlab.lab.reproduce.base import (
    MIXED,
    NOT_REPRODUCED,
    REPRODUCED,
    load_experiment,
    make_context,
    run_experiment,
)

# ----------------------------------------------------------------------------------------------------
# adam-vs-sgdm


def _avs_task(early: tuple[list, list], test: tuple[list, list], gap: tuple[list, list]) -> dict:
    (ea, es), (ta, ts), (ga, gs) = early, test, gap
    return {"optimizers": {"adam": {"early_train_loss": ea, "test": ta, "gap": ga},
                           "sgdm": {"early_train_loss": es, "test": ts, "gap": gs}}}


CNN_AS_CLAIMED = _avs_task(([0.5, 0.51, 0.49], [0.8, 0.82, 0.79]), ([0.88, 0.881, 0.879], [0.90, 0.901, 0.899]),
                           ([0.3, 0.31, 0.29], [0.1, 0.11, 0.09]))
CNN_OPPOSITE = _avs_task(([0.8, 0.82, 0.79], [0.5, 0.51, 0.49]), ([0.90, 0.901, 0.899], [0.88, 0.881, 0.879]),
                         ([0.1, 0.11, 0.09], [0.3, 0.31, 0.29]))
LM_AS_CLAIMED = _avs_task(([1.5, 1.51, 1.49], [2.5, 2.52, 2.49]), ([5.0, 5.1, 4.9], [8.0, 8.2, 7.9]),
                          ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]))
LM_OPPOSITE = _avs_task(([2.5, 2.52, 2.49], [1.5, 1.51, 1.49]), ([8.0, 8.2, 7.9], [5.0, 5.1, 4.9]),
                        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]))


@pytest.mark.parametrize(("cnn", "lm", "expected"), [
    (CNN_AS_CLAIMED, LM_AS_CLAIMED, REPRODUCED),
    (CNN_OPPOSITE, LM_OPPOSITE, NOT_REPRODUCED),
    (CNN_AS_CLAIMED, LM_OPPOSITE, MIXED),
])
def test_adam_vs_sgdm_verdict(cnn: dict, lm: dict, expected: str) -> None:
    e = load_experiment("adam-vs-sgdm")
    v = e.verdict({"alpha": 0.05, "tasks": {"fmnist-resnet": cnn, "shakespeare-char": lm}})
    assert v.value == expected
    assert "fmnist-resnet" in v.reason and "shakespeare-char" in v.reason


def test_adam_vs_sgdm_needs_significance() -> None:
    """The right direction within the noise is not enough: a check needs p < alpha."""
    noisy = _avs_task(([0.5, 0.9, 0.1], [0.6, 0.2, 0.9]), ([0.8, 0.95, 0.85], [0.9, 0.8, 0.95]),
                      ([0.3, 0.0, 0.5], [0.2, 0.4, 0.1]))
    e = load_experiment("adam-vs-sgdm")
    v = e.verdict({"alpha": 0.05, "tasks": {"fmnist-resnet": noisy, "shakespeare-char": LM_OPPOSITE}})
    assert v.value == NOT_REPRODUCED


# ----------------------------------------------------------------------------------------------------
# radam-warmup


def _ppl(adam: list[float], warm: list[float], radam: list[float]) -> dict:
    lrs = ["0.001", "0.003", "0.01", "0.03"]
    return {"tolerance": 0.05, "perplexity": {
        "adam": {lr: [v, v] for lr, v in zip(lrs, adam, strict=True)},
        "adam+warmup": {lr: [v, v] for lr, v in zip(lrs, warm, strict=True)},
        "radam": {lr: [v, v] for lr, v in zip(lrs, radam, strict=True)}}}


@pytest.mark.parametrize(("evidence", "expected"), [
    (_ppl([6.0, 9.0, 20.0, None], [6.0, 6.1, 6.2, 9.0], [6.0, 6.1, 6.25, 10.0]), REPRODUCED),  # None: diverged
    # Adam without warm-up as robust as the others, warm-up and RAdam far apart: no check holds
    (_ppl([6.0, 6.1, 6.2, 6.25], [6.0, 9.0, 20.0, 30.0], [7.0, 7.1, 7.2, 7.3]), NOT_REPRODUCED),
    # warm-up helps, RAdam does not
    (_ppl([6.0, 9.0, 20.0, 30.0], [6.0, 6.1, 6.2, 9.0], [6.0, 9.0, 20.0, 30.0]), MIXED),
])
def test_radam_warmup_verdict(evidence: dict, expected: str) -> None:
    assert load_experiment("radam-warmup").verdict(evidence).value == expected


def test_radam_sensitivity_counts_a_diverged_seed_as_bad() -> None:
    from optimlab.lab.reproduce.experiments.radam_warmup import sensitivity

    s = sensitivity({"adam": {"0.01": [6.0, math.nan], "0.001": [6.1, 6.1]}}, 0.05)
    assert s["adam"]["good"] == ["0.001"] and s["adam"]["means"]["0.01"] == math.inf


# ----------------------------------------------------------------------------------------------------
# large-batch


def _lb(sgdm: list, lars: list, lamb: list) -> dict:
    batches = [32, 64, 128, 256, 512]
    curve = lambda m: {"batch": batches, "mean": m}  # noqa: E731
    return {"perfect_tolerance": 1.5, "goyal_min_factor": 4,
            "curves": {"sgdm": curve(sgdm), "adam": curve(sgdm), "lars": curve(lars), "lamb": curve(lamb)}}


@pytest.mark.parametrize(("evidence", "expected"), [
    # perfect to 4x, breaks at 256, LAMB faster at the largest batch
    (_lb([1600, 800, 400, 400, 390], [None] * 5, [1600, 800, 400, 200, 120]), REPRODUCED),
    # SGDM does not scale at all (only "it breaks" holds) and the layer-wise methods are slower
    (_lb([1600, 1600, 1600, 1600, 1600], [None] * 5, [1700, 1700, 1700, 1700, 1700]), MIXED),
    # SGDM scales perfectly over the whole grid and the layer-wise methods never reach the target
    (_lb([1600, 800, 400, 200, 100], [None] * 5, [None] * 5), MIXED),
])
def test_large_batch_verdict(evidence: dict, expected: str) -> None:
    assert load_experiment("large-batch").verdict(evidence).value == expected


def test_large_batch_not_reproduced() -> None:
    # scales perfectly everywhere (no break), and SGDM is the fastest at the largest batch
    ev = _lb([1600, 800, 400, 200, 100], [3200, 1600, 800, 400, 200], [3200, 1600, 800, 400, 200])
    ev["goyal_min_factor"] = 1  # no batch size in (1, 1] x B0: Goyal's check has nothing to hold on
    assert load_experiment("large-batch").verdict(ev).value == NOT_REPRODUCED


# ----------------------------------------------------------------------------------------------------
# schedules


def _sched(**overrides: list[float]) -> dict:
    base = {"constant": [0.80, 0.81, 0.79], "step": [0.90, 0.91, 0.89], "cosine": [0.90, 0.905, 0.895],
            "sgdr": [0.90, 0.90, 0.90], "cyclical": [0.85, 0.86, 0.84], "one-cycle": [0.91, 0.915, 0.905],
            "wsd": [0.90, 0.91, 0.90]}
    base.update(overrides)
    from optimlab.lab.present.stats import best_set

    bs = best_set(base, higher_is_better=True)
    return {"final": base, "alpha": 0.05, "margin": 0.005,
            "best_set": {"best": bs.best, "members": list(bs.members), "adjusted_p": bs.adjusted_p}}


def test_schedules_verdict_every_value() -> None:
    e = load_experiment("schedules")
    assert e.verdict(_sched()).value == REPRODUCED
    assert e.verdict(_sched(cyclical=[0.70, 0.71, 0.69])).value == MIXED
    worst = _sched(constant=[0.95, 0.951, 0.949], cyclical=[0.70, 0.71, 0.69], sgdr=[0.5, 0.5, 0.51],
                   wsd=[0.5, 0.52, 0.51], **{"one-cycle": [0.6, 0.61, 0.59]})
    assert e.verdict(worst).value == NOT_REPRODUCED


# ----------------------------------------------------------------------------------------------------
# End to end on tiny protocols (MNIST-1D is generated, no data files)


def plan_runs(e: Any, ctx: Any) -> int:
    """The runs the experiment declares for the protocol it ran (:func:`optimlab.lab.study.cost.count_work`)."""
    from optimlab.lab.study.cost import count_work

    return count_work(e.work(ctx.protocol))[0]


def _tiny_run(name: str, tmp_path: Path, **protocol: object):
    e = load_experiment(name)
    ctx = make_context(e, tmp_path, quick=True, progress=False)
    ctx.protocol.update(protocol)
    return e, ctx, run_experiment(e, ctx)


def test_large_batch_end_to_end_and_rerun_reuses_everything(tmp_path: Path) -> None:
    tiny = {"batch_sizes": [32, 128], "max_steps": 60, "min_steps": 20, "target": 0.2}
    e, ctx, out = _tiny_run("large-batch", tmp_path, **tiny)
    assert out.verdict.value in (REPRODUCED, NOT_REPRODUCED, MIXED)
    assert (ctx.folder / "figure.png").stat().st_size > 1000
    assert set(out.evidence["curves"]) == {"sgdm", "adam", "lars", "lamb"}
    assert ctx.computed > 0 and plan_runs(e, ctx) == ctx.computed  # the declared work is what ran
    ctx2 = make_context(e, tmp_path, quick=True, progress=False)
    ctx2.protocol.update(tiny)
    again = run_experiment(e, ctx2)
    assert ctx2.computed == 0 and ctx2.reused == ctx.computed + ctx.reused
    assert again.evidence["curves"] == out.evidence["curves"]


def test_large_batch_steps_to_target_runs_the_labs_loop_and_counts_as_the_stopping_loop_did() -> None:
    """A run stopped at the target and a run that diverged, measured through the runner with ``StopAtTarget``: the
    step reached, and the evaluations a loop stopping there had made (none at step 0 or after the divergence)."""
    import torch

    from optimlab.lab.reproduce.experiments import large_batch
    from optimlab.lab.training.runner import RunConfig
    from optimlab.lab.training.runner import run as run_all

    def run(config: RunConfig) -> Any:  # one thread, as the measurement
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run_all(config)
        finally:
            torch.set_num_threads(threads)

    cfg = {"task": "mnist1d-mlp", "optimizer": "sgdm", "lr": 0.1, "seed": 0, "batch_size": 32, "max_steps": 200,
           "eval_every": 10, "target": 0.3, "schedule": "constant"}
    full = run(RunConfig("mnist1d-mlp", "sgdm", 0.1, seed=0, steps=200, batch_size=32, eval_every=10, splits=("val",)))
    out = large_batch._steps_to_target(cfg, None)
    step = full.steps_to(0.3)
    assert out["status"] == "ok" and out["steps"] == step < 200
    assert out["evals"] == [[s, v] for s, v in zip(full.history["step"], full.history["val_accuracy"], strict=True)
                            if 0 < s <= step]
    diverging = {**cfg, "lr": 1000.0, "max_steps": 50, "eval_every": 2}
    full = run(RunConfig("mnist1d-mlp", "sgdm", 1000.0, seed=0, steps=50, batch_size=32, eval_every=2, splits=("val",)))
    out = large_batch._steps_to_target(diverging, None)
    assert full.status == out["status"] == "diverged" and out["steps"] is None
    assert [s for s, _ in out["evals"]] == [s for s in full.history["step"] if 0 < s < full.steps_done]


def test_schedules_end_to_end_on_mnist1d(tmp_path: Path) -> None:
    tiny = {"task": "mnist1d-cnn", "steps": 14, "eval_every": 7, "batch_size": 50,
            "range_test": {"start_lr": 1e-3, "end_lr": 1.0, "num_steps": 20, "suggestion": "valley"}}
    e, ctx, out = _tiny_run("schedules", tmp_path, **tiny)
    assert set(out.evidence["final"]) == {"constant", "step", "cosine", "sgdr", "cyclical", "one-cycle", "wsd"}
    assert out.evidence["peak_lr"] > 0
    lr = out.evidence["lr_curves"]
    assert lr["constant"]["lr"][0] == lr["constant"]["lr"][-1] == out.evidence["peak_lr"]
    assert lr["cosine"]["lr"][-1] < 1e-3 * out.evidence["peak_lr"]  # every schedule really ran its own shape
    assert (ctx.folder / "figure.png").exists()
    assert plan_runs(e, ctx) == ctx.computed == 1 + 7  # the range test and the seven schedules
