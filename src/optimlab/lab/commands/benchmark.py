"""``optimlab benchmark``: a suite of tasks from different corners, every optimizer tuned under one protocol,
aggregated as AlgoPerf does (Dahl et al., 2023, "Benchmarking Neural Network Training Algorithms").

The suite (:data:`SUITE`): the MNIST-1D CNN (small 1-D convolutions), a ResNet with BatchNorm on Fashion-MNIST
(the vision corner where SGD with momentum is the usual choice), the Shakespeare character Transformer (the
NLP corner where Adam is), and an MLP autoencoder on Fashion-MNIST (a reconstruction loss, the classic
ill-conditioned test of optimizers). Each task's study runs with the default protocol into ``OUT/TASK/``
(:mod:`optimlab.lab.study.session`: everything is checked and costed before the first run; resumable: nothing
finished is lost to Ctrl-C or a crash, and re-running the same command continues); then, over tasks:

- per task, the median training CPU seconds of the final seeds to the task's validation target (``inf`` when
  most seeds miss it) and the ratio to the fastest optimizer (a ratio above ``r_max = 4`` counts as a miss);
- the Dolan–Moré performance profile ``rho(tau)``, the fraction of tasks an optimizer solves within ``tau``
  times the fastest, for ``tau`` in [1, 4];
- the benchmark score, the profile's integral over [1, 4] divided by 3 (1: fastest on every task; 0: never
  within 4x of the fastest), and a second profile on steps instead of CPU seconds.

``--quick`` runs the same code on a tiny budget (CI). The full size's cost is printed before anything starts.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS
from optimlab.lab.catalog.tasks import get_task, task_slug
from optimlab.lab.commands.args import (
    add_data_dir,
    add_dry_run,
    add_jobs,
    add_no_progress,
    add_out,
    add_seeds,
    add_task,
    check_data_dir,
    check_jobs,
    parse_seeds,
    split_specs,
)
from optimlab.lab.commands.command import Command
from optimlab.lab.executors.backends import add_backend_arguments, check_backend_args, describe_backend
from optimlab.lab.present import stats
from optimlab.lab.present.style import color_for
from optimlab.lab.study.cost import duration
from optimlab.lab.study.folder import check_ours
from optimlab.lab.study.protocol import Protocol, default_protocol
from optimlab.lab.study.session import Session, check_study, plan_study
from optimlab.lab.training.results import check_writable

__all__ = [
    "SUITE",
    "QUICK",
    "BENCHMARK_FILE",
    "suite_protocols",
    "check_benchmark_folder",
    "write_benchmark_manifest",
    "aggregate",
    "Aggregate",
    "build_benchmark_report",
    "configure",
    "benchmark",
    "COMMANDS",
]

BENCHMARK_FILE = "benchmark.json"
SUITE: tuple[str, ...] = ("mnist1d-cnn", "fmnist-resnet", "shakespeare-char", "fmnist-autoencoder")
# --quick: the same protocol on a tiny budget (a smoke test of the whole pipeline, not a result)
QUICK: dict[str, Any] = {"steps": 24, "eval_every": 12, "budget": 2, "seeds": (0, 1), "batch_size": 16}
QUICK_OPTIMIZERS: tuple[str, ...] = ("sgdm", "adam")


def suite_protocols(tasks: Sequence[str] = SUITE, *, quick: bool = False, **overrides: Any) -> dict[str, Protocol]:
    """The protocol of each task: :func:`~optimlab.lab.study.protocol.default_protocol`, on the quick budget with
    ``quick``; ``overrides`` (e.g. ``seeds``, ``budget``, ``study``) apply to every task."""
    out = {}
    for t in tasks:
        fields = dict(QUICK) if quick else {}
        fields.update(overrides)
        out[t] = default_protocol(t, **fields)
    return out


def _manifest(out: Path, tasks: Sequence[str], optimizers: Sequence[str], quick: bool) -> dict[str, Any]:
    return {"format": 1, "tasks": list(tasks), "optimizers": list(optimizers), "quick": quick}


def _read_benchmark(path: Path) -> dict[str, Any]:
    """``benchmark.json``, or a ``ValueError`` naming it when it is not one (empty, not JSON, no task list)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); nothing was changed: choose another --out") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks"), list):
        raise ValueError(
            f"{path} is not a benchmark of optimlab (no task list); nothing was changed: choose another --out"
        )
    return manifest


def _check_manifest(out: Path, manifest: dict[str, Any]) -> list[str]:
    path = out / BENCHMARK_FILE
    if not path.exists():
        return []
    theirs = _read_benchmark(path)
    for k in ("format", "tasks", "quick"):
        if theirs.get(k) != manifest.get(k):
            raise ValueError(
                f"{out} holds another benchmark ({k}: {theirs.get(k)!r} there, {manifest.get(k)!r} now); nothing "
                "was changed: choose another folder with --out"
            )
    return list(theirs.get("optimizers", []))


def check_benchmark_folder(out: Path, tasks: Sequence[str], optimizers: Sequence[str], quick: bool) -> list[str]:
    """Raise ``ValueError`` when ``out`` is a folder of files that is not a benchmark folder, or holds another
    benchmark (other tasks, another size); return the optimizers it lists already. Creates nothing."""
    check_ours(out, (BENCHMARK_FILE,), "benchmark folder")
    return _check_manifest(out, _manifest(out, tasks, optimizers, quick))


def write_benchmark_manifest(out: Path, tasks: Sequence[str], optimizers: Sequence[str], quick: bool) -> None:
    """Create ``out`` and write its ``benchmark.json`` (the tasks, the optimizers, the size): the mark that makes
    it a benchmark folder, written before any task's folder is made."""
    out = check_writable(out)
    manifest = _manifest(out, tasks, list(dict.fromkeys(optimizers)), quick)
    (out / BENCHMARK_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


@dataclass
class Aggregate:
    """Over tasks: times to target, ratios, profiles and scores, on CPU seconds and on steps."""

    tasks: list[str]
    optimizers: list[str]
    cpu_times: dict[str, dict[str, float]]
    step_times: dict[str, dict[str, float]]
    cpu_ratios: dict[str, dict[str, float]]
    step_ratios: dict[str, dict[str, float]]
    taus: list[float]
    cpu_profile: dict[str, list[float]]
    step_profile: dict[str, list[float]]
    cpu_score: dict[str, float]
    step_score: dict[str, float]
    summaries: dict[str, Any]


def aggregate(summaries: dict[str, Any], r_max: float = stats.R_MAX) -> Aggregate:
    """Performance profiles and AlgoPerf scores from per-task :class:`~optimlab.lab.present.summary.TaskSummary`.

    An optimizer missing on a task (not run, or incomplete) counts as a miss there."""
    tasks = list(summaries)
    names = list(dict.fromkeys(r.spec for ts in summaries.values() for r in ts.rows))
    cpu: dict[str, dict[str, float]] = {}
    steps: dict[str, dict[str, float]] = {}
    for t, ts in summaries.items():
        rows = {r.spec: r for r in ts.rows}
        cpu[t] = {n: rows[n].cpu_to_target if n in rows and rows[n].complete else math.inf for n in names}
        steps[t] = {n: rows[n].steps_to_target if n in rows and rows[n].complete else math.inf for n in names}
    cpu_r = stats.performance_ratios(cpu, r_max)
    step_r = stats.performance_ratios(steps, r_max)
    taus = [1 + (r_max - 1) * i / 300 for i in range(301)]
    return Aggregate(
        tasks=tasks,
        optimizers=names,
        cpu_times=cpu,
        step_times=steps,
        cpu_ratios=cpu_r,
        step_ratios=step_r,
        taus=taus,
        cpu_profile=stats.performance_profile(cpu_r, taus),
        step_profile=stats.performance_profile(step_r, taus),
        cpu_score=stats.integrated_score(cpu_r, r_max),
        step_score=stats.integrated_score(step_r, r_max),
        summaries=summaries,
    )


def _plot_profiles(agg: Aggregate, path: Path) -> None:
    from optimlab.lab.present.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    order = sorted(agg.optimizers, key=lambda n: -agg.cpu_score[n])
    for ax, prof, score, label in (
        (axes[0], agg.cpu_profile, agg.cpu_score, "training CPU seconds"),
        (axes[1], agg.step_profile, agg.step_score, "steps"),
    ):
        for n in order:
            ax.step(agg.taus, prof[n], where="post", color=color_for(n), lw=1.5, label=f"{n} ({score[n]:.2f})")
        ax.set_xlim(1, agg.taus[-1])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(f"tau: within this factor of the fastest ({label} to the validation target)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="score", title_fontsize=7, loc="lower right")
    axes[0].set_ylabel(f"rho(tau): fraction of the {len(agg.tasks)} tasks")
    fig.suptitle("Performance profiles (Dolan & Moré 2002; AlgoPerf scoring, r_max = 4)", fontsize=11)
    save_figure(fig, path)


def _score_table(agg: Aggregate) -> tuple[list[str], list[list[str]]]:
    header = ["optimizer", "score (CPU s)", "score (steps)", *(f"{t}: CPU s to target" for t in agg.tasks)]
    rows = []
    for n in sorted(agg.optimizers, key=lambda n: (-agg.cpu_score[n], -agg.step_score[n], n)):
        cells = [n, f"{agg.cpu_score[n]:.3f}", f"{agg.step_score[n]:.3f}"]
        for t in agg.tasks:
            v, r = agg.cpu_times[t][n], agg.cpu_ratios[t][n]
            cells.append(
                "miss" if not math.isfinite(v) else f"{v:.1f} (x{r:.2f})" if math.isfinite(r) else f"{v:.1f} (>4x)"
            )
        rows.append(cells)
    return header, rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def build_benchmark_report(out: str | os.PathLike) -> tuple[Path, str]:
    """Per-task reports (``OUT/TASK/report.html``), the profiles, scores and ``OUT/report.html``; returns the
    page's path and the printed text."""
    from optimlab.lab.present.pages import STYLE
    from optimlab.lab.present.report import build_report, headline_sentence, summary_table_html

    out = Path(out)
    path = out / BENCHMARK_FILE
    if not path.exists():
        raise FileNotFoundError(f"no benchmark in {out} (expected {path})")
    check_writable(out)
    manifest = _read_benchmark(path)
    summaries = {}
    for task in manifest["tasks"]:
        if (out / task_slug(task) / "protocol.json").exists():
            _, summaries[task] = build_report(out / task_slug(task))
    if not summaries:
        raise FileNotFoundError(f"no task of the benchmark in {out} has results yet")
    agg = aggregate(summaries)
    header, rows = _score_table(agg)
    lines = ["optimlab benchmark" + (" (--quick: a smoke test, not a result)" if manifest.get("quick") else "")]
    lines += [headline_sentence(ts) for ts in summaries.values()]
    missing = [t for t in manifest["tasks"] if t not in summaries]
    if missing:
        lines.append(f"not run yet: {', '.join(missing)}")
    lines += ["", _text_table(header, rows)]
    lines.append(
        "\nscore: AlgoPerf's integrated performance profile over tau in [1, 4] / 3 on the median training CPU "
        "seconds (and steps) to each task's validation target; 1 = fastest on every task."
    )
    text = "\n".join(lines)
    _plot_profiles(agg, out / "profiles.png")
    parts = [
        "<h1>optimlab benchmark</h1>",
        "<p><b>The answer, per task</b>:</p><ul>"
        + "".join(
            f"<li>{html.escape(headline_sentence(ts))} <a href='{task_slug(t)}/report.html'>report</a></li>"
            for t, ts in summaries.items()
        )
        + "</ul>",
    ]
    if manifest.get("quick"):
        parts.append("<p class='notes'>--quick: a tiny budget that tests the pipeline; the numbers mean nothing.</p>")
    if missing:
        parts.append(f"<p class='notes'>Not run yet: {html.escape(', '.join(missing))}.</p>")
    parts.append(
        "<h2>Performance profiles and score</h2><p>For each task, the median over final seeds of the training "
        "CPU seconds (left) and steps (right) to the validation target, divided by the fastest optimizer's; "
        "rho(tau) is the fraction of tasks solved within tau times the fastest; the score is its integral over "
        "[1, 4] divided by 3 (AlgoPerf). Protocol per task: see each task's report.</p>"
        "<img src='profiles.png' alt='performance profiles' data-figure='profiles'>"
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    for t, ts in summaries.items():
        parts.append(f"<h2>{html.escape(t)}</h2><p>{html.escape(ts.study.protocol.describe())}</p>")
        slug = task_slug(t)
        parts.append(f"<img src='{slug}/answer_{slug}.png' alt='{html.escape(t)}' data-figure='answer'>")
        parts.append(summary_table_html(ts))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>optimlab benchmark</title><style>{STYLE}</style>"
        f"</head><body>{''.join(parts)}</body></html>"
    )
    report = out / "report.html"
    report.write_text(page)
    return report, text


# ----------------------------------------------------------------------------------------------------
# Command line


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments of ``optimlab benchmark``."""
    add_task(p, nargs="+", flag="--tasks")
    p.set_defaults(tasks=None)  # the suite
    p.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        help=f"default: the default comparison's list ({' '.join(QUICK_OPTIMIZERS)} with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny budget: tests the pipeline in a minute (CI)")
    p.add_argument("--budget", type=int, default=None, help="tuning trials per optimizer (default 8)")
    add_seeds(p)
    p.add_argument("--study", type=int, default=0, help="independent repetition of the tuning (default 0)")
    add_jobs(p, help=f"parallel worker processes (default {os.cpu_count() or 1})")
    add_out(p, "default optimlab-runs/benchmark (optimlab-runs/benchmark-quick)")
    add_data_dir(p, help="the only folder searched for data files")
    add_no_progress(p, lines_instead=True)
    add_dry_run(p)
    add_backend_arguments(p)


def benchmark(args: argparse.Namespace) -> int:
    """The ``benchmark`` handler: check and cost every task's study, print the plan (and stop there with
    ``--dry-run``), run the tasks in order, write the report."""
    # a user's task by its canonical name (an absolute path): what every worker and the folder's manifest see
    tasks = list(dict.fromkeys(get_task(t).name for t in (args.tasks or SUITE)))
    default = QUICK_OPTIMIZERS if args.quick else DEFAULT_OPTIMIZERS
    specs = split_specs(args.optimizers) if args.optimizers else list(default)
    check_jobs(args.jobs)
    overrides: dict[str, Any] = {"study": args.study}
    if args.budget is not None:
        overrides["budget"] = args.budget
    if args.seeds is not None:
        overrides["seeds"] = parse_seeds(args.seeds)
    protocols = suite_protocols(tasks, quick=args.quick, **overrides)
    for t, protocol in protocols.items():  # every spec and every data set, before anything starts
        check_data_dir(args.data_dir, get_task(t))
        check_study(protocol, specs, args.data_dir)
    out = Path(args.out or ("optimlab-runs/benchmark-quick" if args.quick else "optimlab-runs/benchmark"))
    known = check_benchmark_folder(out, tasks, specs, args.quick)
    check_backend_args(args)
    # the plan creates nothing: a task's folder is made once benchmark.json marks OUT as a benchmark folder
    plans = [plan_study(p, specs, out / task_slug(t), jobs=args.jobs, data_dir=args.data_dir, create=False)
             for t, p in protocols.items()]
    lines = [f"  {p.task.name}: {p.protocol.describe()}\n    still to do: {p.cost.describe()}" for p in plans]
    print(
        f"optimlab benchmark{' --quick' if args.quick else ''}: {len(tasks)} task(s) x {len(specs)} optimizer(s), "
        f"{describe_backend(args, args.jobs)} -> {out}\n"
        + "\n".join(lines)
        + f"\nexpected cost: about {duration(sum(plan.cost.seconds for plan in plans))} in all on this machine; "
        "Ctrl-C keeps every finished run and the same command resumes.",
        flush=True,
    )
    if args.dry_run:
        return 0
    start = time.perf_counter()
    session = Session.from_args(args)
    write_benchmark_manifest(out, tasks, [*known, *specs], args.quick)
    results = session.run(plans, announce=True)
    interrupted = any(s.interrupted for s in results.values())
    path, text = build_benchmark_report(out)
    print()
    print(text)
    print(f"\n{time.perf_counter() - start:.0f} s. Report: {path}")
    if interrupted:
        print(f"interrupted: every finished run is kept in {out}; run the same command again to resume.")
        return 130
    return 0


COMMANDS: dict[str, Command] = {
    "benchmark": Command("the suite of tasks, AlgoPerf-style performance profiles and score", configure, benchmark),
}
