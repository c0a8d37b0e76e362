"""Cache-blocked execution of a list (``foreach``) update rule: the eager fast path that needs no compiler.

Since :mod:`optimlab.core.kernels`, CPU rules run as one compiled loop where a C compiler exists; this module is the
path for everything else (no compiler, ``OPTIMLAB_KERNELS=0``, bfloat16/float16 parameters, non-contiguous
tensors) and, with torch's fused kernels, the one that needs nothing but torch.

Why. An optimizer step is bound by memory bandwidth. A rule written against ``torch._foreach_*`` runs each
operation over *all* tensors before the next one starts, so every intermediate (``sqrt(v)``, the update,
...) is a model-sized temporary that travels to DRAM and back, and on CPU glibc returns those temporaries to
the OS and page-faults them in again every step. Running the *same* rule on blocks of about one million
elements (views of the flattened tensors) keeps the intermediates in cache: DRAM then sees close to the
rule's minimal traffic.

Measured (torch 2.13 CPU, 2 threads, AMD EPYC with 2 MiB L2 per core and 32 MiB L3, 25.05M fp32 parameters
in 150 tensors: 2x[8192,1024], 4x[1024,1024], 8x[512,768], 16x[128,384], 20x[32,16,3,3], 50x[1024], 50x[96];
the in-place-add probe gave 55-62 GB/s, an Adam bound of 11.5-12.8 ms; the machine was shared, so take the
ratios):

=========================================  ===============  =================  =====================
Adam, written as 7 foreach ops              default malloc   glibc tunables(*)  ``torch._fused_adam_``
=========================================  ===============  =================  =====================
foreach over the 150 tensors                60 ms, 5.2x      41 ms, 3.3-3.7x    12.7 ms, 1.1x
foreach, each op over 1M-element chunks     37 ms, 3.2x      34 ms, 2.7x
blocked: whole rule per 1M-element block    20.5 ms, 1.7x    21 ms, 1.85x
blocked, 256K-element blocks                22 ms            21 ms
blocked, 64K-element blocks                 (slower: op dispatch, about 390 blocks)
=========================================  ===============  =================  =====================

AdaBound-like rule (11 foreach ops, with clamps): plain foreach 63-76 ms (3.4-6.7x), blocked (1M) 24 ms
(2.1x, 512K blocks 23 ms). (*) ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736
MALLOC_TOP_PAD_=268435456``. Blocking removes the dependence on the allocator: its temporaries are
block-sized. Splitting each op into chunks *without* running the whole rule per block gains little (row 2):
the point is that all of a block's operations run while its data is in cache. For comparison,
``torch.compile`` (inductor, C++) of the same foreach rule over the 150 tensors ran at about 1.5x, but its
cold first step took 308 s on the (loaded) test machine, far over a 10 s start-up budget; the single-tensor
rule compiled with ``dynamic=True`` and called on 164 pieces of <= 1M elements ran at 1.86x (48 ms; 35-50 us
per compiled call; first step 6.3 s with a warm cache, 44 s cold).

optimlab's own rules (``Optimizer._update`` on lists, state after one step), plain list path -> blocked
(1M), same run: Adam 52-118 -> 23-28 ms, AdamW 52-62 -> 26-29 ms, AdaBound 64 -> 26 ms, RMSprop 42-45 ->
16-17 ms; ``torch._fused_adam_`` on the same tensors 11.2 ms. Building the plan costs 1-8 ms per step for
150 tensors: cache it while the parameters and state tensors stay the same.

Where torch has a fused kernel for the same algorithm, blocking cannot match it (blocked Adam is about 2x
``torch._fused_adam_``, which ran at 1.06-1.1x the bound): ``torch._fused_sgd_``, ``_fused_adam_`` (L2 decay,
``amsgrad`` with torch's max-of-v convention), ``_fused_adamw_`` and ``_fused_adagrad_`` run on CPU, accept
lists of chunk views (bit-identical to whole tensors) and of non-contiguous tensors *only where every gradient and
state tensor has its parameter's shape and strides and the parameter is non-overlapping and dense*: the kernels
read each tensor's memory as if it were laid out as its parameter, over the parameter's ``numel`` elements, so a
transposed or broadcast (stride 0) gradient gives a wrong step or an out-of-bounds read, and a smaller state an
out-of-bounds write (:func:`same_layout` is that condition; the ``fused`` row of :mod:`optimlab.core.dispatch`
checks it). They take a 0-d tensor ``lr`` (``.tensor_lr`` overload), and do not write into the gradients unless
``grad_scale`` is given; ``state_steps`` must be incremented by the caller before the call.

Only for element-wise rules that do not mutate 0-d state. A rule that reduces over a whole tensor (LAMB's
and LARS's trust ratios, norms, any ``first()`` of a list) must not be blocked: its per-tensor norms would
become per-block norms. Such rules can run in two blocked phases (accumulate squared norms per tensor, then
apply), which this module does not do. A rule that advances a 0-d state tensor in place (NAdam's
``mu_product``) would advance it once per block: such classes must either update the scalar outside the rule
or not be blocked.

How the base class uses it (the ``blocked`` row of :mod:`optimlab.core.dispatch`): on the list path, when the
class declares its rule element-wise (e.g. a class attribute ``_elementwise = True``), no new state is created by
this step (state exists already), and the bucket is large (``sum(numel) >= 4 * block_elems``), replace the single call
``self._update(ps, gs, s, h)`` by::

    plan = block_plan([ps, gs, *tensor_state_lists], block_elems)
    for ps_b, gs_b, *st_b in plan:
        self._update(ps_b, gs_b, {**scalar_state, **dict(zip(tensor_keys, st_b))}, h)

(``maximize``'s ``neg`` then also runs per block, inside the rule or just before it, so it stops allocating
a model-sized copy of the gradients). Views share storage with the parameters and state, so in-place updates
land where they belong, and the results are bit-identical to the unblocked list path: element-wise kernels
compute each element independently of how the tensor is split (checked for optimlab's Adam and AdaBound
rules: blocked and unblocked parameters ``torch.equal`` after a step on the 150-tensor model above).
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

