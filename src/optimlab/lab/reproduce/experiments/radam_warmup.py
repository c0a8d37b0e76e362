"""Claim 5, ``radam-warmup``: RAdam removes Adam's lr sensitivity; a warm-up of 2/(1-β₂) steps does the same.

The claims: Liu et al. (2020): the adaptive lr of Adam has a large variance in the first steps; without warm-up
this makes Adam sensitive to the lr (good only in a narrow range), and their rectified Adam (RAdam) is robust to the
lr without a warm-up. Their Figure 2: the histogram of |gradient| (log scale) over the first steps is distorted
without warm-up and not with it. The counter-claim, Ma & Yarats (2021): a linear warm-up over 2/(1-β₂) steps, the
"untuned" rule of thumb, matches RAdam.

Citations: Liu, Jiang, He, Chen, Liu, Gao & Han, "On the Variance of the Adaptive Learning Rate and Beyond", ICLR
2020 (arXiv:1908.03265; reference code github.com/LiyuanLucasLiu/RAdam; Figure 2, Figure 3 lr sensitivity); Ma &
Yarats, "On the Adequacy of Untuned Warmup for Adaptive Optimization", AAAI 2021 (arXiv:1910.04209).

How: the character Transformer (``shakespeare-char``), β = (0.9, 0.98) (the Transformer's usual β₂, Vaswani et al.
2017; it makes 2/(1-β₂) = 100 warm-up steps fit a CPU-sized run), no weight decay, a constant lr after any warm-up
(so only the update rule and the warm-up differ). Three methods: Adam without warm-up, Adam with a linear warm-up
from 0 over 2/(1-β₂) steps (Ma & Yarats' rule), RAdam without warm-up; a grid of lrs, several seeds, through the
lab's runner (records with versions and config); the final test perplexity per run. The |gradient| histograms:
Adam without and with the warm-up at one lr of the grid, the gradient of every parameter at each of the first
steps, on :class:`optimlab.diagnostics.histograms.LogBins` (fixed log-spaced bins).

Size: default, 400 steps, 5 lrs, 3 methods, 2 seeds, 2 histogram runs; ``--quick``, 30 steps, 2 lrs, 1 seed
(``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.reproduce.base import Check, Context, Verdict, interval_row, table, verdict_from_checks
from optimlab.lab.training.runner import Callback, RunConfig, RunContext

NAME = "radam-warmup"
TITLE = "RAdam vs Adam with and without warm-up: lr sensitivity on the Transformer, and the |gradient| histogram"
CLAIM = ("Without warm-up Adam is sensitive to the lr and its first updates distort the gradient distribution; "
         "RAdam is robust to the lr (Liu et al. 2020); a linear warm-up of 2/(1-β₂) steps matches RAdam (Ma & "
         "Yarats 2021).")
CITATION = ("Liu et al. 2020 (RAdam, ICLR, arXiv:1908.03265, github.com/LiyuanLucasLiu/RAdam, Fig. 2-3); Ma & "
            "Yarats 2021 (AAAI, arXiv:1910.04209)")
CAPTION = ("Left: final test perplexity against the lr (log-log; mean over seeds, bars: min-max) of Adam without "
           "warm-up, Adam with a linear warm-up of 2/(1-β₂) steps, and RAdam (Liu et al. 2020, Fig. 3). Right: "
           "histograms of |gradient| (log scale) over the first steps, stacked along the y-axis, without and with "
           "warm-up (Liu et al. 2020, Fig. 2).")

PROTOCOL: dict[str, Any] = {
    "task": "shakespeare-char",
    "steps": 400,
    "batch_size": 32,
    "eval_every": 50,
    "beta2": 0.98,  # warm-up of 2 / (1 - beta2) = 100 steps
    "lrs": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "tolerance": 0.05,  # "good" lr: mean test perplexity within 5 % of the best of all methods and lrs
    "histogram": {"steps": 100, "lr": 1e-2, "low": -10.0, "high": 1.0, "per_decade": 4},
    "seeds": [0, 1],
}
QUICK: dict[str, Any] = {"steps": 30, "eval_every": 15, "lrs": [1e-3, 1e-2],
                         "histogram": {"steps": 20, "lr": 1e-2, "low": -10.0, "high": 1.0, "per_decade": 4},
                         "seeds": [0]}

RULE = ("On the mean final test perplexity over seeds at each lr of the grid, a method's 'good' lrs are those within "
        "5 % of the best mean perplexity of all methods and lrs. Three checks: (1, Liu et al.) RAdam has more good "
        "lrs than Adam without warm-up; (2) Adam with warm-up has more good lrs than Adam without; (3, Ma & Yarats) "
        "Adam with warm-up matches RAdam: their numbers of good lrs differ by at most one and their best mean "
        "perplexities by at most 5 %. Reproduced if all three hold, not reproduced if none, mixed otherwise (the "
        "histogram is shown, not judged).")

METHODS = ("adam", "adam+warmup", "radam")


def _warmup_steps(p: dict[str, Any]) -> int:
    return round(2 / (1 - p["beta2"]))


def _spec(method: str, p: dict[str, Any]) -> tuple[str, str]:
    betas = f"betas=(0.9,{p['beta2']})"
    base = "radam" if method == "radam" else "adam"
    w = min(_warmup_steps(p), p["steps"])
    return f"{base}@{betas}", (f"linear_warmup@warmup_steps={w}" if method == "adam+warmup" else "constant")


def _configs(p: dict[str, Any], seeds: Sequence[int]) -> dict[tuple[str, float, int], RunConfig]:
    """The lr grid's runs: ``(method, lr, seed) -> RunConfig``."""
    configs = {}
    for method in METHODS:
        spec, schedule = _spec(method, p)
        for lr in p["lrs"]:
            for seed in seeds:
                configs[(method, lr, seed)] = RunConfig(
                    task=p["task"], optimizer=spec, lr=float(lr), seed=seed, steps=p["steps"],
                    batch_size=p["batch_size"], eval_every=p["eval_every"], schedule=schedule)
    return configs


def _histogram_configs(p: dict[str, Any], seed: int) -> dict[str, RunConfig]:
    """The two histogram runs (Adam without and with the warm-up, at the histogram's lr): ``method -> RunConfig``."""
    h = p["histogram"]
    hist_cfg = {}
    for method in ("adam", "adam+warmup"):
        spec, schedule = _spec(method, p)
        if schedule != "constant":  # the warm-up sized to the full run, stopped after the histogram's steps
            schedule = f"linear_warmup@warmup_steps={min(_warmup_steps(p), p['steps'])}"
        hist_cfg[method] = RunConfig(task=p["task"], optimizer=spec, lr=float(h["lr"]), seed=seed,
                                     steps=h["steps"], batch_size=p["batch_size"], eval_every=h["steps"],
                                     schedule=schedule, splits=("train",))
    return hist_cfg


def work(protocol: dict[str, Any]) -> list[RunConfig]:
    """The lr grid's runs and the two histogram runs (their histogram callback is left out of the price)."""
    seeds = protocol["seeds"]
    return [*_configs(protocol, seeds).values(), *_histogram_configs(protocol, seeds[0]).values()]


class GradientHistograms(Callback):
    """Histogram of |g| over every parameter's gradient at each of the first ``steps`` steps (RAdam, Fig. 2)."""

    def __init__(self, steps: int, bins: dict[str, Any]):
        self.steps, self.bins = steps, bins

    def on_run_start(self, ctx: RunContext) -> None:
        from optimlab.diagnostics.histograms import LogBins

        self._bins = LogBins(self.bins["low"], self.bins["high"], self.bins["per_decade"])
        ctx.extras["grad_histograms"] = {"bins": self._bins.to_dict(), "steps": [], "counts": [], "zero": []}

    def after_backward(self, ctx: RunContext) -> None:
        if ctx.step >= self.steps:
            return
        from optimlab.diagnostics.histograms import abs_histogram

        grads = [p.grad for p in ctx.model.parameters() if p.grad is not None]
        h = abs_histogram(grads, self._bins)
        rec = ctx.extras["grad_histograms"]
        rec["steps"].append(ctx.step + 1)
        rec["counts"].append(h.counts.tolist())
        rec["zero"].append(h.zero + h.under)


class _HistogramFactory:
    """``config -> [GradientHistograms]`` (picklable, for the lab's worker processes)."""

    def __init__(self, steps: int, bins: dict[str, Any]):
        self.steps, self.bins = steps, bins

    def __call__(self, config: Any) -> list[Callback]:
        return [GradientHistograms(self.steps, self.bins)]


def run(ctx: Context) -> dict[str, Any]:
    from optimlab.lab.reproduce.measure import or_nan

    p = ctx.protocol
    configs = _configs(p, ctx.seeds)
    hist_cfg = _histogram_configs(p, ctx.seeds[0])
    ctx.log(f"{len(configs) + len(hist_cfg)} runs; warm-up {_warmup_steps(p)} steps")
    records = dict(zip(configs, ctx.sweep(list(configs.values())), strict=True))
    h = p["histogram"]
    hist_recs = ctx.sweep(list(hist_cfg.values()), subdir="histograms",
                          callbacks=_HistogramFactory(h["steps"], h))
    histograms = {m: r.extras.get("grad_histograms") for m, r in zip(hist_cfg, hist_recs, strict=True)}

    def perplexity_of(r: Any) -> float:
        return or_nan(r.test("perplexity")) if r.ok else math.nan

    perplexity = {m: {str(lr): [perplexity_of(records[(m, lr, s)]) for s in ctx.seeds]
                      for lr in p["lrs"]} for m in METHODS}
    rows = [interval_row(f"{m}, lr {lr:g}", perplexity[m][str(lr)]) for m in METHODS for lr in p["lrs"]]
    stats = sensitivity(perplexity, p["tolerance"])
    tables = [
        table("Final test perplexity (mean over seeds; diverged runs: non-finite)",
              ["", "n", "mean", "95% t interval"], rows,
              note=f"{p['steps']} steps, batch {p['batch_size']}, betas (0.9, {p['beta2']}), warm-up "
                   f"{_warmup_steps(p)} steps, constant lr otherwise"),
        table("lr sensitivity", ["method", "good lrs (within 5 % of the best)", "best mean perplexity", "at lr"],
              [[m, ", ".join(f"{float(x):g}" for x in stats[m]["good"]) or "none", stats[m]["best"],
                stats[m]["best_lr"]] for m in METHODS]),
    ]
    return {"lrs": p["lrs"], "perplexity": perplexity, "tolerance": p["tolerance"],
            "warmup_steps": min(_warmup_steps(p), p["steps"]), "histograms": histograms, "histogram_lr": h["lr"],
            "tables": tables}


def sensitivity(perplexity: dict[str, dict[str, list[float]]], tolerance: float) -> dict[str, dict[str, Any]]:
    """Per method: the mean perplexity per lr, its best, and the lrs within ``tolerance`` of the best of all."""
    from optimlab.lab.reproduce.measure import mean

    def ok(v: list[float | None]) -> bool:  # a diverged seed (None in the evidence, NaN or inf) spoils the lr
        return bool(v) and all(x is not None and math.isfinite(x) for x in v)

    means = {m: {lr: (mean(v) if ok(v) else math.inf) for lr, v in per.items()} for m, per in perplexity.items()}
    overall = min(min(v.values()) for v in means.values())
    out = {}
    for m, per in means.items():
        best_lr = min(per, key=lambda lr: per[lr])
        out[m] = {"means": per, "best": per[best_lr], "best_lr": float(best_lr),
                  "good": [lr for lr, v in per.items() if v <= (1 + tolerance) * overall]}
    return out


def verdict(evidence: dict[str, Any]) -> Verdict:
    tol = evidence["tolerance"]
    s = sensitivity(evidence["perplexity"], tol)
    n = {m: len(s[m]["good"]) for m in METHODS}
    counts = ", ".join(f"{m}: {n[m]}" for m in METHODS)
    rel = abs(s["adam+warmup"]["best"] / s["radam"]["best"] - 1) if math.isfinite(s["radam"]["best"]) else math.inf
    return verdict_from_checks([
        Check("RAdam has more good lrs than Adam without warm-up (Liu et al.)", n["radam"] > n["adam"], counts),
        Check("Adam with warm-up has more good lrs than Adam without", n["adam+warmup"] > n["adam"], counts),
        Check("warm-up of 2/(1-β₂) steps matches RAdam (Ma & Yarats): good lrs within one, best within 5 %",
              abs(n["adam+warmup"] - n["radam"]) <= 1 and rel <= tol,
              f"{counts}; best perplexities differ by {rel:.1%}"),
    ])


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ax = axes[0]
    for m in METHODS:
        lrs = [float(lr) for lr in evidence["perplexity"][m]]
        vals = [np.array(v, dtype=float) for v in evidence["perplexity"][m].values()]
        mean = [np.nanmean(v) if np.all(np.isfinite(v)) else np.nan for v in vals]
        lo = [m_ - np.nanmin(v) if np.isfinite(m_) else 0 for m_, v in zip(mean, vals, strict=True)]
        hi = [np.nanmax(v) - m_ if np.isfinite(m_) else 0 for m_, v in zip(mean, vals, strict=True)]
        ax.errorbar(lrs, mean, yerr=[lo, hi], fmt="o-", color=color_for(m), label=m, capsize=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final test perplexity")
    ax.set_title("lr sensitivity (Liu et al. 2020, Fig. 3)")
    ax.legend()
    for ax, m in zip(axes[1:], ("adam", "adam+warmup"), strict=True):
        h = evidence["histograms"].get(m)
        if not h or not h["counts"]:
            ax.set_axis_off()
            continue
        b = h["bins"]
        counts = np.array(h["counts"], dtype=float)
        ax.imshow(np.log10(1 + counts), aspect="auto", origin="lower", cmap="viridis",
                  extent=[b["low"], b["high"], h["steps"][0] - 0.5, h["steps"][-1] + 0.5])
        ax.set_xlabel("log10 |gradient|")
        ax.set_ylabel("step")
        title = "Adam, no warm-up" if m == "adam" else f"Adam, warm-up {evidence['warmup_steps']} steps"
        ax.set_title(f"{title} (lr {evidence['histogram_lr']:g})")
    save_figure(fig, path, tight_layout=True)
