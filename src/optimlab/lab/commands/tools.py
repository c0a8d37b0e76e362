"""The small commands: ``optimlab report`` (rebuild a folder's report), ``lr-find`` (the LR range test, with its
plot), ``schedule`` (plot an LR schedule) and ``list`` (tasks, optimizers with their search spaces, wrappers,
schedules)."""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimlab.lab.catalog import adapter
from optimlab.lab.catalog.metrics import fmt_value
from optimlab.lab.catalog.presets import (
    DEFAULT_OPTIMIZERS,
    PRESETS,
    WRAPPERS,
    build_optimizer,
    check_spec,
    search_space,
)
from optimlab.lab.catalog.tasks import DEFAULT_TASK, TASKS, get_task
from optimlab.lab.commands.args import add_data_dir, check_data_dir, positive_int
from optimlab.lab.commands.benchmark import BENCHMARK_FILE, build_benchmark_report
from optimlab.lab.commands.command import Command
from optimlab.lab.present.figures import pyplot, save_figure
from optimlab.lab.present.report import build_report, format_summary
from optimlab.lab.present.style import color_for
from optimlab.lab.training.results import check_writable
from optimlab.lab.training.runner import build_schedule, parse_schedule

__all__ = ["report", "lr_find", "schedule", "list_catalog", "configure_nothing", "COMMANDS"]


# ----------------------------------------------------------------------------------------------------
# report


def _configure_report(r: argparse.ArgumentParser) -> None:
    """The arguments of ``optimlab report``."""
    r.add_argument("dir", help="a results folder written by compare (or a benchmark folder)")


def report(args: argparse.Namespace) -> int:
    """The ``report`` handler: the report of a compare folder, or of a benchmark folder."""
    folder = Path(args.dir)
    if (folder / BENCHMARK_FILE).exists():
        path, text = build_benchmark_report(folder)
        print(text)
    else:
        path, summary = build_report(folder)
        print(format_summary(summary))
    print(f"\nReport: {path}")
    return 0


# ----------------------------------------------------------------------------------------------------
# lr-find


def _configure_lr_find(f: argparse.ArgumentParser) -> None:
    """The arguments of ``optimlab lr-find``."""
    f.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS), help=f"default: {DEFAULT_TASK}")
    f.add_argument("--optimizer", default="adam", help="optimizer spec (default adam)")
    f.add_argument("--start-lr", type=float, default=1e-7, help="default 1e-7")
    f.add_argument("--end-lr", type=float, default=10.0, help="default 10")
    f.add_argument("--num-steps", type=positive_int("--num-steps"), default=100, help="default 100")
    f.add_argument("--batch-size", type=positive_int("--batch-size"), default=None, help="default: the task's")
    f.add_argument("--seed", type=int, default=0, help="default 0")
    f.add_argument("--out", default="optimlab-runs/lr-find", help="folder for the plot (default optimlab-runs/lr-find)")
    add_data_dir(f, help="the only folder searched for data files")


def _plot_lr_find(result: Any, title: str, path: Path, color: str) -> None:
    plt = pyplot()
    lrs = np.asarray(result.lrs, dtype=float)
    raw = np.asarray(result.losses, dtype=float)
    sm = np.asarray(result.smoothed_losses, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    ax.plot(lrs, raw, color="0.75", lw=0.8, label="loss")
    ax.plot(lrs, sm, color=color, lw=1.6, label="smoothed loss")

    def mark(lr: float | None, label: str, style: str) -> None:
        if lr is None:
            return
        i = int(np.argmin(np.abs(np.log(lrs) - np.log(lr))))
        ax.plot([lr], [sm[i]], style, ms=8, label=f"{label}: {lr:.2g}", zorder=3)

    mark(result.lr_at_min_loss, "lowest smoothed loss", "kv")
    mark(result.minimum_lr, "a tenth of that (fastai 'minimum')", "o")
    mark(result.valley_lr, "valley (fastai)", "s")
    mark(result.steepest_lr, "steepest descent", "^")
    ax.set_xscale("log")
    finite = sm[np.isfinite(sm)]
    if finite.size:  # loss spikes would squash the useful part: show from the minimum to the starting level
        lo, start = float(finite.min()), float(finite[: max(1, len(finite) // 10)].max())
        ax.set_ylim(lo - 0.08 * (start - lo + 1e-12), start + 0.35 * (start - lo + 1e-12))
    ax.set_xlabel("learning rate (exponential sweep)")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def lr_find(args: argparse.Namespace) -> int:
    """The ``lr-find`` handler: the LR range test of one optimizer on a task, its plot and suggestions."""
    task = get_task(args.task)
    check_spec(args.optimizer)
    if not (0 < args.start_lr < args.end_lr and math.isfinite(args.end_lr)):
        raise ValueError(f"Invalid --start-lr/--end-lr: {args.start_lr:g}, {args.end_lr:g}; expected 0 < start < end")
    check_data_dir(args.data_dir, task)
    out = check_writable(args.out)
    data = task.load(args.data_dir)
    torch.manual_seed(args.seed)
    model = task.model(data)
    optimizer = build_optimizer(args.optimizer, model, lr=args.start_lr)
    g = torch.Generator().manual_seed(args.seed)
    batches = list(itertools.islice(task.batches(data, args.batch_size or task.batch_size, g), args.num_steps))
    result = adapter.lr_find(
        model, optimizer, task.loss_fn, batches, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.num_steps
    )
    name = args.optimizer.replace("+", "-").replace("@", "_").replace("=", "").replace(",", "_")
    path = out / f"lr_find_{task.name}_{name}.png"
    title = (
        f"LR range test: {args.optimizer} on {task.name}, {len(result.lrs)} steps from {args.start_lr:g} to "
        f"{args.end_lr:g} ({result.stop_reason})"
    )
    _plot_lr_find(result, title, path, color_for(args.optimizer))
    print(title)
    print(f"  lowest smoothed loss at lr {_g(result.lr_at_min_loss)}")
    print(f"  a tenth of that (fastai's 'minimum' suggestion): {_g(result.minimum_lr)}")
    print(f"  valley (fastai): {_g(result.valley_lr)}")
    steep = result.steepest_lr
    warn = ""
    if steep is not None and result.lr_at_min_loss and steep > result.lr_at_min_loss / 3:
        warn = " (within 3x of the lowest loss: at the edge of divergence; prefer the valley)"
    print(f"  steepest descent: {_g(steep)}{warn}")
    print(f"Plot: {path}")
    return 0


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


# ----------------------------------------------------------------------------------------------------
# schedule


def _configure_schedule(s: argparse.ArgumentParser) -> None:
    """The arguments of ``optimlab schedule``."""
    s.add_argument("name", help="schedule spec, e.g. cosine or 'warmup_cosine@warmup=0.1'")
    s.add_argument("--steps", type=positive_int("--steps"), default=1000, help="default 1000")
    s.add_argument("--lr", type=float, default=None, help="peak lr the factor multiplies (default: plot the factor)")
    s.add_argument(
        "--out",
        default=None,
        help="PNG path, or a folder (a path without an extension) for schedule_NAME.png in it "
        "(default optimlab-runs/schedules)",
    )


def schedule(args: argparse.Namespace) -> int:
    """The ``schedule`` handler: plot an LR schedule (its factor, or the lr with ``--lr``)."""
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"Invalid --lr: {args.lr}; expected a positive number")
    name, _ = parse_schedule(args.name)
    fn = build_schedule(args.name, args.steps)
    scale = 1.0 if args.lr is None else args.lr
    values = [scale * fn(t) for t in range(args.steps + 1)]
    path = Path(args.out or "optimlab-runs/schedules")
    if path.is_dir() or not path.suffix:  # a folder (existing, or a path without an extension): the plot goes in it
        path = path / f"schedule_{name}.png"
    check_writable(path.parent)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(range(args.steps + 1), values)
    ax.set_xlabel("step")
    ax.set_ylabel("lr factor (x the base lr)" if args.lr is None else f"learning rate ({args.lr:g} x factor)")
    ax.set_title(f"schedule {args.name}, {args.steps} steps")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    what = "factor" if args.lr is None else "lr"
    print(
        f"{args.name}: {what} at step 0 = {values[0]:.4g}, max = {max(values):.4g}, "
        f"at step {args.steps} = {values[-1]:.4g}\nPlot: {path}"
    )
    return 0


# ----------------------------------------------------------------------------------------------------
# list


def list_catalog(args: argparse.Namespace) -> int:
    """The ``list`` handler: the tasks, the optimizer presets with their search spaces, the wrappers and the
    schedules."""
    print("tasks (the target of 'time to target': a validation metric; the training loss on the 2-D tasks):")
    for t in TASKS.values():
        unit = " %" if t.metric == "accuracy" else ""
        split = "validation" if t.selection_split == "val" else "training"
        target = "" if t.target is None else f"target: {split} {t.metric} {fmt_value(t.target, t.metric)}{unit}"
        print(f"  {t.name:19s} {t.description}; {target}{'  (default)' if t.name == DEFAULT_TASK else ''}")
    print("optimizers (* = in the default comparison): preset lr, settings, search space -- source")
    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        mark = "*" if name in DEFAULT_OPTIMIZERS else " "
        settings = {**p.kwargs, **{k: f"{f:g} x steps" for k, f in p.run_fractions.items()}}
        schedule = f", schedule {p.schedule}" if p.schedule else ""
        print(f" {mark}{name:{width}s} lr={p.lr:<7g} {settings}{schedule}; tuned over "
              f"{search_space(name).describe()} -- {p.source}")
    extra = [s for s in DEFAULT_OPTIMIZERS if s not in PRESETS]
    if extra:
        print(" *also in the default comparison: " + ", ".join(extra))
    print("wrappers: " + ", ".join(f"{w}{WRAPPERS[w]}" for w in WRAPPERS) + "  (compose: lookahead+adam)")
    print("schedules: " + ", ".join(adapter.schedule_names()))
    return 0


def configure_nothing(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that takes none."""


COMMANDS: dict[str, Command] = {
    "report": Command("rebuild the report of a results folder", _configure_report, report),
    "lr-find": Command("LR range test on a task, with its plot", _configure_lr_find, lr_find),
    "schedule": Command("plot an LR schedule", _configure_schedule, schedule),
    "list": Command("list tasks, optimizers (with search spaces) and schedules", configure_nothing, list_catalog),
}
