"""Claim 2, ``amsgrad-counterexample``: Adam converges to the wrong end of Reddi et al.'s online problem, AMSGrad
to the optimum.

The claim (Reddi, Kale & Kumar 2018, Section 3 and Figure 1): on the online linear problem over F = [-1, 1]
with f_t(x) = C·x once every ``period`` steps and -x (times ``small``) otherwise, the optimum is x = -1 (the sum over
a period is (C - (period - 1)·small)·x with a positive coefficient), yet Adam, whose v forgets the rare large
gradient, drifts to x = +1 and its average regret R_t/t does not vanish; AMSGrad (v̂ = max(v̂, v)) converges to -1
with R_t/t -> 0.

Two settings, both run: ``section3``: the paper's Theorem 1 (period 3, C = 3 > 2, β₁ = 0, β₂ = 1/(1 + C²));
``experiment``: the paper's Figure 1 online setting (f_t = 1010·x for t mod 101 = 1, -10·x otherwise, β₁ = 0.9,
β₂ = 0.99). Step size α_t = α/√t as in the paper, projection onto [-1, 1] after each step (clamp). Regret
R_t = Σ_{s≤t} f_s(x_s) - min_{x∈F} Σ_{s≤t} f_s(x) (the minimum is at x = -1 for every t here: the comparator of
the paper's figure).

Citations: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (Theorem 1; Section 5,
Figure 1, left: R_t/t, centre: x_t). Implementations: optimlab's Adam and Adam(amsgrad=True) (torch.optim's
AMSGrad form: the max of v, with Adam's bias correction; the paper's Algorithm 2 has no bias correction, which
vanishes after the first steps here).

How: one float64 tensor holds the runs of every seed (the update is element-wise, so element i is the run from
seed i's starting point, uniform in [-1, 1]); ``p.grad`` is set by hand to f_t's gradient; one cached piece per
(setting, optimizer).

Size: default, 100k and 400k steps; ``--quick``, 5k and 50k steps (``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

import math
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
from optimlab.lab.study.cost import Steps

NAME = "amsgrad-counterexample"
TITLE = "Reddi et al.'s online counterexample: Adam ends at +1, AMSGrad at the optimum -1"
CLAIM = ("On f_t(x) = C·x once every few steps and -x otherwise, on [-1, 1], Adam converges to the wrong end (+1) "
         "and its average regret stays positive; AMSGrad converges to the optimum -1 (Reddi et al. 2018).")
CITATION = "Reddi, Kale & Kumar, \"On the Convergence of Adam and Beyond\", ICLR 2018 (Theorem 1, Figure 1)"
CAPTION = ("Left: average regret R_t/t; right: the iterate x_t (the paper's Figure 1 left and centre), mean over "
           "seeds with the range; top: Theorem 1's setting, bottom: the paper's online experiment.")

PROTOCOL: dict[str, Any] = {
    "settings": {
        "section3": {"C": 3.0, "small": 1.0, "period": 3, "beta1": 0.0, "beta2": 0.1, "alpha": 1.0, "steps": 100_000},
        "experiment": {"C": 1010.0, "small": 10.0, "period": 101, "beta1": 0.9, "beta2": 0.99, "alpha": 1.0,
                       "steps": 400_000},
    },
    "eps": 1e-8,
    "tolerance": 0.05,  # "converges to" = final x within this of the end
    "points": 300,  # curve samples kept per run (log-spaced steps)
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {
    "settings": {
        "section3": {"C": 3.0, "small": 1.0, "period": 3, "beta1": 0.0, "beta2": 0.1, "alpha": 1.0, "steps": 5_000},
        "experiment": {"C": 1010.0, "small": 10.0, "period": 101, "beta1": 0.9, "beta2": 0.99, "alpha": 1.0,
                       "steps": 50_000},
    },
}

RULE = ("reproduced if, in both settings (Theorem 1's and the paper's experiment), for every seed Adam's final x is "
        "within 0.05 of +1, AMSGrad's final x within 0.05 of -1, and AMSGrad's final average regret R_T/T is below "
        "Adam's; not reproduced if none of these six checks holds; mixed otherwise.")

OPTIMIZERS = ("adam", "amsgrad")


def work(protocol: dict[str, Any]) -> list[Steps]:
    """One run per setting and optimizer, every seed an element of one tensor (the lab's ``adam`` and ``amsgrad``
    presets step as these runs do; the loss, the projection and the lr update each step are left out)."""
    n = len(protocol["seeds"])
    return [Steps(name, s["steps"], numel=n) for s in protocol["settings"].values() for name in OPTIMIZERS]


def _start(seeds: list[int]) -> list[float]:
    import torch

    return [float(torch.rand(1, generator=torch.Generator().manual_seed(s), dtype=torch.float64)) * 2 - 1
            for s in seeds]


def _simulate(opt_name: str, s: dict[str, Any], eps: float, seeds: list[int], points: int, bar: Any) -> dict[str, Any]:
    import torch

    import optimlab

    x0 = torch.tensor(_start(seeds), dtype=torch.float64)
    p = x0.clone().requires_grad_(True)
    opt = optimlab.Adam([p], lr=s["alpha"], betas=(s["beta1"], s["beta2"]), eps=eps, amsgrad=opt_name == "amsgrad")
    n, steps, period = len(seeds), s["steps"], s["period"]
    big = torch.full((n,), s["C"], dtype=torch.float64)
    small = torch.full((n,), -s["small"], dtype=torch.float64)
    loss = torch.zeros(n, dtype=torch.float64)
    comparator = 0.0  # sum of f_s(-1)
    keep = sorted({max(1, round(steps ** (i / (points - 1)))) for i in range(points)})
    at, xs, avg_regret = [], [], []
    j = 0
    for t in range(1, steps + 1):
        rare = t % period == 1
        c = s["C"] if rare else -s["small"]
        with torch.no_grad():
            loss.add_(p, alpha=c)  # f_t(x_t), x_t the iterate played at step t
        comparator -= c
        p.grad = big if rare else small
        opt.param_groups[0]["lr"] = s["alpha"] / math.sqrt(t)
        opt.step()
        with torch.no_grad():
            p.clamp_(-1.0, 1.0)  # projection onto F = [-1, 1]
        if j < len(keep) and t == keep[j]:
            at.append(t)
            xs.append(p.detach().tolist())
            avg_regret.append(((loss - comparator) / t).tolist())
            j += 1
        if t % 1000 == 0:
            bar.update(1000)
    bar.update(steps % 1000)
    return {"x0": x0.tolist(), "steps": at, "x": xs, "avg_regret": avg_regret,
            "final_x": p.detach().tolist(), "final_avg_regret": ((loss - comparator) / steps).tolist()}


def run(ctx: Context) -> dict[str, Any]:
    pr = ctx.protocol
    seeds = list(ctx.seeds)
    total = sum(2 * s["steps"] for s in pr["settings"].values())
    bar = ctx.bar(total, "adam, amsgrad", "step")
    runs: dict[str, dict[str, Any]] = {}
    for setting, s in pr["settings"].items():
        runs[setting] = {}
        for name in OPTIMIZERS:
            key = {"claim": NAME, "setting": s, "optimizer": name, "eps": pr["eps"], "seeds": seeds,
                   "points": pr["points"]}
            runs[setting][name] = ctx.cached(
                key, lambda s=s, name=name: _simulate(name, s, pr["eps"], seeds, pr["points"], bar))
    bar.close()
    tables = []
    for setting, s in pr["settings"].items():
        r = runs[setting]
        label = (f"{setting}: C = {s['C']:g}, period {s['period']}, β = ({s['beta1']:g}, {s['beta2']:g}), "
                 f"α_t = {s['alpha']:g}/√t, T = {s['steps']:,}")
        rows = [interval_row(f"{n} final x", r[n]["final_x"]) for n in OPTIMIZERS]
        rows += [interval_row(f"{n} final R_T/T", r[n]["final_avg_regret"]) for n in OPTIMIZERS]
        tables.append(table(f"{label}: over {len(seeds)} seeds (starts uniform in [-1, 1])", INTERVAL_COLUMNS, rows))
        tables.append(table(f"{setting}: Adam against AMSGrad (paired by seed)", COMPARISON_COLUMNS,
                            [comparison_row("R_T/T: adam - amsgrad", r["adam"]["final_avg_regret"],
                                            r["amsgrad"]["final_avg_regret"], paired=True)]))
    notes = ["The optimum of every setting is x = -1: the sum of f_t over one period is (C - (period - 1)·small)·x "
             "with C - (period - 1)·small > 0."]
    return {"runs": runs, "settings": pr["settings"], "tolerance": pr["tolerance"], "seeds": seeds,
            "tables": tables, "notes": notes}


def verdict(evidence: dict[str, Any]) -> Verdict:
    tol = evidence["tolerance"]
    checks = []
    for setting, r in evidence["runs"].items():
        adam, ams = r["adam"]["final_x"], r["amsgrad"]["final_x"]
        checks.append(Check(f"{setting}: Adam ends within {tol:g} of +1 for every seed",
                            all(abs(x - 1) <= tol for x in adam), "final x " + ", ".join(f"{x:.3f}" for x in adam)))
        checks.append(Check(f"{setting}: AMSGrad ends within {tol:g} of -1 for every seed",
                            all(abs(x + 1) <= tol for x in ams), "final x " + ", ".join(f"{x:.3f}" for x in ams)))
        ra, rm = r["adam"]["final_avg_regret"], r["amsgrad"]["final_avg_regret"]
        checks.append(Check(f"{setting}: AMSGrad's R_T/T below Adam's for every seed",
                            all(m < a for a, m in zip(ra, rm, strict=True)),
                            f"Adam {min(ra):.3g}..{max(ra):.3g}, AMSGrad {min(rm):.3g}..{max(rm):.3g}"))
    return verdict_from_checks(checks)


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    settings = list(evidence["runs"])
    fig, axes = plt.subplots(len(settings), 2, figsize=(10, 3.6 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings, strict=True):
        for name in OPTIMIZERS:
            r = evidence["runs"][setting][name]
            t = np.asarray(r["steps"])
            for ax, k in zip(row, ("avg_regret", "x"), strict=True):
                v = np.asarray(r[k], dtype=float)
                ax.plot(t, v.mean(1), color=color_for(name), label=name, lw=1.6)
                ax.fill_between(t, v.min(1), v.max(1), color=color_for(name), alpha=0.2, lw=0)
        s = evidence["settings"][setting]
        row[0].set_ylabel("R_t / t")
        late = [v for n in OPTIMIZERS for t, v in zip(evidence["runs"][setting][n]["steps"],
                                                       evidence["runs"][setting][n]["avg_regret"], strict=True)
                if t >= 10 * s["period"]]
        if late:
            row[0].set_ylim(0, 1.3 * max(max(v) for v in late))  # the first steps' regret would hide the rest
        row[1].set_ylabel("x_t")
        row[1].axhline(-1, color="k", ls="--", lw=0.8)
        for ax in row:
            ax.set_xscale("log")
            ax.set_xlabel("iterations t")
            ax.set_title(f"{setting}: C = {s['C']:g}, period {s['period']}, β = ({s['beta1']:g}, {s['beta2']:g})",
                         fontsize=10)
        row[0].legend()
    save_figure(fig, path, tight_layout=True)
