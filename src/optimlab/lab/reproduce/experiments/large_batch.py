"""Claim 7, ``large-batch``: steps to a target against batch size, and where linear lr scaling stops working.

The claims: Goyal et al. (2017): with the linear scaling rule (multiply the lr by k when the batch grows k-fold)
and a gradual warm-up, SGD with momentum reaches the same result in k times fewer steps, up to large batches.
Shallue et al. (2018): steps to a result fall as 1/batch ("perfect scaling") only up to a problem-dependent batch
size, then with diminishing returns, then not at all (the article's question "why does linear lr scaling stop
working past some batch size?"). You et al. (2017, LARS; 2020, LAMB): layer-wise trust ratios keep large batches
trainable where the plain rule breaks.

Citations: Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677 (Sec. 2.1
linear scaling, 2.2 gradual warm-up); Shallue et al., "Measuring the Effects of Data Parallelism on Neural Network
Training", JMLR 2019 / arXiv:1811.03600 (Figure 1: steps to result vs batch size, log-log); You, Gitman & Ginsburg,
"Large Batch Training of Convolutional Networks" (LARS), arXiv:1708.03888; You et al., "Large Batch Optimization for
Deep Learning: Training BERT in 76 minutes" (LAMB), ICLR 2020 (square-root lr scaling with warm-up).

How: the MNIST-1D MLP (``mnist1d-mlp``, the task's validation target 60 % accuracy). 1. The base lr of each
optimizer is tuned at the smallest batch on a small grid (seed 0; the lr with the fewest steps to target). 2. At
every batch size B the lr follows each optimizer's scaling rule from the base batch B0: linear (k = B/B0) for SGDM
(Goyal) and LARS, square root for Adam and LAMB (You et al. 2020); every run warms up linearly over its first
epoch (Goyal's gradual warm-up, 5 of 90 epochs there; one of a few dozen here), then holds the lr. 3. Around the
rule's lr, factors 0.3, 1 and 3 are also run, so each optimizer's steps to target at B is the best of three lrs
(Shallue's "best lr per batch size", within the rule's neighbourhood) and one sees whether the rule's own lr is
still the best. Steps to target: the first evaluation of the validation accuracy at or above the target (the lab's
runner, stopped there by :class:`~optimlab.lab.training.runner.StopAtTarget`), per seed; runs that never reach it
within the cap count as not reached (infinite).

Size: default, 7 batch sizes, 4 optimizers, 3 lrs, 2 seeds, plus the base-lr tuning; ``--quick``, 3 batch sizes,
the rule's lr only, 1 seed; the runs are small and sequential, one torch thread each (``--dry-run`` prices them on
this machine at their caps: most stop earlier, at the target).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from optimlab.lab.reproduce.base import (
    INTERVAL_COLUMNS,
    Check,
    Context,
    Verdict,
    interval_row,
    table,
    verdict_from_checks,
)
from optimlab.lab.study.cost import Training

NAME = "large-batch"
TITLE = "Steps to a target vs batch size: linear scaling (SGDM + warm-up), Adam, LARS, LAMB"
CLAIM = ("With the linear scaling rule and warm-up, SGDM needs k times fewer steps with a k times larger batch "
         "(Goyal et al.), but only up to some batch size, past which steps to target stop falling as 1/batch "
         "(Shallue et al.); the layer-wise methods LARS and LAMB scale further (You et al.).")
CITATION = ("Goyal et al. 2017 (arXiv:1706.02677); Shallue et al. 2018 (arXiv:1811.03600, Fig. 1); You et al. 2017 "
            "(LARS, arXiv:1708.03888); You et al. 2020 (LAMB, ICLR)")
CAPTION = ("Steps to 60 % validation accuracy (MNIST-1D MLP) against batch size, log-log, the best of the rule's lr "
           "×{0.3, 1, 3} per batch size; mean over seeds. Dotted: perfect scaling from the smallest batch "
           "(steps ∝ 1/B); crosses: the target was not reached within the cap.")

PROTOCOL: dict[str, Any] = {
    "task": "mnist1d-mlp",
    "target": 0.6,  # validation accuracy (the task's target)
    "batch_sizes": [32, 64, 128, 256, 512, 1024, 2048],
    "optimizers": {  # base-lr grid at the smallest batch, and the lr scaling rule from it
        "sgdm": {"lrs": [0.01, 0.03, 0.1], "rule": "linear"},
        "adam": {"lrs": [3e-4, 1e-3, 3e-3], "rule": "sqrt"},
        "lars": {"lrs": [1.0, 3.0, 10.0], "rule": "linear"},
        "lamb": {"lrs": [3e-3, 1e-2, 3e-2], "rule": "sqrt"},
    },
    "lr_factors": [0.3, 1.0, 3.0],  # tried around the rule's lr at every batch size
    "warmup_epochs": 1.0,  # linear warm-up over this many epochs (at least one step), then constant
    "max_steps": 4000,  # the step cap at the smallest batch ...
    "cap_factor": 8,  # ... and cap(B) = max(min_steps, min(max_steps, cap_factor * max_steps * B0 / B))
    "min_steps": 300,
    "evals_per_cap": 160,  # evaluations at most per run (eval_every = cap // evals_per_cap, at least 1)
    "perfect_tolerance": 1.5,  # "near-perfect scaling": steps(B) <= 1.5 x steps(B0) * B0 / B
    "goyal_min_factor": 4,  # Goyal: near-perfect scaling of SGDM up to at least 4 x B0
    "seeds": [0, 1],
}
QUICK: dict[str, Any] = {
    "batch_sizes": [32, 256, 1024],
    "optimizers": {
        "sgdm": {"lrs": [0.03], "rule": "linear"},
        "adam": {"lrs": [1e-3], "rule": "sqrt"},
        "lars": {"lrs": [3.0], "rule": "linear"},
        "lamb": {"lrs": [1e-2], "rule": "sqrt"},
    },
    "lr_factors": [1.0],
    "goyal_min_factor": 8,
    "max_steps": 1500,
    "min_steps": 150,
    "seeds": [0],
}

RULE = ("Three checks on the mean over seeds of steps to target (best lr of the three per batch size; not reached = "
        "infinite): (1, Goyal) SGDM with linear scaling and warm-up scales near-perfectly (steps(B) <= 1.5 x "
        "steps(B0)·B0/B) at every batch size up to 4 x B0; (2, Shallue) it stops doing so within the grid: at some "
        "batch size it needs more than 1.5 x the perfect-scaling steps; (3, You et al.) at the largest batch size "
        "LARS or LAMB reaches the target in fewer steps than SGDM. Reproduced if all three hold, not reproduced if "
        "none, mixed otherwise.")

OPTIMIZERS = ("sgdm", "adam", "lars", "lamb")


def _scale(rule: str, k: float) -> float:
    return k if rule == "linear" else math.sqrt(k)


def _cap(p: dict[str, Any], b: int) -> int:
    b0 = p["batch_sizes"][0]
    return int(max(p["min_steps"], min(p["max_steps"], p["cap_factor"] * p["max_steps"] * b0 / b)))


def _warmup(p: dict[str, Any], b: int, n_train: int) -> int:
    return max(1, round(p["warmup_epochs"] * n_train / b))


N_TRAIN = 3600  # MNIST-1D's training split (the schedule's warm-up is one epoch of it)


def _eval_every(p: dict[str, Any], b: int) -> int:
    return max(1, _cap(p, b) // p["evals_per_cap"])


def _calls(p: dict[str, Any]) -> int:
    """The runs :func:`run` asks for: the base-lr tuning at the smallest batch, then every optimizer, batch size, lr
    factor and seed."""
    tuning = sum(len(p["optimizers"][spec]["lrs"]) for spec in OPTIMIZERS)
    return tuning + len(OPTIMIZERS) * len(p["batch_sizes"]) * len(p["lr_factors"]) * len(p["seeds"])


def work(protocol: dict[str, Any]) -> list[Training]:
    """The runs :func:`_calls` counts, each a loop in this process with one thread that stops at the target, priced
    at its cap (an upper bound); at the smallest batch, factor 1 and the first seed each optimizer's run is its
    tuning run at the base lr, found again in the cache, so it is counted once."""
    p = protocol

    def runs(b: int, n: int) -> Training:
        cap = _cap(p, b)
        evals = cap // _eval_every(p, b) + (cap % _eval_every(p, b) > 0)
        return Training(p["task"], b, cap, runs=n, evals=(("val", evals),), threads=1, until_target=True)

    b0 = p["batch_sizes"][0]
    per_batch = len(OPTIMIZERS) * len(p["lr_factors"]) * len(p["seeds"])
    again = len(OPTIMIZERS) if 1.0 in p["lr_factors"] else 0
    counts = {b: per_batch - (again if b == b0 else 0) for b in p["batch_sizes"]}
    tuning = runs(b0, sum(len(p["optimizers"][spec]["lrs"]) for spec in OPTIMIZERS))
    return [tuning, *(runs(b, n) for b, n in counts.items() if n > 0)]


def _steps_to_target(cfg: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """Train ``cfg`` with the lab's runner until the validation accuracy first reaches ``cfg["target"]`` at an
    evaluation (:class:`~optimlab.lab.training.runner.StopAtTarget`; the steps-to-result measurement of Shallue et
    al.), on one thread (small models: as fast, and the same numbers on every machine). Returns ``{"steps": the step
    it was reached at or None, "evals": [[step, value], ...] (the evaluations after step 0, that of the diverged
    weights left out), "status": "ok" | "diverged" | "not reached", "seconds": ...}``."""
    import torch

    from optimlab.lab.training.runner import RunConfig, StopAtTarget, run

    config = RunConfig(task=cfg["task"], optimizer=cfg["optimizer"], lr=cfg["lr"], seed=cfg["seed"],
                       steps=cfg["max_steps"], batch_size=cfg["batch_size"], eval_every=cfg["eval_every"],
                       schedule=cfg["schedule"], splits=("val",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        record = run(config, callbacks=[StopAtTarget(cfg["target"])], data_dir=data_dir)
    finally:
        torch.set_num_threads(threads)
    history = record.history
    evals = [[s, v] for s, v in zip(history["step"], history[f"val_{record.metric}"], strict=True)][1:]
    if not record.ok:
        evals = evals[:-1]  # the evaluation after the divergence
    reached = record.extras["stop_at_target"]["step"]
    status = "diverged" if not record.ok else "ok" if reached is not None else "not reached"
    return {"steps": reached, "evals": evals, "status": status, "seconds": time.perf_counter() - start}


def _one(ctx: Context, spec: str, b: int, lr: float, seed: int) -> dict[str, Any]:
    p = ctx.protocol
    cap = _cap(p, b)
    cfg = {
        "task": p["task"], "optimizer": spec, "lr": float(f"{lr:.6g}"), "seed": seed, "batch_size": b,
        "max_steps": cap, "eval_every": _eval_every(p, b), "target": p["target"],
        "schedule": f"linear_warmup@warmup_steps={_warmup(p, b, N_TRAIN)}",
    }
    out = ctx.cached({"experiment": NAME, **cfg}, lambda: _steps_to_target(cfg, ctx.data_dir))
    return {**cfg, **out}


def _shown(steps: float) -> float | str:
    return steps if math.isfinite(steps) else "not reached"


def _steps(r: dict[str, Any]) -> float:
    return float(r["steps"]) if r["steps"] is not None else math.inf


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.protocol
    runs = _calls(p)
    ctx.log(f"{runs} runs")
    b0 = p["batch_sizes"][0]
    bar = ctx.bar(runs, "runs", "run")
    base: dict[str, dict[str, Any]] = {}
    tuning = []
    for spec in OPTIMIZERS:
        best = None
        for lr in p["optimizers"][spec]["lrs"]:
            r = _one(ctx, spec, b0, lr, p["seeds"][0])
            bar.update(1)
            tuning.append(r)
            last = r["evals"][-1][1] if r["evals"] else -math.inf
            score = (_steps(r), -last)
            if best is None or score < best[0]:
                best = (score, lr)
        base[spec] = {"lr": best[1], "rule": p["optimizers"][spec]["rule"]}
    results = []
    for spec in OPTIMIZERS:
        for b in p["batch_sizes"]:
            rule_lr = base[spec]["lr"] * _scale(base[spec]["rule"], b / b0)
            for f in p["lr_factors"]:
                for seed in p["seeds"]:
                    r = _one(ctx, spec, b, rule_lr * f, seed)
                    bar.update(1)
                    results.append({**r, "factor": f})
    bar.close()
    # steps to target per (optimizer, batch): per seed, the best lr factor by mean steps over seeds
    curves: dict[str, dict[str, Any]] = {}
    for spec in OPTIMIZERS:
        curves[spec] = {"batch": [], "mean": [], "per_seed": [], "best_factor": [], "lr": []}
        for b in p["batch_sizes"]:
            best = None
            for f in p["lr_factors"]:
                rs = [r for r in results if r["optimizer"] == spec and r["batch_size"] == b and r["factor"] == f]
                vals = [_steps(r) for r in rs]
                m = sum(vals) / len(vals)
                if best is None or m < best[0]:
                    best = (m, f, vals, rs[0]["lr"])
            curves[spec]["batch"].append(b)
            curves[spec]["mean"].append(best[0])
            curves[spec]["per_seed"].append(best[2])
            curves[spec]["best_factor"].append(best[1])
            curves[spec]["lr"].append(best[3])
    rows = []
    for spec in OPTIMIZERS:
        c = curves[spec]
        for b, vals, f, lr in zip(c["batch"], c["per_seed"], c["best_factor"], c["lr"], strict=True):
            label = f"{spec}, batch {b} (lr {lr:.3g} = rule x {f:g})"
            row = interval_row(label, [v for v in vals if math.isfinite(v)]) if any(map(math.isfinite, vals)) \
                else [label, len(vals), "not reached", "–"]
            if any(math.isfinite(v) for v in vals) and not all(math.isfinite(v) for v in vals):
                row[1] = f"{row[1]} (of {len(vals)} reached)"
            rows.append(row)
    tables = [
        table("Base lr at the smallest batch (tuned, seed 0)", ["optimizer", "rule", "lr", "steps to target"],
              [[s, base[s]["rule"], base[s]["lr"], _shown(min(_steps(r) for r in tuning if r["optimizer"] == s))]
               for s in OPTIMIZERS]),
        table(f"Steps to {p['target']:.0%} validation accuracy (best lr factor per batch size)",
              list(INTERVAL_COLUMNS), rows, note="not reached: the cap, " + ", ".join(
                  f"{b}: {_cap(p, b)}" for b in p["batch_sizes"])),
    ]
    return {"target": p["target"], "batch_sizes": p["batch_sizes"], "base": base, "curves": curves,
            "perfect_tolerance": p["perfect_tolerance"], "goyal_min_factor": p["goyal_min_factor"],
            "caps": {str(b): _cap(p, b) for b in p["batch_sizes"]}, "tables": tables,
            "notes": ["A lr factor other than 1 in the table means the scaling rule's own lr was not the best one."]}


def _inf(v: float | None) -> float:
    """Evidence stores "not reached" (infinite steps) as None (strict JSON)."""
    return math.inf if v is None else float(v)


def _ratios(curve: dict[str, Any]) -> list[float]:
    """steps(B) / (steps(B0) * B0 / B): 1 is perfect scaling (inf when B0 or B did not reach the target)."""
    b0, s0 = curve["batch"][0], _inf(curve["mean"][0])
    out = []
    for b, s in zip(curve["batch"], map(_inf, curve["mean"]), strict=True):
        ideal = s0 * b0 / b
        out.append(s / ideal if math.isfinite(s) and math.isfinite(ideal) and ideal > 0 else math.inf)
    return out


def verdict(evidence: dict[str, Any]) -> Verdict:
    tol, kmin = evidence["perfect_tolerance"], evidence["goyal_min_factor"]
    sgdm = evidence["curves"]["sgdm"]
    b0 = sgdm["batch"][0]
    ratios = _ratios(sgdm)
    upto = [r for b, r in zip(sgdm["batch"], ratios, strict=True) if 1 < b / b0 <= kmin]
    detail = ", ".join(f"B={b}: {r:.2f}" for b, r in zip(sgdm["batch"], ratios, strict=True))
    goyal = bool(upto) and all(r <= tol for r in upto)
    broken = [b for b, r in zip(sgdm["batch"], ratios, strict=True) if r > tol]
    last = {s: _inf(evidence["curves"][s]["mean"][-1]) for s in ("sgdm", "lars", "lamb")}
    best_layer = min(last["lars"], last["lamb"])
    checks = [
        Check(f"SGDM + linear scaling scales near-perfectly up to {kmin} x the smallest batch "
              f"(steps ratio to perfect scaling <= {tol})", goyal, detail),
        Check(f"SGDM + linear scaling stops scaling within the grid (ratio > {tol} at some batch)", bool(broken),
              f"first at B={broken[0]}" if broken else "never"),
        Check("at the largest batch LARS or LAMB needs fewer steps than SGDM", best_layer < last["sgdm"],
              ", ".join(f"{s}: {v:.4g}" for s, v in last.items())),
    ]
    return verdict_from_checks(checks)


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    caps = evidence["caps"]
    for spec, c in evidence["curves"].items():
        means = [_inf(s) for s in c["mean"]]
        xs = [b for b, s in zip(c["batch"], means, strict=True) if math.isfinite(s)]
        ys = [s for s in means if math.isfinite(s)]
        ax.plot(xs, ys, "o-", color=color_for(spec), label=spec)
        miss = [b for b, s in zip(c["batch"], means, strict=True) if not math.isfinite(s)]
        ax.plot(miss, [caps[str(b)] for b in miss], "x", color=color_for(spec), ms=9)
    sg = evidence["curves"]["sgdm"]
    if math.isfinite(_inf(sg["mean"][0])):
        b0, s0 = sg["batch"][0], sg["mean"][0]
        ax.plot(sg["batch"], [s0 * b0 / b for b in sg["batch"]], ":", color="k", label="perfect scaling")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"steps to {evidence['target']:.0%} validation accuracy")
    ax.set_title("Steps to result vs batch size (Shallue et al. 2018, Fig. 1)")
    ax.legend()
    save_figure(fig, path)
