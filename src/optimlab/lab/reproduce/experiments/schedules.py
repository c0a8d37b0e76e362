"""Claim 8, ``schedules``: seven lr schedules at equal budget, the peak lr from the lr range test.

The claims: Smith (2017): a cyclical lr (CLR, triangular, between bounds the lr range test finds) reaches a better
result than a fixed lr in the same number of iterations. Loshchilov & Hutter (2017): cosine annealing with warm
restarts (SGDR) is at least as good as the step schedule. Smith & Topin (2019): the one-cycle policy ("super
convergence") is among the best at a fixed budget. The article's three-phase trapezoid (warm-up, stable, decay;
WSD) matches cosine. And the common ground of all of them: a schedule that anneals beats a constant lr.

Citations: Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 (arXiv:1506.01186; Sec. 3.3 the
lr range test); Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017
(arXiv:1608.03983); Smith & Topin, "Super-Convergence", 2019 (arXiv:1708.07120); Hägele et al. 2024 (WSD /
trapezoid, arXiv:2405.18392); the article's trapezoid (source document notes).

How: SGD with momentum 0.9 (the lab's ``sgdm``) on the Fashion-MNIST ResNet with BatchNorm (``fmnist-resnet``).
The peak lr is the ``valley`` suggestion of optimlab's lr range test (:func:`optimlab.lr_find`, Smith 2017 Sec. 3.3;
exponential sweep, seed 0), used unchanged by every schedule (no tuning: the claim is about the schedule at the
range test's lr). Each schedule runs the same number of steps on the same seeds through the lab's runner
(:func:`optimlab.lab.training.runner.run`, records with versions and config): constant; step (x0.1 at 50 % and 75 %);
cosine to 0; SGDR (T0 = steps/7, T_mult = 2: three cycles ending at the run's end); triangular CLR between peak/10
and the peak (four cycles); one-cycle (fastai/torch defaults: 30 % up from peak/25, cosine down); WSD (5 % warm-up,
stable, 20 % linear decay to 0). Final test accuracy per seed; comparisons with Welch's t test
(:mod:`optimlab.lab.present.stats`), the best set by its max-t procedure.

Size: default, 784 steps, 7 schedules, 3 seeds; ``--quick``, 42 steps, one seed (there CLR's four cycles end at step
40 and climb for the last two); ``--dry-run`` prices them on this machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
from optimlab.lab.study.cost import Training, Work
from optimlab.lab.training.runner import RunConfig

NAME = "schedules"
TITLE = "Learning-rate schedules at equal budget: constant, step, cosine, SGDR, CLR, one-cycle, WSD"
CLAIM = ("At the same budget and the lr range test's peak lr, cyclical lrs beat a fixed lr (Smith 2017), SGDR is "
         "at least as good as step decay (Loshchilov & Hutter 2017), one-cycle is among the best (Smith & Topin "
         "2019), the trapezoid/WSD matches cosine (the article), and annealing beats a constant lr.")
CITATION = ("Smith 2017 (CLR, arXiv:1506.01186); Loshchilov & Hutter 2017 (SGDR, arXiv:1608.03983); Smith & Topin "
            "2019 (one-cycle, arXiv:1708.07120); Hägele et al. 2024 (WSD, arXiv:2405.18392)")
CAPTION = ("Top left: the lr of each schedule against the step (peak from the lr range test). Bottom left: "
           "validation accuracy against the step (mean over seeds), SGDM on the Fashion-MNIST ResNet, equal budget "
           "(the axes of Smith 2017, Fig. 1, and Loshchilov & Hutter 2017, Fig. 2). Right: final test accuracy per "
           "seed (dots), mean and 95% t interval (squares and bars).")

PROTOCOL: dict[str, Any] = {
    "task": "fmnist-resnet",
    "optimizer": "sgdm",
    "steps": 784,  # 7 x 112 and 8 x 98: SGDR's three cycles (1 + 2 + 4) and CLR's four end exactly at the end
    "batch_size": 128,
    "eval_every": 100,
    "range_test": {"start_lr": 1e-4, "end_lr": 10.0, "num_steps": 100, "suggestion": "valley"},
    "schedules": {  # name -> the lab's schedule spec (lengths as fractions of the run where the lab allows it)
        "constant": "constant",
        "step": "step@milestones=(0.5,0.75),gamma=0.1",
        "cosine": "cosine",
        "sgdr": "sgdr@period={steps7},t_mult=2",
        "cyclical": "cyclic@step_size_up={steps8},min_factor=0.1",
        "one-cycle": "one_cycle",
        "wsd": "wsd@warmup=0.05,decay=0.2",
    },
    "margin": 0.005,  # "at least as good as": mean test accuracy no more than 0.5 points lower
    "alpha": 0.05,
    "seeds": [0, 1, 2],
}
QUICK: dict[str, Any] = {"steps": 42, "eval_every": 21, "range_test": {"start_lr": 1e-4, "end_lr": 10.0,
                                                                       "num_steps": 30, "suggestion": "valley"},
                         "seeds": [0]}

RULE = ("On the final test accuracy over seeds (Welch's t test, alpha 0.05; 'as good as': mean at most 0.5 points "
        "lower): (1, Smith 2017) cyclical is better than constant (higher mean, p < 0.05); (2, Loshchilov & Hutter) "
        "SGDR is as good as step; (3, Smith & Topin) one-cycle is in the best set (max-t, alpha 0.05); (4, the "
        "article) WSD is as good as cosine; (5) each annealing schedule (step, cosine, one-cycle, WSD) is better "
        "than constant (higher mean, p < 0.05). With one seed a 'better' check needs only the higher value. "
        "Reproduced if all five hold, not reproduced if none, mixed otherwise.")


def _schedule(spec: str, steps: int) -> str:
    return spec.format(steps7=max(1, steps // 7), steps8=max(1, steps // 8))


def _configs(p: dict[str, Any], seeds: Sequence[int], peak: float) -> dict[tuple[str, int], RunConfig]:
    """Every schedule's runs at the peak lr: ``(schedule name, seed) -> RunConfig``."""
    return {
        (n, seed): RunConfig(task=p["task"], optimizer=p["optimizer"], lr=peak, seed=seed, steps=p["steps"],
                             batch_size=p["batch_size"], eval_every=p["eval_every"],
                             schedule=_schedule(p["schedules"][n], p["steps"]))
        for n in p["schedules"] for seed in seeds
    }


def work(protocol: dict[str, Any]) -> list[Work]:
    """The lr range test (in this process) and every schedule's runs (their lr comes from the range test: any lr
    costs the same, so the range test's first stands in for it)."""
    rt = protocol["range_test"]
    range_test = Training(protocol["task"], protocol["batch_size"], rt["num_steps"])
    return [range_test, *_configs(protocol, protocol["seeds"], float(rt["start_lr"])).values()]


def _range_test(ctx: Context) -> dict[str, Any]:
    p = ctx.protocol
    rt = p["range_test"]

    def compute() -> dict[str, Any]:
        import torch

        from optimlab.lab.catalog import adapter
        from optimlab.lab.catalog.presets import build_optimizer
        from optimlab.lab.catalog.tasks import get_task

        task = get_task(p["task"])
        data = task.hide_test(task.load(ctx.data_dir))
        torch.manual_seed(0)
        model = task.model(data)
        optimizer = build_optimizer(p["optimizer"], model, lr=rt["start_lr"])

        class Stream:  # re-iterable: the lr finder restarts it if it ends (it never does)
            def __iter__(self):  # noqa: ANN204
                return task.batches(data, p["batch_size"], torch.Generator().manual_seed(0))

        res = adapter.lr_find(model, optimizer, task.loss_fn, Stream(), start_lr=rt["start_lr"],
                              end_lr=rt["end_lr"], num_steps=rt["num_steps"])
        return {"lrs": res.lrs, "smoothed": res.smoothed_losses, "suggestions": res.suggestions,
                "stop_reason": res.stop_reason}

    return ctx.cached({"experiment": NAME, "range_test": rt, "task": p["task"], "optimizer": p["optimizer"],
                       "batch_size": p["batch_size"]}, compute)


def run(ctx: Context) -> dict[str, Any]:
    from optimlab.lab.catalog import adapter
    from optimlab.lab.present.stats import best_set
    from optimlab.lab.reproduce.measure import or_nan
    from optimlab.lab.training.runner import parse_schedule

    p = ctx.protocol
    n = len(p["schedules"]) * len(ctx.seeds)
    ctx.log(f"{n + 1} runs (the range test + {n} training runs)")
    rt = _range_test(ctx)
    s = rt["suggestions"]
    peak = s.get(p["range_test"]["suggestion"]) or s.get("steepest") or s.get("minimum")
    if peak is None:
        raise RuntimeError(f"the lr range test gave no suggestion ({rt['stop_reason']}); widen its range")
    peak = float(f"{peak:.4g}")
    ctx.log(f"peak lr from the range test ({p['range_test']['suggestion']}): {peak:g}")
    names = list(p["schedules"])
    configs = _configs(p, ctx.seeds, peak)
    records = dict(zip(configs, ctx.sweep(list(configs.values())), strict=True))
    def accuracy_of(r: Any) -> float:  # a diverged run: NaN
        return or_nan(r.test("accuracy")) if r.ok else math.nan

    final = {n: [accuracy_of(records[(n, seed)]) for seed in ctx.seeds] for n in names}
    curves = {}
    for n in names:
        recs = [records[(n, seed)] for seed in ctx.seeds]
        steps = recs[0].history["step"]
        vals = [[v if v is not None else math.nan for v in r.history["val_accuracy"]] for r in recs]
        curves[n] = {"step": steps, "val_accuracy": [sum(col) / len(col) for col in zip(*vals, strict=False)]}
    lr_curves = {}
    for n in names:
        name, kwargs = parse_schedule(_schedule(p["schedules"][n], p["steps"]))
        f = adapter.create_schedule(name, p["steps"], **kwargs)
        xs = list(range(0, p["steps"] + 1, max(1, p["steps"] // 200)))
        lr_curves[n] = {"step": xs, "lr": [peak * f(x) for x in xs]}
    finite = {n: [v for v in vals if math.isfinite(v)] for n, vals in final.items()}
    best = None
    if all(finite.values()):
        bs = best_set(finite, higher_is_better=True, alpha=p["alpha"])
        best = {"best": bs.best, "members": list(bs.members), "adjusted_p": bs.adjusted_p, "tested": bs.tested}
    pairs = [("cyclical", "constant"), ("sgdr", "step"), ("wsd", "cosine"), ("step", "constant"),
             ("cosine", "constant"), ("one-cycle", "constant"), ("wsd", "constant")]
    tables = [
        table("Final test accuracy (equal budget, peak lr from the range test)", list(INTERVAL_COLUMNS),
              [interval_row(n, final[n]) for n in names],
              note=f"peak lr {peak:g} ({p['range_test']['suggestion']} of the range test); {p['steps']} steps, "
                   f"batch {p['batch_size']}; best set: {', '.join(best['members']) if best else 'n/a'}"),
        table("Comparisons (Welch's t test)", list(COMPARISON_COLUMNS),
              [comparison_row(f"{a} - {b}", final[a], final[b]) for a, b in pairs]),
    ]
    return {"peak_lr": peak, "range_test": rt, "final": final, "curves": curves, "lr_curves": lr_curves,
            "best_set": best, "margin": p["margin"], "alpha": p["alpha"], "tables": tables}


def _better(a: list[float], b: list[float], alpha: float) -> tuple[bool, str]:
    from optimlab.lab.reproduce.measure import welch

    diff, pval = welch(a, b)
    if math.isnan(diff):
        return False, "no finite values"
    if math.isnan(pval):  # one seed (or no spread): the direction alone
        return diff > 0, f"difference {diff:+.4f}, no test (one seed)"
    return diff > 0 and pval < alpha, f"difference {diff:+.4f}, p = {pval:.3g}"


def _as_good(a: list[float], b: list[float], margin: float) -> tuple[bool, str]:
    from optimlab.lab.reproduce.measure import mean

    diff = mean(a) - mean(b)
    return (not math.isnan(diff)) and diff >= -margin, f"difference {diff:+.4f} (margin -{margin:g})"


def verdict(evidence: dict[str, Any]) -> Verdict:
    f, alpha, margin = evidence["final"], evidence["alpha"], evidence["margin"]
    c1 = _better(f["cyclical"], f["constant"], alpha)
    c2 = _as_good(f["sgdr"], f["step"], margin)
    bs = evidence.get("best_set")
    c3 = (bool(bs) and "one-cycle" in bs["members"],
          f"best set: {', '.join(bs['members'])}" if bs else "no best set (a run diverged)")
    c4 = _as_good(f["wsd"], f["cosine"], margin)
    anneal = {n: _better(f[n], f["constant"], alpha) for n in ("step", "cosine", "one-cycle", "wsd")}
    c5 = (all(ok for ok, _ in anneal.values()), "; ".join(f"{n}: {d}" for n, (_, d) in anneal.items()))
    return verdict_from_checks([
        Check("cyclical (CLR) better than constant (Smith 2017)", *c1),
        Check("SGDR as good as step decay (Loshchilov & Hutter 2017)", *c2),
        Check("one-cycle in the best set (Smith & Topin 2019)", *c3),
        Check("WSD / trapezoid as good as cosine (the article)", *c4),
        Check("every annealing schedule better than constant", *c5),
    ])


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.stats import mean_ci

    names = list(evidence["lr_curves"])
    palette = plt.get_cmap("tab10").colors  # one distinct colour per schedule, the same in every panel
    color = {n: palette[k % len(palette)] for k, n in enumerate(names)}
    fig = plt.figure(figsize=(11.0, 7.0))
    grid = fig.add_gridspec(2, 2, width_ratios=(2.2, 1.0))
    top, bottom = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])
    right = fig.add_subplot(grid[:, 1])
    for n in names:
        c = evidence["lr_curves"][n]
        top.plot(c["step"], c["lr"], color=color[n], label=n, lw=1.4)
    top.set(ylabel="learning rate", title=f"the schedules (peak lr {evidence['peak_lr']:g} from the range test)")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    late = []
    for n in names:
        c = evidence["curves"][n]
        bottom.plot(c["step"], c["val_accuracy"], "o-", ms=3, color=color[n], label=n)
        half = len(c["val_accuracy"]) // 3  # zoom on the part of training where the schedules differ
        late += [v for v in c["val_accuracy"][half:] if v is not None and np.isfinite(v)]
    if late:
        pad = 0.1 * (max(late) - min(late) or 0.01)
        bottom.set_ylim(min(late) - pad, max(late) + pad)
    bottom.set(xlabel="iteration", ylabel="validation accuracy (mean over seeds)",
               title="validation accuracy (zoomed on the last two thirds)")
    for k, n in enumerate(names):
        vals = [v for v in evidence["final"][n] if v is not None and np.isfinite(v)]
        right.plot(vals, [k] * len(vals), "o", color=color[n], alpha=0.5, ms=4)
        if len(vals) >= 2:
            ci = mean_ci(vals)
            right.errorbar(ci.mean, k, xerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="s", color=color[n],
                           ms=6, capsize=3)
    right.set_yticks(range(len(names)), names)
    right.invert_yaxis()
    right.set(xlabel="final test accuracy", title="per seed, mean and 95% t interval")
    for ax in (top, bottom, right):
        ax.grid(alpha=0.3)
    fig.suptitle("LR schedules at equal budget: SGDM, Fashion-MNIST ResNet")
    save_figure(fig, path, tight_layout=True)
