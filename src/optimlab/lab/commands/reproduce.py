"""``optimlab reproduce NAME [NAME...] | --all | --list``: run claims of the source documents and write their report.

One of the modules of :data:`optimlab.lab.commands.cli.COMMAND_MODULES`: :data:`COMMANDS` holds ``reproduce``
(its arguments and :func:`reproduce`); the reproductions are imported when it runs. The cost of each claim on this
machine is printed before anything runs (:func:`optimlab.lab.reproduce.estimate`, the lab's one cost model); every
finished piece is kept in ``--out``, so Ctrl-C then the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from optimlab.lab.commands.args import (
    add_data_dir,
    add_dry_run,
    add_jobs,
    add_no_progress,
    add_out,
    add_seeds,
    check_data_dir,
    parse_seeds,
)
from optimlab.lab.commands.command import Command

__all__ = ["COMMANDS", "reproduce", "DEFAULT_OUT"]

DEFAULT_OUT = "optimlab-runs/reproduce"


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="claims to reproduce (optimlab reproduce --list)")
    p.add_argument("--all", action="store_true", help="every claim built so far, into one report")
    p.add_argument("--list", action="store_true", help="list the claims, their sizes and verdict rules")
    p.add_argument("--quick", action="store_true", help="the small size (a smoke test of each claim; for CI)")
    add_out(p, f"results folder (default {DEFAULT_OUT})", default=DEFAULT_OUT)
    add_seeds(p, help="seeds instead of each claim's: a count N, a range A:B or a list a,b,c")
    add_jobs(p, default=1, help="parallel worker processes for training runs (default 1)")
    add_data_dir(p)
    add_dry_run(p)
    add_no_progress(p, lines_instead=False)


def _list(out: Any = None) -> int:
    """Every claim with its sizes counted (runs and steps; pricing them would load every data set and train
    probes of every task, so ``--dry-run`` does that, for the claims asked) and its rule."""
    from optimlab.lab.reproduce import EXPERIMENTS, available, load_experiment, plan

    built = set(available())
    for name in EXPERIMENTS:
        if name not in built:
            print(f"{name}: (not built yet)", file=out)
            continue
        e = load_experiment(name)
        sizes = []
        for quick in (False, True):
            counted = plan(e, quick)
            if counted:
                sizes.append(f"{'--quick' if quick else 'default'} {counted[0]} runs, {counted[1]:,} steps")
        size = ("; ".join(sizes) + " (--dry-run prices them on this machine)") if sizes else "no work declared"
        print(f"{name}: {e.title}\n    {e.citation}\n    {size}\n    rule: {e.rule}", file=out)
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """The ``reproduce`` handler: resolve the claims, print the cost, run them, write the report."""
    from optimlab.lab.catalog.data import DatasetNotFoundError
    from optimlab.lab.reproduce import EXPERIMENTS, available, estimate, load_experiment, make_context, run_experiment
    from optimlab.lab.reproduce.report import write_report
    from optimlab.lab.study.cost import duration

    if args.list:
        return _list()
    if args.all and args.names:
        raise ValueError("give claim names or --all, not both")
    if not args.all and not args.names:
        raise ValueError("name a claim (optimlab reproduce --list), or give --all")
    if isinstance(args.jobs, bool) or args.jobs < 1:
        raise ValueError(f"Invalid --jobs: {args.jobs!r}; expected a positive integer")
    check_data_dir(args.data_dir)
    built = available()
    names = list(built) if args.all else list(dict.fromkeys(args.names))
    for n in names:
        if n not in EXPERIMENTS and "." not in n:
            raise ValueError(f"unknown claim {n!r}; available: {', '.join(built)} (optimlab reproduce --list)")
        if n in EXPERIMENTS and n not in built:
            raise ValueError(f"claim {n!r} has no experiment yet; built: {', '.join(built)}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    experiments = [load_experiment(n) for n in names]
    size = "--quick" if args.quick else "default size"
    total_runs, total_s, bound = 0, 0.0, False
    print(f"optimlab reproduce: {len(experiments)} claim(s), {size}, --jobs {args.jobs}, results in {args.out}; "
          "each claim priced on this machine by short probe runs:", flush=True)
    for e in experiments:
        try:
            est = estimate(e, args.quick, seeds, jobs=args.jobs, data_dir=args.data_dir)
        except DatasetNotFoundError as err:  # the claim itself stops at once, saying how to get the data
            print(f"  {e.name}: no estimate ({str(err).splitlines()[0]})", flush=True)
            continue
        if est is None:
            print(f"  {e.name}: no estimate (it declares no work)", flush=True)
            continue
        total_runs += est.runs
        total_s += est.seconds
        bound = bound or est.upper_bound
        print(f"  {e.name}: {est.runs} runs, {est.train_steps:,} steps; {est.expected} on this machine with "
              f"--jobs {args.jobs} ({est.probe})", flush=True)
    print(f"  total: {total_runs} runs, {'at most' if bound else 'expected'} about {duration(total_s)} (a busy "
          f"machine runs slower; finished pieces in {args.out} are reused)", flush=True)
    if args.dry_run:
        return 0
    outcomes = []
    start = time.perf_counter()
    for e in experiments:
        ctx = make_context(e, args.out, quick=args.quick, seeds=seeds, jobs=args.jobs, data_dir=args.data_dir,
                           progress=not args.no_progress)
        outcome = run_experiment(e, ctx)
        outcomes.append(outcome)
        print(f"{e.name}: {outcome.verdict.value.upper()} ({outcome.seconds:.1f} s). {outcome.verdict.reason}",
              flush=True)
    stem = "report-quick" if args.quick else "report"
    not_built = [n for n in EXPERIMENTS if n not in built] if args.all else []
    if len(outcomes) == 1 and not args.all:
        path = write_report(outcomes, outcomes[0].folder, stem="report")
    else:
        path = write_report(outcomes, args.out, not_built=not_built, stem=stem)
    print(f"report: {path} (and {path.with_suffix('.md').name}); {time.perf_counter() - start:.0f} s in all")
    return 0


COMMANDS: dict[str, Command] = {
    "reproduce": Command(
        "reproduce the source documents' claims: a verdict, intervals and a figure per claim",
        _configure,
        reproduce,
        description="Reproduce the source documents' claims: one experiment per claim, a verdict computed by its "
        "rule, the evidence with 95%% intervals over seeds, the figure; a report (markdown + HTML).",
    ),
}

if __name__ == "__main__":  # pragma: no cover
    from optimlab.lab.commands.cli import main

    sys.exit(main(["reproduce", *sys.argv[1:]]))
