"""Claim 4, ``swats``: "begin with Adam, end with SGDM": SWATS against Adam and SGDM, tuned equally.

The claim (Keskar & Socher 2017; the lecture's "Adam 和 SGDM 结合"): SWATS starts with Adam and switches to SGD
with momentum at a learning rate it estimates from Adam's own steps (the projection of Adam's step on the gradient,
averaged), once that estimate is stable; it trains fast like Adam early and generalizes like SGDM at the end.

Protocol: the lab's tuned comparison (:func:`optimlab.lab.study.tuning.tune_and_run`, the protocol of ``optimlab
compare``: each optimizer tuned over its search space with the same budget, selected on validation, then run on
fresh seeds with the test split evaluated once) on ``mnist1d-mlp``, the lab's cheapest real task, with the lab's
default schedule for all three (SWATS's SGD phase follows it, as in the paper's step schedule). Each SWATS run
records when each parameter tensor switched, and the SGD lr it estimated (Λ; the SGD step is (1-β₁)Λ times the
momentum buffer, so (1-β₁)Λ is the lr comparable to SGDM's), from :attr:`optimlab.SWATS.switch_steps` /
:attr:`~optimlab.SWATS.sgd_lrs`.

Citations: Keskar & Socher, "Improving Generalization Performance by Switching from Adam to SGD", 2017
(arXiv:1712.07628, Algorithm 1); reference code: none by the authors (optimlab's SWATS docstring lists the
third-party implementations it was checked against); the lecture (source document 003).

Size: default, 3000 steps, 8 tuning trials and 5 final seeds per optimizer; ``--quick``, 400 steps, 3 trials, 3
seeds: a smoke test, too short for SWATS to switch (``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

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
from optimlab.lab.reproduce.measure import tuned_study
from optimlab.lab.study.cost import planned_configs
from optimlab.lab.training.runner import Callback, RunConfig, RunContext

NAME = "swats"
TITLE = "SWATS: begin with Adam, end with SGDM"
CLAIM = ("SWATS (start with Adam, switch to SGDM at an lr estimated from Adam's steps) trains like Adam early and "
         "ends as well as SGDM (Keskar & Socher 2017).")
CITATION = ("Keskar & Socher, \"Improving Generalization Performance by Switching from Adam to SGD\", 2017 "
            "(arXiv:1712.07628)")
CAPTION = ("Left: validation accuracy over steps (mean over the final seeds, tuned settings), with SWATS's median "
           "switch step; right: the SGD lr SWATS estimated per parameter tensor, (1-β₁)Λ, against the tuned SGDM lr.")

PROTOCOL: dict[str, Any] = {
    "task": "mnist1d-mlp",
    "optimizers": ["swats", "adam", "sgdm"],
    "steps": 3000,
    "batch_size": 100,
    "eval_every": 250,
    "schedule": "warmup_cosine",
    "tuning": "quasirandom",
    "budget": 8,
    "refine": 2,
    "trial_fraction": 0.4,
    "alpha": 0.05,  # the tests' level
    "seeds": [0, 1, 2, 3, 4],
}
QUICK: dict[str, Any] = {"steps": 400, "eval_every": 100, "budget": 3, "refine": 0, "trial_fraction": 0.5,
                         "seeds": [0, 1, 2]}

RULE = ("reproduced if (1) SWATS switched to SGD (every parameter tensor) before the end in every final run, (2) its "
        "final test accuracy is not significantly below SGDM's and (3) not significantly below Adam's (Welch t test, "
        "two-sided p < 0.05 with the lower mean counts as below); not reproduced if none holds; mixed otherwise.")

def work(protocol: dict[str, Any]) -> list[RunConfig]:
    """The runs of the tuned study (:func:`~optimlab.lab.study.cost.planned_configs`)."""
    return planned_configs(_protocol(protocol), protocol["optimizers"])


def _protocol(pr: dict[str, Any]) -> Any:
    from optimlab.lab.study.protocol import Protocol

    fields = ("task", "steps", "batch_size", "eval_every", "schedule", "tuning", "budget", "refine", "trial_fraction",
              "alpha")
    return Protocol(**{k: pr[k] for k in fields}, seeds=tuple(pr["seeds"]))


class SwatsProbe(Callback):
    """Stores SWATS's switch steps and estimated lrs (per parameter tensor) in the record's extras."""

    def on_run_end(self, ctx: RunContext) -> None:
        opt = ctx.optimizer
        if hasattr(opt, "switch_steps"):
            beta1 = opt.param_groups[0]["betas"][0]
            ctx.extras["swats"] = {"switch_steps": opt.switch_steps, "sgd_lrs": opt.sgd_lrs, "beta1": beta1}


def swats_callbacks(config: Any) -> list[Callback]:
    """The callbacks of every run (module level, so worker processes can pickle it)."""
    return [SwatsProbe()] if config.optimizer == "swats" else []


def _metric(rec: Any, split: str = "test") -> float:
    if not rec.ok:
        return float("nan")
    return float(rec.test("accuracy") if split == "test" else rec.final(f"{split}_accuracy"))


def run(ctx: Context) -> dict[str, Any]:
    pr = ctx.protocol
    protocol = _protocol(pr)
    study = tuned_study(ctx, pr["task"], pr["optimizers"], protocol, "study", callbacks=swats_callbacks)
    finals = {spec: study.results[spec].finals for spec in pr["optimizers"]}
    sel = {spec: study.results[spec].selection for spec in pr["optimizers"]}
    test = {spec: [_metric(r) for r in recs] for spec, recs in finals.items()}
    train_loss = {spec: [float(r.final("train_loss")) for r in recs] for spec, recs in finals.items()}
    curves = {spec: {"steps": recs[0].history["step"],
                     "val": [r.history["val_accuracy"] for r in recs]} for spec, recs in finals.items()}
    switches = [r.extras.get("swats", {}) for r in finals["swats"]]
    rows = [interval_row(f"{s} test accuracy", v) for s, v in test.items()]
    rows += [interval_row(f"{s} final train loss", v) for s, v in train_loss.items()]
    comp = [comparison_row("test accuracy: swats - sgdm", test["swats"], test["sgdm"]),
            comparison_row("test accuracy: swats - adam", test["swats"], test["adam"])]
    sw_rows = []
    for seed, sw in zip(protocol.seeds, switches, strict=True):
        steps = [s for s in sw.get("switch_steps", [])]
        lrs = [(1 - sw["beta1"]) * v for v in sw.get("sgd_lrs", []) if v is not None]
        switched = [s for s in steps if s is not None]
        sw_rows.append([seed, f"{len(switched)}/{len(steps)}",
                        f"{min(switched)}..{max(switched)}" if switched else "never",
                        f"{min(lrs):.3g}..{max(lrs):.3g}" if lrs else "–"])
    tuned = [[s, f"{sel[s].lr:.3g}", ", ".join(f"{k} {v:.3g}" for k, v in sel[s].hparams.items()) or "–"]
             for s in pr["optimizers"]]
    tables = [
        table(f"Final runs on {pr['task']} ({len(protocol.seeds)} seeds, tuned settings)", INTERVAL_COLUMNS, rows),
        table("Welch t tests", COMPARISON_COLUMNS, comp),
        table("Where SWATS switched (final runs)", ["seed", "tensors switched", "switch steps", "(1-β₁)Λ"], sw_rows,
              f"SGDM's tuned lr: {sel['sgdm'].lr:.3g}"),
        table("Tuned settings (selected on validation)", ["optimizer", "lr", "other"], tuned),
    ]
    return {"test": test, "train_loss": train_loss, "curves": curves, "switches": switches,
            "sgdm_lr": sel["sgdm"].lr, "steps": protocol.steps, "alpha": pr["alpha"], "tables": tables,
            "notes": [f"Results: {ctx.folder / 'study'} (optimlab report {ctx.folder / 'study'} draws the lab's "
                      "full report of the comparison)."]}


def _not_below(a: list[float], b: list[float], alpha: float) -> tuple[bool, str]:
    from optimlab.lab.present.stats import welch_test

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    try:
        p = welch_test(a, b).p
    except ValueError:
        p = float("nan")
    below = ma < mb and p < alpha
    return not below, f"means {ma:.4f} vs {mb:.4f}, p = {p:.3g}"


def verdict(evidence: dict[str, Any]) -> Verdict:
    alpha = evidence["alpha"]
    sw = evidence["switches"]
    all_switched = bool(sw) and all(s.get("switch_steps") and all(x is not None for x in s["switch_steps"])
                                    for s in sw)
    n_sw = sum(1 for s in sw if s.get("switch_steps") and all(x is not None for x in s["switch_steps"]))
    t = evidence["test"]
    ok_sgdm, d_sgdm = _not_below(t["swats"], t["sgdm"], alpha)
    ok_adam, d_adam = _not_below(t["swats"], t["adam"], alpha)
    return verdict_from_checks([
        Check("SWATS switched to SGD in every final run", all_switched, f"{n_sw}/{len(sw)} runs fully switched"),
        Check("SWATS's test accuracy not significantly below SGDM's", ok_sgdm, d_sgdm),
        Check("SWATS's test accuracy not significantly below Adam's", ok_adam, d_adam),
    ])


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for spec, c in evidence["curves"].items():
        v = np.asarray(c["val"], dtype=float)
        a.plot(c["steps"], np.nanmean(v, 0), color=color_for(spec), label=spec, lw=1.6)
        a.fill_between(c["steps"], np.nanmin(v, 0), np.nanmax(v, 0), color=color_for(spec), alpha=0.15, lw=0)
    steps = [x for s in evidence["switches"] for x in s.get("switch_steps", []) if x is not None]
    if steps:
        a.axvline(float(np.median(steps)), color=color_for("swats"), ls="--", lw=1, label="SWATS switch (median)")
    a.set_xlabel("step")
    a.set_ylabel("validation accuracy")
    a.legend()
    for i, s in enumerate(evidence["switches"]):
        lrs = [(1 - s["beta1"]) * v for v in s.get("sgd_lrs", []) if v is not None]
        b.scatter([i] * len(lrs), lrs, color=color_for("swats"), s=18)
    b.axhline(evidence["sgdm_lr"], color=color_for("sgdm"), ls="--", label="tuned SGDM lr")
    b.set_yscale("log")
    b.set_xlabel("final run (seed index)")
    b.set_ylabel("SWATS's estimated SGD lr (1-β₁)Λ, per tensor")
    b.legend()
    save_figure(fig, path, tight_layout=True)
