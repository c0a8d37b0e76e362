"""A model's weights as a list of tensors: checked conversion, moving a model to a point and back, dot products.

Every diagnostic works on the model's *trainable* parameters (``requires_grad``), in ``model.parameters()``
order. Weights given by the caller may be a ``state_dict``-like mapping (parameter names; buffer names are
accepted and ignored) or a sequence of tensors in parameter order; :func:`as_weights` checks names and shapes
and raises a clear error on a mismatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core.snapshot import Snapshot
from ..core.validation import fail

__all__ = [
    "Weights",
    "trainable_parameters",
    "check_model",
    "as_weights",
    "current_weights",
    "set_point",
    "restored",
    "dot",
    "sq_norm",
    "layer_dots",
]

Weights = Mapping[str, Tensor] | Sequence[Tensor]


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``, in ``model.parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def check_model(model: Any, name: str = "model") -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters of ``model``; TypeError for a non-module, ValueError for a model without any."""
    if not isinstance(model, nn.Module):
        fail(name, type(model).__name__, "a torch.nn.Module", TypeError)
    named = trainable_parameters(model)
    if not named:
        fail(name, type(model).__name__, "a module with at least one trainable parameter (it has none)")
    return named


def as_weights(model: nn.Module, weights: Any, name: str = "weights") -> list[Tensor]:
    """``weights`` as a list of tensors matching ``model``'s trainable parameters (device and dtype included).

    A mapping must hold every parameter name; other keys must be names of the model's buffers (a full
    ``state_dict``) and are ignored. A sequence must have one tensor per parameter. Shapes must match exactly.
    The tensors returned are detached (copies only where a dtype or device conversion was needed).
    """
    named = check_model(model)
    if isinstance(weights, Mapping):
        known = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        unknown = [k for k in weights if k not in known]
        missing = [n for n, _ in named if n not in weights]
        if missing:
            fail(name, f"a mapping without {missing[:3]}{' ...' if len(missing) > 3 else ''}",
                 f"every parameter name of the model ({len(named)} parameters)")
        if unknown:
            fail(name, f"a mapping with unknown keys {unknown[:3]}{' ...' if len(unknown) > 3 else ''}",
                 "names of the model's parameters and buffers (a state_dict of the same architecture)")
        values = [(n, weights[n]) for n, _ in named]
    elif isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        if len(weights) != len(named):
            fail(name, f"a sequence of {len(weights)} tensors", f"one tensor per trainable parameter ({len(named)})")
        values = [(n, w) for (n, _), w in zip(named, weights, strict=True)]
    else:
        fail(name, type(weights).__name__, "a state_dict (mapping) or a sequence of tensors", TypeError)
    out = []
    for (n, value), (_, p) in zip(values, named, strict=True):
        if not isinstance(value, Tensor):
            fail(f"{name}[{n!r}]", type(value).__name__, "a tensor", TypeError)
        if tuple(value.shape) != tuple(p.shape):
            fail(f"{name}[{n!r}]", f"shape {tuple(value.shape)}", f"shape {tuple(p.shape)} (the model's parameter)")
        out.append(value.detach().to(device=p.device, dtype=p.dtype))
    return out


def current_weights(model: nn.Module) -> list[Tensor]:
    """Copies of ``model``'s trainable parameters."""
    return [p.detach().clone() for _, p in check_model(model)]


@torch.no_grad()
def set_point(params: Sequence[Tensor], center: Sequence[Tensor], directions: Sequence[Sequence[Tensor]] = (),
              coefficients: Sequence[float] = ()) -> None:
    r"""Write :math:`\theta = c + \sum_i a_i d_i` into ``params`` in place (``c`` = ``center``)."""
    params = list(params)
    torch._foreach_copy_(params, list(center))
    for d, a in zip(directions, coefficients, strict=True):
        if a != 0:
            torch._foreach_add_(params, list(d), alpha=float(a))


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[None]:
    """Inside the block the model may be moved and re-moded freely: on exit (also on an exception) every
    parameter, every buffer (BatchNorm statistics) and every module's train/eval mode are put back bit for bit."""
    snapshot = Snapshot([*model.parameters(), *model.buffers()], model.modules())
    try:
        yield
    finally:
        snapshot.restore()


def _flat(t: Tensor) -> Tensor:
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.reshape(-1)


def layer_dots(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Per-tensor dot products :math:`\\langle a_l, b_l\\rangle` (complex tensors as pairs of reals), in float64."""
    if len(a) == 0:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack([torch.dot(_flat(x), _flat(y)).to(torch.float64) for x, y in zip(a, b, strict=True)])


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    r""":math:`\langle a, b\rangle` over whole lists of tensors (the model as one vector)."""
    return float(layer_dots(a, b).sum())


def sq_norm(a: Sequence[Tensor]) -> float:
    r""":math:`\|a\|^2` over a whole list of tensors."""
    return dot(a, a)
