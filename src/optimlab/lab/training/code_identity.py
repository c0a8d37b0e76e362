"""Which code ran: a SHA-256 over the sources of the installed ``optimlab`` package and, where that package lives in
a git checkout, the checkout's commit and whether the package's sources differ from that commit's.

``source_sha256`` is the identity: the SHA-256 of, for each ``.py`` file under the package's folder sorted by its
path relative to that folder (``/``-separated), the path, a NUL byte, the file's size in decimal, a NUL byte and
its bytes. Two processes running the same sources give the same hash, whatever the version number says.

Git is read, never run (no ``git`` binary, hooks or configuration from a folder others may write): ``HEAD``, the
ref it names (a loose ref file or ``packed-refs``, worktrees included) and, to tell whether the sources are the
commit's, the commit's tree from the object store (loose objects and version-2 pack files, deltas included).
``dirty`` compares the package's ``.py`` files with the commit's, by git's blob hash of their bytes: a changed,
added (even untracked) or removed ``.py`` file of the package makes it ``True``; files outside the package are not
looked at. It is ``None`` where the store cannot be read (another object format, alternates), and a checkout that
converts line endings reads as dirty.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from pathlib import Path
from typing import Any

import optimlab

__all__ = ["code_identity", "identity_of", "source_files"]

PACKAGE = Path(optimlab.__file__).resolve().parent


@functools.cache
def code_identity() -> dict[str, Any]:
    """The identity of the installed ``optimlab`` package (computed once per process): ``{"source_sha256": ...,
    "files": n, "git": {"commit": ..., "ref": ..., "dirty": ...} or None}``."""
    return identity_of(PACKAGE)


def source_files(package: Path) -> list[tuple[str, bytes]]:
    """Every ``.py`` file under ``package`` as ``(relative path, bytes)``, sorted by path."""
    files = [(p.relative_to(package).as_posix(), p) for p in package.rglob("*.py") if p.is_file()]
    return [(rel, p.read_bytes()) for rel, p in sorted(files)]


def identity_of(package: Path) -> dict[str, Any]:
    """:func:`code_identity` of the package in the folder ``package``."""
    files = source_files(package)
    digest = hashlib.sha256()
    for rel, data in files:
        digest.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return {"source_sha256": digest.hexdigest(), "files": len(files), "git": _git_state(package, files)}


# ----------------------------------------------------------------------------------------------------
# Reading a checkout without running git


def _git_state(package: Path, files: list[tuple[str, bytes]]) -> dict[str, Any] | None:
    found = _git_dirs(package)
    if found is None:
        return None
    root, gitdir, common = found
    try:
        ref, commit = _head(gitdir, common)
    except (OSError, ValueError):
        return None
    if commit is None:  # a branch without a commit yet
        return None
    try:
        tree = _package_tree(_Store(common / "objects"), commit, package.relative_to(root).parts)
    except (OSError, ValueError, KeyError, zlib.error, struct.error, IndexError):
        return {"commit": commit, "ref": ref, "dirty": None}
    if tree is None:  # the commit does not hold this folder: the package is not this checkout's
        return None
    ours = {rel: _blob_id(data) for rel, data in files}
    return {"commit": commit, "ref": ref, "dirty": ours != tree}


def _git_dirs(package: Path) -> tuple[Path, Path, Path] | None:
    """``(work tree root, git dir, common dir)`` of the checkout holding ``package``, or None."""
    for root in (package, *package.parents):
        dot = root / ".git"
        if dot.is_dir():
            gitdir = dot
        elif dot.is_file():  # a worktree or a submodule: "gitdir: <path>"
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (root / text[len("gitdir:") :].strip()).resolve()
        else:
            continue
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
        return root, gitdir, common
    return None


def _head(gitdir: Path, common: Path) -> tuple[str | None, str | None]:
    """``(ref name or None when detached, commit id or None)`` of ``HEAD``."""
    text = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    ref = None
    for _ in range(5):  # a symbolic ref may name another
        if not text.startswith("ref:"):
            return ref, _object_id(text)
        ref = text[len("ref:") :].strip()
        for folder in (gitdir, common):
            path = folder / ref
            if path.is_file():
                text = path.read_text(encoding="utf-8").strip()
                break
        else:
            return ref, _packed_ref(common, ref)
    raise ValueError("symbolic refs nested too deep")


def _packed_ref(common: Path, ref: str) -> str | None:
    path = common / "packed-refs"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and line[0] not in "#^":
            oid, _, name = line.partition(" ")
            if name.strip() == ref:
                return _object_id(oid)
    return None


def _object_id(text: str) -> str:
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a SHA-1 object id: {text!r}")
    return text


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def _package_tree(store: _Store, commit: str, parts: tuple[str, ...]) -> dict[str, str] | None:
    """``{relative path: blob id}`` of the ``.py`` files under ``parts`` in ``commit``'s tree, or None when the
    commit has no such folder."""
    kind, body = store.read(commit)
    if kind != "commit" or not body.startswith(b"tree "):
        raise ValueError(f"{commit} is not a commit")
    tree = body[5:45].decode()
    for name in parts:
        entries = _tree_entries(store, tree)
        entry = entries.get(name)
        if entry is None or entry[0] != "40000":
            return None
        tree = entry[1]
    out: dict[str, str] = {}
    _collect_py(store, tree, "", out)
    return out


def _tree_entries(store: _Store, tree: str) -> dict[str, tuple[str, str]]:
    kind, body = store.read(tree)
    if kind != "tree":
        raise ValueError(f"{tree} is not a tree")
    entries, i = {}, 0
    while i < len(body):
        space = body.index(b" ", i)
        nul = body.index(b"\0", space)
        mode, name = body[i:space].decode(), body[space + 1 : nul].decode("utf-8", "surrogateescape")
        entries[name] = (mode, body[nul + 1 : nul + 21].hex())
        i = nul + 21
    return entries


def _collect_py(store: _Store, tree: str, prefix: str, out: dict[str, str]) -> None:
    for name, (mode, oid) in _tree_entries(store, tree).items():
        if mode == "40000":
            _collect_py(store, oid, f"{prefix}{name}/", out)
        elif mode in ("100644", "100755") and name.endswith(".py"):
            out[prefix + name] = oid


_TYPES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}


class _Store:
    """Reads objects from a git object folder: loose objects, then version-2 pack indexes."""

    def __init__(self, objects: Path) -> None:
        self.objects = objects
        self._packs: list[tuple[Path, list[int], bytes, bytes, bytes]] | None = None

    def read(self, oid: str) -> tuple[str, bytes]:
        loose = self.objects / oid[:2] / oid[2:]
        if loose.is_file():
            raw = zlib.decompress(loose.read_bytes())
            header, _, body = raw.partition(b"\0")
            kind, _, size = header.decode().partition(" ")
            if int(size) != len(body):
                raise ValueError(f"object {oid} is cut short")
            return kind, body
        for pack, fanout, names, offsets, large in self._indexes():
            first = fanout[int(oid[:2], 16) - 1] if oid[:2] != "00" else 0
            last = fanout[int(oid[:2], 16)]
            want = bytes.fromhex(oid)
            lo, hi = first, last
            while lo < hi:  # binary search among the names starting with the same byte
                mid = (lo + hi) // 2
                name = names[20 * mid : 20 * mid + 20]
                if name < want:
                    lo = mid + 1
                elif name > want:
                    hi = mid
                else:
                    (offset,) = struct.unpack(">I", offsets[4 * mid : 4 * mid + 4])
                    if offset & 0x80000000:
                        i = offset & 0x7FFFFFFF
                        (offset,) = struct.unpack(">Q", large[8 * i : 8 * i + 8])
                    with open(pack, "rb") as f:
                        return self._unpack(f, offset)
        raise KeyError(f"object {oid} not found")

    def _indexes(self) -> list[tuple[Path, list[int], bytes, bytes, bytes]]:
        if self._packs is None:
            self._packs = []
            for idx in sorted((self.objects / "pack").glob("*.idx")):
                data = idx.read_bytes()
                if data[:8] != b"\377tOc\0\0\0\2":
                    raise ValueError(f"{idx}: not a version-2 pack index")
                fanout = list(struct.unpack(">256I", data[8 : 8 + 1024]))
                n = fanout[-1]
                names_at = 8 + 1024
                offsets_at = names_at + 20 * n + 4 * n  # names, then CRC-32s
                large_at = offsets_at + 4 * n
                self._packs.append((idx.with_suffix(".pack"), fanout, data[names_at : names_at + 20 * n],
                                    data[offsets_at:large_at], data[large_at:-40]))
        return self._packs

    def _unpack(self, f: Any, offset: int) -> tuple[str, bytes]:
        f.seek(offset)
        byte = f.read(1)[0]
        kind, size, shift = (byte >> 4) & 7, byte & 15, 4
        while byte & 0x80:
            byte = f.read(1)[0]
            size |= (byte & 0x7F) << shift
            shift += 7
        if kind in _TYPES:
            return _TYPES[kind], _inflate(f, size)
        if kind == 6:  # a delta against the object ``distance`` bytes before this one
            byte = f.read(1)[0]
            distance = byte & 0x7F
            while byte & 0x80:
                byte = f.read(1)[0]
                distance = ((distance + 1) << 7) | (byte & 0x7F)
            delta = _inflate(f, size)
            base_kind, base = self._unpack(f, offset - distance)
        elif kind == 7:  # a delta against the object of that id
            base_id = f.read(20).hex()
            delta = _inflate(f, size)
            base_kind, base = self.read(base_id)
        else:
            raise ValueError(f"unknown pack entry type {kind}")
        return base_kind, _apply_delta(base, delta)


def _inflate(f: Any, size: int) -> bytes:
    inflater = zlib.decompressobj()
    parts = []
    while not inflater.eof:
        chunk = f.read(4096)
        if not chunk:
            raise ValueError("pack entry cut short")
        parts.append(inflater.decompress(chunk))
    out = b"".join(parts)
    if len(out) != size:
        raise ValueError("pack entry of the wrong size")
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _apply_delta(base: bytes, delta: bytes) -> bytes:
    source_size, i = _varint(delta, 0)
    target_size, i = _varint(delta, i)
    if source_size != len(base):
        raise ValueError("delta against a base of another size")
    out = bytearray()
    while i < len(delta):
        op = delta[i]
        i += 1
        if op & 0x80:  # copy from the base: offset and size, each byte present when its bit is set
            offset = size = 0
            for bit in range(4):
                if op & (1 << bit):
                    offset |= delta[i] << (8 * bit)
                    i += 1
            for bit in range(3):
                if op & (1 << (4 + bit)):
                    size |= delta[i] << (8 * bit)
                    i += 1
            out += base[offset : offset + (size or 0x10000)]
        elif op:  # insert the next ``op`` bytes
            out += delta[i : i + op]
            i += op
        else:
            raise ValueError("delta opcode 0")
    if len(out) != target_size:
        raise ValueError("delta result of the wrong size")
    return bytes(out)
