"""The command-line side of where runs execute and where they are logged: ``--backend local|ray``,
``--address``, ``--cpus-per-run``, ``--gpus-per-run``, ``--max-retries``, ``--tensorboard DIR``, ``--mlflow [URI]``.

Every command of the lab that fans out runs (``compare``, ``benchmark``) adds these with
:func:`add_backend_arguments`; its session (:meth:`optimlab.lab.study.session.Session.from_args`) builds the
executor and the trackers with :func:`executor_from_args` and :func:`trackers_from_args`. The local backend stays
the default and needs nothing beyond the ``lab`` extra; ``ray`` and the trackers are optional extras, imported only
when asked for.
"""

from __future__ import annotations

import argparse
from typing import Any

from optimlab.lab.executors import Closing
from optimlab.lab.executors.tracking import DEFAULT_MLFLOW_URI

__all__ = [
    "BACKENDS",
    "add_backend_arguments",
    "check_backend_args",
    "executor_from_args",
    "trackers_from_args",
    "describe_backend",
]

BACKENDS = ("local", "ray")


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution and tracking")
    g.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: a process pool on this machine (default); ray: every run a Ray task (pip install "
        "'optimlab[ray]'), on a local cluster or the one --address names",
    )
    g.add_argument(
        "--address",
        default=None,
        help="with --backend ray: join a running cluster ('auto', or HOST:6379 of `ray start --head`); "
        "default: start a private one on 127.0.0.1 with --jobs CPUs",
    )
    g.add_argument("--cpus-per-run", type=float, default=1, help="with --backend ray: CPUs (= torch threads) per run")
    g.add_argument("--gpus-per-run", type=float, default=0, help="with --backend ray: GPUs per run (default 0)")
    g.add_argument(
        "--max-retries", type=int, default=2, help="with --backend ray: restarts of a run whose worker died (default 2)"
    )
    g.add_argument("--tensorboard", metavar="DIR", default=None, help="also log every run to TensorBoard in DIR")
    g.add_argument(
        "--mlflow",
        metavar="URI",
        nargs="?",
        const=DEFAULT_MLFLOW_URI,
        default=None,
        help=f"also log every run to MLflow at URI (alone: {DEFAULT_MLFLOW_URI}, a local file store)",
    )


def check_backend_args(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` for backend and tracker flags that cannot work: a Ray flag without ``--backend ray``,
    a value out of range, ``--tensorboard``/``--mlflow file:`` naming a file. Nothing is created or contacted,
    so ``--dry-run`` checks these too."""
    from optimlab.lab.executors.tracking import check_mlflow_uri, check_tensorboard_dir

    if args.backend != "ray":
        for flag, value, default in (
            ("--address", args.address, None),
            ("--cpus-per-run", args.cpus_per_run, 1),
            ("--gpus-per-run", args.gpus_per_run, 0),
            ("--max-retries", args.max_retries, 2),
        ):
            if value != default:
                raise ValueError(f"{flag} is for --backend ray (this run uses --backend {args.backend})")
    else:
        if args.address is not None and not args.address.strip():
            raise ValueError("Invalid --address: ''; expected 'auto' or HOST:PORT (or leave it out)")
        if not args.cpus_per_run > 0:
            raise ValueError(f"Invalid --cpus-per-run: {args.cpus_per_run:g}; expected a number > 0")
        if not args.gpus_per_run >= 0:
            raise ValueError(f"Invalid --gpus-per-run: {args.gpus_per_run:g}; expected a number >= 0")
        if args.max_retries < 0:
            raise ValueError(f"Invalid --max-retries: {args.max_retries}; expected an integer >= 0")
    if args.tensorboard:
        check_tensorboard_dir(args.tensorboard)
    if args.mlflow:
        check_mlflow_uri(args.mlflow)


def describe_backend(args: argparse.Namespace, jobs: int) -> str:
    if args.backend == "ray":
        where = f"Ray cluster at {args.address}" if args.address else f"local Ray cluster ({jobs} CPUs, 127.0.0.1)"
        return f"{where}, {args.cpus_per_run:g} CPU(s) per run"
    return f"{jobs} job(s)"


def executor_from_args(
    args: argparse.Namespace, jobs: int, data_dir: str | None, progress: bool, callbacks: Any = None
) -> Closing:
    """The executor the flags ask for (a context manager: closing it stops its workers or its local cluster);
    ``callbacks``: a picklable factory of per-run callbacks, built where the run runs (both backends)."""
    check_backend_args(args)
    if args.backend == "ray":
        from optimlab.lab.executors.ray import RayExecutor

        return RayExecutor(
            args.address,
            num_cpus=None if args.address else jobs,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
            max_retries=args.max_retries,
            data_dir=data_dir,
            progress=progress,
            callbacks=callbacks,
        )
    from optimlab.lab.executors.local import LocalExecutor

    return LocalExecutor(jobs=jobs, data_dir=data_dir, progress=progress, callbacks=callbacks)


def trackers_from_args(args: argparse.Namespace) -> list[Any]:
    """The trackers the flags ask for (none by default); before any run starts, a missing package raises
    ImportError saying what to install, and a store that cannot be used (an MLflow server that does not answer,
    a path that is a file) raises ValueError. The sweeps guard them (:func:`~optimlab.lab.executors.tracking.guard`)."""
    check_backend_args(args)
    trackers: list[Any] = []
    if args.tensorboard:
        from optimlab.lab.executors.tracking import TensorBoardTracker

        trackers.append(TensorBoardTracker(args.tensorboard))
    if args.mlflow:
        from optimlab.lab.executors.tracking import MlflowTracker

        trackers.append(MlflowTracker(args.mlflow))
    return trackers
