"""A small GPT of your own, defined in code, on the built-in text-file task: the data (a UTF-8 file split by
position, random windows) come from ``text:PATH``; only the model is yours.

    optimlab compare --task examples/tiny_gpt.py:make_task --optimizers adam lion --seeds 2 \\
        --steps 200 --budget 4 --out runs/tiny-gpt

The text is the file ``$TINY_GPT_TEXT``, else this repository's README.md (any UTF-8 file works; no download).
Without a model of your own, ``--task text:PATH`` trains the lab's character Transformer on the same data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from optimlab.lab.catalog.generic import TextFileTask
from optimlab.lab.catalog.tasks import TextSplits

TEXT = Path(os.environ.get("TINY_GPT_TEXT", Path(__file__).resolve().parents[1] / "README.md"))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, ``layers`` pre-norm blocks, a tied output layer."""

    def __init__(self, vocab: int, block_size: int, width: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(block_size, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(width)
        for emb in (self.tok, self.pos):
            nn.init.normal_(emb.weight, std=0.02)  # GPT-2's init: tied logits start near uniform

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.blocks(self.tok(idx) + self.pos(positions))
        return F.linear(self.ln(x), self.tok.weight)  # logits (batch, time, vocab)


class TinyGPTTask(TextFileTask):
    steps, batch_size, eval_every = 300, 16, 50

    def model(self, data: TextSplits) -> nn.Module:
        return TinyGPT(len(data.vocab), self.block_size)


def make_task() -> TinyGPTTask:
    return TinyGPTTask(f"text:{TEXT}", TEXT, level="char", block_size=32)
