"""The diagnostics commands' command line: ``optimlab walk``, ``interpolate``, ``landscape``, ``histograms`` and
``sharpness``, their arguments and :data:`COMMANDS`.

Each trains every optimizer spec given on a task (through the runner, so with the same numbers as ``compare``),
then looks at what the optimizer did, and writes the figures, a ``diagnostics.json`` with every number and a
``report.html`` into ``optimlab-runs/TASK/diagnostics/COMMAND`` (``--out`` to choose). What each does is in
:mod:`optimlab.lab.commands.diagnose_handlers`, imported when one of them runs: building the parser for another
command does not load the diagnostics.
"""

from __future__ import annotations

import argparse

from optimlab.diagnostics import BN_MODES
from optimlab.lab.catalog.tasks import DEFAULT_TASK, TASKS
from optimlab.lab.commands.args import add_data_dir, add_no_progress, add_out, positive_int
from optimlab.lab.commands.command import Command

__all__ = ["COMMANDS"]


def _common(p: argparse.ArgumentParser, optimizers: list[str], examples: int = 2000) -> None:
    """The arguments every diagnostics command takes (``optimizers``: its default specs)."""
    p.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS))
    p.add_argument("--optimizers", nargs="+", default=optimizers,
                   help="optimizer specs (space-separated), e.g. sgdm adam 'adam@lr=3e-4' lookahead+radam")
    p.add_argument("--lr", type=float, default=None, help="LR for every spec (default: each spec's preset LR)")
    p.add_argument("--steps", type=positive_int("--steps"), default=None, help="training steps (default: the task's)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=None,
                   help="default: the task's; the training-set size gives full-batch GD")
    p.add_argument("--schedule", default="constant", help="LR schedule spec, e.g. warmup_cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--examples", type=positive_int("--examples"), default=examples,
                   help="training examples (language: windows) the losses are evaluated on")
    add_out(p, "results folder (default: optimlab-runs/TASK/diagnostics/COMMAND)")
    add_data_dir(p, help="where data sets live (also: $OPTIMLAB_DATA)")
    add_no_progress(p, lines_instead=False)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` ones (their help says what happens when the option is not given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return (action.help or "") if action.default is None else super()._get_help_string(action)


def _configure_walk(w: argparse.ArgumentParser) -> None:
    _common(w, ["sgd", "sgdm", "adam"])
    w.add_argument("--every", type=positive_int("--every"), default=1, help="record every so many steps")
    w.add_argument("--segments", type=int, default=40, help="consecutive-iterate segments to draw (0: none)")
    w.add_argument("--segment-start", type=int, default=None, help="first step of the segments (default: steps/2)")
    w.add_argument("--points", type=positive_int("--points"), default=11, help="points per segment")
    w.add_argument("--noise-every", type=int, default=None,
                   help="gradient noise scale every so many steps (default: steps/40; 0: off)")


def _configure_interpolate(i: argparse.ArgumentParser) -> None:
    _common(i, ["sgdm", "adam"])
    i.add_argument("--alphas", default="-0.25:1.25:31",
                   help="'lo:hi:points' or a list (a negative start: --alphas=-0.5:1.5:41)")


def _configure_landscape(la: argparse.ArgumentParser) -> None:
    _common(la, ["sgdm", "adam"])
    la.add_argument("--plots", nargs="+", default=["1d", "2d", "3d", "trajectory"],
                    choices=["1d", "2d", "3d", "trajectory"])
    la.add_argument("--grid", type=positive_int("--grid"), default=21,
                    help="points per axis of the 2-D grids (the 1-D curve: at least 51)")
    la.add_argument("--range", type=float, default=1.0, help="coordinates from -range to range")
    la.add_argument("--checkpoints", type=positive_int("--checkpoints"), default=20,
                    help="checkpoints for the PCA trajectory")
    la.add_argument("--bn", default="recompute", choices=list(BN_MODES),
                    help="BatchNorm at moved weights (see optimlab.diagnostics.evaluation)")
    la.add_argument("--direction-seed", type=int, default=0)


def _configure_histograms(h: argparse.ArgumentParser) -> None:
    _common(h, ["adam", "radam"])
    h.set_defaults(steps=100)
    h.add_argument("--schedules", nargs="+", default=None,
                   help="run every spec under each of these schedules (e.g. constant warmup_cosine@warmup=50)")
    h.add_argument("--max-lines", type=positive_int("--max-lines"), default=30, help="histograms drawn per panel")


def _configure_sharpness(s: argparse.ArgumentParser) -> None:
    _common(s, ["sgd", "sgdm", "adam"], examples=1000)
    s.add_argument("--seeds", type=positive_int("--seeds"), default=1, help="seeds per optimizer (0, 1, ...)")
    s.add_argument("--iters", type=positive_int("--iters"), default=100, help="power iterations at most")
    s.add_argument("--tol", type=float, default=1e-3, help="relative tolerance of the power iteration")
    s.add_argument("--trace", action="store_true", help="also Hutchinson's trace estimate")
    s.add_argument("--trace-iters", type=positive_int("--trace-iters"), default=50)
    s.add_argument("--track", type=int, default=5, help="eigenvalue at so many points during training (0: off)")


def _walk(args: argparse.Namespace) -> int:
    from optimlab.lab.commands.diagnose_handlers import walk

    return walk(args)


def _interpolate(args: argparse.Namespace) -> int:
    from optimlab.lab.commands.diagnose_handlers import interpolate

    return interpolate(args)


def _landscape(args: argparse.Namespace) -> int:
    from optimlab.lab.commands.diagnose_handlers import landscape

    return landscape(args)


def _histograms(args: argparse.Namespace) -> int:
    from optimlab.lab.commands.diagnose_handlers import histograms

    return histograms(args)


def _sharpness(args: argparse.Namespace) -> int:
    from optimlab.lab.commands.diagnose_handlers import sharpness

    return sharpness(args)


COMMANDS: dict[str, Command] = {
    "walk": Command("update angles, distance from init, loss between consecutive iterates (Xing et al. 2018)",
                    _configure_walk, _walk, description=None, formatter_class=_Defaults),
    "interpolate": Command("loss on the line from the initialization to the solution (Goodfellow et al.)",
                           _configure_interpolate, _interpolate, description=None, formatter_class=_Defaults),
    "landscape": Command("filter-normalized 1-D/2-D/3-D landscapes and the PCA path (Li et al. 2018)",
                         _configure_landscape, _landscape, description=None, formatter_class=_Defaults),
    "histograms": Command("|g|, |update| and step-size histograms over the first steps (RAdam Fig. 2)",
                          _configure_histograms, _histograms, description=None, formatter_class=_Defaults),
    "sharpness": Command("top Hessian eigenvalue (and trace) of the final weights, and during training",
                         _configure_sharpness, _sharpness, description=None, formatter_class=_Defaults),
}
