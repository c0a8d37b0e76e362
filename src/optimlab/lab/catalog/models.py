"""The models of the lab's tasks (:mod:`optimlab.lab.catalog.tasks`), each a plain :class:`torch.nn.Module`:

- :func:`mnist1d_mlp` (with its BatchNorm and dropout variants), :func:`mnist1d_deep_mlp`, :func:`mnist1d_cnn`: the
  MNIST-1D models;
- :func:`fmnist_cnn`, :class:`ResNet`, :func:`mlp_autoencoder`: the Fashion-MNIST models;
- :class:`CharTransformer` (with its :class:`Block` and :class:`CausalSelfAttention`): the character language model;
- :class:`Point`: the one 2-D parameter of the synthetic functions.

A model takes what it needs (the number of classes), not the data; it initialises from torch's global RNG, so seed
it first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "mnist1d_mlp",
    "mnist1d_deep_mlp",
    "mnist1d_cnn",
    "fmnist_cnn",
    "ResNet",
    "mlp_autoencoder",
    "CharTransformer",
    "Block",
    "CausalSelfAttention",
    "Point",
]


# ----------------------------------------------------------------------------------------------------
# Classifiers


def mnist1d_mlp(num_classes: int, *, norm: bool = False, dropout: float = 0.0) -> nn.Module:
    """The MLP of the MNIST-1D paper (greydanus/mnist1d, models.py: MLP with 100 hidden units), 40-100-100-classes;
    ``norm``: BatchNorm after each hidden linear layer, ``dropout``: dropout after each hidden ReLU (the variants of
    ``optimlab reproduce helps-optimization``)."""
    layers: list[nn.Module] = []
    for a, b in ((40, 100), (100, 100)):
        layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if norm else []), nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(100, num_classes))


def mnist1d_deep_mlp(num_classes: int) -> nn.Module:
    # Neelakantan et al. (2015), Section 4.1: 20 hidden layers of 50 ReLU units, the "simple init" (weights drawn
    # from N(0, 0.1^2), zero biases): deep, narrow and hard to train (the signal shrinks ~2x a layer).
    sizes = [40] + [50] * 20
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(50, num_classes))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.1)
                m.bias.zero_()
    return model


class _Unsqueeze(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def mnist1d_cnn(num_classes: int) -> nn.Module:
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
        nn.Linear(c * 5, num_classes),
    )


def fmnist_cnn(num_classes: int) -> nn.Module:
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
        nn.Linear(128, num_classes),
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


# ----------------------------------------------------------------------------------------------------
# Autoencoder


def mlp_autoencoder() -> nn.Module:
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


# ----------------------------------------------------------------------------------------------------
# A point in the plane


class Point(nn.Module):
    """A single 2-D parameter; calling it evaluates ``fn`` at that point."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], start: tuple[float, float]):
        super().__init__()
        self.fn = fn
        self.xy = nn.Parameter(torch.tensor(start, dtype=torch.float64))

    def forward(self, _: Any = None) -> torch.Tensor:
        return self.fn(self.xy)
