"""Claim 11, ``landscape``: SWA finds flatter solutions than SGDM, and SGDM flatter ones than Adam.

Claim (the source documents, after the papers): adaptive methods such as Adam end in sharper minima than SGD with
momentum, which generalize worse (Wilson et al. 2017's reading of Keskar et al. 2017); averaging SGD's iterates (SWA)
lands in the centre of a wide flat region, flatter still, and generalizes better (Izmailov et al. 2018). Flatness is
seen in filter-normalized 1-D/2-D loss landscapes (Li et al. 2018) and measured by the top Hessian eigenvalue; the
straight line between two solutions shows whether they sit in one basin (Goodfellow et al. 2015).

Citations: Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018
(filter normalization; reference code tomgoldstein/loss-landscape); Goodfellow, Vinyals & Saxe, "Qualitatively
characterizing neural network optimization problems", ICLR 2015 (arXiv:1412.6544, the 2014 preprint); Izmailov,
Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider Optima and Better Generalization", UAI
2018 (reference code timgaripov/swa); Yao et al., PyHessian 2020 (power iteration).

How: per seed, three runs of the lab's runner on the MNIST-1D CNN from the same initialization: SGDM and Adam with
warm-up + cosine decay, and SWA (optimlab's :class:`~optimlab.wrappers.SWA` over the same SGDM at a constant lr,
averaging once per epoch over the last quarter; BatchNorm statistics recomputed with
:func:`~optimlab.wrappers.update_bn`, a no-op for this BatchNorm-free model). Each solution then gets
:func:`optimlab.diagnostics.top_hessian_eigenvalue` (power iteration on training examples), a 1-D
filter-normalized landscape along shared random directions (:func:`~optimlab.diagnostics.random_directions`,
:func:`~optimlab.diagnostics.landscape`), and the interpolations SGDM → Adam and SGDM → SWA
(:func:`~optimlab.diagnostics.interpolate`). Seed 0 also gets a 2-D landscape per solution for the figure.

Size: default, 5 seeds, 2000 steps; ``--quick``, 2 seeds, 600 steps, smaller grids; one torch thread
(``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

import dataclasses
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

__all__ = ["NAME", "PROTOCOL", "QUICK", "RULE", "run", "verdict", "figure", "work", "landscape_piece"]

NAME = "landscape"
TITLE = "Flatness of SGDM's, Adam's and SWA's solutions: Hessian, filter-normalized landscapes, interpolation"
CLAIM = ("SWA's solution is flatter than SGDM's (Izmailov et al.), and SGDM's flatter than Adam's: a smaller top "
         "Hessian eigenvalue and a wider filter-normalized 1-D landscape; SWA also generalizes better than SGDM.")
CITATION = ("Li et al. 2018 (filter-normalized landscapes, tomgoldstein/loss-landscape); Goodfellow, Vinyals & Saxe "
            "2014/2015 (linear interpolation); Izmailov et al. 2018 (SWA, timgaripov/swa); PyHessian (Yao et al. 2020)")
CAPTION = ("Left: training loss along filter-normalized random directions around each solution (mean over seeds "
           "and directions; Li et al. Fig. 3's axes). Middle: top Hessian eigenvalue per seed. Right: training loss "
           "along (1 − α) θ_SGDM + α θ_other (Goodfellow et al. Fig. 1's axes; Izmailov et al. Fig. 5), seed 0.")

METHODS = ("sgdm", "adam", "swa")

PROTOCOL: dict[str, Any] = {
    "task": "mnist1d-cnn",
    "steps": 2000,
    "batch_size": 100,
    "sgdm_lr": 0.05,  # the lab's presets (README's default comparison); Adam's raised from 1e-3 to its best there
    "adam_lr": 0.003,
    "schedule": "warmup_cosine",  # SGDM and Adam
    "swa_lr": 0.05,  # SWA: SGDM at this constant lr,
    "swa_start": 0.75,  # averaging from this fraction of the run,
    "swa_every": 36,  # once per epoch (3600 training examples / batch 100)
    "examples": 1000,  # training examples for the landscapes and interpolations
    "hessian_examples": 1000,
    "hessian_iters": 100,
    "hessian_tol": 1e-4,
    "directions": 2,  # random filter-normalized directions per solution (the same seeds for every solution)
    "radius": 1.0,  # 1-D grid from -radius to radius
    "points_1d": 21,
    "rise_at": 0.5,  # the 1-D sharpness: mean loss at +-rise_at minus the loss at the solution
    "points_2d": 11,  # seed 0 only
    "alphas": 15,  # interpolation points on [-0.2, 1.2]
    "threads": 1,
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {"steps": 600, "swa_every": 18, "examples": 500, "hessian_examples": 500,
                         "hessian_iters": 50, "hessian_tol": 1e-3, "points_1d": 11, "points_2d": 7, "alphas": 11,
                         "directions": 1, "seeds": [0, 1]}

RULE = ("Reproduced if all four hold (else mixed; none: not reproduced): (1) SWA's top Hessian eigenvalue is below "
        "SGDM's for every seed; (2) SGDM's is below Adam's for every seed; (3) the 1-D filter-normalized sharpness "
        "(mean training loss at ±0.5 along the random directions minus the loss at the solution) orders "
        "SWA < SGDM < Adam for every seed; (4) SWA's mean test accuracy is above SGDM's.")


def _configs(p: dict[str, Any], seed: int) -> dict[str, RunConfig]:
    """The three runs of one seed (evaluated at their start and end only): ``method -> RunConfig``."""
    steps, bs = int(p["steps"]), int(p["batch_size"])
    return {
        "sgdm": RunConfig(p["task"], "sgdm", float(p["sgdm_lr"]), seed, steps, bs, steps, p["schedule"]),
        "adam": RunConfig(p["task"], "adam", float(p["adam_lr"]), seed, steps, bs, steps, p["schedule"]),
        "swa": RunConfig(p["task"], "sgdm", float(p["swa_lr"]), seed, steps, bs, steps, "constant"),
    }


def work(protocol: dict[str, Any]) -> list[Training]:
    """Per seed, the three runs in this process with one thread, and what each solution is measured by: the
    training and test splits once more, the power iteration (at most ``hessian_iters`` Hessian-vector products,
    two passes each, on ``hessian_examples``), the 1-D landscapes (and seed 0's 2-D one), and from SGDM's solution
    the two interpolations, every point on ``examples`` training examples."""
    p = protocol
    examples = int(p["examples"])
    backward = 2 * int(p["hessian_iters"]) * int(p["hessian_examples"])
    out = []
    for seed in p["seeds"]:
        for name, config in _configs(p, seed).items():
            points = int(p["directions"]) * int(p["points_1d"]) + (int(p["points_2d"]) ** 2 if seed == 0 else 0)
            points += 2 * int(p["alphas"]) if name == "sgdm" else 0
            piece = Training.of(config, forward=points * examples, backward=backward, threads=int(p["threads"]))
            once_more = tuple((s, n + 1 if s in ("train", "test") else n) for s, n in piece.evals)
            out.append(dataclasses.replace(piece, evals=once_more))
    return out


def _models(task: Any, data: Any, p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the three solutions of one seed; return their models (weights in place) and records."""
    from optimlab.diagnostics import current_weights
    from optimlab.lab.training.runner import Callback, run
    from optimlab.wrappers import SWA, update_bn

    class Keep(Callback):
        def __init__(self, swa: bool) -> None:
            self.swa_on, self.swa, self.model, self.theta0 = swa, None, None, None

        def on_run_start(self, ctx: Any) -> None:
            self.theta0 = current_weights(ctx.model)
            if self.swa_on:  # averaging only: the runner keeps stepping the inner optimizer itself
                self.swa = SWA(ctx.optimizer, start=None)

        def after_step(self, ctx: Any) -> None:
            start = int(round(p["swa_start"] * ctx.config.steps))
            if self.swa is not None and ctx.step >= start and (ctx.step - start) % int(p["swa_every"]) == 0:
                self.swa.update_average()

        def on_run_end(self, ctx: Any) -> None:
            self.model = ctx.model
            if self.swa is not None:  # leave the averaged weights (and their BatchNorm statistics) in the model
                with self.swa.averaged():
                    averaged = current_weights(ctx.model)
                    update_bn([x for x, _ in _batches(task, data, p)], ctx.model)
                import torch

                with torch.no_grad():
                    for q, w in zip((q for q in ctx.model.parameters() if q.requires_grad), averaged, strict=True):
                        q.copy_(w)

    out = {}
    for name, config in _configs(p, seed).items():
        keep = Keep(name == "swa")
        record = run(config, callbacks=[keep])
        out[name] = {"model": keep.model, "record": record, "theta0": keep.theta0}
    return out


def _batches(task: Any, data: Any, p: dict[str, Any]) -> list[Any]:
    from optimlab.lab.training.diagnostic_runs import eval_batches

    return eval_batches(task, data, "train", int(p["examples"]))


def landscape_piece(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything one seed contributes: per solution its losses, accuracies, top eigenvalue, 1-D curves (and,
    for seed 0, a 2-D surface), and the interpolations from SGDM's solution to the other two."""
    import torch

    from optimlab import diagnostics as D
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.lab.training.diagnostic_runs import eval_batches, metric_fn

    previous = torch.get_num_threads()
    torch.set_num_threads(int(p["threads"]))
    try:
        task = get_task(p["task"])
        data = task.load()
        sols = _models(task, data, p, seed)
        batches = _batches(task, data, p)
        hbatch = eval_batches(task, data, "train", int(p["hessian_examples"]))
        grid1 = np.linspace(-p["radius"], p["radius"], int(p["points_1d"]))
        out: dict[str, Any] = {"grid_1d": grid1.tolist(), "solutions": {}}
        for name, s in sols.items():
            model = s["model"]
            model.eval()
            ev = {split: task.evaluate(model, data, split) for split in ("train", "test")}
            top = D.top_hessian_eigenvalue(model, task.loss_fn, hbatch, iters=int(p["hessian_iters"]),
                                           tol=float(p["hessian_tol"]), seed=seed)
            curves = []
            for d in range(int(p["directions"])):
                (direction,) = D.random_directions(model, 1, seed=1000 * seed + d)
                curves.append(D.landscape(model, task.loss_fn, batches, [direction], grid1).loss.tolist())
            sol = {"train_loss": ev["train"]["loss"], "test_accuracy": ev["test"]["accuracy"],
                   "train_accuracy": ev["train"]["accuracy"], "top_eigenvalue": top.value,
                   "hessian_converged": top.converged, "curves_1d": curves, "status": s["record"].status}
            if seed == 0:
                dirs = D.random_directions(model, 2, seed=77)
                g2 = np.linspace(-p["radius"], p["radius"], int(p["points_2d"]))
                sol["surface_2d"] = D.landscape(model, task.loss_fn, batches, dirs, g2).to_dict()
            out["solutions"][name] = sol
        alphas = D.default_alphas(int(p["alphas"]))
        base = sols["sgdm"]["model"]
        theta_sgdm = D.current_weights(base)
        out["alphas"] = alphas.tolist()
        out["interpolation"] = {
            other: D.interpolate(base, theta_sgdm, D.current_weights(sols[other]["model"]), task.loss_fn, batches,
                                 alphas, metric_fn=metric_fn(task)).to_dict()
            for other in ("adam", "swa")}
    finally:
        torch.set_num_threads(previous)
    return out


def one_d_sharpness(curves: list[list[float]], grid: list[float], at: float) -> float:
    """Mean loss at ±``at`` over the directions minus the loss at the centre (grid value 0)."""
    g = np.asarray(grid, dtype=float)
    c = np.array([[np.nan if v is None else v for v in row] for row in curves], dtype=float)
    i0 = int(np.argmin(np.abs(g)))
    ip, im = int(np.argmin(np.abs(g - at))), int(np.argmin(np.abs(g + at)))
    return float(np.mean((c[:, ip] + c[:, im]) / 2 - c[:, i0]))


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.protocol
    bar = ctx.bar(len(ctx.seeds), "seeds (3 runs + Hessian + landscapes each)", "seed")
    pieces = []
    keys = [k for k in PROTOCOL if k != "seeds"]
    for seed in ctx.seeds:
        pieces.append(ctx.cached({**{k: p[k] for k in keys}, "seed": seed},
                                 lambda s=seed: landscape_piece(p, s)))
        bar.update(1)
    bar.close()
    per: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    for pc in pieces:
        for m in METHODS:
            sol = pc["solutions"][m]
            for k in ("top_eigenvalue", "train_loss", "test_accuracy"):
                v = sol[k]
                per[m].setdefault(k, []).append(float("nan") if v is None else float(v))
            per[m].setdefault("sharpness_1d", []).append(
                one_d_sharpness(sol["curves_1d"], pc["grid_1d"], float(p["rise_at"])))
    rows = [interval_row(f"{m}: {k}", per[m][k]) for m in METHODS
            for k in ("top_eigenvalue", "sharpness_1d", "train_loss", "test_accuracy")]
    comps = [comparison_row("top eigenvalue: swa - sgdm (paired by seed)", per["swa"]["top_eigenvalue"],
                            per["sgdm"]["top_eigenvalue"], paired=True),
             comparison_row("top eigenvalue: sgdm - adam (paired)", per["sgdm"]["top_eigenvalue"],
                            per["adam"]["top_eigenvalue"], paired=True),
             comparison_row("1-D sharpness: swa - sgdm (paired)", per["swa"]["sharpness_1d"],
                            per["sgdm"]["sharpness_1d"], paired=True),
             comparison_row("1-D sharpness: sgdm - adam (paired)", per["sgdm"]["sharpness_1d"],
                            per["adam"]["sharpness_1d"], paired=True),
             comparison_row("test accuracy: swa - sgdm (paired)", per["swa"]["test_accuracy"],
                            per["sgdm"]["test_accuracy"], paired=True)]
    mean_1d = {m: np.nanmean([np.nanmean(np.array(pc["solutions"][m]["curves_1d"], dtype=float), 0)
                              for pc in pieces], 0).tolist() for m in METHODS}
    conv = {m: sum(bool(pc["solutions"][m]["hessian_converged"]) for pc in pieces) for m in METHODS}
    return {
        "per_seed": per, "grid_1d": pieces[0]["grid_1d"], "mean_1d": mean_1d, "alphas": pieces[0]["alphas"],
        "interpolation": pieces[0]["interpolation"],
        "surface_2d": {m: pieces[0]["solutions"][m].get("surface_2d") for m in METHODS},
        "tables": [table("Per solution: mean and 95% t interval over seeds", INTERVAL_COLUMNS, rows,
                         f"sharpness_1d: mean training loss at ±{p['rise_at']} along filter-normalized random "
                         "directions minus the loss at the solution; top_eigenvalue by power iteration on "
                         f"{p['hessian_examples']} training examples"),
                   table("Paired t tests over seeds", COMPARISON_COLUMNS, comps)],
        "notes": [f"power iteration converged (tol {p['hessian_tol']:g}) for "
                  + ", ".join(f"{m} {conv[m]}/{len(pieces)}" for m in METHODS),
                  f"SGDM lr {p['sgdm_lr']:g} and Adam lr {p['adam_lr']:g} with {p['schedule']}; SWA: SGDM at a "
                  f"constant {p['swa_lr']:g}, averaged every {p['swa_every']} steps from "
                  f"{p['swa_start']:.0%} of {p['steps']} steps"],
    }


def verdict(evidence: dict[str, Any]) -> Verdict:
    per = evidence["per_seed"]
    e = {m: per[m]["top_eigenvalue"] for m in METHODS}
    s = {m: per[m]["sharpness_1d"] for m in METHODS}

    def show(xs: list[float]) -> str:
        return ", ".join(f"{x:.3g}" for x in xs)

    def below(a: list[float], b: list[float]) -> bool:
        return bool(a) and all(x < y for x, y in zip(a, b, strict=True))

    acc = {m: float(np.mean(per[m]["test_accuracy"])) for m in ("swa", "sgdm")}
    checks = [
        Check("SWA's top eigenvalue < SGDM's for every seed", below(e["swa"], e["sgdm"]),
              f"SWA {show(e['swa'])}; SGDM {show(e['sgdm'])}"),
        Check("SGDM's top eigenvalue < Adam's for every seed", below(e["sgdm"], e["adam"]),
              f"SGDM {show(e['sgdm'])}; Adam {show(e['adam'])}"),
        Check("1-D sharpness SWA < SGDM < Adam for every seed",
              below(s["swa"], s["sgdm"]) and below(s["sgdm"], s["adam"]),
              f"SWA {show(s['swa'])}; SGDM {show(s['sgdm'])}; Adam {show(s['adam'])}"),
        Check("SWA's mean test accuracy > SGDM's", acc["swa"] > acc["sgdm"],
              f"SWA {100 * acc['swa']:.2f}%, SGDM {100 * acc['sgdm']:.2f}%"),
    ]
    return verdict_from_checks(checks)


def figure(evidence: dict[str, Any], path: Path) -> None:
    from optimlab.lab.present.figures import pyplot, save_figure
    from optimlab.lab.present.style import color_for

    plt = pyplot()
    colors = {"sgdm": color_for("sgdm"), "adam": color_for("adam"), "swa": color_for("swa")}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    g = np.asarray(evidence["grid_1d"], dtype=float)
    for m in METHODS:
        axes[0].plot(g, np.array([np.nan if v is None else v for v in evidence["mean_1d"][m]], dtype=float),
                     color=colors[m], lw=1.6, label=m.upper() if m != "adam" else "Adam")
    axes[0].set(xlabel="α (filter-normalized direction)", ylabel="training loss", yscale="log",
                title="1-D landscape around each solution")
    per = evidence["per_seed"]
    for i, m in enumerate(METHODS):
        vals = per[m]["top_eigenvalue"]
        axes[1].scatter(np.full(len(vals), i) + np.linspace(-0.1, 0.1, len(vals)), vals, color=colors[m])
    axes[1].set_xticks(range(len(METHODS)), ["SGDM", "Adam", "SWA"])
    axes[1].set(ylabel="top Hessian eigenvalue λ_max", yscale="log", title="sharpness per seed")
    a = np.asarray(evidence["alphas"], dtype=float)
    for other, res in evidence["interpolation"].items():
        axes[2].plot(a, np.array([np.nan if v is None else v for v in res["loss"]], dtype=float),
                     color=colors[other], lw=1.6, label=f"SGDM → {'Adam' if other == 'adam' else 'SWA'}")
    axes[2].set(xlabel="α in (1 − α) θ_SGDM + α θ_other", ylabel="training loss", yscale="log",
                title="interpolation between solutions (seed 0)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle("Flatness of SGDM, Adam and SWA solutions, MNIST-1D CNN")
    save_figure(fig, path, tight_layout=True, crop=False)
