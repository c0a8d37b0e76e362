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

from optimlab.lab.training.record import RecordError, ResultsVersionError, RunRecord

__all__ = [
    "RESULTS_FILE",
    "ResultsVersionError",
    "LabWarning",
    "load_records",
    "finished_keys",
    "nearest_existing",
    "check_writable",
    "named",
    "append_record",
]

RESULTS_FILE = "results.jsonl"


class LabWarning(UserWarning):
    """Something the lab skipped or worked around and says so (``optimlab`` prints it as one line)."""


def _lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


def load_records(out: str | os.PathLike) -> list[RunRecord]:
    """The records in ``out/results.jsonl`` (the last one wins per key).

    Lines that are not records (not UTF-8 text, not JSON such as a line cut short by a hard kill, or valid JSON
    that is not a record: :meth:`RunRecord.problem`) are skipped with a :class:`LabWarning` that names the file
    and their line numbers; those runs count as not done, so a resumed sweep runs them again. Raises
    :class:`ResultsVersionError` when the folder holds records of another format version.
    """
    path = Path(out) / RESULTS_FILE
    records: dict[str, RunRecord] = {}
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
                rec = RunRecord.from_line(line)
            except json.JSONDecodeError:
                skipped.setdefault("not JSON (cut short?)", []).append(number)
                continue
            except ResultsVersionError as e:
                raise ResultsVersionError(
                    f"{path} holds results of another optimlab version ({e}). "
                    "Nothing was changed: move that folder away or choose another one with --out."
                ) from None
            except RecordError as e:
                skipped.setdefault(str(e), []).append(number)
                continue
            records[rec.key] = rec
    if skipped:
        n = sum(map(len, skipped.values()))
        why = "; ".join(f"{_lines(numbers)}: {problem}" for problem, numbers in skipped.items())
        message = f"{path}: {n} line(s) that are not records skipped ({why}); a run they held counts as not done"
        warnings.warn(message, LabWarning, stacklevel=2)
    return list(records.values())


def finished_keys(out: str | os.PathLike) -> set[str]:
    """The keys of the records in ``out`` (:func:`load_records`)."""
    return {r.key for r in load_records(out)}


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


def append_record(out: Path, record: RunRecord) -> None:
    """Append ``record`` as one line, fsync'ed. A failed write (a full disk) is undone before the error is
    raised, so no torn line is left; the run is done again on resume."""
    path = out / RESULTS_FILE
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    data = (("\n" if torn else "") + record.to_line() + "\n").encode()
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


