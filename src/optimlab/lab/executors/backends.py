"""The command-line side of where runs execute and where they are logged: ``--backend local|ray``,
``--address``, ``--cpus-per-run``, ``--gpus-per-run``, ``--max-retries``, where runs train (``--device
cpu|cuda|auto``), how often long runs save a checkpoint (``--checkpoint-every N`` steps, ``--checkpoint-minutes M``),
``--tensorboard DIR``, ``--mlflow [URI]``.

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
from optimlab.lab.training.checkpoint import DEFAULT_EVERY_MINUTES, Checkpointing
from optimlab.lab.training.device import DEVICES

__all__ = [
    "BACKENDS",
    "add_backend_arguments",
    "check_backend_args",
    "executor_from_args",
    "trackers_from_args",
    "describe_backend",
    "device_from_args",
    "checkpointing_from_args",
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
    g.add_argument(
        "--device",
        choices=DEVICES,
        default=None,
        help="where runs train: cpu (default), cuda (a GPU; the local pool gives worker i GPU i mod n), or auto "
        "(cuda where there is one); with --backend ray and --gpus-per-run > 0 the default is cuda",
    )
    g.add_argument(
        "--checkpoint-every",
        metavar="N",
        type=int,
        default=None,
        help="save each run's state every N steps into OUT/checkpoints/ (default: by time only)",
    )
    g.add_argument(
        "--checkpoint-minutes",
        metavar="M",
        type=float,
        default=DEFAULT_EVERY_MINUTES,
        help=f"save each run's state every M minutes of its run time (default {DEFAULT_EVERY_MINUTES:g}: runs "
        "shorter than that save nothing; 0: never by time); an interrupted run resumes from its last checkpoint",
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
    checkpointing_from_args(args)
    device = getattr(args, "device", None)
    if device == "cuda" and args.backend == "ray" and not args.gpus_per_run > 0:
        raise ValueError("--device cuda with --backend ray needs --gpus-per-run > 0 (Ray hides GPUs from other tasks)")
    if device == "cuda" and args.backend == "local":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                "--device cuda: torch sees no CUDA GPU on this machine; use --device cpu, or --device auto "
                "to train on a GPU only where there is one"
            )
    if args.tensorboard:
        check_tensorboard_dir(args.tensorboard)
    if args.mlflow:
        check_mlflow_uri(args.mlflow)


def device_from_args(args: argparse.Namespace) -> str | None:
    """``--device`` (``None`` where not given: ``cpu``, or ``cuda`` on Ray with ``--gpus-per-run > 0``)."""
    return getattr(args, "device", None)


def checkpointing_from_args(args: argparse.Namespace) -> Checkpointing | None:
    """The checkpoint policy of ``--checkpoint-every``/``--checkpoint-minutes`` (``None``: both off); raises
    ``ValueError`` naming the flag for a value out of range."""
    every = getattr(args, "checkpoint_every", None)
    minutes = getattr(args, "checkpoint_minutes", DEFAULT_EVERY_MINUTES)
    if every is not None and every < 1:
        raise ValueError(f"Invalid --checkpoint-every: {every}; expected a positive number of steps")
    if minutes is None or not minutes >= 0 or minutes == float("inf"):
        raise ValueError(f"Invalid --checkpoint-minutes: {minutes}; expected a number of minutes >= 0 (0: never)")
    if every is None and minutes == 0:
        return None
    return Checkpointing(every_steps=every, every_minutes=minutes or None)


def describe_backend(args: argparse.Namespace, jobs: int) -> str:
    if args.backend == "ray":
        where = f"Ray cluster at {args.address}" if args.address else f"local Ray cluster ({jobs} CPUs, 127.0.0.1)"
        gpus = f", {args.gpus_per_run:g} GPU(s) per run" if args.gpus_per_run else ""
        return f"{where}, {args.cpus_per_run:g} CPU(s) per run{gpus}"
    device = device_from_args(args)
    return f"{jobs} job(s)" + (f" on {device}" if device and device != "cpu" else "")


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
            device=device_from_args(args),
            checkpointing=checkpointing_from_args(args),
        )
    from optimlab.lab.executors.local import LocalExecutor

    return LocalExecutor(
        jobs=jobs,
        data_dir=data_dir,
        progress=progress,
        callbacks=callbacks,
        device=device_from_args(args) or "cpu",
        checkpointing=checkpointing_from_args(args),
    )


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
