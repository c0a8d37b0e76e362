"""Your own PyTorch CNN and tensors, compared under the lab's protocol: copy this file and replace the data and the
model with yours.

    optimlab compare --task examples/my_cnn.py:make_task --optimizers adam sgdm --seeds 0-1 \\
        --steps 150 --budget 4 --out runs/my-cnn

The data here are 16x16 images of three shapes (a square, a cross, a diagonal) with noise, made from a fixed seed
so every worker makes the same; yours would be read from a file in ``load`` (say ``torch.load(path,
weights_only=True)``). Everything the lab needs is the ``Task`` below: see ``help(optimlab.lab.Task)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from optimlab.lab import Task


@dataclass(frozen=True)
class Images:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy 1x16x16 images of three shapes, and their labels."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.zeros(3, 16, 16)
    shapes[0, 4:12, 4:12] = 1.0  # a square
    shapes[1, 7:9, :] = shapes[1, :, 7:9] = 1.0  # a cross
    shapes[2] = torch.eye(16)  # a diagonal
    y = torch.randint(0, 3, (n,), generator=g)
    shift = torch.randint(-2, 3, (n, 2), generator=g)
    x = torch.stack([torch.roll(shapes[c], (int(a), int(b)), (0, 1)) for c, (a, b) in zip(y, shift, strict=True)])
    x = x + 1.5 * torch.randn(n, 16, 16, generator=g)
    return x.unsqueeze(1), y


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class ShapesTask(Task):
    description = "three noisy 16x16 shapes, a 2-layer CNN"
    metric = "accuracy"
    higher_is_better = True
    steps, batch_size, eval_every = 300, 32, 50
    target = 0.9  # the validation accuracy that counts as reached (time to target); None for none

    def load(self, data_dir: str | None = None) -> Images:
        x, y = make_images(1600, seed=0)
        return Images(x[:1200], y[:1200], x[1200:1400], y[1200:1400], x[1400:], y[1400:])

    def hide_test(self, data: Images) -> Images:
        return replace(data, x_test=None, y_test=None)

    def model(self, data: Images) -> nn.Module:
        return SmallCNN()

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def batches(self, data: Images, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(data.y_train)
        while True:  # epochs in an order only the generator decides
            perm = torch.randperm(n, generator=generator).to(data.x_train.device)
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]
                yield data.x_train[idx], data.y_train[idx]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Images, split: str) -> dict[str, float]:
        x, y = {"train": (data.x_train[:400], data.y_train[:400]), "val": (data.x_val, data.y_val),
                "test": (data.x_test, data.y_test)}[split]
        out = model(x)
        return {"loss": F.cross_entropy(out, y).item(), "accuracy": (out.argmax(1) == y).float().mean().item()}


def make_task() -> Task:
    return ShapesTask()
