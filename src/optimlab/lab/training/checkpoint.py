"""Checkpoints of runs in progress: a long run saves its state now and then so that, after Ctrl-C, a killed
worker or a lost Ray node, the sweep's next attempt at the same config continues where it stopped and gives the
record an unbroken run gives.

Where: ``OUT/checkpoints/<run key>.pt``, one file per run, in the run's own results folder (made with mode 0700).
Written atomically (a temporary file in that folder, fsync, rename, fsync of the folder), so a kill mid-write
leaves the previous checkpoint. The study's driver deletes a run's checkpoint once its record is in
``results.jsonl`` (:func:`remove_checkpoint`).

When (:class:`Checkpointing`): every ``every_steps`` optimizer steps and/or every ``every_minutes`` minutes of the
run's wall time. The default is every 10 minutes and never by steps: a run shorter than that never writes one (no
cost for the lab's own short runs), and a long run loses at most about 10 minutes of work to a crash, for the
cost of writing the model and optimizer state once per 10 minutes.

What: the model's, optimizer's and scheduler's ``state_dict``, the RNG states (torch CPU, CUDA when used, numpy,
Python's ``random``, and the run's data generator), the history so far with the batch losses since the last
evaluation, the timing samples and clocks, what callbacks put in ``ctx.extras`` and their own ``state_dict`` where
they have one. The data position is the step: the resumed run re-creates ``task.batches`` from the config's seed
and draws ``step`` batches (fast-forward), then checks that its data generator is in the saved state.

Loading trusts nothing it did not write: a checkpoint is read only from ``OUT/checkpoints/<key>.pt``, only when
that file and its folder belong to this user and no one else may write them, with ``torch.load(weights_only=True)``
(tensors, numbers, strings and containers: no code is run). A checkpoint that fails any check, or that belongs to
another config, device or format, is ignored with a :class:`~optimlab.lab.training.results.LabWarning` and the run
starts from step 0: it costs time, never a wrong record.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optimlab.lab.training.results import LabWarning

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKPOINT_FORMAT",
    "DEFAULT_EVERY_MINUTES",
    "Checkpointing",
    "DEFAULT_CHECKPOINTING",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "remove_checkpoint",
]

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1
DEFAULT_EVERY_MINUTES = 10.0


@dataclass(frozen=True)
class Checkpointing:
    """When runs save their state, and where: ``folder`` is the results folder (``None`` until the study's driver
    names it: the runs of an executor without a folder save nothing). ``every_steps``: every so many optimizer
    steps (``None``: never by steps); ``every_minutes``: every so many minutes of wall time (``None``: never by
    time). Both ``None``: off."""

    folder: Path | None = None
    every_steps: int | None = None
    every_minutes: float | None = DEFAULT_EVERY_MINUTES

    def __post_init__(self) -> None:
        s = self.every_steps
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(f"Invalid checkpoint every_steps: {s!r}; expected a positive integer or None")
        m = self.every_minutes
        number = isinstance(m, (int, float)) and not isinstance(m, bool)
        if m is not None and not (number and m > 0 and math.isfinite(m)):
            raise ValueError(f"Invalid checkpoint every_minutes: {m!r}; expected a positive number or None")

    @property
    def active(self) -> bool:
        return self.folder is not None and (self.every_steps is not None or self.every_minutes is not None)

    def due(self, step: int, seconds_since_save: float) -> bool:
        """Whether to save after ``step`` steps, ``seconds_since_save`` seconds after the last save (or start)."""
        if self.every_steps is not None and step % self.every_steps == 0:
            return True
        return self.every_minutes is not None and seconds_since_save >= 60 * self.every_minutes

    def bound(self, results_folder: str | os.PathLike) -> Checkpointing:
        """This policy saving into ``results_folder``'s ``checkpoints/``."""
        return Checkpointing(Path(results_folder), self.every_steps, self.every_minutes)


DEFAULT_CHECKPOINTING = Checkpointing()
"""Every :data:`DEFAULT_EVERY_MINUTES` minutes, never by steps; the folder is named by the study's driver."""


def checkpoint_path(results_folder: str | os.PathLike, key: str) -> Path:
    """``results_folder/checkpoints/<key>.pt``; ``key`` must be a run key (hex digits)."""
    if not isinstance(key, str) or not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"Invalid run key: {key!r}; expected hex digits")
    return Path(results_folder) / CHECKPOINTS_DIR / f"{key}.pt"


def _private_folder(results_folder: Path) -> Path:
    folder = results_folder / CHECKPOINTS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def save_checkpoint(results_folder: str | os.PathLike, key: str, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, containers) to the run's checkpoint file atomically."""
    path = checkpoint_path(results_folder, key)
    folder = _private_folder(Path(results_folder))
    fd, tmp = tempfile.mkstemp(prefix=f".{key}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # a file system that cannot fsync a folder: the rename itself is still atomic
        pass
    return path


def _untrusted(path: Path) -> str | None:
    """Why ``path`` (a checkpoint file) may have been written by someone else, or ``None``."""
    if not hasattr(os, "getuid"):  # no POSIX owners (Windows): the folder is the user's own results folder
        return None
    for p, kind in ((path.parent, "folder"), (path, "file")):
        st = os.lstat(p)
        wanted = stat.S_ISDIR(st.st_mode) if kind == "folder" else stat.S_ISREG(st.st_mode)
        if not wanted:
            return f"the checkpoint {kind} {p} is not a plain {kind}"
        if st.st_uid != os.getuid():
            return f"the checkpoint {kind} {p} belongs to another user"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"others may write the checkpoint {kind} {p}"
    return None


def load_checkpoint(results_folder: str | os.PathLike, key: str) -> dict[str, Any] | None:
    """The saved state of run ``key``, or ``None`` when there is none or it cannot be trusted or read (then with a
    :class:`LabWarning` saying why; the run starts over)."""
    path = checkpoint_path(results_folder, key)
    if not os.path.lexists(path):
        return None
    why = _untrusted(path)
    if why is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a torn or foreign file: the run starts over
            why = f"it cannot be read ({type(e).__name__}: {e})"
        else:
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("key") != key:
                why = "it is not a checkpoint of this run in this format"
            else:
                return state
    warnings.warn(f"{path}: ignored, {why}; the run starts from step 0", LabWarning, stacklevel=2)
    return None


def remove_checkpoint(results_folder: str | os.PathLike, key: str) -> None:
    """Delete run ``key``'s checkpoint (its record is written); nothing when there is none."""
    try:
        os.unlink(checkpoint_path(results_folder, key))
    except FileNotFoundError:
        pass
