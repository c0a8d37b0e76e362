"""``optimlab compare``: every optimizer tuned with the same budget on one task, then run on fresh seeds; the
answer, the table and the report.

With no arguments it is the lab's default comparison: every optimizer of
:data:`optimlab.lab.catalog.presets.DEFAULT_OPTIMIZERS` on MNIST-1D under the protocol of
:func:`optimlab.lab.study.protocol.default_protocol`. The command checks everything before anything runs, prints
its plan and cost, and runs it (:mod:`optimlab.lab.study.session`); the folder keeps every finished run, so the
same command resumes.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS, parse_spec
from optimlab.lab.catalog.space import parse_space
from optimlab.lab.catalog.tasks import DEFAULT_TASK, ClassificationTask, get_task, task_slug
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
    positive_int,
    split_specs,
)
from optimlab.lab.commands.command import Command
from optimlab.lab.executors.backends import add_backend_arguments, describe_backend
from optimlab.lab.present.report import build_report, format_summary, spaces_note
from optimlab.lab.study.cost import estimate_cost
from optimlab.lab.study.protocol import PROTOCOL_FILE, Protocol, default_protocol
from optimlab.lab.study.session import Session, check_study, plan_study
from optimlab.lab.study.tuning import StudyResult, load_study
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import append_record
from optimlab.lab.training.runner import Callback, RunConfig, build_schedule

__all__ = [
    "configure",
    "compare",
    "protocol_from_args",
    "parse_lrs",
    "parse_lengths",
    "compare_lengths",
    "FinalRunDiagnostics",
    "DIAGNOSTICS_KEY",
    "missing_diagnostics",
    "add_diagnostics",
    "COMMANDS",
]

DIAGNOSTICS_KEY = "diagnostics"  # DiagnosticsCallback's default key in a record's extras


def configure(c: argparse.ArgumentParser) -> None:
    """The arguments of ``optimlab compare``."""
    add_task(c, default=DEFAULT_TASK)
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
    g.add_argument("--steps", type=positive_int("--steps"), default=None, help="training steps (default: the task's)")
    g.add_argument("--epochs", type=float, default=None, help="training epochs instead of --steps")
    add_seeds(c)
    c.add_argument(
        "--target",
        type=float,
        default=None,
        help="validation target for steps/time to target (accuracy as a fraction, e.g. 0.9; default: the "
        "task's, see optimlab list)",
    )
    c.add_argument(
        "--margin",
        type=float,
        default=None,
        help="equivalence margin of 'as good as the best', in the metric's units (accuracy as a fraction: 0.01 is "
        "1 point; default: 1 point of accuracy, else 2%% of the task's target)",
    )
    c.add_argument(
        "--study",
        type=int,
        default=0,
        help="independent repetition of the tuning: other trial seeds and quasi-random points (default 0)",
    )
    c.add_argument(
        "--studies",
        type=positive_int("--studies"),
        default=1,
        help="independent tuning studies per optimizer (AlgoPerf's rule): each its own quasi-random points, tuning "
        "seed and final seeds; the answer is the median of the study means, its interval includes the "
        "study-to-study spread (default 1; more studies in a folder run only the new ones)",
    )
    c.add_argument("--batch-size", type=positive_int("--batch-size"), default=None, help="default: the task's")
    c.add_argument("--eval-every", type=positive_int("--eval-every"), default=None, help="default: the task's")
    add_jobs(c)
    add_out(
        c,
        "results folder (default: optimlab-runs/TASK, or optimlab-runs/TASK-<what differs> for a protocol other "
        "than the default)",
    )
    add_data_dir(c)
    add_no_progress(c, lines_instead=True)
    add_dry_run(c)
    add_backend_arguments(c)
    c.add_argument(
        "--diagnostics",
        action="store_true",
        help="record diagnostics in every final run (walk, |g| histograms, sharpness, interpolation; "
        "optimlab.lab.training.diagnostic_runs.DiagnosticsCallback) and add their panels to the report; in a "
        "folder whose final runs were made without them, those runs run again with them (the plan says the cost)",
    )
    c.add_argument(
        "--lengths",
        default=None,
        metavar="STEPS,STEPS,...",
        help="answer at several training lengths, e.g. 400,1000,2500: one study per length, each tuned on its own, "
        "in OUT/steps-N/, and a rank table across lengths (instead of --steps/--epochs)",
    )


class FinalRunDiagnostics:
    """The callbacks of ``compare --diagnostics``: a :class:`~optimlab.lab.training.diagnostic_runs.DiagnosticsCallback`
    for each final run (those that report the test split), none for tuning trials. Picklable (module level), so
    the worker processes build it."""

    def __init__(self, data_dir: str | None = None) -> None:
        self.data_dir = data_dir

    def __call__(self, config: RunConfig) -> list[Callback]:
        from optimlab.lab.training.diagnostic_runs import DiagnosticsCallback  # only with --diagnostics

        return [DiagnosticsCallback(data_dir=self.data_dir)] if "test" in config.splits else []


def missing_diagnostics(study: StudyResult) -> list[RunRecord]:
    """The final runs of ``study`` whose record carries no ``compare --diagnostics`` extras (runs made without
    ``--diagnostics``)."""
    return [rec for r in study.results.values() for rec in r.finals if DIAGNOSTICS_KEY not in rec.extras]


def add_diagnostics(session: Session, study: StudyResult, out: Path, jobs: int) -> tuple[int, list[str], bool]:
    """Run again, with the diagnostics attached, each final run of ``study`` that has none, and append its record
    to ``out``'s ``results.jsonl`` with the diagnostics added (the last record of a key is the one read: the
    stored numbers are kept, only ``extras["diagnostics"]`` is new). A run is a pure function of its config
    and thread count, so the rerun is the same run; where its final metrics differ from the stored ones (another
    CPU or thread count), the diagnostics are still kept, marked ``"rerun_differs": True``, and the run is named
    in the returned list. Ctrl-C keeps the runs finished so far; the same command resumes. Returns (runs done,
    runs whose rerun differs, interrupted)."""
    missing = {rec.key: rec for rec in missing_diagnostics(study)}
    done, differs = 0, []
    if not missing:
        return done, differs, False
    try:
        with session.executor(max(1, min(jobs, len(missing)))) as executor:
            for new in executor.run([rec.config for rec in missing.values()]):
                old = missing[new.key]
                extras = dict(new.extras.get(DIAGNOSTICS_KEY) or {})
                if _metrics(new) != _metrics(old):
                    extras["rerun_differs"] = True
                    differs.append(f"{old.config.optimizer} seed {old.config.seed}")
                data = old.to_json()
                data["extras"] = {**data.get("extras", {}), DIAGNOSTICS_KEY: extras}
                append_record(out, RunRecord.from_json(data))
                done += 1
    except KeyboardInterrupt:
        return done, differs, True
    return done, differs, False


def _metrics(record: RunRecord) -> tuple[Any, ...]:
    """What a rerun must reproduce: the status, the test values and the last evaluation of every series."""
    test = dict(record.test_values or {})
    history = {k: v[-1] if v else None for k, v in record.history.items() if k not in ("step", "time", "cpu")}
    return record.status, sorted(test.items()), sorted(history.items())


def parse_lrs(value: str) -> tuple[float, ...]:
    """``'1e-3,3e-3'`` -> the explicit lr grid."""
    try:
        lrs = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"Invalid --lr: {value!r}; expected comma-separated positive numbers") from None
    if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError(f"Invalid --lr: {value!r}; expected comma-separated positive numbers")
    return lrs


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The :class:`~optimlab.lab.study.protocol.Protocol` a ``compare`` command line asks for (validated)."""
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
    fields["studies"] = args.studies
    if args.target is not None:
        fields["target"] = args.target
    if args.margin is not None:
        fields["margin"] = args.margin
    return default_protocol(task, **fields)


def _default_out(protocol: Protocol) -> Path:
    base = default_protocol(protocol.task)
    if protocol == base:
        return Path("optimlab-runs") / task_slug(protocol.task)
    parts = []
    a, b = protocol.to_dict(), base.to_dict()
    for k in a:
        # the margin changes no run, and more studies only add runs to study 0's: the same folder
        if a[k] == b[k] or k in ("task", "margin", "studies"):
            continue
        v = a[k]
        if k == "seeds":
            v = f"{v[0]}-{v[-1]}" if list(v) == list(range(v[0], v[0] + len(v))) else "-".join(map(str, v))
        elif k == "spaces":
            v = "custom"
        elif isinstance(v, list):
            v = "-".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        parts.append(f"{k.replace('_', '')}{v}".replace("@", "_").replace("=", "").replace(",", "_"))
    if not parts:
        return Path("optimlab-runs") / task_slug(protocol.task)
    return Path("optimlab-runs") / f"{task_slug(protocol.task)}-{'-'.join(parts)}"[:120]


def parse_lengths(value: str) -> tuple[int, ...]:
    """``'400,1000,2500'`` -> ``(400, 1000, 2500)``: distinct positive step counts, sorted."""
    try:
        lengths = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"Invalid --lengths: {value!r}; expected comma-separated step counts, e.g. 400,1000,2500"
        ) from None
    if not lengths or any(n < 1 for n in lengths):
        raise ValueError(f"Invalid --lengths: {value!r}; expected comma-separated positive step counts, e.g. 400,1000")
    if len(set(lengths)) != len(lengths):
        raise ValueError(f"Invalid --lengths: {value!r}; expected each length once")
    return tuple(sorted(lengths))


def _checked_protocol(args: argparse.Namespace, specs: list[str]) -> Protocol:
    """The protocol of ``args`` with everything checked that can be before a run: the specs at every trial setting,
    the spaces' names, the data."""
    protocol = protocol_from_args(args)
    compared = {*specs, *(parse_spec(spec).base for spec in specs)}
    unused = [name for name, _ in protocol.spaces if name not in compared]
    if unused:  # most likely a typo: the space would be ignored
        raise ValueError(
            f"--space for {', '.join(map(repr, unused))}, which is not among the optimizers compared "
            f"({', '.join(specs)}); give a --space for one of them (its spec or its base name)"
        )
    check_study(protocol, specs, args.data_dir)  # every spec at every trial setting, and the data
    return protocol


def compare(args: argparse.Namespace) -> int:
    """The ``compare`` handler: check, plan, print the plan (and stop there with ``--dry-run``), run, report."""
    task = get_task(args.task)
    specs = split_specs(args.optimizers) if args.optimizers else list(DEFAULT_OPTIMIZERS)
    check_jobs(args.jobs)
    check_data_dir(args.data_dir, task)
    for spec in specs:
        if args.lr is not None and "lr" in dict(parse_spec(spec).kwargs):
            raise ValueError(f"--lr conflicts with the lr given in optimizer spec {spec!r}; use one of them")
    if getattr(args, "lengths", None) is not None:
        return compare_lengths(args, specs)
    protocol = _checked_protocol(args, specs)
    out = Path(args.out) if args.out else _default_out(protocol)
    if args.out is None and out != Path("optimlab-runs") / task_slug(task.name):
        print(f"note: results go to {out}, apart from the default protocol's folder (they are not comparable)")
    # the trackers (a probe of the MLflow store) before the folder is made; --dry-run contacts none
    session = Session.from_args(args, callbacks=FinalRunDiagnostics(args.data_dir) if args.diagnostics else None)
    plan = plan_study(protocol, specs, out, jobs=args.jobs, data_dir=args.data_dir, create=not args.dry_run)
    print(
        f"optimlab compare: {task.name}, {len(specs)} optimizer(s), {describe_backend(args, plan.jobs)} -> {out}\n"
        f"protocol: {protocol.describe()}\n"
        f"plan: {protocol.trials_per_optimizer() * len(specs) * protocol.studies} tuning trials + "
        f"{len(protocol.seeds) * len(specs) * protocol.studies} final runs"
        f"{f' ({protocol.studies} studies)' if protocol.studies > 1 else ''}; still to do: {plan.cost.describe()}",
        flush=True,
    )
    if args.diagnostics:
        _plan_diagnostics(protocol, specs, out, args)
    if args.dry_run:
        return 0
    start = time.perf_counter()
    study = session.run([plan], jobs=plan.jobs)[task.name]
    interrupted = study.interrupted
    if args.diagnostics and not interrupted:
        interrupted = _diagnose(session, study, out, args.jobs)
    elapsed = time.perf_counter() - start
    if interrupted:
        print(f"\ninterrupted: every finished run is kept in {out}; run the same command again to resume.")
        if not any(r.finals for r in study.results.values()):
            return 130
    path, summary = build_report(out)
    print()
    print(format_summary(summary))
    print(spaces_note(summary))
    print(
        f"\n{plan.cost.runs} run(s) in {elapsed:.1f} s. Results: {out / 'results.jsonl'}; summary: "
        f"{out / 'summary.csv'}\nReport: {path}"
    )
    return 130 if interrupted else 0


def _diagnose(session: Session, study: StudyResult, out: Path, jobs: int) -> bool:
    """``--diagnostics`` after the study: rerun, with them, the final runs that have none; True if interrupted."""
    n = len(missing_diagnostics(study))
    if not n:
        return False
    print(f"diagnostics: running {n} final run(s) again with the diagnostics attached ...", flush=True)
    done, differs, interrupted = add_diagnostics(session, study, out, jobs)
    print(f"diagnostics: {done} of {n} run(s) diagnosed and added to {out / 'results.jsonl'}", flush=True)
    if differs:
        print(
            f"warning: {len(differs)} rerun(s) did not reproduce the stored numbers ({', '.join(differs[:5])}"
            f"{' ...' if len(differs) > 5 else ''}): another CPU or thread count than the first run's; the "
            "stored numbers are kept, and their diagnostics are marked rerun_differs",
            flush=True,
        )
    return interrupted


def compare_lengths(args: argparse.Namespace, specs: list[str]) -> int:
    """``compare --lengths``: one study per training length (each its own protocol, tuned on its own) in
    ``OUT/steps-N/``, run on one executor, each with its report; then the rank table across lengths
    (:mod:`optimlab.lab.present.lengths`) in the terminal and in ``OUT/report.html``. Resumable like one study."""
    from optimlab.lab.present.lengths import format_lengths, write_lengths_report

    lengths = parse_lengths(args.lengths)
    if args.steps is not None or args.epochs is not None:
        which = "--steps" if args.steps is not None else "--epochs"
        raise ValueError(f"--lengths conflicts with {which}: each length is the --steps of one study; give one of them")
    task = get_task(args.task)
    base = Path(args.out) if args.out else Path("optimlab-runs") / f"{task.name}-lengths-{'-'.join(map(str, lengths))}"
    if (base / PROTOCOL_FILE).exists() or (base / "results.jsonl").exists():
        raise ValueError(
            f"{base} holds the results of one study; --lengths writes one sub-folder per length (steps-N/) into a "
            "folder of its own: choose another --out"
        )
    protocols = {n: _checked_protocol(argparse.Namespace(**{**vars(args), "steps": n}), specs) for n in lengths}
    session = Session.from_args(args, callbacks=FinalRunDiagnostics(args.data_dir) if args.diagnostics else None)
    plans = {
        n: plan_study(p, specs, base / f"steps-{n}", jobs=args.jobs, data_dir=args.data_dir, create=not args.dry_run)
        for n, p in protocols.items()
    }
    runs = sum(p.cost.runs for p in plans.values())
    print(f"optimlab compare: {task.name}, {len(specs)} optimizer(s), {len(lengths)} training lengths "
          f"({', '.join(map(str, lengths))} steps), each tuned on its own, "
          f"{describe_backend(args, max(p.jobs for p in plans.values()))} -> {base}", flush=True)
    for n, plan in plans.items():
        p = plan.protocol
        print(f"{n} steps -> {plan.out}: {p.trials_per_optimizer() * len(specs) * p.studies} tuning trials of "
              f"{p.trial_steps} steps + {len(p.seeds) * len(specs) * p.studies} final runs; still to do: "
              f"{plan.cost.describe()}", flush=True)
        if args.diagnostics:
            _plan_diagnostics(p, specs, plan.out, args)
    print(f"protocol (apart from the steps): {protocols[lengths[0]].describe()}", flush=True)
    if args.dry_run:
        return 0
    start = time.perf_counter()
    studies = session.run(list(plans.values()), jobs=args.jobs)
    interrupted = any(s.interrupted for s in studies.values())
    summaries, pages = {}, {}
    for n, plan in plans.items():
        study = load_study(plan.out)
        if args.diagnostics and not interrupted:
            interrupted = _diagnose(session, study, plan.out, args.jobs)
            study = load_study(plan.out)
        if any(r.finals for r in study.results.values()):
            pages[n], summaries[n] = build_report(plan.out)
    elapsed = time.perf_counter() - start
    if interrupted:
        print(f"\ninterrupted: every finished run is kept in {base}; run the same command again to resume.")
    if not summaries:
        return 130 if interrupted else 0
    path = write_lengths_report(base, summaries, pages)
    print()
    print(format_lengths(summaries))
    print(spaces_note(summaries[max(summaries)]))
    print(f"\n{runs} run(s) in {elapsed:.1f} s. Reports: {path} (across lengths), "
          + ", ".join(str(pages[n]) for n in sorted(pages)))
    return 130 if interrupted else 0


def _plan_diagnostics(protocol: Protocol, specs: list[str], out: Path, args: argparse.Namespace) -> None:
    """Print what ``--diagnostics`` adds to a folder that holds final runs made without it: those runs, again,
    with the diagnostics attached, and their expected time."""
    if not (out / PROTOCOL_FILE).exists():
        return
    study = load_study(out)  # the folder's protocol is this one (plan_study checked it)
    missing = [rec for rec in missing_diagnostics(study) if rec.config.optimizer in specs]
    if not missing:
        return
    cost = estimate_cost(protocol, [rec.config for rec in missing], jobs=min(args.jobs, len(missing)),
                         data_dir=args.data_dir)
    print(
        f"diagnostics: {len(missing)} finished final run(s) have none; they run again with the diagnostics attached "
        f"(the same configs, so the same runs): {cost.describe()}, plus the diagnostics' own passes "
        "(sharpness, interpolation: benchmarks/diagnostics_speed.py)",
        flush=True,
    )


COMMANDS: dict[str, Command] = {
    "compare": Command("tune optimizers with equal budgets, compare them on fresh seeds, write a report", configure,
                       compare),
}
