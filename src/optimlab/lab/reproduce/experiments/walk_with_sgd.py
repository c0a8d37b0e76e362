"""Claim 9, ``walk-with-sgd``: full-batch GD oscillates in a valley, SGD explores; lr sets the height, batch size
the exploration.

Claim (the article, after Xing et al.): "for gradient descent the cosine between consecutive updates quickly
settles at -1: it oscillates in a valley-like landscape; for SGD the value is larger and fluctuates, bouncing
along the valley walls with more exploration. SGD ends much farther from the initialization (the squared
distance after the same iterations). The loss along the line between consecutive iterates is roughly convex (a
valley, the minimum between the iterates); the learning rate controls the height above the valley floor, the
batch size the randomness, which helps exploration."

Citation: Xing, Arpit, Tsirigotis & Bengio, "A Walk with SGD", 2018 (arXiv:1802.08770), Figures 1-4; the
article's section on learning rate and batch size (source document 000).

Size: default, 20 runs (4 settings x 5 seeds) of 400 steps; ``--quick``, 6 runs (3 x 2) of 200 steps; one torch
thread per run (``--dry-run`` prices them on this machine).

Reuses issue 10's diagnostics: every run is :func:`optimlab.lab.training.diagnostic_runs.train` (the lab's runner with a
:class:`~optimlab.diagnostics.Recorder` attached, every step), the segments are
:func:`optimlab.diagnostics.interpolate` between captured consecutive iterates.
"""

from __future__ import annotations

import math
import warnings
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
from optimlab.lab.study.cost import Training
from optimlab.lab.training.runner import RunConfig

__all__ = ["NAME", "PROTOCOL", "QUICK", "RULE", "run", "verdict", "figure", "work", "walk_piece", "summarize"]

NAME = "walk-with-sgd"
TITLE = "A walk with SGD: GD oscillates in a valley, SGD explores; lr and batch size are the knobs"
CLAIM = ("Full-batch GD's consecutive updates settle at cosine -1 (oscillation across a valley) while SGD's stay "
         "larger; SGD travels much farther from the initialization; the loss between consecutive iterates is a "
         "valley with its floor between them, a larger lr keeps the iterates higher above that floor, and a "
         "smaller batch explores farther.")
CITATION = ("Xing, Arpit, Tsirigotis & Bengio, A Walk with SGD, 2018 (arXiv:1802.08770), Figs. 1-4; the "
            "article's sections on learning rate and batch size")
CAPTION = ("Left: cosine between consecutive updates (mean over seeds; Xing et al. Fig. 1 top). Middle: squared "
           "distance from the initialization (Fig. 1 bottom). Right: training loss along the line between "
           "consecutive iterates, seed 0 (Fig. 2): GD and SGD at the large lr, SGD at the small lr.")

# Plain SGD (no momentum) on the MNIST-1D MLP, constant lr. "gd" is the full training set (3600) per step.
PROTOCOL: dict[str, Any] = {
    "task": "mnist1d-mlp",
    "optimizer": "sgd",
    "steps": 400,
    "lr_large": 0.5,
    "lr_small": 0.05,
    "full_batch": 3600,
    "batch_sizes": [500, 50],  # SGD's; the last is "SGD" in the GD-vs-SGD checks
    "segment_start": 350,  # consecutive-iterate segments from here
    "segments": 10,
    "points": 11,  # alphas on [0, 1] per segment
    "examples": 1000,  # training examples the segment losses are evaluated on
    "late_fraction": 0.5,  # cosines averaged over the last half of the run
    "threads": 1,
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {"steps": 200, "segment_start": 150, "segments": 5, "batch_sizes": [50], "seeds": [0, 1]}

RULE = ("Reproduced if all six hold (else mixed; none: not reproduced), each for every seed: (1) GD at the large lr: "
        "mean cosine between consecutive updates over the last half < -0.5; (2) SGD (smallest batch, same lr): that "
        "mean is above GD's by more than 0.2; (3) SGD's final squared distance from the initialization > 1.5x "
        "GD's; (4) GD at the large lr: in >= 80% of the segments the loss between consecutive iterates has its "
        "minimum strictly inside the segment, below both iterates (a valley between walls); (5) lr knob: SGD's mean "
        "height of the iterates above the segment floor is larger at the large lr than at the small lr; (6) batch "
        "knob: the final squared distance decreases strictly with the batch size (smallest SGD batch > ... > GD) "
        "at the large lr.")


def _settings(p: dict[str, Any]) -> list[tuple[str, int, float]]:
    """``(label, batch, lr)`` of every run per seed."""
    out = [("gd", p["full_batch"], p["lr_large"])]
    out += [(f"sgd-b{b}", b, p["lr_large"]) for b in sorted(p["batch_sizes"], reverse=True)]
    out.append((f"sgd-b{min(p['batch_sizes'])}-small-lr", min(p["batch_sizes"]), p["lr_small"]))
    return out


def _config(p: dict[str, Any], batch: int, lr: float, seed: int) -> RunConfig:
    """One recorded run's config (evaluated at its start and end only)."""
    steps = int(p["steps"])
    return RunConfig(p["task"], p["optimizer"], float(lr), seed, steps, int(batch), steps, "constant")


def work(protocol: dict[str, Any]) -> list[Training]:
    """Every setting's recorded run per seed, in this process with one thread, and its segments' losses
    (segments x points x examples through the model); the recorder's per-step work is left out of the price."""
    p = protocol
    segments = int(p["segments"]) * int(p["points"]) * int(p["examples"])
    return [Training.of(_config(p, batch, lr, seed), forward=segments, threads=int(p["threads"]))
            for _, batch, lr in _settings(p) for seed in p["seeds"]]


def walk_piece(p: dict[str, Any], batch: int, lr: float, seed: int) -> dict[str, Any]:
    """One recorded run: cosines, squared distances, and the segment losses between consecutive iterates."""
    import torch

    from optimlab import diagnostics as D
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.lab.training.diagnostic_runs import eval_batches, train

    previous = torch.get_num_threads()
    torch.set_num_threads(int(p["threads"]))
    try:
        task = get_task(p["task"])
        start, segs = int(p["segment_start"]), int(p["segments"])
        config = _config(p, batch, lr, seed)
        run = train(config, every=1, checkpoint_steps=range(start, start + segs + 1), progress=False)
        hist = run.record.extras["recorder"]
        batches = eval_batches(task, task.load(), "train", int(p["examples"]))
        alphas = np.linspace(0.0, 1.0, int(p["points"]))
        cks = run.checkpoints
        seg_loss = [D.interpolate(run.model, cks[k][1], cks[k + 1][1], task.loss_fn, batches, alphas).loss.tolist()
                    for k in range(len(cks) - 1)]
    finally:
        torch.set_num_threads(previous)
    return {"step": hist["step"], "cos_prev": hist["cos_prev"], "dist_init_sq": hist["dist_init_sq"],
            "status": run.record.status, "train_loss": run.record.final("train_loss"),
            "alphas": alphas.tolist(), "segment_steps": [c[0] for c in cks[:-1]], "segment_loss": seg_loss}


def summarize(piece: dict[str, Any], late_fraction: float) -> dict[str, float]:
    """The numbers the rule reads from one run: late mean cosine, final squared distance, the fraction of
    segments with an interior minimum below both ends, and the mean height of the iterates above the floor."""
    cos = np.array([np.nan if v is None else v for v in piece["cos_prev"]], dtype=float)
    late = cos[int(len(cos) * (1 - late_fraction)):]
    interior, heights = [], []
    for seg in piece["segment_loss"]:
        y = np.array([np.nan if v is None else v for v in seg], dtype=float)
        if not np.isfinite(y).all():
            interior.append(False)
            continue
        k = int(np.argmin(y))
        interior.append(0 < k < len(y) - 1 and y[k] < min(y[0], y[-1]))
        heights.append(0.5 * (y[0] + y[-1]) - y[k])
    dist = piece["dist_init_sq"][-1] if piece["dist_init_sq"] else None
    return {"late_cos": float(np.nanmean(late)) if np.isfinite(late).any() else math.nan,
            "dist_sq": float(dist) if dist is not None else math.nan,
            "interior_fraction": float(np.mean(interior)) if interior else math.nan,
            "height": float(np.mean(heights)) if heights else math.nan}


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.protocol
    settings = _settings(p)
    bar = ctx.bar(len(settings) * len(ctx.seeds), "runs", "run")
    per: dict[str, dict[str, list[float]]] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    for label, batch, lr in settings:
        for seed in ctx.seeds:
            key = {k: p[k] for k in ("task", "optimizer", "steps", "segment_start", "segments", "points", "examples",
                                     "threads")}
            piece = ctx.cached({**key, "batch": batch, "lr": lr, "seed": seed},
                               lambda b=batch, lr=lr, s=seed: walk_piece(p, b, lr, s))
            bar.update(1)
            for k, v in summarize(piece, float(p["late_fraction"])).items():
                per.setdefault(label, {}).setdefault(k, []).append(v)
            curves.setdefault(label, []).append(piece)
    bar.close()
    labels = [s[0] for s in settings]
    sgd = labels[-2]  # the smallest batch at the large lr
    small = labels[-1]
    rows = [interval_row(f"{lab}: {k}", per[lab][k]) for lab in labels
            for k in ("late_cos", "dist_sq", "interior_fraction", "height")]
    comps = [comparison_row(f"late cosine: {sgd} - gd (paired by seed)", per[sgd]["late_cos"], per["gd"]["late_cos"],
                            paired=True),
             comparison_row(f"squared distance: {sgd} - gd (paired)", per[sgd]["dist_sq"], per["gd"]["dist_sq"],
                            paired=True),
             comparison_row(f"height above the floor: {sgd} - {small} (paired)", per[sgd]["height"],
                            per[small]["height"], paired=True)]
    mean_curves = {}
    warnings.simplefilter("ignore", RuntimeWarning)  # the first cosine is undefined for every seed
    for lab, pieces in curves.items():
        cos = np.array([[np.nan if v is None else v for v in pc["cos_prev"]] for pc in pieces], dtype=float)
        dist = np.array([[np.nan if v is None else v for v in pc["dist_init_sq"]] for pc in pieces], dtype=float)
        mean_curves[lab] = {"step": pieces[0]["step"], "cos": np.nanmean(cos, 0).tolist(),
                            "dist_sq": np.nanmean(dist, 0).tolist()}
    seg0 = {lab: {"steps": curves[lab][0]["segment_steps"], "alphas": curves[lab][0]["alphas"],
                  "loss": curves[lab][0]["segment_loss"]} for lab in ("gd", sgd, small)}
    return {
        "labels": labels, "gd": "gd", "sgd": sgd, "small_lr": small, "per_seed": per,
        "batches": {s[0]: s[1] for s in settings}, "lrs": {s[0]: s[2] for s in settings},
        "curves": mean_curves, "segments": seg0,
        "tables": [table("Per run setting: mean and 95% t interval over seeds", INTERVAL_COLUMNS, rows,
                         "late_cos: mean cosine of consecutive updates over the last half; dist_sq: final "
                         "||theta - theta_0||^2; interior_fraction: segments whose minimum lies inside, below both "
                         "iterates; height: mean over segments of (mean loss at the two iterates - segment minimum)"),
                   table("Paired t tests over seeds", COMPARISON_COLUMNS, comps)],
        "notes": [f"{lab}: batch {b}, lr {lr:g}" for lab, b, lr in settings],
    }


def verdict(evidence: dict[str, Any]) -> Verdict:
    per, gd, sgd, small = evidence["per_seed"], evidence["gd"], evidence["sgd"], evidence["small_lr"]

    def every(values: list[bool]) -> bool:
        return bool(values) and all(values)

    def show(xs: list[float]) -> str:
        return ", ".join(f"{x:.3g}" for x in xs)

    n = len(per[gd]["late_cos"])
    g, s = per[gd], per[sgd]
    by_batch = sorted((b, lab) for lab, b in evidence["batches"].items() if lab != small)  # small batch first
    order = [lab for _, lab in by_batch]
    checks = [
        Check("GD's late mean cosine < -0.5", every([c < -0.5 for c in g["late_cos"]]), f"GD: {show(g['late_cos'])}"),
        Check("SGD's late mean cosine above GD's by > 0.2",
              every([a - b > 0.2 for a, b in zip(s["late_cos"], g["late_cos"], strict=True)]),
              f"{sgd}: {show(s['late_cos'])}"),
        Check("SGD's squared distance from init > 1.5x GD's",
              every([a > 1.5 * b for a, b in zip(s["dist_sq"], g["dist_sq"], strict=True)]),
              f"{sgd}: {show(s['dist_sq'])}; GD: {show(g['dist_sq'])}"),
        Check("GD: >= 80% of segments have their minimum inside, below both iterates",
              every([f >= 0.8 for f in g["interior_fraction"]]), f"GD: {show(g['interior_fraction'])}"),
        Check("SGD's height above the floor larger at the large lr than at the small lr",
              every([a > b for a, b in zip(s["height"], per[small]["height"], strict=True)]),
              f"large lr: {show(s['height'])}; small lr: {show(per[small]['height'])}"),
        Check("squared distance decreases strictly with the batch size ("
              + " > ".join(order) + ")",
              every([all(per[a]["dist_sq"][i] > per[b]["dist_sq"][i] for a, b in zip(order, order[1:], strict=False))
                     for i in range(n)]),
              "; ".join(f"{lab}: {show(per[lab]['dist_sq'])}" for lab in order)),
    ]
    return verdict_from_checks(checks)


def figure(evidence: dict[str, Any], path: Path) -> None:
    from optimlab.lab.present.figures import pyplot, save_figure
    from optimlab.lab.present.style import color_for

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {lab: color_for("sgd" if lab == evidence["sgd"] else lab) for lab in evidence["labels"]}
    for lab, c in evidence["curves"].items():
        step = np.asarray(c["step"], dtype=float)
        cos = np.array([np.nan if v is None else v for v in c["cos"]], dtype=float)
        dist = np.array([np.nan if v is None else v for v in c["dist_sq"]], dtype=float)
        name = f"{lab} (batch {evidence['batches'][lab]}, lr {evidence['lrs'][lab]:g})"
        axes[0].plot(step, cos, color=colors[lab], lw=1.1, label=name)
        axes[1].plot(step, dist, color=colors[lab], lw=1.5, label=name)
    axes[0].axhline(-1, color="0.5", ls=":", lw=0.8)
    axes[0].set(xlabel="iteration", ylabel="cos(Δθ_t, Δθ_{t-1})", ylim=(-1.05, 1.05), title="update angle")
    axes[1].set(xlabel="iteration", ylabel="‖θ_t − θ_0‖²", title="distance from the initialization")
    for lab, seg in evidence["segments"].items():
        alphas = np.asarray(seg["alphas"], dtype=float)
        for k, (t, loss) in enumerate(zip(seg["steps"], seg["loss"], strict=True)):
            y = np.array([np.nan if v is None else v for v in loss], dtype=float)
            axes[2].plot(t + alphas, y, color=colors[lab], lw=1.2, label=lab if k == 0 else None)
    axes[2].set(xlabel="iteration t + α on (1 − α) θ_t + α θ_{t+1}", ylabel="training loss",
                title="loss between consecutive iterates (seed 0)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.suptitle("GD vs SGD on MNIST-1D (MLP), after Xing et al. 2018")
    save_figure(fig, path, tight_layout=True, crop=False)
