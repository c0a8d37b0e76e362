"""A copy of some tensors' values (and of modules' train/eval modes), written back bit for bit.

What :func:`optimlab.diagnostics.weights.restored`, the wrappers' swapped-in weights
(``OptimizerWrapper._swapped_params``) and :func:`optimlab.lr_find` each need: the values of parameters and
buffers put back in place, into the same tensor objects, so outside references stay valid. Imports only torch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["Snapshot"]


class Snapshot:
    """Copies of ``tensors`` (each tensor once, however often it is listed) and the ``training`` flag of
    ``modules``, taken now; :meth:`restore` copies the values back into the same tensors and sets the flags back."""

    __slots__ = ("modes", "tensors")

    def __init__(self, tensors: Iterable[Tensor], modules: Iterable[nn.Module] = ()) -> None:
        unique: dict[int, Tensor] = {}
        for t in tensors:
            unique.setdefault(id(t), t)
        self.tensors = [(t, t.detach().clone()) for t in unique.values()]
        self.modes = [(m, m.training) for m in modules]

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self.tensors:
                t.copy_(saved)
        for m, mode in self.modes:
            m.training = mode
