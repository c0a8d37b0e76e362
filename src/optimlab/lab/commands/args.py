"""The command line's shared pieces: the arguments several commands take (``--jobs``, ``--seeds``, ``--data-dir``,
``--out``, ``--dry-run``, ``--no-progress``) and the parsers and checks of their values (:func:`positive_int`,
:func:`split_specs`, :func:`parse_seeds`, :func:`check_jobs`, :func:`check_data_dir`).

Each ``add_*`` adds one argument where the command wants it in its usage line; its help says the same in every
command unless the command means something else by it (``--no-progress`` silences the diagnostics, but turns a
comparison's bars into lines).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.presets import _split_top_level

__all__ = [
    "positive_int",
    "split_specs",
    "SEEDS_HELP",
    "parse_seeds",
    "check_jobs",
    "check_data_dir",
    "DATA_DIR_HELP",
    "add_jobs",
    "add_seeds",
    "add_out",
    "add_data_dir",
    "add_no_progress",
    "add_dry_run",
    "TASK_HELP",
    "add_task",
]


def positive_int(name: str) -> Callable[[str], int]:
    """An argparse ``type`` for the option ``name``: an integer >= 1, or the error ``NAME must be a positive
    integer, got 'TEXT'``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        return v

    return parse


def split_specs(values: Sequence[str]) -> list[str]:
    """Optimizer specs from the command line, space- or comma-separated (``k=v`` pieces stay with a spec)."""
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


def check_jobs(jobs: int) -> None:
    """``--jobs`` of ``compare`` and ``benchmark``: at least 1."""
    if jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {jobs}")


def check_data_dir(data_dir: str | None, task: Any = None) -> None:
    """``--data-dir`` must be a folder; a note when ``task`` reads no data files (the folder is not used)."""
    if data_dir is None:
        return
    if not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"Invalid --data-dir: {data_dir!r} is not a folder")
    if task is not None and not task.data_files:
        print(f"note: {task.name} needs no data files (generated or defined in code); --data-dir is not used")


def add_jobs(p: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    """``--jobs``: worker processes; by default the CPU count."""
    cpus = os.cpu_count() or 1
    p.add_argument(
        "--jobs",
        type=int,
        default=cpus if default is None else default,
        help=help or f"parallel worker processes (default {cpus}, the CPU count)",
    )


def add_seeds(p: argparse.ArgumentParser, help: str = SEEDS_HELP) -> None:
    """``--seeds`` (:func:`parse_seeds`), default: the protocol's."""
    p.add_argument("--seeds", default=None, help=help)


def add_out(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``--out``: where the command writes; ``help`` says where by default."""
    p.add_argument("--out", default=default, help=help)


DATA_DIR_HELP = "the only folder searched for data files (also: $OPTIMLAB_DATA)"


def add_data_dir(p: argparse.ArgumentParser, help: str = DATA_DIR_HELP) -> None:
    """``--data-dir`` (:func:`check_data_dir`)."""
    p.add_argument("--data-dir", default=None, help=help)


def add_no_progress(p: argparse.ArgumentParser, lines_instead: bool) -> None:
    """``--no-progress``: no bars; ``lines_instead``: progress lines then (a study's), else nothing at all."""
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (progress lines instead)" if lines_instead else "no progress bars or lines",
    )


def add_dry_run(p: argparse.ArgumentParser) -> None:
    """``--dry-run``: the plan and its cost, and nothing created or run."""
    p.add_argument("--dry-run", action="store_true", help="print the plan and its expected cost, run nothing")


TASK_HELP = (
    "a built-in task (optimlab list), text:PATH (a language model on a UTF-8 file), arrays:PATH (classification on "
    "a .npz/.pt file), or your own: path/to/file.py:make_task or package.module:make_task (a function that returns "
    "an optimlab.lab.Task; see the README's 'Your own task')"
)


def add_task(p: argparse.ArgumentParser, default: str | None = None, nargs: str | None = None,
             flag: str = "--task") -> None:
    """``--task`` (or ``--tasks`` with ``nargs``): any string :func:`~optimlab.lab.catalog.tasks.get_task` resolves,
    checked when the command runs (a bad one is one line naming the fix, not argparse's list of choices)."""
    extra = f"; default: {default}" if default else ""
    if nargs:
        extra += " (several: one study each, and the performance profile over them)"
    p.add_argument(flag, default=default, nargs=nargs, metavar="TASK", help=TASK_HELP + extra)
