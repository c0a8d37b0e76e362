"""Element-wise operations on a tensor *or* a list of tensors.

Every update rule in optimlab is written once, against these functions. Called with single tensors it is the plain
per-parameter loop that reads like the paper (the reference path); called with lists it runs on torch's ``_foreach_*``
kernels (the fast path). Because both paths execute the same rule, they cannot drift apart; the test matrix checks
that they agree to round-off.

Conventions: a trailing underscore means in place on the first argument, as in torch. Scalars are Python numbers;
``mul_`` and ``div_`` also accept a tensor (0-d) or, on the list path, a list of 0-d tensors, one per tensor.

Under autograd (``differentiable=True``: the plain loop with gradients recorded) an operation whose backward keeps
a tensor (its result, as ``sqrt`` and ``reciprocal``, or an operand, as ``mul``, ``div``, ``addcmul``, ``addcdiv``,
``maximum``) keeps a copy, so the rule may go on to modify the original in place (a temporary this step, a state
tensor the next step), as torch's own differentiable paths clone (``param.addcdiv_(exp_avg.clone(), denom)``).
Outside autograd (every other step) these are the plain kernels, with no copy.
Comparisons (``gt``, ``ge``, ``lt``, ``le``) return boolean masks, which ``where`` consumes (sign-based rules such
as Rprop's step-size adaptation); torch has no ``_foreach_`` form of these, so on lists they loop over the tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "TensorOrList",
    "abs",
    "add",
    "add_",
    "add_scalar",
    "add_scalar_",
    "addcdiv_",
    "addcmul_",
    "clamp_",
    "clone",
    "copy_",
    "div",
    "div_",
    "first",
    "ge",
    "gt",
    "le",
    "lerp_",
    "lt",
    "maximum_",
    "mul",
    "mul_",
    "neg",
    "norms",
    "reciprocal_",
    "sign",
    "sqrt",
    "where",
]

TensorOrList = Tensor | list[Tensor]
Scalar = float | Tensor | Sequence[Tensor]


def _is_list(x: TensorOrList) -> bool:
    return isinstance(x, list | tuple)


def _recorded(*xs: object) -> bool:
    """Autograd is recording an operation on these tensors (a differentiable step)."""
    return torch.is_grad_enabled() and any(isinstance(x, Tensor) and x.requires_grad for x in xs)


def _kept(x: object) -> object:
    """An operand autograd will keep: a copy under autograd (see the module docstring), else ``x`` itself."""
    return x.clone() if _recorded(x) else x  # type: ignore[union-attr]


def neg(x: TensorOrList) -> TensorOrList:
    """``-x`` as a new tensor (or list)."""
    return list(torch._foreach_neg(x)) if _is_list(x) else torch.neg(x)


def clone(x: TensorOrList) -> TensorOrList:
    """A copy of ``x`` (or of each tensor)."""
    return [t.clone() for t in x] if _is_list(x) else x.clone()


def add(x: TensorOrList, y: TensorOrList, alpha: float = 1.0) -> TensorOrList:
    """``x + alpha * y`` as a new tensor (or list)."""
    return list(torch._foreach_add(x, y, alpha=alpha)) if _is_list(x) else torch.add(x, y, alpha=alpha)


def add_(x: TensorOrList, y: TensorOrList, alpha: float = 1.0) -> TensorOrList:
    """``x += alpha * y``."""
    if _is_list(x):
        torch._foreach_add_(x, y, alpha=alpha)
    else:
        x.add_(y, alpha=alpha)
    return x


def add_scalar(x: TensorOrList, s: float) -> TensorOrList:
    """``x + s`` for a scalar ``s``, as a new tensor (or list)."""
    return list(torch._foreach_add(x, s)) if _is_list(x) else torch.add(x, s)


def copy_(x: TensorOrList, y: TensorOrList) -> TensorOrList:
    """``x = y`` element-wise, in place (into ``x``'s memory)."""
    if _is_list(x):
        if all(type(t) is Tensor or isinstance(t, torch.nn.Parameter) for t in x):
            torch._foreach_copy_(x, y)
        else:  # DTensor shards: no sharding rule for _foreach_copy_
            for a, b in zip(x, y, strict=True):
                a.copy_(b)
    else:
        x.copy_(y)
    return x


def add_scalar_(x: TensorOrList, s: float) -> TensorOrList:
    """``x += s`` for a scalar ``s``."""
    if _is_list(x):
        torch._foreach_add_(x, s)
    else:
        x.add_(s)
    return x


def mul(x: TensorOrList, s: Scalar | TensorOrList) -> TensorOrList:
    """``x * s`` as a new tensor (or list); ``s`` a scalar, a tensor, or a list of tensors."""
    return list(torch._foreach_mul(x, s)) if _is_list(x) else torch.mul(_kept(x), _kept(s))


def mul_(x: TensorOrList, s: Scalar | TensorOrList) -> TensorOrList:
    """``x *= s``; ``s`` a scalar, a 0-d tensor, or (list path) a list of tensors."""
    if _is_list(x):
        torch._foreach_mul_(x, s)
    else:
        x.mul_(_kept(s))
    return x


def div(x: TensorOrList, s: Scalar | TensorOrList) -> TensorOrList:
    """``x / s`` as a new tensor (or list)."""
    return list(torch._foreach_div(x, s)) if _is_list(x) else torch.div(_kept(x), _kept(s))


def div_(x: TensorOrList, s: Scalar | TensorOrList) -> TensorOrList:
    """``x /= s``."""
    if _is_list(x):
        torch._foreach_div_(x, s)
    else:
        x.div_(_kept(s))
    return x


def lerp_(x: TensorOrList, y: TensorOrList, weight: float) -> TensorOrList:
    """``x += weight * (y - x)``: an exponential moving average with ``weight = 1 - beta``."""
    if _is_list(x):
        torch._foreach_lerp_(x, y, weight)
    else:
        x.lerp_(y, weight)
    return x


def addcmul_(x: TensorOrList, a: TensorOrList, b: TensorOrList, value: float = 1.0) -> TensorOrList:
    """``x += value * a * b``."""
    if _is_list(x):
        torch._foreach_addcmul_(x, a, b, value=value)
    else:
        x.addcmul_(_kept(a), _kept(b), value=value)
    return x


def addcdiv_(x: TensorOrList, a: TensorOrList, b: TensorOrList, value: float = 1.0) -> TensorOrList:
    """``x += value * a / b``."""
    if _is_list(x):
        torch._foreach_addcdiv_(x, a, b, value=value)
    else:
        x.addcdiv_(_kept(a), _kept(b), value=value)
    return x


def sqrt(x: TensorOrList) -> TensorOrList:
    """``sqrt(x)`` as a new tensor (or list); under autograd a copy, which the rule may then modify in place."""
    if _is_list(x):
        return list(torch._foreach_sqrt(x))
    out = torch.sqrt(x)
    return out.clone() if _recorded(out) else out  # sqrt's backward keeps its result


def maximum_(x: TensorOrList, y: TensorOrList) -> TensorOrList:
    """``x = max(x, y)`` element-wise."""
    if _is_list(x):
        torch._foreach_maximum_(x, y)
    elif _recorded(x, y):  # out= does not record; maximum's backward keeps its inputs, so compare against a copy
        x.copy_(torch.maximum(x.clone(), _kept(y)))
    else:
        torch.maximum(x, y, out=x)
    return x


def clamp_(x: TensorOrList, lo: float | None, hi: float | None) -> TensorOrList:
    """Clamp ``x`` to ``[lo, hi]`` in place (``None``: no bound on that side)."""
    if _is_list(x):
        if lo is not None:
            torch._foreach_clamp_min_(x, lo)
        if hi is not None:
            torch._foreach_clamp_max_(x, hi)
    else:
        x.clamp_(lo, hi)
    return x


def norms(x: TensorOrList) -> TensorOrList:
    """The l2 norm of each tensor, as 0-d tensors (never ``.item()``: a DTensor shard's norm stays a DTensor)."""
    if _is_list(x):
        return list(torch._foreach_norm(x))
    return torch.linalg.vector_norm(x)


def reciprocal_(x: TensorOrList) -> TensorOrList:
    """``x = 1 / x`` in place."""
    if _is_list(x):
        torch._foreach_reciprocal_(x)
    elif _recorded(x):  # reciprocal's backward keeps its result: keep it apart from x, which the rule may modify
        x.copy_(torch.reciprocal(x))
    else:
        x.reciprocal_()
    return x


def abs(x: TensorOrList) -> TensorOrList:  # noqa: A001 - torch's name
    """``|x|`` as a new tensor (or list)."""
    return list(torch._foreach_abs(x)) if _is_list(x) else torch.abs(x)


def sign(x: TensorOrList) -> TensorOrList:
    """``sign(x)`` in {-1, 0, 1} as a new tensor (or list); as torch: ``sign(-0.0) = sign(NaN) = 0``."""
    return list(torch._foreach_sign(x)) if _is_list(x) else torch.sign(x)


def _compare(fn: object, x: TensorOrList, y: float | TensorOrList) -> TensorOrList:
    if _is_list(x):
        ys = y if _is_list(y) else [y] * len(x)  # type: ignore[list-item]
        return [fn(a, b) for a, b in zip(x, ys, strict=True)]  # type: ignore[operator]
    return fn(x, y)  # type: ignore[operator]


def gt(x: TensorOrList, y: float | TensorOrList) -> TensorOrList:
    """The mask ``x > y`` (``y`` a scalar or a tensor/list like ``x``); NaN compares false."""
    return _compare(torch.gt, x, y)


def ge(x: TensorOrList, y: float | TensorOrList) -> TensorOrList:
    """The mask ``x >= y``; NaN compares false."""
    return _compare(torch.ge, x, y)


def lt(x: TensorOrList, y: float | TensorOrList) -> TensorOrList:
    """The mask ``x < y``; NaN compares false."""
    return _compare(torch.lt, x, y)


def le(x: TensorOrList, y: float | TensorOrList) -> TensorOrList:
    """The mask ``x <= y``; NaN compares false."""
    return _compare(torch.le, x, y)


def where(mask: TensorOrList, a: float | TensorOrList, b: float | TensorOrList) -> TensorOrList:
    """``a`` where ``mask`` holds, else ``b``, as a new tensor (or list). ``a`` or ``b`` may be a scalar, not both:
    ``torch.where`` of two Python numbers gives a tensor of the default dtype (float32), whatever the rule's dtype."""
    if isinstance(a, int | float) and isinstance(b, int | float):
        raise TypeError("where: a or b must be a tensor (two scalars would give a default-dtype tensor)")
    if _is_list(mask):
        n = len(mask)
        aa = a if _is_list(a) else [a] * n  # type: ignore[list-item]
        bb = b if _is_list(b) else [b] * n  # type: ignore[list-item]
        return [torch.where(m, x, y) for m, x, y in zip(mask, aa, bb, strict=True)]
    return torch.where(mask, a, b)  # type: ignore[arg-type]


def first(x: TensorOrList) -> Tensor:
    """The first tensor of a list (or the tensor itself): reads a bucket-wide 0-d state value."""
    return x[0] if _is_list(x) else x
