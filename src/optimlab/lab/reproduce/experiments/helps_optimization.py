"""Claim 12, ``helps-optimization``: shuffling every epoch, normalization layers and dropout help, each at an
equal tuning budget.

Claim (the lecture, "9. Something Helps Optimization"): "More exploration: Shuffling: reshuffle the data set
every epoch, cutting new mini-batches each time so that different examples share a batch; Dropout: adds
randomness to the gradient; ... Normalization; Regularization."

Citation: the lecture (source document 003, section 9, after Hung-yi Lee's course); for each factor the usual sources:
random reshuffling (Bottou 2009, "Curiously fast convergence of some stochastic gradient descent algorithms";
Gürbüzbalaban, Ozdaglar & Parrilo 2021), BatchNorm (Ioffe & Szegedy 2015; Santurkar et al. 2018, "How does batch
normalization help optimization?"), dropout (Srivastava et al. 2014).

How: the MNIST-1D MLP (Greydanus & Kobak 2020) and three variants that change one factor
(``mnist1d-mlp-fixed-order``: one batch order drawn once and repeated every epoch; ``mnist1d-mlp-bn``: BatchNorm
after each hidden layer; ``mnist1d-mlp-dropout``: dropout 0.2 after each hidden ReLU), each tuned for SGDM and
Adam with the lab's protocol (:func:`optimlab.lab.study.tuning.tune_and_run`: the same quasi-random lr trials per
optimizer and variant, selection on validation accuracy, then fresh final seeds), so no variant wins by a
better-tuned lr. The factor "helps" where its side has the higher mean test accuracy, with Welch's t test.

Size: default, 3000 steps, 8 trials, 5 final seeds, 8 studies; ``--quick``, 600 steps, 4 trials, 3 seeds
(``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.reproduce import (
    COMPARISON_COLUMNS,
    INTERVAL_COLUMNS,
    Check,
    Context,
    Verdict,
    comparison_row,
    interval_row,
    table,
    verdict_from_checks,
)
from optimlab.lab.reproduce.measure import finals, or_nan, tuned_study
from optimlab.lab.study.cost import planned_configs
from optimlab.lab.training.runner import RunConfig

__all__ = ["NAME", "PROTOCOL", "QUICK", "RULE", "FACTORS", "run", "verdict", "figure", "work"]

NAME = "helps-optimization"
TITLE = "Something helps optimization: reshuffling, BatchNorm and dropout at equal tuning budget"
CLAIM = ("Reshuffling the data every epoch (vs one fixed order), normalization layers (vs none) and dropout "
         "(vs none) each help training a network, for any reasonable optimizer.")
CITATION = ("the lecture, section 9 'Something Helps Optimization' (source document 003); Bottou 2009 "
            "(reshuffling); Ioffe & Szegedy 2015, Santurkar et al. 2018 (BatchNorm); Srivastava et al. 2014 (dropout)")
CAPTION = ("Final test accuracy per final seed (dots) and the mean with its 95% t interval (bars), with and "
           "without each factor, SGDM and Adam each tuned with the same budget.")

# factor -> (the task with the factor, the task without it)
FACTORS: dict[str, tuple[str, str]] = {
    "reshuffling": ("mnist1d-mlp", "mnist1d-mlp-fixed-order"),
    "batchnorm": ("mnist1d-mlp-bn", "mnist1d-mlp"),
    "dropout": ("mnist1d-mlp-dropout", "mnist1d-mlp"),
}

PROTOCOL: dict[str, Any] = {
    "tasks": ["mnist1d-mlp", "mnist1d-mlp-fixed-order", "mnist1d-mlp-bn", "mnist1d-mlp-dropout"],
    "optimizers": ["sgdm", "adam"],
    "steps": 3000,
    "batch_size": 100,
    "eval_every": 250,
    "schedule": "warmup_cosine",
    "tuning": "quasirandom",
    "budget": 8,
    "trial_fraction": 0.4,
    "study": 0,
    "alpha": 0.05,  # a factor helps where Welch's p is below this
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {"steps": 600, "eval_every": 100, "budget": 4, "seeds": [0, 1, 2]}

RULE = ("For each factor (reshuffling every epoch vs one fixed order; BatchNorm vs none; dropout 0.2 vs none) and "
        "each optimizer (SGDM, Adam), both sides tuned with the same budget: the factor helps if the mean final "
        "test accuracy with it is higher than without and Welch's two-sided p < 0.05. Reproduced if it helps in "
        "all 6 (factor, optimizer) pairs; not reproduced if in none; mixed otherwise.")


def _protocol(p: dict[str, Any], task: str, seeds: tuple[int, ...]) -> Any:
    from optimlab.lab.study.protocol import default_protocol

    return default_protocol(task, steps=int(p["steps"]), batch_size=int(p["batch_size"]),
                            eval_every=int(p["eval_every"]), schedule=p["schedule"], tuning=p["tuning"],
                            budget=int(p["budget"]), trial_fraction=float(p["trial_fraction"]),
                            study=int(p["study"]), alpha=float(p["alpha"]), seeds=tuple(seeds))


def work(protocol: dict[str, Any]) -> list[RunConfig]:
    """The runs of every tuned study, one per task (:func:`~optimlab.lab.study.cost.planned_configs`)."""
    seeds = tuple(protocol["seeds"])
    return [c for task in protocol["tasks"]
            for c in planned_configs(_protocol(protocol, task, seeds), protocol["optimizers"])]


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.protocol
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    selected: dict[str, dict[str, float]] = {}
    for task in p["tasks"]:
        ctx.log(f"tuning {', '.join(p['optimizers'])} on {task}")
        result = tuned_study(ctx, task, p["optimizers"], _protocol(p, task, ctx.seeds), task)
        target = result.protocol.target_value
        for spec in p["optimizers"]:
            runs = finals(result, spec)
            per.setdefault(task, {})[spec] = {
                "test_accuracy": [or_nan(r.test("accuracy")) for r in runs],  # a diverged run's too
                "train_loss": [or_nan(r.final("train_loss")) if r.ok else math.nan for r in runs],
                "steps_to_target": [r.steps_to(target, key=f"val_{r.metric}") for r in runs],
            }
            selected.setdefault(task, {})[spec] = result.results[spec].selection.lr
    rows, comps = [], []
    for task in p["tasks"]:
        for spec in p["optimizers"]:
            for k in ("test_accuracy", "train_loss"):
                rows.append(interval_row(f"{task} / {spec}: {k} (lr {selected[task][spec]:.3g})", per[task][spec][k]))
    for factor, (with_, without) in FACTORS.items():
        for spec in p["optimizers"]:
            comps.append(comparison_row(f"{factor}, {spec}: test accuracy with - without",
                                        per[with_][spec]["test_accuracy"], per[without][spec]["test_accuracy"]))
            comps.append(comparison_row(f"{factor}, {spec}: final train loss with - without",
                                        per[with_][spec]["train_loss"], per[without][spec]["train_loss"]))
    return {
        "per": per, "selected_lr": selected, "optimizers": p["optimizers"], "alpha": p["alpha"],
        "factors": {k: list(v) for k, v in FACTORS.items()},
        "tables": [table("Final runs at the selected lr: mean and 95% t interval over seeds", INTERVAL_COLUMNS,
                         rows),
                   table("With vs without each factor (Welch's t test)", COMPARISON_COLUMNS, comps,
                         "the verdict reads the test-accuracy rows; the training-loss rows show whether the factor "
                         "helped optimization itself (lower is better there)")],
        "notes": [f"each (task, optimizer) tuned with {p['budget']} quasi-random trials of "
                  f"{p['trial_fraction']:.0%} of {p['steps']} steps, selected on validation accuracy"],
    }


def verdict(evidence: dict[str, Any]) -> Verdict:
    from optimlab.lab.present.stats import welch_test

    per, alpha = evidence["per"], float(evidence["alpha"])
    checks = []
    for factor, (with_, without) in evidence["factors"].items():
        for spec in evidence["optimizers"]:
            a = [v for v in per[with_][spec]["test_accuracy"] if v is not None and np.isfinite(v)]
            b = [v for v in per[without][spec]["test_accuracy"] if v is not None and np.isfinite(v)]
            try:
                pval = welch_test(a, b).p
            except ValueError:  # too few finite values, or no spread at all
                pval = float("nan")
            ma, mb = (float(np.mean(x)) if x else float("nan") for x in (a, b))
            ok = bool(ma > mb and pval < alpha)
            checks.append(Check(f"{factor} helps {spec}", ok,
                                f"{100 * ma:.2f}% with vs {100 * mb:.2f}% without, p = {pval:.3g}"))
    return verdict_from_checks(checks)


def figure(evidence: dict[str, Any], path: Path) -> None:
    from optimlab.lab.present.figures import pyplot, save_figure
    from optimlab.lab.present.stats import mean_ci
    from optimlab.lab.present.style import color_for

    plt = pyplot()
    factors = evidence["factors"]
    fig, axes = plt.subplots(1, len(factors), figsize=(5 * len(factors), 4), sharey=True)
    for ax, (factor, (with_, without)) in zip(axes, factors.items(), strict=True):
        for j, spec in enumerate(evidence["optimizers"]):
            for k, task in enumerate((without, with_)):
                x = 2.5 * j + k
                vals = [100 * v for v in evidence["per"][task][spec]["test_accuracy"] if v is not None]
                ax.scatter(np.full(len(vals), x), vals, color=color_for(spec), alpha=0.5, s=14)
                if len(vals) > 1:
                    ci = mean_ci(vals)
                    ax.errorbar([x], [ci.mean], yerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="o",
                                color=color_for(spec), capsize=4)
        ticks = [2.5 * j + k for j in range(len(evidence["optimizers"])) for k in (0, 1)]
        ax.set_xticks(ticks, [f"{s}\n{w}" for s in evidence["optimizers"] for w in ("without", "with")])
        ax.set_title(factor)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("final test accuracy %")
    fig.suptitle("Something helps optimization? MNIST-1D MLP, each side tuned with the same budget")
    save_figure(fig, path, tight_layout=True, crop=False)
