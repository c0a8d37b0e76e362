"""A list (``foreach``) rule run eagerly on cache-sized blocks of views: the fast path that needs nothing but torch.

An optimizer step is bound by memory bandwidth. A rule written against ``torch._foreach_*`` runs each operation over
*all* tensors before the next one starts, so every intermediate (``sqrt(v)``, the update, ...) is a model-sized
temporary that travels to DRAM and back. Run on blocks of about :data:`DEFAULT_BLOCK_ELEMS` elements (flat views of
the parameters, gradients and state; small tensors packed together), the same rule keeps its intermediates in cache.
On CPU this is the path where no compiled loop runs (no C compiler, ``OPTIMLAB_KERNELS=0``, bfloat16/float16
parameters, non-contiguous tensors); measurements are in ``benchmarks/README.md``.

* :func:`block_plan` splits aligned lists of tensors into such blocks, and :func:`blockable` says whether a bucket is
  worth it (plain tensors, at least :data:`MIN_BLOCKED_ELEMS` elements). The ``blocked`` row of
  :mod:`optimlab.core.dispatch` runs an element-wise rule once per block. Views share storage with the tensors, so
  in-place updates land where they belong, and an element-wise rule gives exactly the unblocked list path's result.
  A rule that reduces over a tensor (a norm, a ``first()`` of a list) or advances a 0-d state tensor in place
  (NAdam's ``mu_product``) must not run so: its norms would become per-block norms, its state would advance once
  per block.
* Such reductions run in two blocked passes: :func:`owned_block_plan` also gives, for every view, the tensor it
  belongs to, and :func:`add_piece_sq_norms_` / :func:`add_piece_dots_` sum squared norms and dot products over a
  tensor's pieces in the first pass; the second pass applies the finished per-tensor numbers. LAMB, LARS, MARS and
  SWATS step so in their own ``_run_lists`` (the ``custom`` row).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .tensors import is_plain

__all__ = [
    "DEFAULT_BLOCK_ELEMS",
    "MIN_BLOCKED_ELEMS",
    "add_piece_dots_",
    "add_piece_sq_norms_",
    "block_plan",
    "blockable",
    "owned_block_plan",
]

#: Elements per block: 512K fp32 elements are 2 MiB per operand. Measured with optimlab's rules on the 25M-parameter
#: benchmark model (2 threads, probe 64.5 GB/s), ms per step for blocks of 128K / 256K / 512K / 1M / 2M elements:
#: RMSprop 22.5 / 19.5 / 17.5 / 18.0 / 38.7, NAdam 31.2 / 27.6 / 27.6 / 35.2 / 40.4,
#: AdaBound 30.4 / 26.7 / 26.3 / 27.8 / 34.1. Smaller blocks pay per-op dispatch, larger ones leave the caches.
DEFAULT_BLOCK_ELEMS = 1 << 19

#: Below this many elements a bucket runs unblocked: blocking only pays once temporaries exceed the caches.
MIN_BLOCKED_ELEMS = 4 * DEFAULT_BLOCK_ELEMS


def blockable(tensors: Sequence[Tensor]) -> bool:
    """Worth running on cache-sized blocks: plain tensors, at least :data:`MIN_BLOCKED_ELEMS` elements in all."""
    return is_plain(tensors) and sum(t.numel() for t in tensors) >= MIN_BLOCKED_ELEMS


def add_piece_sq_norms_(out: Tensor, pieces: Sequence[Tensor], owners: Sequence[int]) -> None:
    """``out[owner] += ||piece||^2`` for each piece of a block: per-tensor squared norms summed over pieces."""
    sq = torch.stack(torch._foreach_norm(list(pieces))).to(out.dtype) ** 2
    out.index_add_(0, torch.tensor(owners, device=out.device), sq)


def add_piece_dots_(out: Tensor, a: Sequence[Tensor], b: Sequence[Tensor], owners: Sequence[int]) -> None:
    """``out[owner] += a_piece . b_piece`` for each piece of a block: per-tensor inner products, the products in the
    pieces' dtype and their sum in ``out``'s dtype (float64 for SWATS's criterion, as the compiled loop sums them)."""
    dots = torch.stack([torch.sum(x * y, dtype=out.dtype) for x, y in zip(a, b, strict=True)])
    out.index_add_(0, torch.tensor(owners, device=out.device), dots)


def _pieces(t: Tensor, block_elems: int) -> list[Tensor]:
    """Flat views of ``t`` of at most ``block_elems`` elements; a non-contiguous tensor stays whole."""
    if not t.is_contiguous() or t.numel() <= block_elems:
        return [t]
    return list(t.view(-1).split(block_elems))


def block_plan(lists: Sequence[Sequence[Tensor]],
               block_elems: int | None = None) -> list[list[list[Tensor]]]:
    """Split aligned lists of tensors into blocks of aligned lists of views.

    ``lists[j][i]`` must have the same shape for every ``j`` (a parameter, its gradient, its state tensors).
    The result is a list of blocks; block ``b`` is ``[views of lists[0], views of lists[1], ...]``, each
    holding at most ``block_elems`` elements in all (a non-contiguous tensor larger than that forms a block of
    its own). Small tensors are packed together, so a model with many vectors costs few blocks.
    """
    return [views for views, _ in owned_block_plan(lists, block_elems)]


def owned_block_plan(lists: Sequence[Sequence[Tensor]],
                     block_elems: int | None = None) -> list[tuple[list[list[Tensor]], list[int]]]:
    """:func:`block_plan`, and for each block the index (in ``lists[0]``) of the tensor each view belongs to,
    so that per-tensor reductions (norms, dot products) can be summed over a tensor's pieces."""
    block_elems = DEFAULT_BLOCK_ELEMS if block_elems is None else block_elems
    if block_elems < 1:
        raise ValueError(f"block_elems must be a positive int, got {block_elems}")
    if not lists:
        return []
    n = len(lists[0])
    for j, lst in enumerate(lists):
        if len(lst) != n:
            raise ValueError(f"lists[{j}] has {len(lst)} tensors, lists[0] has {n}")
    blocks: list[tuple[list[list[Tensor]], list[int]]] = []
    current: list[list[Tensor]] = [[] for _ in lists]
    owners: list[int] = []
    filled = 0
    for i in range(n):
        shape = lists[0][i].shape
        for j in range(1, len(lists)):
            if lists[j][i].shape != shape:
                raise ValueError(f"lists[{j}][{i}] has shape {tuple(lists[j][i].shape)}, "
                                 f"expected {tuple(shape)}")
        contiguous = all(lst[i].is_contiguous() for lst in lists)
        split = [_pieces(lst[i], block_elems) if contiguous else [lst[i]] for lst in lists]
        for k in range(len(split[0])):
            size = split[0][k].numel()
            if filled and filled + size > block_elems:
                blocks.append((current, owners))
                current, owners, filled = [[] for _ in lists], [], 0
            for j in range(len(lists)):
                current[j].append(split[j][k])
            owners.append(i)
            filled += size
    if filled or current[0]:
        blocks.append((current, owners))
    return blocks

