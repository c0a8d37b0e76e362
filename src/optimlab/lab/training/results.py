"""The results folder: ``OUT/results.jsonl``, one run record per line, appended by the study's driver alone.

Reading tolerates a torn last line (a hard kill mid-write) and warns about, then skips, lines that are not records;
a record of another format version stops the read (:class:`ResultsVersionError`). Writing is append, flush, fsync.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.training.runner import RECORD_VERSION, RunConfig

__all__ = [
    "RESULTS_FILE",
    "ResultsVersionError",
    "LabWarning",
    "record_problem",
    "load_records",
    "finished_keys",
    "nearest_existing",
    "check_writable",
    "named",
    "append_record",
]

RESULTS_FILE = "results.jsonl"


class ResultsVersionError(ValueError):
    """A results folder written by another version of the lab's record format."""



class LabWarning(UserWarning):
    """Something the lab skipped or worked around and says so (``optimlab`` prints it as one line)."""


def _number(x: Any, none: bool = True) -> bool:
    return (none and x is None) or (isinstance(x, (int, float)) and not isinstance(x, bool))


_NUMBERS = ("steps_done", "train_seconds", "train_cpu_seconds", "time_per_step", "step_cpu_ms", "step_wall_ms",
            "fwd_bwd_cpu_ms", "wall_seconds", "target")


def record_problem(rec: Any) -> str | None:
    """Why ``rec`` (one parsed line of ``results.jsonl``) is not a record of this version that the lab can use,
    or ``None``: a dict with a string ``key``, a ``config`` that :meth:`RunConfig.from_dict` accepts, string
    ``status`` and ``metric``, a ``history`` of lists of numbers (``None`` where a value was not finite) with
    a ``step`` list, a ``test`` dict of numbers or ``None``, and numbers (or ``None``) for its costs."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record"
    if not isinstance(rec.get("key"), str):
        return "no 'key'"
    try:
        RunConfig.from_dict(rec["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"no valid 'config' ({e})"
    for name in ("status", "metric"):
        if not isinstance(rec.get(name), str):
            return f"no {name!r}"
    history = rec.get("history")
    if not isinstance(history, dict) or not isinstance(history.get("step"), list):
        return "no 'history' with a 'step' list"
    for name, values in history.items():
        if not isinstance(values, list) or not all(map(_number, values)):
            return f"history {name!r} is not a list of numbers"
    test = rec.get("test")
    if test is not None and (not isinstance(test, dict) or not all(map(_number, test.values()))):
        return "'test' is not a dict of numbers"
    for name in _NUMBERS:
        if not _number(rec.get(name)):
            return f"{name!r} is not a number"
    return None


def _lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


def load_records(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records in ``out/results.jsonl`` (the last one wins per key).

    Lines that are not records (:func:`record_problem`: not UTF-8 text, not JSON such as a line cut short by a
    hard kill, or valid JSON that is not a record) are skipped with a :class:`LabWarning` that names the file
    and their line numbers; those runs count as not done, so a resumed sweep runs them again. Raises
    :class:`ResultsVersionError` when the folder holds records of another format version.
    """
    path = Path(out) / RESULTS_FILE
    records: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[int]] = {}
    if path.exists():
        with open(path, "rb") as f:
            lines = list(f)
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                skipped.setdefault("not UTF-8 text", []).append(number)
                continue
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                skipped.setdefault("not JSON (cut short?)", []).append(number)
                continue
            if isinstance(rec, dict) and "key" in rec and rec.get("version") != RECORD_VERSION:
                raise ResultsVersionError(
                    f"{path} holds results of another optimlab version (record format "
                    f"{rec.get('version')!r}; this version reads and writes format {RECORD_VERSION}). "
                    "Nothing was changed: move that folder away or choose another one with --out."
                )
            problem = record_problem(rec)
            if problem is not None:
                skipped.setdefault(problem, []).append(number)
                continue
            records[rec["key"]] = rec
    if skipped:
        n = sum(map(len, skipped.values()))
        why = "; ".join(f"{_lines(numbers)}: {problem}" for problem, numbers in skipped.items())
        message = f"{path}: {n} line(s) that are not records skipped ({why}); a run they held counts as not done"
        warnings.warn(message, LabWarning, stacklevel=2)
    return list(records.values())


def finished_keys(out: str | os.PathLike) -> set[str]:
    return {r["key"] for r in load_records(out)}


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else the nearest folder above it that does (what a command that creates nothing
    yet, ``--dry-run``, checks)."""
    path = Path(path)
    return next(p for p in (path, *path.absolute().parents) if p.exists())


def check_writable(out: str | os.PathLike, create: bool = True) -> Path:
    """Create ``out`` if needed and make sure files can be written there (raises ``PermissionError`` with
    a clear message otherwise): checked before any run starts, so no computation is lost to it.
    ``create=False`` (``--dry-run``) creates nothing: ``out``, or the nearest folder above it that exists,
    must be a folder this process may write in."""
    out = Path(out)
    if not create:
        existing = nearest_existing(out)
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            what = "is not a folder" if not existing.is_dir() else "is not writable"
            raise PermissionError(
                f"cannot write to the results folder {out} ({existing} {what}); choose a writable folder with --out"
            )
        results = out / RESULTS_FILE
        if results.exists() and not os.access(results, os.W_OK):
            raise PermissionError(f"cannot write to the results folder {out} ({results} is read-only)")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)  # a unique name: threads share a pid
        os.close(fd)
        os.unlink(probe)
        results = out / RESULTS_FILE
        if results.exists() and not os.access(results, os.W_OK):
            raise PermissionError(f"{results} is read-only")
    except OSError as e:
        raise PermissionError(
            f"cannot write to the results folder {out} ({e.strerror or e}); choose a writable folder with --out"
        ) from None
    return out


def named(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` with ``path`` as its file name when it has none (a failed ``write`` names no file), so that
    ``optimlab`` can say which file and folder it concerns."""
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))


def append_record(out: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, fsync'ed. A failed write (a full disk) is undone before the error is
    raised, so no torn line is left; the run is done again on resume."""
    path = out / RESULTS_FILE
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    data = (("\n" if torn else "") + json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise named(e, path) from None
    finally:
        os.close(fd)


