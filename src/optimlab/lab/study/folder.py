"""A study's results folder: its ``protocol.json`` (the protocol and the optimizers it lists), the checks that a
folder is ours and holds the same protocol, and the lock that serializes two commands adding optimizers to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optimlab.lab.study.protocol import (
    ANALYSIS_FIELDS,
    EXTENSIBLE_FIELDS,
    PROTOCOL_FILE,
    PROTOCOL_VERSION,
    Protocol,
    ProtocolMismatchError,
)
from optimlab.lab.training.record import RECORD_VERSION
from optimlab.lab.training.results import check_writable, load_records

__all__ = [
    "read_manifest", "RESULTS_MARKERS", "check_ours",
    "check_folder", "LOCK_FILE", "folder_lock", "register_optimizers"]


def _manifest(protocol: Protocol, specs: Sequence[str]) -> dict[str, Any]:
    return {
        "format": PROTOCOL_VERSION,
        "record_version": RECORD_VERSION,
        "protocol": protocol.to_dict(),
        "description": protocol.describe(),
        "optimizers": list(specs),
        "spaces": {s: protocol.space_for(s).describe() for s in specs} if protocol.tuned and not protocol.lrs else {},
    }


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / PROTOCOL_FILE
    if not path.exists():
        if (out / "results.jsonl").exists():
            load_records(out)  # a folder of another version says so
            raise ProtocolMismatchError(
                f"{out} holds results but no {PROTOCOL_FILE} (written by another optimlab version or by a plain "
                "sweep); nothing was changed: choose another folder with --out"
            )
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8 text
        raise ProtocolMismatchError(f"{path} is unreadable ({e}); nothing was changed: choose another --out") from None
    if not isinstance(manifest, dict):
        raise ProtocolMismatchError(
            f"{path} is not a protocol of optimlab (a JSON {type(manifest).__name__}); nothing was changed: "
            "choose another --out"
        )
    if manifest.get("format") != PROTOCOL_VERSION or manifest.get("record_version") != RECORD_VERSION:
        raise ProtocolMismatchError(
            f"{out} was written by another optimlab version (protocol format {manifest.get('format')!r}, record "
            f"format {manifest.get('record_version')!r}; this version uses {PROTOCOL_VERSION} and {RECORD_VERSION}). "
            "Nothing was changed: move that folder away or choose another with --out"
        )
    optimizers = manifest.get("optimizers", [])
    try:
        Protocol.from_dict(manifest["protocol"])
        if not isinstance(optimizers, list) or not all(isinstance(o, str) for o in optimizers):
            raise ValueError(f"'optimizers' is {optimizers!r}, not a list of specs")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = "no 'protocol'" if isinstance(e, KeyError) else str(e)
        raise ProtocolMismatchError(
            f"{path} is not a valid protocol of optimlab ({what}); nothing was changed: repair or move it, or "
            "choose another --out"
        ) from None
    return manifest


# What makes a folder one of ours: a file only the lab writes. An existing folder that holds none of them (and
# anything but hidden files) is the user's: the lab would overwrite their summary.csv, report.html or figures.
RESULTS_MARKERS = (PROTOCOL_FILE, "results.jsonl")


def check_ours(out: Path, markers: Sequence[str] = RESULTS_MARKERS, what: str = "results folder") -> None:
    """Raise ``ValueError`` when ``out`` is an existing folder that is not empty (hidden files aside) and holds
    none of ``markers``: not a folder the lab wrote, so its files are not the lab's to overwrite. A new path or
    an empty folder is fine."""
    if not out.is_dir() or any((out / m).exists() for m in markers):
        return
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if files:
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        raise ValueError(
            f"--out {out} is a folder that holds files ({shown}) but is not a {what} of optimlab (no "
            f"{' or '.join(markers)}); nothing was written, so that its files are not overwritten: choose a new or "
            "empty folder with --out"
        )


def check_folder(out: str | os.PathLike, protocol: Protocol, create: bool = True) -> list[str]:
    """Check before anything runs that ``out`` is writable, is new, empty or a results folder of the lab
    (:func:`check_ours`), and holds nothing of another protocol; return the optimizers already registered
    there. Raises :class:`ProtocolMismatchError` naming the differing fields. Fields that change no run
    (:data:`~optimlab.lab.study.protocol.ANALYSIS_FIELDS`: alpha, margin) or only add or drop final runs
    (:data:`~optimlab.lab.study.protocol.EXTENSIBLE_FIELDS`: seeds) may differ: the records there stay valid and
    only the new runs run. ``create=False`` (``--dry-run``): create nothing."""
    out = Path(out)
    if out.exists():
        check_ours(out)
        manifest = read_manifest(out)
        if manifest is not None:
            theirs = manifest["protocol"]
            ours = protocol.to_dict()
            free = (*ANALYSIS_FIELDS, *EXTENSIBLE_FIELDS)
            diff = [k for k in sorted(set(theirs) | set(ours)) if k not in free and theirs.get(k) != ours.get(k)]
            if diff:
                shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in diff)
                raise ProtocolMismatchError(
                    f"{out} holds results of another protocol ({shown}). Nothing was changed: results of different "
                    "protocols are not comparable, so they are kept apart; choose another folder with --out (more "
                    f"seeds, or another {', '.join(ANALYSIS_FIELDS)}, are accepted in the same folder)"
                )
            check_writable(out, create)
            return list(manifest.get("optimizers", []))
    check_writable(out, create)
    return []


LOCK_FILE = ".protocol.lock"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``flock`` on ``out/.protocol.lock``; no lock where ``fcntl`` is
    missing) for a read-modify-write of its ``protocol.json`` by several processes at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux or macOS
        yield
        return
    with open(out / LOCK_FILE, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def register_optimizers(out: str | os.PathLike, protocol: Protocol, specs: Sequence[str]) -> list[str]:
    """Check ``out`` (:func:`check_folder`) and add ``specs`` to the optimizers its ``protocol.json`` lists,
    under :func:`folder_lock`, so that two commands starting together on one folder keep each other's;
    returns the optimizers listed."""
    out = check_writable(out)
    with folder_lock(out):
        listed = list(dict.fromkeys([*check_folder(out, protocol), *specs]))
        _write_manifest(out, protocol, listed)
    return listed


def _write_manifest(out: Path, protocol: Protocol, specs: Sequence[str]) -> None:
    tmp = out / (PROTOCOL_FILE + ".tmp")
    tmp.write_text(json.dumps(_manifest(protocol, specs), indent=1) + "\n")
    os.replace(tmp, out / PROTOCOL_FILE)


