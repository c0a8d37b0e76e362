"""Two tasks that take the user's data without code: ``text:PATH`` and ``arrays:PATH``.

``text:PATH[@level=char|byte,block=N]``: a language model on any UTF-8 file, at the character level (the
vocabulary is the file's characters) or the byte level (256 symbols), with the lab's character Transformer (2
layers, width 128, context ``block``, default 64). The file is split by position: the first 90 % trains, the next
5 % validates, the last 5 % tests. Metric: perplexity (per character or per byte), lower is better.

``arrays:PATH[@model=mlp|cnn|FACTORY,x=KEY,y=KEY]``: classification on a ``.npz`` file (read without pickle) or a
``.pt`` file (a dict of tensors, read with ``torch.load(weights_only=True)``) holding inputs ``x`` and integer
labels ``y`` (other names with ``x=``/``y=``), or the splits ``x_train``/``y_train``, ``x_val``/``y_val``,
``x_test``/``y_test``. Given one ``x``/``y`` pair, a permutation drawn once (seed 0) splits it 80/10/10. The model:
``mlp`` (two hidden layers of 256) for inputs of one dimension, ``cnn`` (two convolutions, global average pooling)
for images ``(N, H, W)`` or ``(N, C, H, W)``; the default picks by the inputs' shape; ``model=file.py:fn`` or
``model=package.module:fn`` calls ``fn(input_shape, num_classes)`` for a model of your own. Metric: accuracy.

Default budget of both: 500 steps, batch 64 (at most the training set), an evaluation every 50 steps, no target.
The path is made absolute in the task's name (what every worker and record sees); the data is read once per
process. Changing the file's contents changes the results: keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from optimlab.lab.catalog.models import CharTransformer
from optimlab.lab.catalog.tasks import PREFIX_RESOLVERS, ClassificationTask, LanguageTask, TensorSplits, TextSplits
from optimlab.lab.catalog.user_tasks import TaskError, load_factory

__all__ = ["PREFIXES", "TextFileTask", "ArrayFileTask", "generic_task", "array_mlp", "array_cnn"]

PREFIXES = ("text:", "arrays:")
STEPS, BATCH_SIZE, EVAL_EVERY = 500, 64, 50


def _parse(name: str) -> tuple[str, Path, dict[str, str]]:
    kind, _, rest = name.partition(":")
    path, at, opts = rest.rpartition("@") if "@" in rest else (rest, "", "")
    options: dict[str, str] = {}
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise TaskError(f"Invalid task {name!r}: option {item!r} is not key=value")
        options[key.strip()] = value.strip()
    if not path:
        raise TaskError(f"Invalid task {name!r}; expected {kind}:PATH")
    return kind, Path(path).expanduser().absolute(), options


def _check_options(name: str, options: dict[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TaskError(f"Invalid task {name!r}: unknown option(s) {', '.join(unknown)}; expected {', '.join(allowed)}")


def _canonical(kind: str, path: Path, options: dict[str, str]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{kind}:{path}" + (f"@{opts}" if opts else "")


def _existing(path: Path, name: str, what: str) -> Path:
    if not path.is_file():
        raise TaskError(f"{what} {path} not found (from task {name!r}); give the path of an existing file")
    return path


class TextFileTask(LanguageTask):
    """``text:PATH``: a character- or byte-level language model on a UTF-8 file (see the module's docstring)."""

    data_files = False  # the file is named in the task, not searched in --data-dir

    def __init__(self, name: str, path: Path, level: str = "char", block_size: int = 64):
        if level not in ("char", "byte"):
            raise TaskError(f"Invalid task {name!r}: level={level!r}; expected char or byte")
        super().__init__(name, f"{level}-level language model on {path.name}, char Transformer 2x128",
                         steps=STEPS, batch_size=32, eval_every=EVAL_EVERY, target=None,  # type: ignore[arg-type]
                         block_size=block_size)
        self.path, self.level = path, level
        self._data: TextSplits | None = None

    def load(self, data_dir: str | None = None) -> TextSplits:
        if self._data is None:
            raw = _existing(self.path, self.name, "text file").read_bytes()
            if self.level == "byte":
                ids, vocab = list(raw), "".join(map(chr, range(256)))
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise TaskError(f"text file {self.path} is not UTF-8 ({e.reason} at byte {e.start}); convert "
                                    "it, or use level=byte (text:PATH@level=byte)") from None
                vocab = "".join(sorted(set(text)))
                index = {c: i for i, c in enumerate(vocab)}
                ids = [index[c] for c in text]
            stream = torch.tensor(ids, dtype=torch.int64)
            n = len(stream)
            a, b = int(n * 0.9), int(n * 0.95)
            shortest = min(a, b - a, n - b)
            if shortest < self.block_size + 2:
                need = (self.block_size + 2) * 20
                raise TaskError(f"text file {self.path} is too short ({n} symbols) for a context of "
                                f"{self.block_size}: each split needs {self.block_size + 2}; give at least {need} "
                                "symbols, or a smaller block (text:PATH@block=16)")
            self._data = TextSplits(stream[:a], stream[a:b], stream[b:], vocab)
        return self._data

    def model(self, data: TextSplits) -> nn.Module:
        return CharTransformer(len(data.vocab), block_size=self.block_size)


def array_mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The arrays task's ``mlp``: flatten, two hidden layers of 256 with ReLU."""
    width = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, num_classes))


class _AddChannel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def array_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The arrays task's ``cnn`` for images ``(H, W)`` or ``(C, H, W)``: conv32-conv64 (3x3, ReLU, the second
    with stride 2), global average pooling, a linear layer."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"Invalid input_shape: {input_shape}; the cnn takes images (H, W) or (C, H, W)")
    channels = 1 if len(input_shape) == 2 else input_shape[0]
    head = [_AddChannel()] if len(input_shape) == 2 else []
    return nn.Sequential(*head, nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def _read_arrays(path: Path, name: str) -> dict[str, np.ndarray]:
    _existing(path, name, "array file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (ValueError, OSError) as e:
            raise TaskError(f"array file {path} cannot be read as .npz without pickle ({e}); save plain arrays "
                            "with numpy.savez") from None
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling error is the file's
            raise TaskError(f"array file {path} cannot be read with torch.load(weights_only=True) ({e}); save a "
                            "dict of tensors with torch.save") from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise TaskError(f"array file {path} holds a {type(obj).__name__}; save a dict of tensors, e.g. "
                            "torch.save({'x': x, 'y': y}, path)")
        return {k: v.numpy() for k, v in obj.items()}
    raise TaskError(f"array file {path} is neither .npz nor .pt; save the inputs and labels with numpy.savez or "
                    "torch.save")


class ArrayFileTask(ClassificationTask):
    """``arrays:PATH``: classification on a ``.npz``/``.pt`` file (see the module's docstring)."""

    def __init__(self, name: str, path: Path, model: str = "auto", x: str = "x", y: str = "y"):
        self.path, self.model_name, self.keys = path, model, (x, y)
        self._data: TensorSplits | None = None
        self._factory: Callable[[tuple[int, ...], int], nn.Module] | None = None
        if model not in ("auto", "mlp", "cnn"):
            # a bad factory is named now, before any run
            self._factory = load_factory(model, ("input_shape", "num_classes"), "a torch.nn.Module")[0]
        super().__init__(name, f"classification on {path.name}, model {model}", self._load, self._build,
                         steps=STEPS, batch_size=BATCH_SIZE, eval_every=EVAL_EVERY, target=None,  # type: ignore[arg-type]
                         train_eval_size=2000, eval_batch_size=1000)

    def _load(self, data_dir: str | None) -> TensorSplits:
        if self._data is None:
            arrays = _read_arrays(self.path, self.name)
            kx, ky = self.keys
            if all(f"{a}_{s}" in arrays for a in (kx, ky) for s in ("train", "val", "test")):
                parts = [arrays[f"{a}_{s}"] for s in ("train", "val", "test") for a in (kx, ky)]
            elif kx in arrays and ky in arrays:
                xs, ys = arrays[kx], arrays[ky]
                if len(xs) != len(ys):
                    raise TaskError(f"array file {self.path}: {kx} has {len(xs)} rows and {ky} {len(ys)}; give one "
                                    "label per input")
                n = len(ys)
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()
                a, b = int(n * 0.8), int(n * 0.9)
                parts = [arr[perm[i:j]] for i, j in ((0, a), (a, b), (b, n)) for arr in (xs, ys)]
            else:
                raise TaskError(f"array file {self.path} has {', '.join(sorted(arrays)) or 'no arrays'}; expected "
                                f"{kx} and {ky} (name others with arrays:PATH@x=KEY,y=KEY), or {kx}_train, "
                                f"{ky}_train, {kx}_val, ...")
            for i in range(1, 6, 2):
                if not np.issubdtype(parts[i].dtype, np.integer) or parts[i].ndim != 1:
                    raise TaskError(f"array file {self.path}: the labels must be one integer per input, got "
                                    f"dtype {parts[i].dtype} and shape {parts[i].shape}")
                if len(parts[i]) == 0:
                    raise TaskError(f"array file {self.path}: a split is empty; give at least 10 examples")
            tensors = [torch.from_numpy(np.ascontiguousarray(p)) for p in parts]
            tensors[0::2] = [t.float() for t in tensors[0::2]]
            tensors[1::2] = [t.long() for t in tensors[1::2]]
            if min(int(t.min()) for t in tensors[1::2]) < 0:
                raise TaskError(f"array file {self.path}: labels must be 0..C-1, found a negative one")
            num_classes = max(int(t.max()) for t in tensors[1::2]) + 1
            self._data = TensorSplits(*tensors, num_classes=num_classes)
            self.batch_size = min(self.batch_size, len(tensors[1]))
        return self._data

    def _build(self, data: TensorSplits) -> nn.Module:
        shape = tuple(data.x_train.shape[1:])
        if self._factory is not None:
            return self._factory(shape, data.num_classes)
        kind = self.model_name if self.model_name != "auto" else ("mlp" if len(shape) == 1 else "cnn")
        if kind == "cnn" and len(shape) not in (2, 3):
            raise TaskError(f"array file {self.path}: inputs of shape {shape} are not images (H, W) or (C, H, W); "
                            "use model=mlp")
        return (array_mlp if kind == "mlp" else array_cnn)(shape, data.num_classes)


def generic_task(name: str) -> Any:
    """The task that ``text:...`` or ``arrays:...`` names, its name made canonical (an absolute path, sorted
    options)."""
    kind, path, options = _parse(name)
    canonical = _canonical(kind, path, options)
    if kind == "text":
        _check_options(name, options, ("level", "block"))
        try:
            block = int(options.get("block", "64"))
        except ValueError:
            block = 0
        if block < 1:
            raise TaskError(f"Invalid task {name!r}: block={options['block']!r}; expected a positive integer")
        return TextFileTask(canonical, path, options.get("level", "char"), block)
    _check_options(name, options, ("model", "x", "y"))
    return ArrayFileTask(canonical, path, options.get("model", "auto"), options.get("x", "x"), options.get("y", "y"))


for _prefix in PREFIXES:
    PREFIX_RESOLVERS[_prefix] = generic_task
