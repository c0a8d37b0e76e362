"""The ``optimlab`` command: ``compare``, ``report``, ``lr-find``, ``schedule`` and ``list``.

``optimlab compare`` with no arguments runs the default comparison: the optimizers of
:data:`optimlab.lab.optimizers.DEFAULT_OPTIMIZERS` at their preset settings on the default MNIST-1D task, 3
seeds, in parallel processes, then prints the summary table and writes the report.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "split_specs", "parse_lrs"]


def split_specs(values: Sequence[str]) -> list[str]:
    """Optimizer specs from the command line, space- or comma-separated (``k=v`` pieces stay with a spec)."""
    from optimlab.lab.optimizers import _split_top_level

    specs: list[str] = []
    for value in values:
        for piece in _split_top_level(value, ","):
            piece = piece.strip()
            if not piece:
                continue
            if (
                "=" in piece
                and "@" not in piece.split("=")[0]
                and "+" not in piece
                and specs
                and "@" in specs[-1]
            ):
                specs[-1] += "," + piece  # continuation of 'adam@lr=1e-3,eps=1e-6'
            else:
                specs.append(piece)
    if not specs:
        raise ValueError("--optimizers needs at least one optimizer name")
    return specs


def parse_lrs(value: str | None, specs: Sequence[str]) -> dict[str, list[float]]:
    """``None``: each spec's preset LR; ``'grid'``: its default grid; ``'1e-3,3e-3'``: those for all."""
    from optimlab.lab.optimizers import lr_grid, parse_spec, preset_lr

    if value is None:
        return {s: [preset_lr(s)] for s in specs}
    if value.strip().lower() == "grid":
        return {s: lr_grid(s) for s in specs}
    try:
        lrs = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lr must be 'grid' or comma-separated positive numbers, got {value!r}") from None
    if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError(f"--lr must be 'grid' or comma-separated positive numbers, got {value!r}")
    for s in specs:
        if "lr" in dict(parse_spec(s).kwargs):
            raise ValueError(f"--lr conflicts with the lr given in optimizer spec {s!r}; use one of them")
    return {s: lrs for s in specs}


def _parse_seeds(value: str) -> list[int]:
    try:
        if "," in value:
            seeds = [int(v) for v in value.split(",") if v.strip()]
        else:
            seeds = list(range(int(value)))
    except ValueError:
        raise ValueError(f"--seeds must be a count (3) or a list (0,1,2), got {value!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must give at least one distinct non-negative seed, got {value!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    from optimlab.lab.optimizers import DEFAULT_OPTIMIZERS
    from optimlab.lab.tasks import DEFAULT_TASK, TASKS

    p = argparse.ArgumentParser(prog="optimlab", description="Compare deep-learning optimizers on real data.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser(
        "compare",
        help="run optimizers side by side and write a report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS))
    c.add_argument(
        "--optimizers",
        nargs="+",
        default=[",".join(DEFAULT_OPTIMIZERS)],
        help="optimizer specs, e.g. sgdm adam lookahead+radam 'adam@lr=3e-4'",
    )
    c.add_argument(
        "--lr",
        default=None,
        help="'grid' (default grid per optimizer, selected on validation), or LRs for all: 1e-3,3e-3; "
        "default: each optimizer's preset LR",
    )
    c.add_argument("--schedule", default="constant", help="LR schedule, e.g. constant, or a name@k=v spec")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=None, help="training steps (default: the task's)")
    g.add_argument("--epochs", type=float, default=None, help="training epochs (classification tasks)")
    c.add_argument("--seeds", default="3", help="number of seeds, or a list like 0,1,2")
    c.add_argument("--batch-size", type=int, default=None, help="default: the task's")
    c.add_argument("--eval-every", type=int, default=None, help="default: the task's")
    c.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel worker processes")
    c.add_argument("--out", default=None, help="results folder (default: optimlab-runs/TASK)")
    c.add_argument("--data-dir", default=None, help="where data sets live (also: $OPTIMLAB_DATA)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("report", help="rebuild the report of a results folder")
    r.add_argument("dir")

    f = sub.add_parser(
        "lr-find", help="LR range test on a task", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    f.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS))
    f.add_argument("--optimizer", default="adam")
    f.add_argument("--start-lr", type=float, default=1e-7)
    f.add_argument("--end-lr", type=float, default=10.0)
    f.add_argument("--num-steps", type=int, default=100)
    f.add_argument("--batch-size", type=int, default=None)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", default=".", help="folder for the plot")
    f.add_argument("--data-dir", default=None)

    s = sub.add_parser(
        "schedule", help="plot an LR schedule", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    s.add_argument("name", help="schedule spec, e.g. cosine or 'name@k=v,...'")
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--lr", type=float, default=1.0, help="peak LR the factor multiplies")
    s.add_argument("--out", default=None, help="PNG path (default: schedule_NAME.png)")

    sub.add_parser("list", help="list tasks, optimizers and schedules")

    from optimlab.lab.diagnose import add_commands  # walk, interpolate, landscape, histograms, sharpness

    add_commands(sub)
    return p


def _compare(args: argparse.Namespace) -> int:
    from optimlab.lab.report import build_report, format_table
    from optimlab.lab.sweep import expand, run_sweep
    from optimlab.lab.tasks import ClassificationTask, get_task

    task = get_task(args.task)
    specs = split_specs(args.optimizers)
    lrs = parse_lrs(args.lr, specs)
    seeds = _parse_seeds(args.seeds)
    batch_size = args.batch_size or task.batch_size
    if args.epochs is not None:
        if not isinstance(task, ClassificationTask):
            raise ValueError(f"--epochs applies to classification tasks; use --steps for {task.name}")
        if args.epochs <= 0:
            raise ValueError(f"--epochs must be positive, got {args.epochs}")
        n = len(task.load(args.data_dir).y_train)
        steps = max(1, round(args.epochs * (n // batch_size)))
    else:
        steps = args.steps or task.steps
    eval_every = args.eval_every or min(task.eval_every, steps)
    configs = expand(
        task.name,
        specs,
        lrs,
        seeds,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        schedule=args.schedule,
    )
    if args.data_dir:
        os.environ["OPTIMLAB_DATA"] = args.data_dir  # inherited by the worker processes
    task.load(args.data_dir)  # fail fast, with the data set's message, before any worker starts
    out = Path(args.out or Path("optimlab-runs") / task.name)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {args.jobs}")
    jobs = min(args.jobs, len(configs))
    print(
        f"optimlab compare: {task.name}, {len(specs)} optimizer(s) x {len(seeds)} seed(s) x "
        f"{max(len(v) for v in lrs.values())} LR(s) = {len(configs)} runs of {steps} steps, "
        f"batch {batch_size}, {jobs} job(s) -> {out}",
        flush=True,
    )
    start = time.perf_counter()
    outcome = run_sweep(
        configs, out, jobs=jobs, data_dir=args.data_dir, progress=False if args.no_progress else None
    )
    elapsed = time.perf_counter() - start
    if outcome.skipped:
        print(f"resumed: {outcome.skipped} run(s) already in {out} were skipped")
    if outcome.interrupted:
        print(
            f"\ninterrupted: {outcome.finished} run(s) finished in this session are kept in {out}; "
            "run the same command again to resume."
        )
        if outcome.finished + outcome.skipped == 0:
            return 130
    path, summaries = build_report(out)
    print()
    print(format_table([s for s in summaries if s.task == task.name]))
    print(
        f"\n{outcome.finished} run(s) in {elapsed:.1f}s. Results: {out / 'results.jsonl'}; "
        f"summary: {out / 'summary.csv'}\nReport: {path}"
    )
    return 130 if outcome.interrupted else 0


def _report(args: argparse.Namespace) -> int:
    from optimlab.lab.report import build_report, format_table

    path, summaries = build_report(args.dir)
    print(format_table(summaries))
    print(f"\nReport: {path}")
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    import itertools

    import torch

    from optimlab.lab import library
    from optimlab.lab.optimizers import build_optimizer
    from optimlab.lab.tasks import get_task

    task = get_task(args.task)
    data = task.load(args.data_dir)
    torch.manual_seed(args.seed)
    model = task.model(data)
    optimizer = build_optimizer(args.optimizer, model, lr=args.start_lr)
    g = torch.Generator().manual_seed(args.seed)
    batches = list(
        itertools.islice(task.batches(data, args.batch_size or task.batch_size, g), args.num_steps)
    )
    result = library.lr_find(
        model,
        optimizer,
        task.loss_fn,
        batches,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_steps=args.num_steps,
    )
    plotted = result.plot()
    fig = getattr(plotted, "figure", plotted)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"lr_find_{task.name}_{args.optimizer.replace('+', '-').replace('@', '_')}.png"
    fig.savefig(path, dpi=110)
    print(
        f"LR range test: {task.name}, {args.optimizer}, {len(result.lrs)} of {args.num_steps} steps from "
        f"{args.start_lr:g} to {args.end_lr:g} ({result.stop_reason})"
    )
    for name, lr in result.suggestions.items():
        print(f"  {name}: {'-' if lr is None else f'{lr:.3g}'}")
    print(f"Plot: {path}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from optimlab.lab import library
    from optimlab.lab.report import _plt
    from optimlab.lab.runner import parse_schedule

    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    name, kwargs = parse_schedule(args.name)
    fn = library.create_schedule(name, args.steps, **kwargs)
    values = [args.lr * fn(t) for t in range(args.steps + 1)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(range(args.steps + 1), values)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(args.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(args.out or f"schedule_{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(
        f"{args.name}: lr at step 0 = {values[0]:.4g}, max = {max(values):.4g}, "
        f"at step {args.steps} = {values[-1]:.4g}\nPlot: {path}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from optimlab.lab import library
    from optimlab.lab.optimizers import DEFAULT_OPTIMIZERS, PRESETS, WRAPPERS
    from optimlab.lab.tasks import DEFAULT_TASK, TASKS

    print("tasks:")
    for t in TASKS.values():
        print(f"  {t.name:18s} {t.description}{'  (default)' if t.name == DEFAULT_TASK else ''}")
    print("optimizers (preset lr; settings):")
    for name, p in PRESETS.items():
        mark = "*" if name in DEFAULT_OPTIMIZERS else " "
        print(f" {mark}{name:10s} lr={p.lr:<7g} {p.kwargs}  -- {p.source}")
    print("wrappers: " + ", ".join(f"{w}{WRAPPERS[w]}" for w in WRAPPERS) + "  (compose: lookahead+adam)")
    print("schedules: " + ", ".join(library.schedule_names()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optimlab`` console script and of ``python -m optimlab``."""
    from optimlab.lab.data import DatasetNotFoundError

    args = build_parser().parse_args(argv)
    commands = {
        "compare": _compare,
        "report": _report,
        "lr-find": _lr_find,
        "schedule": _schedule,
        "list": _list,
    }
    from optimlab.lab.diagnose import COMMANDS as DIAGNOSTICS

    commands.update(DIAGNOSTICS)
    try:
        return commands[args.command](args)
    except DatasetNotFoundError as e:
        print(f"optimlab: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"optimlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\noptimlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
