"""Claim 3, ``adam-vs-sgdm``: Adam trains fast but generalizes worse; SGDM for vision CNNs, Adam for Transformers.

The claims: Wilson et al. (2017): adaptive methods (Adam) reach a worse test result than SGD with momentum even
when they train as fast or faster, with a larger generalization gap. The lecture's summary: "Adam: fast training,
large generalization gap, unstable; SGDM: stable, small gap, better convergence", and its table "Adam for
BERT/Transformers, SGDM for ResNet/YOLO".

Citations: Wilson, Roelofs, Stern, Srebro & Recht, "The Marginal Value of Adaptive Gradient Methods in Machine
Learning", NeurIPS 2017 (arXiv:1705.08292; reference code github.com/wilson-ashia/adaptive_methods); the lecture
(source document notes, "Adam vs SGDM").

How: two tasks of the lab, both tuned fairly with :func:`optimlab.lab.study.tuning.tune_and_run` (the protocol of
``optimlab compare``: the same number of lr trials per optimizer, warm-up + cosine schedule, selection on the
validation split, final runs on fresh seeds with the test split evaluated once): the Fashion-MNIST ResNet with
BatchNorm (``fmnist-resnet``, a vision CNN) and the character Transformer (``shakespeare-char``). Measured per final
seed: the training loss early (at a quarter of the run: training speed), the final test metric (accuracy;
perplexity), the generalization gap (final test loss minus final training loss, on the task's fixed training
subset), and the spread over seeds (standard deviation of the final test metric: reported, not judged; a few
seeds cannot test a difference of variances). Two optimizers compared with Welch's t test.

Size: default, ResNet 800 steps, Transformer 600 steps, 6 lr trials each, 3 final seeds; ``--quick``, 40 steps, 2
trials, 2 seeds (``--dry-run`` prices them on this machine).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from optimlab.lab.reproduce.base import (
    COMPARISON_COLUMNS,
    INTERVAL_COLUMNS,
    MIXED,
    NOT_REPRODUCED,
    REPRODUCED,
    Check,
    Context,
    Verdict,
    comparison_row,
    interval_row,
    table,
    verdict_from_checks,
)
from optimlab.lab.study.cost import planned_configs
from optimlab.lab.training.runner import RunConfig

NAME = "adam-vs-sgdm"
TITLE = "Adam vs SGDM, tuned equally: a BatchNorm CNN and a character Transformer"
CLAIM = ("Adam trains faster early but generalizes worse than SGDM (a larger gap, a worse final test result) on a "
         "vision CNN (Wilson et al. 2017; the lecture: 'SGDM for ResNet/YOLO'), while Adam is the better choice "
         "for Transformers (the lecture: 'Adam for BERT/Transformers').")
CITATION = ("Wilson et al. 2017 (NeurIPS, arXiv:1705.08292, github.com/wilson-ashia/adaptive_methods); the "
            "lecture's summary and table (source document notes)")
CAPTION = ("Left: training loss against the step, right: validation metric against the step (mean over final "
           "seeds, band: min-max), for tuned SGDM and Adam on each task (the axes of Wilson et al. 2017, Fig. 1-3).")

TASKS = ("fmnist-resnet", "shakespeare-char")
OPTIMIZERS = ("sgdm", "adam")

PROTOCOL: dict[str, Any] = {
    "tasks": {  # per task: the tune_and_run protocol fields (the rest are the lab's defaults)
        "fmnist-resnet": {"steps": 800, "batch_size": 128, "eval_every": 100},
        "shakespeare-char": {"steps": 600, "batch_size": 32, "eval_every": 100},
    },
    "budget": 6,  # lr trials per optimizer (5 quasi-random + 1 refining the best)
    "trial_fraction": 0.4,
    "schedule": "warmup_cosine",
    "early_fraction": 0.25,  # "training speed early": the training loss at this fraction of the run
    "alpha": 0.05,
    "seeds": [0, 1, 2],
}
QUICK: dict[str, Any] = {
    "tasks": {
        "fmnist-resnet": {"steps": 40, "batch_size": 128, "eval_every": 10},
        "shakespeare-char": {"steps": 40, "batch_size": 32, "eval_every": 10},
    },
    "budget": 2,
    "trial_fraction": 0.5,
    "seeds": [0, 1],
}

RULE = ("Per task, on the final seeds (Welch's t test, alpha 0.05; with one seed the direction alone). Vision CNN "
        "(fmnist-resnet), three checks: Adam's training loss at a quarter of the run is lower than SGDM's (fast "
        "early training); SGDM's final test accuracy is higher than Adam's; Adam's generalization gap (test loss - "
        "training loss) is larger than SGDM's. Transformer (shakespeare-char), two checks: Adam's final test "
        "perplexity is lower than SGDM's; Adam's training loss at a quarter of the run is lower. A task is "
        "reproduced if all its checks hold, not reproduced if none, mixed otherwise; the claim is reproduced if "
        "both tasks are, not reproduced if neither is, mixed otherwise. Spread over seeds: reported, not judged.")


def _protocol(p: dict[str, Any], task: str, seeds: tuple[int, ...]) -> Any:
    from optimlab.lab.study.protocol import default_protocol

    t = p["tasks"][task]
    return default_protocol(task, steps=t["steps"], batch_size=t["batch_size"], eval_every=t["eval_every"],
                            budget=p["budget"], trial_fraction=p["trial_fraction"], schedule=p["schedule"],
                            seeds=tuple(seeds))


def work(protocol: dict[str, Any]) -> list[RunConfig]:
    """The runs of the two tuned studies (:func:`~optimlab.lab.study.cost.planned_configs`)."""
    seeds = tuple(protocol["seeds"])
    return [c for task in protocol["tasks"] for c in planned_configs(_protocol(protocol, task, seeds), OPTIMIZERS)]


def _task_evidence(task: str, study: Any, p: dict[str, Any]) -> dict[str, Any]:
    from optimlab.lab.reproduce.measure import or_nan, std

    t = study.task
    early_step = max(1, round(p["tasks"][task]["steps"] * p["early_fraction"]))
    out: dict[str, Any] = {"metric": t.metric, "higher_is_better": t.higher_is_better, "early_step": early_step,
                           "optimizers": {}}
    for spec in OPTIMIZERS:
        res = study.results[spec]
        finals = res.finals
        test = [or_nan(r.test(t.metric)) if r.ok else math.nan for r in finals]
        gap = [or_nan(r.test("loss")) - or_nan(r.final("train_loss")) if r.ok else math.nan for r in finals]
        curves = {key: [[v if v is not None else math.nan for v in r.history[key]] for r in finals]
                  for key in ("train_loss", f"val_{t.metric}")}
        out["optimizers"][spec] = {
            "lr": res.selection.lr,
            "edges": res.selection.edges,
            "early_train_loss": [or_nan(r.at("train_loss", early_step)) for r in finals],
            "test": test,
            "gap": gap,
            "spread": std(test),
            "steps": finals[0].history["step"] if finals else [],
            "curves": curves,
            "seeds": [r.config.seed for r in finals],
        }
    return out


def run(ctx: Context) -> dict[str, Any]:
    from optimlab.lab.reproduce.measure import tuned_study

    p = ctx.protocol
    ctx.log(f"{len(work(p))} runs on {len(p['tasks'])} tasks")
    evidence: dict[str, Any] = {"alpha": p["alpha"], "tasks": {}, "tables": []}
    for task in p["tasks"]:
        protocol = _protocol(p, task, ctx.seeds)
        ctx.log(f"{task}: {protocol.describe()}")
        study = tuned_study(ctx, task, OPTIMIZERS, protocol, subdir=task)
        e = _task_evidence(task, study, p)
        e["protocol"] = protocol.describe()
        evidence["tasks"][task] = e
        o = e["optimizers"]
        rows = []
        for spec in OPTIMIZERS:
            rows.append(interval_row(f"{spec}: test {e['metric']} (lr {o[spec]['lr']:.3g})", o[spec]["test"]))
            rows.append(interval_row(f"{spec}: training loss at step {e['early_step']}", o[spec]["early_train_loss"]))
            rows.append(interval_row(f"{spec}: gap (test - training loss)", o[spec]["gap"]))
        evidence["tables"].append(table(f"{task}: tuned SGDM and Adam on {len(ctx.seeds)} final seeds",
                                        list(INTERVAL_COLUMNS), rows, note=e["protocol"]))
        evidence["tables"].append(table(f"{task}: Adam - SGDM (Welch)", list(COMPARISON_COLUMNS), [
            comparison_row(f"test {e['metric']}", o["adam"]["test"], o["sgdm"]["test"]),
            comparison_row(f"training loss at step {e['early_step']}", o["adam"]["early_train_loss"],
                           o["sgdm"]["early_train_loss"]),
            comparison_row("generalization gap", o["adam"]["gap"], o["sgdm"]["gap"]),
        ], note="spread (sd of the test metric over seeds): " + ", ".join(
            f"{s} {o[s]['spread']:.3g}" for s in OPTIMIZERS)))
    return evidence


def _less(a: list[float], b: list[float], alpha: float) -> tuple[bool, str]:
    """mean(a) < mean(b), significant at ``alpha`` (one seed: the direction alone)."""
    from optimlab.lab.reproduce.measure import welch

    diff, pval = welch(a, b)
    if math.isnan(diff):
        return False, "no finite values"
    if math.isnan(pval):
        return diff < 0, f"difference {diff:+.4g}, no test"
    return diff < 0 and pval < alpha, f"difference {diff:+.4g}, p = {pval:.3g}"


def task_checks(task: str, e: dict[str, Any], alpha: float) -> list[Check]:
    """The rule's checks for one task's evidence."""
    adam, sgdm = e["optimizers"]["adam"], e["optimizers"]["sgdm"]
    early = Check("Adam's early training loss lower than SGDM's",
                  *_less(adam["early_train_loss"], sgdm["early_train_loss"], alpha))
    if task == "shakespeare-char":
        return [Check("Adam's test perplexity lower than SGDM's", *_less(adam["test"], sgdm["test"], alpha)), early]
    neg = [-v for v in sgdm["test"]], [-v for v in adam["test"]]  # SGDM's accuracy higher = -SGDM less than -Adam
    return [
        early,
        Check("SGDM's test accuracy higher than Adam's", *_less(*neg, alpha)),
        Check("Adam's generalization gap larger than SGDM's", *_less(sgdm["gap"], adam["gap"], alpha)),
    ]


def verdict(evidence: dict[str, Any]) -> Verdict:
    alpha = evidence["alpha"]
    per_task = {task: verdict_from_checks(task_checks(task, e, alpha)) for task, e in evidence["tasks"].items()}
    values = [v.value for v in per_task.values()]
    if all(v == REPRODUCED for v in values):
        value = REPRODUCED
    elif all(v == NOT_REPRODUCED for v in values):
        value = NOT_REPRODUCED
    else:
        value = MIXED
    return Verdict(value, " | ".join(f"{task}: {v.value} ({v.reason})" for task, v in per_task.items()))


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    tasks = list(evidence["tasks"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.6 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        e = evidence["tasks"][task]
        for ax, key, label in ((row[0], "train_loss", "training loss"),
                               (row[1], f"val_{e['metric']}", f"validation {e['metric']}")):
            for spec, o in e["optimizers"].items():
                if not o["curves"][key]:
                    continue
                y = np.array(o["curves"][key], dtype=float)
                x = o["steps"][: y.shape[1]]
                ax.plot(x, np.nanmean(y, 0), color=color_for(spec), label=f"{spec} (lr {o['lr']:.3g})")
                ax.fill_between(x, np.nanmin(y, 0), np.nanmax(y, 0), color=color_for(spec), alpha=0.2)
            ax.set_xlabel("step")
            ax.set_ylabel(label)
            ax.set_title(task)
            if key == "train_loss" or e["metric"] == "perplexity":
                ax.set_yscale("log")
            ax.legend(fontsize=8)
    save_figure(fig, path, tight_layout=True)
