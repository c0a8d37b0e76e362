"""Claim 13, ``next-adam``: what comes after Adam, asked in 2026: do the newer optimizers beat a tuned Adam/AdamW/SGDM
under one protocol, and by how much?

Claim (the article's title question, "what comes after Adam?"; the newer papers each claim speedups over AdamW:
Muon ~1.35x in steps on NanoGPT speedruns, SOAP ~40 % fewer iterations than AdamW, Lion and AdEMAMix similar,
Schedule-Free AdamW winning AlgoPerf's self-tuning track), and the published counter-finding this experiment
checks: under careful, equal tuning the claimed speedups shrink: Wen, Hall, Ma & Liang 2025 ("Fantastic
Pretraining Optimizers and Where to Find Them": at most ~1.4x over well-tuned AdamW at 0.1-0.5B parameters,
shrinking to ~1.1x at 1.2B); Semenov, Pagliardini & Jaggi 2025 ("Benchmarking Optimizers for Large Language Model
Pretraining"); AlgoPerf (Dahl et al. 2023; Kasimbeg et al. 2025: the winners beat the baseline by tens of
percent, not multiples).

How: the source documents' best (SGDM, Adam, AdamW) and six newer optimizers (Muon, Shampoo, SOAP, Schedule-Free AdamW,
AdEMAMix, Lion) on the lab's character Transformer (``shakespeare-char``) and CNN (``mnist1d-cnn``), every one
tuned by :func:`optimlab.lab.study.tuning.tune_and_run` with the same protocol as ``optimlab compare`` (the same number
of quasi-random trials over each optimizer's lab search space, selection on validation, final runs on fresh
seeds). Speedup = the best baseline's steps to the task's validation target over the challenger's (AlgoPerf's
time-to-target in steps), as a ratio of geometric means over seeds with a 95 % Welch-t interval on the log
scale; a run that never reaches the target counts as not reaching it (no speedup can be computed against it).

Presets: the newer optimizers' lab presets and search spaces come from ``optimlab.lab.catalog.presets`` (issue 12's
lab work), as for ``optimlab compare``.

Size: default, the tasks' lengths, 8 trials, 5 seeds, 9 optimizers x 2 tasks; ``--quick``, the CNN only, 300
steps, 3 trials, 2 seeds (``--dry-run`` prices them on this machine, every optimizer's step as Adam's: the matrix
optimizers step slower).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from optimlab.lab.reproduce import (
    INTERVAL_COLUMNS,
    Check,
    Context,
    Verdict,
    interval_row,
    table,
    verdict_from_checks,
)
from optimlab.lab.reproduce.measure import finals, or_nan, tuned_study
from optimlab.lab.study.cost import planned_configs
from optimlab.lab.training.runner import RunConfig

__all__ = ["NAME", "PROTOCOL", "QUICK", "RULE", "run", "verdict", "figure", "work", "speedup_interval"]

NAME = "next-adam"
TITLE = "What comes after Adam (2026)? Newer optimizers vs tuned SGDM/Adam/AdamW at equal budget"
CLAIM = ("The newer optimizers (Muon, Shampoo, SOAP, Schedule-Free AdamW, AdEMAMix, Lion) are claimed to train "
         "faster than Adam; the published counter-finding: with equal, careful tuning their speedup over the best "
         "tuned baseline shrinks to well under the claimed factors.")
CITATION = ("Wen et al. 2025 (Fantastic Pretraining Optimizers and Where to Find Them); Semenov et al. 2025 "
            "(Benchmarking Optimizers for LLM Pretraining); Dahl et al. 2023 / Kasimbeg et al. 2025 (AlgoPerf); "
            "Jordan et al. 2024 (Muon); Vyas et al. 2024 (SOAP); Gupta et al. 2018 (Shampoo); Defazio et al. 2024 "
            "(Schedule-Free); Pagliardini et al. 2024 (AdEMAMix); Chen et al. 2023 (Lion)")
CAPTION = ("Speedup in steps to the validation target over the best tuned baseline (SGDM, Adam or AdamW) per task: "
           "ratio of geometric means over seeds, bars: 95% t interval on the log scale; grey band: the 1.5x "
           "threshold of the rule; x: never reached the target.")

BASELINES = ("sgdm", "adam", "adamw")
CHALLENGERS = ("muon", "shampoo", "soap", "schedulefree-adamw", "ademamix", "lion")

PROTOCOL: dict[str, Any] = {
    "tasks": ["shakespeare-char", "mnist1d-cnn"],
    "baselines": list(BASELINES),
    "challengers": list(CHALLENGERS),
    "steps": {"shakespeare-char": 1000, "mnist1d-cnn": 1000},  # the tasks' default lengths
    "schedule": "warmup_cosine",
    "tuning": "quasirandom",
    "budget": 8,
    "trial_fraction": 0.4,
    "study": 0,
    "targets": {},  # validation targets per task; empty: the tasks' own (perplexity 6, accuracy 90 %)
    "threshold": 1.5,  # a "large" speedup: the rule asks whether any interval lies wholly above it
    "seeds": [0, 1, 2, 3, 4],
}
# --quick runs the CNN only: 9 optimizers tuned on the Transformer took ~70 s a run on the shared machine, over
# an hour even at 200 steps (measured 2026-12-02), far past the 2 minutes of a quick run.
# Its target is lowered to 75 % so that 300 steps can reach it and the speedup path runs.
QUICK: dict[str, Any] = {"tasks": ["mnist1d-cnn"], "steps": {"mnist1d-cnn": 300}, "budget": 3, "seeds": [0, 1],
                         "targets": {"mnist1d-cnn": 0.75}}

RULE = ("Per task, with every optimizer tuned at the same budget: (a) no newer optimizer's speedup in steps to "
        "the validation target over the best tuned baseline has its 95% interval wholly above 1.5x (the large "
        "claimed speedups do not survive equal tuning), and (b) the best baseline reaches the target in at least "
        "half of its final seeds (the comparison is meaningful). Reproduced if (a) and (b) hold on every task run "
        "(default: both; --quick: the CNN only); not reproduced if (a) fails on every task (a newer optimizer is "
        "reliably > 1.5x faster everywhere); "
        "mixed otherwise.")

def speedup_interval(base: list[float], other: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Ratio of geometric means ``base / other`` (steps to target) with a Welch-t interval on the log scale;
    NaN bounds with fewer than two finite values on a side; ``inf``/NaN where a side never reached the target."""
    from optimlab.lab.present.stats import t_quantile

    b = np.log([v for v in base if math.isfinite(v) and v > 0])
    o = np.log([v for v in other if math.isfinite(v) and v > 0])
    out = {"ratio": math.nan, "low": math.nan, "high": math.nan,
           "base_reached": int(b.size), "other_reached": int(o.size), "n_base": len(base), "n_other": len(other)}
    if b.size == 0 or o.size == 0:
        return out
    d = float(b.mean() - o.mean())
    out["ratio"] = math.exp(d)
    if b.size > 1 and o.size > 1:
        vb, vo = b.var(ddof=1) / b.size, o.var(ddof=1) / o.size
        se = math.sqrt(vb + vo)
        if se == 0:
            out["low"] = out["high"] = math.exp(d)
        else:
            df = (vb + vo) ** 2 / (vb**2 / (b.size - 1) + vo**2 / (o.size - 1))
            h = t_quantile(0.5 + confidence / 2, df) * se
            out["low"], out["high"] = math.exp(d - h), math.exp(d + h)
    return out


def _protocol(p: dict[str, Any], task: str, seeds: tuple[int, ...]) -> Any:
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.lab.study.protocol import default_protocol

    t = get_task(task)
    steps = int(p["steps"][task])
    return default_protocol(task, steps=steps, eval_every=min(t.eval_every, max(1, steps // 10)),
                            schedule=p["schedule"], tuning=p["tuning"], budget=int(p["budget"]),
                            trial_fraction=float(p["trial_fraction"]), study=int(p["study"]), seeds=tuple(seeds),
                            target=p.get("targets", {}).get(task))


def work(protocol: dict[str, Any]) -> list[RunConfig]:
    """The runs of every tuned study, one per task (:func:`~optimlab.lab.study.cost.planned_configs`)."""
    specs = [*protocol["baselines"], *protocol["challengers"]]
    seeds = tuple(protocol["seeds"])
    return [c for task in protocol["tasks"] for c in planned_configs(_protocol(protocol, task, seeds), specs)]


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.protocol
    specs = [*p["baselines"], *p["challengers"]]
    evidence: dict[str, Any] = {"tasks": {}, "threshold": p["threshold"],
                                "baselines": p["baselines"], "challengers": p["challengers"]}
    tables = []
    for task in p["tasks"]:
        ctx.log(f"{task}: tuning {len(specs)} optimizers")
        protocol = _protocol(p, task, ctx.seeds)
        result = tuned_study(ctx, task, specs, protocol, task)
        target = protocol.target_value
        metric = result.task.metric
        runs = {s: finals(result, s) for s in specs}
        per = {s: {"steps_to_target": [r.steps_to(target, key=f"val_{r.metric}") for r in runs[s]],
                   f"val_{metric}": [or_nan(r.final(f"val_{metric}")) if r.ok else math.nan for r in runs[s]],
                   f"test_{metric}": [or_nan(r.test(metric)) for r in runs[s]],  # a diverged run's too
                   "lr": result.results[s].selection.lr,
                   "hparams": result.results[s].selection.hparams} for s in specs}

        def mean_steps(s: str, per: dict[str, Any] = per) -> float:
            v = per[s]["steps_to_target"]
            reached = [x for x in v if math.isfinite(x)]
            return float(np.exp(np.mean(np.log(reached)))) if len(reached) * 2 >= len(v) else math.inf

        best = min(p["baselines"], key=mean_steps)
        speed = {s: speedup_interval(per[best]["steps_to_target"], per[s]["steps_to_target"])
                 for s in p["challengers"]}
        evidence["tasks"][task] = {"target": target, "metric": metric, "steps": protocol.steps, "per": per,
                                   "best_baseline": best, "best_reached": per[best]["steps_to_target"],
                                   "speedup": speed, "protocol": protocol.describe()}
        rows = []
        for s in specs:
            reached = [x for x in per[s]["steps_to_target"] if math.isfinite(x)]
            rows.append(interval_row(f"{s}: steps to {metric} {target:g} (reached {len(reached)}/{len(ctx.seeds)})",
                                     reached or [math.nan]))
        rows += [interval_row(f"{s}: final test {metric} (lr {per[s]['lr']:.3g})", per[s][f"test_{metric}"])
                 for s in specs]
        tables.append(table(f"{task}: final runs at the selected settings", INTERVAL_COLUMNS, rows))
        srows = [[s, f"{speed[s]['ratio']:.3g}" if math.isfinite(speed[s]["ratio"]) else "–",
                  (f"[{speed[s]['low']:.3g}, {speed[s]['high']:.3g}]"
                   if math.isfinite(speed[s]["low"]) else "–"),
                  f"{speed[s]['other_reached']}/{speed[s]['n_other']}"] for s in p["challengers"]]
        tables.append(table(f"{task}: speedup in steps to target over the best tuned baseline ({best})",
                            ["optimizer", "speedup", "95% interval", "reached target"], srows,
                            "ratio of geometric means of steps to target (baseline / optimizer); > 1: faster"))
    evidence["tables"] = tables
    evidence["notes"] = []
    return evidence


def verdict(evidence: dict[str, Any]) -> Verdict:
    thr = float(evidence["threshold"])
    checks, fails_a = [], 0
    for task, t in evidence["tasks"].items():
        big = [s for s, r in t["speedup"].items() if r["low"] is not None and math.isfinite(r["low"])
               and r["low"] > thr]
        fails_a += bool(big)
        detail = "; ".join(f"{s} {r['ratio']:.3g}" + (f" [{r['low']:.3g}, {r['high']:.3g}]"
                                                      if r["low"] is not None and math.isfinite(r["low"]) else "")
                           for s, r in t["speedup"].items() if r["ratio"] is not None and math.isfinite(r["ratio"]))
        shown = (f"above: {', '.join(big)}; " if big else "") + (detail or "no challenger reached the target")
        checks.append(Check(f"{task}: no speedup interval wholly above {thr:g}x", not big, shown))
        reached = [x for x in t["best_reached"] if x is not None and math.isfinite(x)]
        checks.append(Check(f"{task}: the best baseline ({t['best_baseline']}) reaches the target in >= half its "
                            "seeds", 2 * len(reached) >= len(t["best_reached"]) > 0,
                            f"{len(reached)}/{len(t['best_reached'])}"))
    v = verdict_from_checks(checks)
    if fails_a == len(evidence["tasks"]) and v.value != "not reproduced":
        return Verdict("not reproduced", "a newer optimizer is reliably faster than 1.5x on every task; " + v.reason)
    if v.value == "not reproduced":  # the rule's 'not reproduced' is only (a) failing everywhere
        return Verdict("mixed", v.reason)
    return v


def figure(evidence: dict[str, Any], path: Path) -> None:
    from optimlab.lab.present.figures import pyplot, save_figure
    from optimlab.lab.present.style import color_for

    plt = pyplot()
    tasks = list(evidence["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        t = evidence["tasks"][task]
        for i, (s, r) in enumerate(t["speedup"].items()):
            ratio = r["ratio"]
            if ratio is None or not math.isfinite(ratio):
                ax.plot([i], [1.0], "x", color=color_for(s), ms=9)
                continue
            lo, hi = r["low"], r["high"]
            err = None if lo is None or not math.isfinite(lo) else [[ratio - lo], [hi - ratio]]
            ax.errorbar([i], [ratio], yerr=err, fmt="o", color=color_for(s), capsize=4)
        ax.axhline(1.0, color="0.3", lw=0.8)
        ax.axhspan(float(evidence["threshold"]), max(ax.get_ylim()[1], 2.0), color="0.85", zorder=0)
        ax.set_xticks(range(len(t["speedup"])), list(t["speedup"]), rotation=30, ha="right")
        ax.set(yscale="log", ylabel=f"speedup in steps to val {t['metric']} {t['target']:g}",
               title=f"{task}: vs tuned {t['best_baseline']}")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("What comes after Adam? Speedups at equal tuning budget")
    save_figure(fig, path, tight_layout=True, crop=False)
