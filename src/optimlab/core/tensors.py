"""What the fast paths ask of a bucket's tensors: plain types, torch's fused kernels, shapes and layout.

* :func:`is_plain`: plain tensors and parameters (a DTensor or another subclass takes the generic path);
* :func:`fused_kernels_support`: where torch's ``_fused_*_`` optimizer kernels exist;
* :func:`check_shapes`: every gradient and state tensor has its parameter's shape, else ``RuntimeError`` (every
  path that takes raw pointers or assumes sizes calls it first);
* :func:`same_layout`: and its parameter's strides, the parameters non-overlapping and dense (what torch's fused
  kernels assume).

torch's fused kernels (``torch._fused_sgd_``, ``_fused_adam_`` with L2 decay and ``amsgrad`` by torch's max-of-v
convention, ``_fused_adamw_``, ``_fused_adagrad_``) run on CPU and CUDA and accept lists of chunk views
(bit-identical to whole tensors) and of non-contiguous tensors *only where every gradient and state tensor has its
parameter's shape and strides and the parameter is non-overlapping and dense*: they read each tensor's memory as if
it were laid out as its parameter, over the parameter's ``numel`` elements, so a transposed or broadcast (stride 0)
gradient gives a wrong step or an out-of-bounds read, and a smaller state an out-of-bounds write. That is
:func:`same_layout`, checked by the ``fused`` row of :mod:`optimlab.core.dispatch`. They take a 0-d tensor ``lr``
(``.tensor_lr`` overload), do not write into the gradients unless ``grad_scale`` is given, and expect
``state_steps`` incremented by the caller before the call.

Imports only torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torch.nn import Parameter

__all__ = ["check_shapes", "fused_kernels_support", "is_plain", "same_layout"]

#: The types every fast path takes: plain tensors and parameters (not DTensor or other subclasses).
_PLAIN = frozenset((Tensor, Parameter))


def is_plain(tensors: Sequence[Tensor]) -> bool:
    """Plain tensors and parameters, not DTensor or other subclasses (whose views and kernels differ)."""
    return set(map(type, tensors)) <= _PLAIN  # one C-level pass: this runs every step


def fused_kernels_support(tensors: Sequence[Tensor]) -> bool:
    """torch's ``_fused_*_`` optimizer kernels exist for dense floating plain tensors on CPU and CUDA (whether a
    bucket's gradients and state are laid out as its parameters is :func:`same_layout`, checked by the caller)."""
    t = tensors[0]
    return t.device.type in ("cpu", "cuda") and t.is_floating_point() and is_plain(tensors)


def _shape_mismatch(lists: Sequence[Sequence[Tensor]]) -> tuple[int, int] | None:
    """``(j, i)`` of the first ``lists[j][i]`` whose shape is not ``lists[0][i]``'s (or a list of another length:
    ``i`` is then the first index one of them lacks), else None."""
    sizes = list(map(Tensor.size, lists[0]))
    for j in range(1, len(lists)):
        if list(map(Tensor.size, lists[j])) != sizes:  # one C-level pass per list: this runs every step
            for i, (a, b) in enumerate(zip(lists[j], lists[0], strict=False)):
                if a.shape != b.shape:
                    return j, i
            return j, min(len(lists[j]), len(sizes))
    return None


def check_shapes(lists: Sequence[Sequence[Tensor]], owner: str = "optimlab",
                 names: Sequence[str] = ()) -> None:
    """Raise ``RuntimeError`` unless every ``lists[j][i]`` has the shape of ``lists[0][i]`` (its parameter).

    Every path that takes raw pointers or assumes sizes (torch's fused kernels, the compiled and Triton kernels,
    blocked views) calls this first: a state tensor of another size than its parameter (a checkpoint of a resized
    layer, ``p.data = bigger``) must raise, as torch's ops do, not write out of bounds. ``names[j - 1]`` names
    list ``j`` in the message (``"gradient"``, a state key); ``owner`` is the optimizer's name."""
    found = _shape_mismatch(lists)
    if found is None:
        return
    j, i = found
    what = names[j - 1] if j - 1 < len(names) else f"operand {j}"
    what = what if what == "gradient" else f"state {what!r}"
    if i >= len(lists[j]) or i >= len(lists[0]):
        raise RuntimeError(f"{owner}: the list of {what} has {len(lists[j])} tensors, the parameters "
                           f"{len(lists[0])}")
    raise RuntimeError(
        f"{owner}: the {what} of a parameter of shape {tuple(lists[0][i].shape)} has shape "
        f"{tuple(lists[j][i].shape)} (tensor {i} of its bucket); it must have its parameter's shape. A checkpoint "
        "of another model, or a parameter resized with p.data = ..., leaves state of the old size: load a matching "
        "checkpoint, or drop that parameter's state (del optimizer.state[p])")


def _non_overlapping_and_dense(t: Tensor) -> bool:
    """Its elements fill one block of memory without gaps or repeats, in some order of its dimensions
    (contiguous, transposed, channels-last; not a slice with gaps, not a broadcast)."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda d: d[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(lists: Sequence[Sequence[Tensor]], sizes_checked: bool = False) -> bool:
    """Every ``lists[j][i]`` has the shape and strides of ``lists[0][i]`` (its parameter), and the parameters are
    non-overlapping and dense: what torch's fused kernels assume (they read every tensor's memory as laid out as
    its parameter). Gradients set by hand can differ (``torch.autograd.grad`` returns a broadcast, stride-0 tensor
    for ``w.sum()``; a transposed computation a transposed one); ``backward()`` obeys the layout contract.
    ``sizes_checked``: the caller has run :func:`check_shapes` on these lists (the strides remain to compare)."""
    if not sizes_checked and _shape_mismatch(lists) is not None:
        return False
    strides = list(map(Tensor.stride, lists[0]))
    if any(list(map(Tensor.stride, lst)) != strides for lst in lists[1:]):
        return False
    return all(map(Tensor.is_contiguous, lists[0])) or all(map(_non_overlapping_and_dense, lists[0]))
