"""A Hugging Face ``transformers`` model, built from a config (random initial weights, nothing downloaded), on the
text-file task: what a user with a ``transformers`` model does.

    pip install transformers          # not a dependency of optimlab
    optimlab compare --task examples/hf_gpt2.py:make_task --optimizers adamw lion --seeds 2 \\
        --steps 100 --budget 2 --out runs/hf-gpt2

Byte-level text (256 symbols) from ``$TINY_GPT_TEXT``, else this repository's README.md. Without ``transformers``
the factory says so in one line (``optimlab: error: ...``) instead of failing in a worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from optimlab.lab.catalog.generic import TextFileTask
from optimlab.lab.catalog.tasks import TextSplits

TEXT = Path(os.environ.get("TINY_GPT_TEXT", Path(__file__).resolve().parents[1] / "README.md"))


class Logits(nn.Module):
    """The model's forward returns an output object; the lab's loss wants the logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx).logits


class HFGPT2Task(TextFileTask):
    steps, batch_size, eval_every = 200, 16, 50

    def model(self, data: TextSplits) -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=len(data.vocab), n_positions=self.block_size, n_embd=64, n_layer=2, n_head=4,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                            eos_token_id=0)
        return Logits(GPT2LMHeadModel(config))  # weights from torch's RNG, which the run seeded


def make_task() -> HFGPT2Task:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError("examples/hf_gpt2.py needs transformers (pip install transformers); it builds the model "
                          "from a config and downloads nothing") from None
    return HFGPT2Task(f"text:{TEXT}@level=byte", TEXT, level="byte", block_size=32)
