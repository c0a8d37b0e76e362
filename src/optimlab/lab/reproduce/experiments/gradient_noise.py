"""Claim 10, ``gradient-noise``: annealed Gaussian gradient noise helps a deep, narrow, badly initialised MLP.

The claim (Neelakantan et al. 2015): adding noise N(0, σ_t²) with σ_t² = η/(1+t)^0.55 to every gradient, η in
{0.01, 0.3, 1.0}, "improves learning for very deep networks": a 20-layer, 50-unit ReLU MLP on MNIST with a simple
initialisation trains to a better accuracy with noise than without (Section 4.1, Table 1).

Protocol: the lab task ``mnist1d-deep-mlp`` (MNIST-1D instead of MNIST, so it runs on a CPU in minutes: 20 hidden
layers of 50 ReLU units, weights N(0, 0.1²), zero biases, the paper's "simple init"), Adam at one lr for all
(``lr``; the paper tuned Adam's lr per setting: this is a claim about adding noise at a fixed lr), the lab's
constant schedule, each η with the same seeds; the noise is :class:`optimlab.wrappers.GradientNoise` (lab spec
``noise@eta=..+adam``, variance reading of η as the paper's). Runs go through the lab's
:func:`~optimlab.lab.study.sweep.run_sweep`; the test split is evaluated once, at the end of each run
(nothing is selected).

Citations: Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach & Martens, "Adding Gradient Noise Improves Learning
for Very Deep Networks", 2015 (arXiv:1511.06807); no reference code was published (optax's ``add_noise`` follows
the paper).

Size: default, 4 settings x 5 seeds x 3000 steps; ``--quick``, 3 x 2 x 300 (``--dry-run`` prices them on this
machine).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.reproduce.base import (
    COMPARISON_COLUMNS,
    INTERVAL_COLUMNS,
    MIXED,
    NOT_REPRODUCED,
    REPRODUCED,
    Context,
    Verdict,
    comparison_row,
    interval_row,
    table,
)
from optimlab.lab.training.runner import RunConfig

NAME = "gradient-noise"
TITLE = "Annealed gradient noise on a 20-layer narrow MLP"
CLAIM = ("Adding annealed Gaussian noise (variance η/(1+t)^0.55) to the gradients helps a deep, narrow, hard-to-train "
         "MLP reach a better accuracy (Neelakantan et al. 2015).")
CITATION = ("Neelakantan et al., \"Adding Gradient Noise Improves Learning for Very Deep Networks\", 2015 "
            "(arXiv:1511.06807, Section 4.1)")
CAPTION = "Validation accuracy over steps (mean and range over seeds) of Adam with and without annealed noise."

PROTOCOL: dict[str, Any] = {
    "task": "mnist1d-deep-mlp",
    "inner": "adam",
    "lr": 1e-3,
    "etas": [0.0, 0.01, 0.3, 1.0],  # 0: no noise
    "gamma": 0.55,
    "steps": 3000,
    "batch_size": 100,
    "eval_every": 250,
    "alpha": 0.05,
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {"etas": [0.0, 0.01, 1.0], "steps": 300, "eval_every": 100, "seeds": [0, 1]}

RULE = ("reproduced if for at least one η > 0 the mean final test accuracy is above the no-noise runs' with a Welch "
        "t test p < 0.05; not reproduced if no η > 0 has a higher mean; mixed if some η has a higher mean but none "
        "significantly.")

def _spec(eta: float, pr: dict[str, Any]) -> str:
    return pr["inner"] if eta == 0 else f"noise@eta={eta},gamma={pr['gamma']}+{pr['inner']}"


def _configs(pr: dict[str, Any], seeds: Sequence[int]) -> list[RunConfig]:
    """Every η's runs, η by η, seed by seed."""
    return [RunConfig(task=pr["task"], optimizer=_spec(eta, pr), lr=pr["lr"], seed=s, steps=pr["steps"],
                      batch_size=pr["batch_size"], eval_every=pr["eval_every"], schedule="constant")
            for eta in pr["etas"] for s in seeds]


def work(protocol: dict[str, Any]) -> list[RunConfig]:
    """Every η's runs (the noise's cost per step is left out of the price)."""
    return _configs(protocol, protocol["seeds"])


def run(ctx: Context) -> dict[str, Any]:
    pr = ctx.protocol
    seeds = list(ctx.seeds)
    records = ctx.sweep(_configs(pr, seeds), "runs")
    test: dict[str, list[float]] = {}
    curves: dict[str, Any] = {}
    for i, eta in enumerate(pr["etas"]):
        recs = records[i * len(seeds):(i + 1) * len(seeds)]
        label = "no noise" if eta == 0 else f"η = {eta:g}"
        test[label] = [float(r.test("accuracy")) if r.ok else 0.0 for r in recs]
        curves[label] = {"steps": recs[0].history["step"], "val": [r.history["val_accuracy"] for r in recs]}
    rows = [interval_row(f"{k}: test accuracy", v) for k, v in test.items()]
    comp = [comparison_row(f"{k} - no noise", v, test["no noise"]) for k, v in test.items() if k != "no noise"]
    return {"test": test, "curves": curves, "alpha": pr["alpha"],
            "tables": [table(f"Final test accuracy, {pr['task']}, Adam lr {pr['lr']:g}, {pr['steps']} steps",
                             INTERVAL_COLUMNS, rows),
                       table("Against no noise (Welch t test)", COMPARISON_COLUMNS, comp)]}


def verdict(evidence: dict[str, Any]) -> Verdict:
    from optimlab.lab.present.stats import welch_test

    base = evidence["test"]["no noise"]
    mb = statistics.fmean(base)
    higher, significant, parts = [], [], []
    for k, v in evidence["test"].items():
        if k == "no noise":
            continue
        m = statistics.fmean(v)
        try:
            p = welch_test(v, base).p
        except ValueError:
            p = float("nan")
        parts.append(f"{k}: {m:.4f} vs {mb:.4f}, p = {p:.3g}")
        if m > mb:
            higher.append(k)
            if p < evidence["alpha"]:
                significant.append(k)
    detail = "; ".join(parts)
    if significant:
        return Verdict(REPRODUCED, f"noise helps significantly at {', '.join(significant)} ({detail})")
    if higher:
        return Verdict(MIXED, f"a higher mean at {', '.join(higher)} but not significant ({detail})")
    return Verdict(NOT_REPRODUCED, f"no η beats no noise ({detail})")


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = ["#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd"]
    for (label, c), col in zip(evidence["curves"].items(), colors, strict=False):
        v = np.asarray(c["val"], dtype=float)
        ax.plot(c["steps"], v.mean(0), color=col, label=label, lw=1.6)
        ax.fill_between(c["steps"], v.min(0), v.max(0), color=col, alpha=0.15, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy")
    ax.set_title("20 x 50 ReLU MLP, simple init, Adam ± annealed gradient noise", fontsize=10)
    ax.legend()
    save_figure(fig, path, tight_layout=True)
