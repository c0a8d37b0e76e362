"""Claim 6, ``lookahead``: Lookahead lowers the variance of its inner optimizer and makes it robust to its lr.

The claim (Zhang, Lucas, Hinton & Ba 2019): k fast steps of any optimizer, then the slow weights move a fraction
α towards the fast ones (φ ← φ + α(θ - φ), θ ← φ); this "improves learning stability and lowers the variance of its
inner optimizer" (abstract), is robust to the inner lr and to k and α (Section 5, Figures 6-7), and on the noisy
quadratic model reaches a lower expected loss at its fixed point than the inner SGD (Section 3, Proposition 1).

Three parts:

1. lr x seeds grid on ``mnist1d-mlp`` (the lab's :class:`~optimlab.lab.training.runner.RunConfig` runs through
   :func:`~optimlab.lab.study.sweep.run_sweep`, constant lr so the lr alone varies): Adam and ``lookahead+adam``
   (k = 5, α = 0.5, the paper's); final validation accuracy; spread over seeds at each lr, spread over lrs;
2. a k x α sweep of ``lookahead@k=..,alpha=..+adam`` at the middle lr of the grid;
3. the 2-D quadratic f = (x² + 20y²)/2: fast and slow trajectories of Lookahead(SGD) from the lab's start
   (-4, 1.5), and the noisy quadratic of the paper's Section 3 (minimum c_t ~ N(0, σ²) redrawn every step, one
   tensor row per seed): the steady-state loss E f(x) of SGD and Lookahead(SGD) at the same lr.

Citations: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019
(arXiv:1907.08610); reference code github.com/michaelrzhang/lookahead (PyTorch). Implementation:
:class:`optimlab.wrappers.Lookahead`.

Size: default, 1500 steps, 5 lrs x 5 seeds x 2 methods + 4 k/α x 5 seeds = 70 runs; ``--quick``, 150 steps, 3 lrs
x 2 seeds x 2 + 2 x 2 = 16 runs (``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from optimlab.lab.reproduce.base import (
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

NAME = "lookahead"
TITLE = "Lookahead: lower variance across seeds and lrs; slow and fast weights"
CLAIM = ("Lookahead (k fast steps, then the slow weights move α of the way) lowers the variance of its inner "
         "optimizer and makes it robust to the lr and to k, α (Zhang et al. 2019).")
CITATION = ("Zhang, Lucas, Hinton & Ba, \"Lookahead Optimizer: k steps forward, 1 step back\", NeurIPS 2019; "
            "github.com/michaelrzhang/lookahead")
CAPTION = ("Left: final validation accuracy against the lr (mean and range over seeds), Adam and Lookahead(Adam); "
           "centre: fast (thin) and slow (dots, every k steps) weights of Lookahead(SGD) on (x² + 20y²)/2; right: "
           "the noisy quadratic's loss over steps, SGD and Lookahead(SGD) (mean over seeds).")

PROTOCOL: dict[str, Any] = {
    "task": "mnist1d-mlp",
    "inner": "adam",
    "k": 5,
    "alpha": 0.5,
    "lrs": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "steps": 1500,
    "batch_size": 100,
    "eval_every": 250,
    "k_alpha": [[5, 0.5], [5, 0.8], [10, 0.5], [10, 0.8]],
    "quadratic": {"h": [1.0, 20.0], "start": [-4.0, 1.5], "lr": 0.09, "steps": 60, "k": 5, "alpha": 0.5},
    "noisy_quadratic": {"h": [1.0, 20.0], "sigma": [1.0, 1.0], "lr": 0.09, "steps": 1000, "k": 5, "alpha": 0.5,
                        "replicas": 100},
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {
    "lrs": [1e-3, 1e-2, 3e-2],
    "steps": 150,
    "eval_every": 50,
    "k_alpha": [[5, 0.8], [10, 0.5]],
    "noisy_quadratic": {"h": [1.0, 20.0], "sigma": [1.0, 1.0], "lr": 0.09, "steps": 300, "k": 5, "alpha": 0.5,
                        "replicas": 50},
    "seeds": [0, 1],
}

RULE = ("reproduced if (1) Lookahead(Adam)'s standard deviation of the final validation accuracy over seeds, "
        "averaged over the lr grid, is below Adam's; (2) its spread over the lr grid (best minus worst mean final "
        "validation accuracy) is below Adam's; (3) on the noisy quadratic its steady-state loss (mean of the last "
        "half of the steps) is below SGD's at the same lr (Welch t test over replicas, p < 0.05); not reproduced if "
        "none holds; mixed otherwise.")

def _spec(k: int, alpha: float, inner: str) -> str:
    return f"lookahead@k={k},alpha={alpha}+{inner}"


def _configs(pr: dict[str, Any], seeds: list[int]) -> tuple[list[Any], list[Any]]:
    from optimlab.lab.training.runner import RunConfig

    def cfg(spec: str, lr: float, seed: int) -> RunConfig:
        return RunConfig(task=pr["task"], optimizer=spec, lr=lr, seed=seed, steps=pr["steps"],
                         batch_size=pr["batch_size"], eval_every=pr["eval_every"], schedule="constant",
                         splits=("train", "val"))

    grid = [cfg(spec, lr, s) for spec in (pr["inner"], _spec(pr["k"], pr["alpha"], pr["inner"]))
            for lr in pr["lrs"] for s in seeds]
    mid = pr["lrs"][len(pr["lrs"]) // 2]
    sweep = [cfg(_spec(k, a, pr["inner"]), mid, s) for k, a in pr["k_alpha"] for s in seeds]
    return grid, sweep


def work(protocol: dict[str, Any]) -> list[Any]:
    """The lr grid's and the k x α sweep's runs; the two quadratics (a few thousand steps of a 2-D or 100 x 2
    tensor) are left out of the price."""
    grid, sweep = _configs(protocol, list(protocol["seeds"]))
    return grid + sweep


def _quadratic(q: dict[str, Any]) -> dict[str, Any]:
    """Lookahead(SGD) on the deterministic quadratic: fast weights every step, slow weights at each sync."""
    import torch

    import optimlab
    from optimlab.wrappers import Lookahead

    h = torch.tensor(q["h"], dtype=torch.float64)
    p = torch.tensor(q["start"], dtype=torch.float64, requires_grad=True)
    opt = Lookahead(optimlab.SGD([p], lr=q["lr"]), k=q["k"], alpha=q["alpha"])
    fast, slow = [p.detach().tolist()], [p.detach().tolist()]
    plain = p.detach().clone()
    sgd = [plain.tolist()]
    for t in range(1, q["steps"] + 1):
        p.grad = h * p.detach()
        opt.step()
        fast.append(p.detach().tolist())  # after a sync this is the slow point (θ ← φ)
        if t % q["k"] == 0:
            slow.append(opt.wrapper_state[p]["slow_param"].tolist())
        plain -= q["lr"] * h * plain
        sgd.append(plain.tolist())
    return {"fast": fast, "slow": slow, "sgd": sgd}


def _noisy(q: dict[str, Any], lookahead: bool, seed: int) -> dict[str, Any]:
    """The noisy quadratic model (paper Sec. 3): f_t(x) = ½ Σ h_i (x_i - c_{t,i})², c_t ~ N(0, σ²); one row per
    replica. Returns the expected loss E f(x) = ½ Σ h_i (x_i² + σ_i²) over steps and each replica's steady state."""
    import torch

    import optimlab
    from optimlab.wrappers import Lookahead

    g = torch.Generator().manual_seed(seed)
    n = q["replicas"]
    h = torch.tensor(q["h"], dtype=torch.float64)
    sigma = torch.tensor(q["sigma"], dtype=torch.float64)
    p = torch.zeros(n, 2, dtype=torch.float64).add_(torch.tensor([1.0, 1.0], dtype=torch.float64)).requires_grad_()
    inner = optimlab.SGD([p], lr=q["lr"])
    opt = Lookahead(inner, k=q["k"], alpha=q["alpha"]) if lookahead else inner
    curve, tail = [], torch.zeros(n, dtype=torch.float64)
    steps = q["steps"]
    for t in range(1, steps + 1):
        c = torch.randn(n, 2, generator=g, dtype=torch.float64) * sigma
        p.grad = h * (p.detach() - c)
        opt.step()
        x = opt.wrapper_state[p]["slow_param"] if lookahead else p.detach()  # evaluate at the slow weights
        loss = 0.5 * (h * (x * x + sigma * sigma)).sum(1)
        if t > steps // 2:
            tail += loss
        if t % 10 == 0:
            curve.append(float(loss.mean()))
    return {"curve": curve, "steady": (tail / (steps - steps // 2)).tolist()}


def run(ctx: Context) -> dict[str, Any]:
    pr = ctx.protocol
    seeds = list(ctx.seeds)
    grid, sweep = _configs(pr, seeds)
    records = ctx.sweep(grid + sweep, "runs")
    final = {(r.config.optimizer, r.config.lr, r.config.seed): (float(r.final("val_accuracy")) if r.ok else 0.0)
             for r in records}
    la = _spec(pr["k"], pr["alpha"], pr["inner"])
    methods = [pr["inner"], la]
    by_lr = {m: {lr: [final[(m, lr, s)] for s in seeds] for lr in pr["lrs"]} for m in methods}
    seed_sd = {m: statistics.fmean(statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_lr[m].values())
               for m in methods}
    means = {m: [statistics.fmean(by_lr[m][lr]) for lr in pr["lrs"]] for m in methods}
    lr_spread = {m: max(means[m]) - min(means[m]) for m in methods}
    rows = [interval_row(f"{m} @ lr {lr:g}", by_lr[m][lr]) for lr in pr["lrs"] for m in methods]
    summary = [[m, f"{seed_sd[m]:.4f}", f"{lr_spread[m]:.4f}", f"{max(means[m]):.4f}"] for m in methods]
    mid = pr["lrs"][len(pr["lrs"]) // 2]
    ka_rows = [interval_row(f"k = {k}, α = {a}", [final[(_spec(k, a, pr["inner"]), mid, s)] for s in seeds])
               for k, a in pr["k_alpha"]]
    ka_rows.append(interval_row(f"{pr['inner']} alone", by_lr[pr["inner"]][mid]))
    quad = ctx.cached({"claim": NAME, "part": "quadratic", **pr["quadratic"]}, lambda: _quadratic(pr["quadratic"]))
    nq = pr["noisy_quadratic"]
    noisy = {name: ctx.cached({"claim": NAME, "part": "noisy", "lookahead": la_, "seed": seeds[0], **nq},
                              lambda la_=la_: _noisy(nq, la_, seeds[0]))
             for name, la_ in (("sgd", False), ("lookahead+sgd", True))}
    nq_rows = [interval_row(f"{n}: steady-state loss", noisy[n]["steady"]) for n in noisy]
    h, s2 = nq["h"], [s * s for s in nq["sigma"]]
    floor = 0.5 * sum(hi * si for hi, si in zip(h, s2, strict=True))
    tables = [
        table(f"Final validation accuracy, {pr['task']}, {pr['steps']} steps, constant lr", INTERVAL_COLUMNS, rows),
        table("Variance summary", ["method", "mean sd over seeds", "spread over lrs", "best mean"], summary),
        table(f"k and α sweep at lr {mid:g} (final validation accuracy)", INTERVAL_COLUMNS, ka_rows),
        table(f"Noisy quadratic, h = {h}, σ = {nq['sigma']}, lr {nq['lr']}, {nq['replicas']} replicas "
              f"(the loss floor ½Σhσ² = {floor:g})", INTERVAL_COLUMNS, nq_rows),
        table("Noisy quadratic: Lookahead(SGD) against SGD", COMPARISON_COLUMNS,
              [comparison_row("steady-state loss: lookahead+sgd - sgd", noisy["lookahead+sgd"]["steady"],
                              noisy["sgd"]["steady"])]),
    ]
    return {"methods": methods, "lrs": pr["lrs"], "by_lr": {m: [by_lr[m][lr] for lr in pr["lrs"]] for m in methods},
            "seed_sd": seed_sd, "lr_spread": lr_spread, "quadratic": quad, "noisy": noisy, "k": pr["quadratic"]["k"],
            "tables": tables}


def verdict(evidence: dict[str, Any]) -> Verdict:
    from optimlab.lab.present.stats import welch_test

    inner, la = evidence["methods"]
    sd, spread = evidence["seed_sd"], evidence["lr_spread"]
    a, b = evidence["noisy"]["lookahead+sgd"]["steady"], evidence["noisy"]["sgd"]["steady"]
    p = welch_test(a, b).p
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    return verdict_from_checks([
        Check("Lookahead's sd over seeds (mean over lrs) below the inner optimizer's", sd[la] < sd[inner],
              f"{sd[la]:.4f} vs {sd[inner]:.4f}"),
        Check("Lookahead's spread over the lr grid below the inner optimizer's", spread[la] < spread[inner],
              f"{spread[la]:.4f} vs {spread[inner]:.4f}"),
        Check("noisy quadratic: Lookahead(SGD)'s steady-state loss significantly below SGD's", ma < mb and p < 0.05,
              f"{ma:.4g} vs {mb:.4g}, p = {p:.3g}"),
    ])


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    lrs = evidence["lrs"]
    for m in evidence["methods"]:
        v = np.asarray(evidence["by_lr"][m], dtype=float)
        name = "lookahead+adam" if m.startswith("lookahead") else m
        a.plot(lrs, v.mean(1), "o-", color=color_for(name), label=m)
        a.fill_between(lrs, v.min(1), v.max(1), color=color_for(name), alpha=0.2, lw=0)
    a.set_xscale("log")
    a.set_xlabel("lr (constant)")
    a.set_ylabel("final validation accuracy")
    a.legend(fontsize=8)
    q = evidence["quadratic"]
    xs, ys = np.meshgrid(np.linspace(-4.5, 1, 200), np.linspace(-2, 2, 200))
    b.contour(xs, ys, 0.5 * (xs**2 + 20 * ys**2), levels=12, colors="#cccccc", linewidths=0.6)
    for key, style, col in (("sgd", "-", color_for("sgd")), ("fast", "-", color_for("lookahead+sgdm"))):
        pts = np.asarray(q[key])
        b.plot(pts[:, 0], pts[:, 1], style, color=col, lw=0.9, label="SGD" if key == "sgd" else "fast weights")
    slow = np.asarray(q["slow"])
    b.plot(slow[:, 0], slow[:, 1], "o-", color="k", ms=4, lw=1.2, label=f"slow weights (every k = {evidence['k']})")
    b.set_xlabel("x")
    b.set_ylabel("y")
    b.legend(fontsize=8)
    for name, col in (("sgd", color_for("sgd")), ("lookahead+sgd", color_for("lookahead+sgdm"))):
        curve = evidence["noisy"][name]["curve"]
        c.plot(np.arange(1, len(curve) + 1) * 10, curve, color=col, label=name)
    c.set_yscale("log")
    c.set_xlabel("step")
    c.set_ylabel("expected loss E f(x) (noisy quadratic)")
    c.legend(fontsize=8)
    save_figure(fig, path, tight_layout=True)


