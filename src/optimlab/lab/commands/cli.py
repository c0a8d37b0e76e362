"""The ``optimlab`` command: ``compare``, ``benchmark``, ``report``, ``lr-find``, ``schedule`` and ``list``.

``optimlab compare`` with no arguments is the lab's default comparison: every optimizer of
:data:`optimlab.lab.catalog.presets.DEFAULT_OPTIMIZERS` tuned with the same budget on MNIST-1D (the protocol of
:func:`optimlab.lab.study.protocol.default_protocol`), then run on fresh seeds; it prints the answer, the table, and
writes the report.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`); another module adds one with
:func:`register_command` (its arguments, its handler) and it appears in ``optimlab --help``, or is listed in
:data:`PLUGINS` (a module with ``add_commands(subparsers)`` and ``COMMANDS``).
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "main",
    "build_parser",
    "split_specs",
    "parse_seeds",
    "parse_lrs",
    "Command",
    "COMMANDS",
    "register_command",
    "PLUGINS",
    "ProgressPrinter",
]


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, a function adding its arguments, and its handler (returns the exit code)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register_command(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """Add (or replace) the subcommand ``optimlab NAME``."""
    COMMANDS[name] = Command(help, configure, handler)


# ----------------------------------------------------------------------------------------------------
# Argument parsing helpers


def split_specs(values: Sequence[str]) -> list[str]:
    """Optimizer specs from the command line, space- or comma-separated (``k=v`` pieces stay with a spec)."""
    from optimlab.lab.catalog.presets import _split_top_level

    specs: list[str] = []
    for value in values:
        for piece in _split_top_level(value, ","):
            piece = piece.strip()
            if not piece:
                continue
            if "=" in piece and "@" not in piece.split("=")[0] and "+" not in piece and specs and "@" in specs[-1]:
                specs[-1] += "," + piece  # continuation of 'adam@lr=1e-3,eps=1e-6'
            else:
                specs.append(piece)
    if not specs:
        raise ValueError("--optimizers needs at least one optimizer name")
    return specs


SEEDS_HELP = (
    "final seeds: a count N (seeds 0..N-1), a range A:B (seeds A..B-1) or a list a,b,c (a single seed: '7,'); "
    "default: 5 (1 on the deterministic 2-D tasks)"
)


def parse_seeds(value: str) -> tuple[int, ...]:
    """``'5'`` -> 0..4; ``'10:15'`` -> 10..14; ``'0,3,7'`` -> (0, 3, 7); ``'7,'`` -> (7,)."""
    text = value.strip()
    bad = f"Invalid --seeds: {value!r}; expected a count N >= 1, a range A:B with 0 <= A < B, or a list a,b,c"
    try:
        if "," in text:
            seeds = tuple(int(v) for v in text.split(",") if v.strip())
        elif ":" in text:
            a, _, b = text.partition(":")
            lo, hi = int(a), int(b)
            if not 0 <= lo < hi:
                raise ValueError(bad)
            seeds = tuple(range(lo, hi))
        else:
            n = int(text)
            if n < 1:
                raise ValueError(
                    f"Invalid --seeds: {value!r}; a count must be at least 1 (for the single seed {n} write "
                    f"'{n},' or '{n}:{n + 1}')"
                )
            seeds = tuple(range(n))
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("Invalid --seeds") else bad) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(bad + " of distinct non-negative seeds")
    return seeds


def parse_lrs(value: str) -> tuple[float, ...]:
    """``'1e-3,3e-3'`` -> the explicit lr grid."""
    try:
        lrs = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"Invalid --lr: {value!r}; expected comma-separated positive numbers") from None
    if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError(f"Invalid --lr: {value!r}; expected comma-separated positive numbers")
    return lrs


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        return v

    return parse


def _check_data_dir(data_dir: str | None, task: Any) -> None:
    if data_dir is None:
        return
    if not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"Invalid --data-dir: {data_dir!r} is not a folder")
    if not task.data_files:
        print(f"note: {task.name} needs no data files (generated or defined in code); --data-dir is not used")


# ----------------------------------------------------------------------------------------------------
# Progress


class ProgressPrinter:
    """Progress as lines (for logs and files): one line per finished run, at most one per ``every`` seconds
    (always the last), plus a line when an optimizer's tuning is complete, with its cost."""

    def __init__(self, total_steps: int, every: float = 5.0, lines: bool = True, stream: Any = None):
        self.total_steps = max(1, total_steps)
        self.every, self.lines = every, lines
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.steps = 0
        self.last = -math.inf

    def __call__(self, kind: str, **info: Any) -> None:
        from optimlab.lab.catalog.metrics import fmt_value

        if kind == "record":
            rec = info["record"]
            self.steps += rec.config.steps
            now = time.perf_counter()
            if not self.lines or (now - self.last < self.every and info["done"] < info["total"]):
                return
            self.last = now
            elapsed = now - self.start
            left = elapsed * (self.total_steps - self.steps) / max(1, self.steps)
            c = rec.config
            key = rec.metric_key
            split = key.partition("_")[0]
            value = f"{split} {rec.metric} {fmt_value(rec.final(key), rec.metric)}"
            result = "diverged" if not rec.ok else value
            hp = "".join(f" {k}={v:.3g}" for k, v in c.hparams)
            print(
                f"[{info['done']:>4}/{info['total']}] {_clock(elapsed)} elapsed, ~{_clock(max(0.0, left))} left | "
                f"{info['phase']} {c.optimizer} lr={c.lr:.3g}{hp} seed {c.seed}: {result}",
                file=self.stream,
                flush=True,
            )
        elif kind == "selected":
            sel, res = info["selection"], info["result"]
            metric = sel.trials[0].metric
            value = "all trials diverged" if sel.all_diverged else f"{fmt_value(sel.value, metric)}"
            hp = "".join(f", {k} {v:.3g}" for k, v in sel.hparams.items())
            edge = f" [edge: {'; '.join(sel.edges)}]" if sel.edges else ""
            print(
                f"selected {sel.spec}: lr {sel.lr:.3g}{hp} ({value}); tuning cost {len(sel.trials)} trials, "
                f"{res.tuning_cpu_seconds:.1f} CPU s{edge}",
                file=self.stream,
                flush=True,
            )


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ----------------------------------------------------------------------------------------------------
# compare


def _configure_compare(c: argparse.ArgumentParser) -> None:
    from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS
    from optimlab.lab.catalog.tasks import DEFAULT_TASK, TASKS

    c.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS), help=f"default: {DEFAULT_TASK}")
    c.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        help="optimizer specs, e.g. sgdm adam lookahead+radam 'adamw@weight_decay=0.1'; default: the "
        f"{len(DEFAULT_OPTIMIZERS)} of the default comparison (optimlab list)",
    )
    c.add_argument(
        "--tuning",
        default="quasirandom",
        choices=["quasirandom", "grid", "none"],
        help="quasirandom (default): Halton points of each optimizer's search space; grid: log-spaced lrs; "
        "none: the presets, untuned",
    )
    c.add_argument("--budget", type=int, default=None, help="tuning trials per optimizer (default 8)")
    c.add_argument(
        "--trial-fraction",
        type=float,
        default=None,
        help="length of a tuning trial as a fraction of --steps (default 0.4)",
    )
    c.add_argument("--lr", default=None, help="an explicit lr grid for every optimizer, e.g. 1e-3,3e-3,1e-2")
    c.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="SPEC:NAME=LOW..HIGH",
        help="override a search space, e.g. 'adam:lr=1e-4..1' or 'sgdm:lr=1e-3..1,momentum=0.8..0.99:lin' (repeatable)",
    )
    c.add_argument("--schedule", default="warmup_cosine", help="lr schedule (default warmup_cosine), or name@k=v")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--steps", type=_positive_int("--steps"), default=None, help="training steps (default: the task's)")
    g.add_argument("--epochs", type=float, default=None, help="training epochs instead of --steps")
    c.add_argument("--seeds", default=None, help=SEEDS_HELP)
    c.add_argument(
        "--target",
        type=float,
        default=None,
        help="validation target for steps/time to target (accuracy as a fraction, e.g. 0.9; default: the "
        "task's, see optimlab list)",
    )
    c.add_argument(
        "--study",
        type=int,
        default=0,
        help="independent repetition of the tuning: other trial seeds and quasi-random points (default 0)",
    )
    c.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None, help="default: the task's")
    c.add_argument("--eval-every", type=_positive_int("--eval-every"), default=None, help="default: the task's")
    c.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help=f"parallel worker processes (default {os.cpu_count() or 1}, the CPU count)",
    )
    c.add_argument(
        "--out",
        default=None,
        help="results folder (default: optimlab-runs/TASK, or "
        "optimlab-runs/TASK-<what differs> for a protocol other than the default)",
    )
    c.add_argument("--data-dir", default=None, help="the only folder searched for data files (also: $OPTIMLAB_DATA)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (progress lines instead)")
    c.add_argument("--dry-run", action="store_true", help="print the plan and its expected cost, run nothing")
    from optimlab.lab.executors.backends import add_backend_arguments

    add_backend_arguments(c)
    c.add_argument(
        "--diagnostics",
        action="store_true",
        help="record diagnostics in every final run (walk, |g| histograms, sharpness, interpolation; "
        "optimlab.lab.training.diagnostic_runs.DiagnosticsCallback) and add their panels to the report",
    )


class FinalRunDiagnostics:
    """The callbacks of ``compare --diagnostics``: a :class:`~optimlab.lab.training.diagnostic_runs.DiagnosticsCallback`
    for each final run (those that report the test split), none for tuning trials. Picklable (module level), so
    the worker processes build it."""

    def __init__(self, data_dir: str | None = None) -> None:
        self.data_dir = data_dir

    def __call__(self, config: Any) -> list[Any]:
        from optimlab.lab.training.diagnostic_runs import DiagnosticsCallback

        return [DiagnosticsCallback(data_dir=self.data_dir)] if "test" in config.splits else []


def protocol_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~optimlab.lab.study.protocol.Protocol` a ``compare`` command line asks for (validated)."""
    from optimlab.lab.catalog.space import parse_space
    from optimlab.lab.catalog.tasks import ClassificationTask, get_task
    from optimlab.lab.study.protocol import default_protocol
    from optimlab.lab.training.runner import build_schedule

    task = get_task(args.task)
    batch_size = args.batch_size or task.batch_size
    if args.epochs is not None:
        if not isinstance(task, ClassificationTask):
            raise ValueError(f"--epochs applies to classification tasks; use --steps for {task.name}")
        if not args.epochs > 0:
            raise ValueError(f"Invalid --epochs: {args.epochs}; expected a positive number")
        n = len(task.load(args.data_dir).y_train)
        steps = max(1, round(args.epochs * (n // batch_size)))
    else:
        steps = args.steps or task.steps
    build_schedule(args.schedule, steps)  # a bad schedule spec is named as one, before anything else
    fields: dict[str, Any] = {"steps": steps, "batch_size": batch_size, "schedule": args.schedule}
    fields["eval_every"] = min(args.eval_every or task.eval_every, steps)
    fields["tuning"] = args.tuning
    if args.lr is not None:
        if args.tuning == "none":
            raise ValueError("--lr conflicts with --tuning none; give --tuning grid with --lr, or drop --lr")
        fields["lrs"] = parse_lrs(args.lr)
        fields["tuning"] = "grid"
        fields["budget"] = len(fields["lrs"])
    if args.budget is not None:
        if args.tuning == "none":
            raise ValueError("--budget conflicts with --tuning none (the presets run without tuning trials)")
        if args.lr is not None:
            raise ValueError("--budget conflicts with --lr (the budget is then the number of lrs given)")
        fields["budget"] = args.budget
    if args.trial_fraction is not None:
        fields["trial_fraction"] = args.trial_fraction
    if args.space:
        if args.tuning == "none":
            raise ValueError("--space conflicts with --tuning none (nothing is tuned)")
        spaces = {}
        for text in args.space:
            name, params = parse_space(text)
            spaces[name] = tuple(params)
        fields["spaces"] = tuple(sorted(spaces.items()))
    if args.seeds is not None:
        fields["seeds"] = parse_seeds(args.seeds)
    fields["study"] = args.study
    if args.target is not None:
        fields["target"] = args.target
    return default_protocol(task, **fields)


def _default_out(protocol: Any) -> Path:
    from optimlab.lab.study.protocol import default_protocol

    base = default_protocol(protocol.task)
    if protocol == base:
        return Path("optimlab-runs") / protocol.task
    parts = []
    a, b = protocol.to_dict(), base.to_dict()
    for k in a:
        if a[k] == b[k] or k == "task":
            continue
        v = a[k]
        if k == "seeds":
            v = f"{v[0]}-{v[-1]}" if list(v) == list(range(v[0], v[0] + len(v))) else "-".join(map(str, v))
        elif k == "spaces":
            v = "custom"
        elif isinstance(v, list):
            v = "-".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        parts.append(f"{k.replace('_', '')}{v}".replace("@", "_").replace("=", "").replace(",", "_"))
    return Path("optimlab-runs") / f"{protocol.task}-{'-'.join(parts)}"[:120]


def _compare(args: argparse.Namespace) -> int:
    from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS, check_spec, parse_spec
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.lab.executors.backends import (
        check_backend_args,
        describe_backend,
        executor_from_args,
        trackers_from_args,
    )
    from optimlab.lab.present.report import build_report, format_summary
    from optimlab.lab.study.cost import estimate_cost, remaining_configs
    from optimlab.lab.study.folder import check_folder
    from optimlab.lab.study.tuning import tune_and_run

    task = get_task(args.task)
    specs = split_specs(args.optimizers) if args.optimizers else list(DEFAULT_OPTIMIZERS)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {args.jobs}")
    _check_data_dir(args.data_dir, task)
    for spec in specs:
        if args.lr is not None and "lr" in dict(parse_spec(spec).kwargs):
            raise ValueError(f"--lr conflicts with the lr given in optimizer spec {spec!r}; use one of them")
    protocol = protocol_from_args(args)
    compared = {*specs, *(parse_spec(spec).base for spec in specs)}
    unused = [name for name, _ in protocol.spaces if name not in compared]
    if unused:  # most likely a typo: the space would be ignored
        raise ValueError(
            f"--space for {', '.join(map(repr, unused))}, which is not among the optimizers compared "
            f"({', '.join(specs)}); give a --space for one of them (its spec or its base name)"
        )
    for spec in specs:  # every spec, and every trial setting, builds and steps before anything runs
        check_spec(spec)
        for point in protocol.trial_settings(spec):
            check_spec(spec, {k: v for k, v in point.items() if k != "lr"} or None)
        protocol.tuning_configs(spec)
    if args.data_dir:
        os.environ["OPTIMLAB_DATA"] = args.data_dir  # inherited by the worker processes
    task.load(args.data_dir)  # fail fast, with the data set's message, before any worker starts
    out = Path(args.out) if args.out else _default_out(protocol)
    if args.out is None and out != Path("optimlab-runs") / task.name:
        print(f"note: results go to {out}, apart from the default protocol's folder (they are not comparable)")
    check_backend_args(args)
    # the trackers (a probe of the MLflow store) before the folder is made; --dry-run contacts none
    trackers = [] if args.dry_run else trackers_from_args(args)
    check_folder(out, protocol, create=not args.dry_run)  # --dry-run creates nothing
    todo = remaining_configs(protocol, specs, out)
    jobs = max(1, min(args.jobs, len(todo) or 1))
    cost = estimate_cost(protocol, todo, jobs=jobs, data_dir=args.data_dir)
    print(
        f"optimlab compare: {task.name}, {len(specs)} optimizer(s), {describe_backend(args, jobs)} -> {out}\n"
        f"protocol: {protocol.describe()}\n"
        f"plan: {protocol.trials_per_optimizer() * len(specs)} tuning trials + "
        f"{len(protocol.seeds) * len(specs)} final runs; still to do: {cost.describe()}",
        flush=True,
    )
    if args.dry_run:
        return 0
    bars = not args.no_progress and sys.stderr.isatty()
    printer = ProgressPrinter(cost.train_steps, lines=not bars or not sys.stdout.isatty())
    start = time.perf_counter()
    callbacks = FinalRunDiagnostics(args.data_dir) if args.diagnostics else None
    with executor_from_args(args, jobs, args.data_dir, bars, callbacks=callbacks) as executor:
        study = tune_and_run(task, specs, protocol, out, executor=executor, on_event=printer, trackers=trackers)
    elapsed = time.perf_counter() - start
    if study.interrupted:
        print(f"\ninterrupted: every finished run is kept in {out}; run the same command again to resume.")
        if not any(r.finals for r in study.results.values()):
            return 130
    path, summary = build_report(out)
    print()
    print(format_summary(summary))
    print(
        f"\n{cost.runs} run(s) in {elapsed:.1f} s. Results: {out / 'results.jsonl'}; summary: {out / 'summary.csv'}"
        f"\nReport: {path}"
    )
    return 130 if study.interrupted else 0


# ----------------------------------------------------------------------------------------------------
# report


def _configure_report(r: argparse.ArgumentParser) -> None:
    r.add_argument("dir", help="a results folder written by compare (or a benchmark folder)")


def _report(args: argparse.Namespace) -> int:
    from optimlab.lab.present.report import build_report, format_summary

    folder = Path(args.dir)
    if (folder / "benchmark.json").exists():
        from optimlab.lab.commands.benchmark import build_benchmark_report

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
    from optimlab.lab.catalog.tasks import DEFAULT_TASK, TASKS

    f.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS), help=f"default: {DEFAULT_TASK}")
    f.add_argument("--optimizer", default="adam", help="optimizer spec (default adam)")
    f.add_argument("--start-lr", type=float, default=1e-7, help="default 1e-7")
    f.add_argument("--end-lr", type=float, default=10.0, help="default 10")
    f.add_argument("--num-steps", type=_positive_int("--num-steps"), default=100, help="default 100")
    f.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None, help="default: the task's")
    f.add_argument("--seed", type=int, default=0, help="default 0")
    f.add_argument("--out", default="optimlab-runs/lr-find", help="folder for the plot (default optimlab-runs/lr-find)")
    f.add_argument("--data-dir", default=None, help="the only folder searched for data files")


def _plot_lr_find(result: Any, title: str, path: Path, color: str) -> None:
    import numpy as np

    from optimlab.lab.present.report import _plt, _save

    plt = _plt()
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
    _save(plt, fig, path)


def _lr_find(args: argparse.Namespace) -> int:
    import itertools

    import torch

    from optimlab.lab.catalog import adapter
    from optimlab.lab.catalog.presets import build_optimizer, check_spec
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.lab.present.style import color_for
    from optimlab.lab.training.results import check_writable

    task = get_task(args.task)
    check_spec(args.optimizer)
    if not (0 < args.start_lr < args.end_lr and math.isfinite(args.end_lr)):
        raise ValueError(f"Invalid --start-lr/--end-lr: {args.start_lr:g}, {args.end_lr:g}; expected 0 < start < end")
    _check_data_dir(args.data_dir, task)
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
    s.add_argument("name", help="schedule spec, e.g. cosine or 'warmup_cosine@warmup=0.1'")
    s.add_argument("--steps", type=_positive_int("--steps"), default=1000, help="default 1000")
    s.add_argument("--lr", type=float, default=None, help="peak lr the factor multiplies (default: plot the factor)")
    s.add_argument(
        "--out",
        default=None,
        help="PNG path, or a folder (a path without an extension) for schedule_NAME.png in it "
        "(default optimlab-runs/schedules)",
    )


def _schedule(args: argparse.Namespace) -> int:
    from optimlab.lab.present.report import _plt, _save
    from optimlab.lab.training.results import check_writable
    from optimlab.lab.training.runner import build_schedule, parse_schedule

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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(range(args.steps + 1), values)
    ax.set_xlabel("step")
    ax.set_ylabel("lr factor (x the base lr)" if args.lr is None else f"learning rate ({args.lr:g} x factor)")
    ax.set_title(f"schedule {args.name}, {args.steps} steps")
    ax.grid(alpha=0.3)
    _save(plt, fig, path)
    what = "factor" if args.lr is None else "lr"
    print(
        f"{args.name}: {what} at step 0 = {values[0]:.4g}, max = {max(values):.4g}, "
        f"at step {args.steps} = {values[-1]:.4g}\nPlot: {path}"
    )
    return 0


# ----------------------------------------------------------------------------------------------------
# list


def _list(args: argparse.Namespace) -> int:
    from optimlab.lab.catalog import adapter
    from optimlab.lab.catalog.metrics import fmt_value
    from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS, PRESETS, WRAPPERS, search_space
    from optimlab.lab.catalog.tasks import DEFAULT_TASK, TASKS

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


def _configure_nothing(p: argparse.ArgumentParser) -> None:
    pass


def _register_builtin() -> None:
    register_command(
        "compare",
        "tune optimizers with equal budgets, compare them on fresh seeds, write a report",
        _configure_compare,
        _compare,
    )

    def configure_benchmark(p: argparse.ArgumentParser) -> None:
        from optimlab.lab.commands.benchmark import configure

        configure(p)

    def benchmark(args: argparse.Namespace) -> int:
        from optimlab.lab.commands.benchmark import command

        return command(args)

    register_command(
        "benchmark", "the suite of tasks, AlgoPerf-style performance profiles and score", configure_benchmark, benchmark
    )
    register_command("report", "rebuild the report of a results folder", _configure_report, _report)
    register_command("lr-find", "LR range test on a task, with its plot", _configure_lr_find, _lr_find)
    register_command("schedule", "plot an LR schedule", _configure_schedule, _schedule)
    register_command("list", "list tasks, optimizers (with search spaces) and schedules", _configure_nothing, _list)


_register_builtin()

# Modules that add subcommands of their own, by name: each defines ``add_commands(subparsers)`` (adds its
# parsers to ``optimlab``'s) and ``COMMANDS`` (name -> handler). A module that is not there is skipped.
PLUGINS: list[str] = [
    "optimlab.lab.commands.diagnose",  # walk, interpolate, landscape, histograms, sharpness
    "optimlab.lab.commands.reproduce",  # reproduce (issue 13)
]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as the commands' own (not the 13 lines of usage); its
    subparsers are of this class too."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``optimlab`` parser: the commands of :data:`COMMANDS`, then those of the :data:`PLUGINS`; each
    subparser's ``_handler`` default is the function that runs it."""
    import importlib
    import importlib.util

    p = _Parser(prog="optimlab", description="Compare deep-learning optimizers on real data.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        parser = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(parser)
        parser.set_defaults(_handler=cmd.handler)
    for module_name in PLUGINS:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        module.add_commands(sub)
        for name, handler in module.COMMANDS.items():
            sub.choices[name].set_defaults(_handler=handler)
    return p


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """The lab's warnings (:class:`~optimlab.lab.training.results.LabWarning`) as one line each, each said once per
    command (a results file is read several times); others as Python prints them."""
    from optimlab.lab.training.results import LabWarning

    if issubclass(category, LabWarning):
        if str(message) not in _SAID:
            _SAID.add(str(message))
            print(f"optimlab: warning: {message}", file=sys.stderr if file is None else file, flush=True)
    else:
        _PYTHON_SHOW_WARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOW_WARNING = warnings.showwarning
_SAID: set[str] = set()  # the lab's warnings printed by this command

# OS errors a user can act on, said in one line: the disk, the quota, a read-only or missing place, a name
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _os_error_line(e: OSError) -> str | None:
    """One line for an OS error with an errno (the file and its folder, what the OS said, what to do), or
    ``None`` for one without (a bug: its traceback is kept)."""
    if e.errno is None:
        return None
    where = ""
    if e.filename is not None:
        path = Path(os.fsdecode(e.filename))
        where = f" {path}" if path.is_dir() else f" {path.name} in {path.parent}"
    said = e.strerror or str(e)
    if e.errno in _FULL:
        return (
            f"cannot write{where}: {said}. Every finished run is kept; free some space (or choose another --out) "
            "and run the same command again to resume"
        )
    return f"{said}:{where}" if where else said


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optimlab`` console script and of ``python -m optimlab``.

    A mistake the user can fix (a bad argument, a missing file, a full disk, an unreachable tracking server)
    ends with one line ``optimlab: error: ...`` and exit status 2; the lab's warnings are one line each."""
    from optimlab.lab.catalog.data import DatasetNotFoundError

    args = build_parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    _SAID.clear()
    try:
        return args._handler(args)
    except DatasetNotFoundError as e:
        print(f"optimlab: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, PermissionError, ImportError) as e:
        print(f"optimlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        line = _os_error_line(e)
        if line is None:
            raise
        print(f"optimlab: error: {line}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "RunsFailedError":  # the ray backend: runs whose workers kept dying
            raise
        print(f"optimlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\noptimlab: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
