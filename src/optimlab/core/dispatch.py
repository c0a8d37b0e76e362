"""How a bucket of parameters is stepped: two ordered tables of ``(path, condition, runner)`` rows.

The base class (:class:`optimlab.core.base.Optimizer`) groups a step's parameters into buckets (same device, dtype,
state layout and 0-d state values) and hands each bucket to :func:`step_bucket`. The first row whose condition holds
runs; a runner may *decline* (return False, having touched nothing), and then the next row whose condition holds is
tried. The last row of each table always applies, so every bucket is stepped exactly once. The plain loop is the
reference: every other path must give its trajectory to round-off (``tests/test_every_optimizer.py`` forces each
path with :func:`only` and compares it with the plain loop).

For most classes the tables are the whole choice. Some choose part of it themselves:

* the ``custom`` row hands the bucket to a class that overrides ``_run_lists`` (LAMB, LARS, SWATS, MARS, Adafactor,
  Prodigy: rules with a reduction over each tensor), and that class's own small dispatcher picks the path: two
  passes as compiled loops (:mod:`optimlab.core.kernels`; not Adafactor), else two passes over cache-sized blocks
  (:func:`optimlab.core.tiling.owned_block_plan`; LAMB, LARS, SWATS, MARS) or over the blocks of
  :func:`~optimlab.core.tiling.block_plan` (Prodigy), else whole lists: LAMB, LARS and SWATS (and MARS for its
  AdamW tensors) come back to this table through ``super()._run_lists`` (``custom=False``), MARS and Prodigy run
  their rule on whole lists themselves, and Adafactor steps one tensor at a time (matrices in chunks of rows);
* the matrix optimizers (Muon, SOAP, Shampoo) step their matrix groups outside the tables:
  ``MatrixOptimizer._step_group`` (:mod:`optimlab.algorithms._matrix_step`) sends them to the class's
  ``_step_matrices``, which reads ``foreach`` itself (Muon: a loop over the matrices or same-shape batches; SOAP:
  the reference's operations or its 2-D fast path); Muon's AdamW groups take the tables;
* Prodigy also overrides ``step()`` (a first pass over every group for its global D estimate, then the update) and
  forms its own buckets, which it steps by :func:`step_bucket` (or the plain loop, ``foreach=False``).

Per parameter (:data:`ENTRY_ROWS`, decided in ``Optimizer._step_group``):

================  ====================================================================================
path              when
================  ====================================================================================
``sparse``        the gradient is sparse (classes with ``_supports_sparse``; else ``RuntimeError``):
                  ``_sparse_update``, one tensor at a time
``differentiable``  ``differentiable=True``: the plain loop with autograd recording
``loop``          ``foreach=False`` (and not ``fused=True``): the plain per-parameter loop
``lists``         otherwise: the parameter joins a bucket stepped by the table below
================  ====================================================================================

Per bucket on the list path (:data:`BUCKET_ROWS`; ``elementwise`` = the class declares ``_elementwise`` and this
step creates no state):

================  ====================================================================================
path              when (and what runs)
================  ====================================================================================
``custom``        the class overrides ``_run_lists`` (rules with a reduction over each tensor: LAMB, LARS,
                  MARS, Prodigy, SWATS, Adafactor): its own path (see above), which may fall back on
                  this table through ``super()._run_lists``
``traced``        ``torch.compile`` is tracing the step (``torch.compiler.is_compiling()``, e.g.
                  ``torch.compile(opt.step)``): the rule on torch ops over whole lists (on working copies
                  where moments are stored in lower precision), which dynamo records and inductor fuses;
                  no row below runs under tracing (their C loops, Triton launches and torch's fused
                  kernels are opaque to it or break functionalization)
``fused``         ``fused`` is not False, moments stored in the parameters' dtype, every gradient and
                  state tensor with its parameter's shape and strides and the parameters non-overlapping
                  and dense (torch's kernels read each tensor as laid out as its parameter:
                  :func:`optimlab.core.tensors.same_layout`), and the class's ``_fused`` accepts the
                  bucket: torch's fused kernel (SGD, Adam, AdamW, Adagrad, Muon's AdamW part)
``triton``        elementwise, Triton installed and enabled, plain contiguous tensors on one CUDA device
                  (CPU tensors under ``TRITON_INTERPRET=1``): one Triton kernel per step
                  (:mod:`optimlab.core.triton_kernels`)
``compiled``      elementwise, a C compiler, plain contiguous float32/float64 CPU tensors (bfloat16 state
                  beside float32 allowed): one compiled C loop (:mod:`optimlab.core.kernels`)
``mixed``         moments stored in lower precision (``moment_dtype``) and no kernel above took it: the
                  rule on working copies in the parameters' dtype
``blocked``       elementwise and at least ``tiling.MIN_BLOCKED_ELEMS`` elements of plain tensors: the
                  rule on cache-sized blocks of views (:mod:`optimlab.core.tiling`)
``foreach``       always: the rule once on whole lists (``torch._foreach_*``)
================  ====================================================================================

Under tracing the base class also skips its step-plan cache and reads the 0-d state values (the step count) in one
call that dynamo leaves out of the graph (one graph break per round, not one per ``.item()``). They reach the rule as
Python numbers, which torch 2.13 specializes in its ``_foreach_*`` ops: a rule that reads the step count is
recompiled at each new count until dynamo's recompile limit, then runs that part eagerly (same numbers; README).

GradScaler's fused contract (``fused=True``: ``grad_scale`` and ``found_inf`` set on the optimizer) is kept by
:func:`step_bucket` around the table: the ``fused`` row passes both to torch's kernel; a bucket any other row steps is
skipped where ``found_inf`` is set (read on the host), else stepped on unscaled copies of its gradients.

A kernel row (``triton``, ``compiled``) declines when the rule cannot be traced or compiled; ``fused`` declines
where torch's kernel does not fit (e.g. SGD's fused kernel on CPU float16, a transposed or broadcast gradient set
by hand). ``_prepare`` (derived scalars, 0-d state advanced once per bucket) runs once, after ``fused`` and before
the other rows.

Sizes are never declined, they raise: for a class with an element-wise rule (whose state tensors all have their
parameters' shapes) :func:`step_bucket` checks every gradient and state tensor against its parameter before any
row runs, and ``kernels.usable``/``triton_kernels.usable`` check the lists they are given (the classes with a
path of their own call them), so a state of another size (a checkpoint of a resized layer, ``p.data = bigger``)
raises ``RuntimeError`` naming the optimizer, the state and both shapes on every path, as torch's ops do, instead
of a raw-pointer row reading or writing beyond a tensor. A bucket stepped by a step plan keeps a
:class:`LayoutMemo`, so that a steady-state step re-checks in a few C-level passes.

:func:`only` restricts the tables (a test or a benchmark forcing one path); :data:`taken` counts the paths taken.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor

from . import kernels, ops, tensors, tiling, triton_kernels

__all__ = ["BUCKET_PATHS", "BUCKET_ROWS", "ENTRY_PATHS", "ENTRY_ROWS", "LayoutMemo", "Stepper", "compiling",
           "entry_path", "found_inf", "only", "step_bucket", "taken", "working_copies"]

#: True while ``torch.compile`` traces the step (then the ``traced`` row runs); one cheap call in eager mode.
compiling: Callable[[], bool] = torch.compiler.is_compiling

#: How often each path ran in this process (bucket paths and per-parameter ``sparse``/``loop``/``differentiable``);
#: steps traced by ``torch.compile`` are not counted.
taken: Counter[str] = Counter()

_allowed: frozenset[str] | None = None


class Stepper(Protocol):
    """What the tables ask of an optimizer: :class:`optimlab.core.base.Optimizer` is one (see its docstring for
    the hooks). Typed here so that this module never imports the base class, which stands on it."""

    _moment_keys: tuple[str, ...]
    _elementwise: bool

    def _overrides_run_lists(self) -> bool: ...

    def _overrides_fused(self) -> bool: ...

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None: ...

    def _fused(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool: ...

    def _prepare(self, s: dict[str, Any], h: dict[str, Any]) -> None: ...

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool: ...

    def _apply(self, p: Any, g: Any, s: dict[str, Any], h: dict[str, Any]) -> None: ...


@contextmanager
def working_copies(s: dict[str, Any], keys: list[str], dtype: torch.dtype) -> Iterator[None]:
    """Within the block, ``s[k]`` for state stored in another dtype is a copy in ``dtype``; on exit the copy is
    rounded back into the stored tensor. A tensor or a list of tensors. Only for the moments a ``moment_dtype``
    stores in lower precision (``_moment_keys``): 0-d counters kept in float64 (SWATS's) must never be rounded.
    The ``mixed`` row runs the rule so; the base class's plain loop too."""
    low = [k for k in keys if ops.first(s[k]).dtype != dtype]
    stored = {k: s[k] for k in low}
    for k in low:
        s[k] = [t.to(dtype) for t in s[k]] if isinstance(s[k], list) else s[k].to(dtype)
    try:
        yield
    finally:
        for k in low:
            for dst, src in zip(*(([x] if isinstance(x, Tensor) else x) for x in (stored[k], s[k])), strict=True):
                dst.copy_(src)
            s[k] = stored[k]


@contextmanager
def only(*paths: str) -> Iterator[None]:
    """Within the block, bucket rows other than ``paths`` are skipped (``custom``, ``traced`` and the last row,
    ``foreach``, always stay, so every bucket is still stepped): ``with dispatch.only("blocked"): opt.step()``."""
    global _allowed
    unknown = set(paths) - set(BUCKET_PATHS) - set(ENTRY_PATHS)
    if unknown:
        raise ValueError(f"Invalid paths: {sorted(unknown)}; expected some of {list(BUCKET_PATHS)}")
    previous, _allowed = _allowed, frozenset(paths)
    try:
        yield
    finally:
        _allowed = previous


# -- per parameter --------------------------------------------------------------------------------------------
ENTRY_ROWS: tuple[tuple[str, Callable[[dict[str, Any], Tensor], bool]], ...] = (
    ("sparse", lambda hp, g: g.is_sparse),
    ("differentiable", lambda hp, g: bool(hp["differentiable"])),
    ("loop", lambda hp, g: hp["foreach"] is False and not hp["fused"]),
    ("lists", lambda hp, g: True),
)
ENTRY_PATHS = tuple(name for name, _ in ENTRY_ROWS)


def entry_path(hp: dict[str, Any], g: Tensor) -> str:
    """The per-parameter path (:data:`ENTRY_ROWS`) for a dense or sparse gradient ``g`` under the group's flags."""
    for name, applies in ENTRY_ROWS:
        if applies(hp, g):
            return name
    raise AssertionError("the last row always applies")


def lists_mode(hp: dict[str, Any]) -> bool:
    """Whether dense gradients of a group with these flags take the list path (the ``lists`` row)."""
    return not hp["differentiable"] and not (hp["foreach"] is False and not hp["fused"])


# -- per bucket -----------------------------------------------------------------------------------------------
class LayoutMemo:
    """What :meth:`Bucket.check_shapes` verified for a bucket that is stepped again (a step plan's bucket, see
    ``optimlab.core.base._Plan``), so that a steady-state step re-checks in a few C-level passes instead of
    comparing every state tensor anew: the state tensors (by identity), the parameters' element counts and
    strides (or that all were contiguous), and whether the state is laid out as the parameters (same strides,
    parameters non-overlapping and dense). A state tensor replaced, or a parameter resized or re-laid-out
    (``p.data = t``, ``model.to(memory_format=...)``), fails the match and the bucket is checked in full again.
    (A contiguous parameter given another shape of the same size, ``p.data = p.data.view(...)``, keeps its state
    element for element in memory order.)"""

    __slots__ = ("contiguous", "numels", "same", "states", "strides")

    def __init__(self) -> None:
        self.states: list[list[Tensor]] | None = None
        self.numels: list[int] = []
        self.strides: list[tuple[int, ...]] = []
        self.contiguous = False
        self.same = False

    def remember(self, ps: list[Tensor], states: list[list[Tensor]]) -> None:
        """Record what a full check found (the sizes matched)."""
        self.states, self.numels = states, list(map(Tensor.numel, ps))
        self.contiguous = all(map(Tensor.is_contiguous, ps))
        self.strides = [] if self.contiguous else list(map(Tensor.stride, ps))
        self.same = tensors.same_layout([ps, *states], sizes_checked=True)

    def layout(self, ps: list[Tensor], gs: list[Tensor], states: list[list[Tensor]]) -> bool | None:
        """None unless the state and parameters are as remembered and every gradient has its parameter's size;
        then whether the bucket is laid out as torch's fused kernels read it (:func:`tensors.same_layout`).
        Cheapest where everything is contiguous (the usual case): contiguous tensors of one size are laid out
        alike, so no strides are read."""
        old = self.states
        if (old is None or len(old) != len(states)
                or not all(len(a) == len(b) and all(map(operator.is_, a, b)) for a, b in zip(old, states, strict=True))
                or list(map(Tensor.numel, ps)) != self.numels or list(map(Tensor.numel, gs)) != self.numels):
            return None
        if self.contiguous:
            if not all(map(Tensor.is_contiguous, ps)):
                return None
            return self.same and all(map(Tensor.is_contiguous, gs))
        if list(map(Tensor.stride, ps)) != self.strides:
            return None
        return self.same and list(map(Tensor.stride, gs)) == self.strides


class Bucket:
    """What the rows look at and run on: the optimizer, the aligned lists, the hyperparameters of the bucket."""

    __slots__ = ("gs", "h", "keys", "layout", "memo", "moments", "opt", "prepared", "ps", "s", "shapes_checked")

    def __init__(self, opt: Stepper, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                 keys: list[str], memo: LayoutMemo | None = None) -> None:
        self.opt, self.ps, self.gs, self.s, self.h, self.keys = opt, ps, gs, s, h, keys
        self.moments = [k for k in keys if k in opt._moment_keys]
        self.prepared = False
        self.shapes_checked = False
        self.layout: bool | None = None  # same_layout(lists), where already known
        self.memo = memo

    @property
    def lists(self) -> list[list[Tensor]]:
        return [self.ps, self.gs, *(self.s[k] for k in self.keys)]

    def check_shapes(self) -> bool:
        """Every gradient and state tensor has its parameter's shape, else ``RuntimeError`` naming the optimizer,
        the state and both shapes (:func:`optimlab.core.tensors.check_shapes`); once per bucket. Returns True.

        With a :class:`LayoutMemo` that still matches, the state was checked against these parameters before:
        only the gradients are compared (element counts, as ``p.grad = g`` itself refuses another shape;
        contiguity or strides)."""
        if self.shapes_checked:
            return True
        memo, ps, gs = self.memo, self.ps, self.gs
        states = [self.s[k] for k in self.keys]
        self.layout = None if memo is None else memo.layout(ps, gs, states)
        if self.layout is None:
            tensors.check_shapes(self.lists, type(self.opt).__name__, ["gradient", *self.keys])
            if memo is not None:
                memo.remember(ps, states)
        self.shapes_checked = True
        return True

    def fusable(self) -> bool:
        """The class runs torch's fused kernel for its rule, and the bucket is laid out as that kernel reads it:
        gradients and state with their parameters' shapes (else ``RuntimeError``) and strides, parameters
        non-overlapping and dense (:func:`optimlab.core.tensors.same_layout`); otherwise the next row runs."""
        if not self.opt._overrides_fused():
            return False
        self.check_shapes()
        if self.layout is None:
            self.layout = tensors.same_layout(self.lists, sizes_checked=True)
        return self.layout

    def prepare(self) -> None:
        if not self.prepared:
            self.prepared = True
            self.opt._prepare(self.s, self.h)

    def mixed(self) -> bool:
        """Moments stored in another dtype than the parameters (``moment_dtype``)."""
        return any(self.s[k][0].dtype != self.ps[0].dtype for k in self.moments)

    def elementwise(self) -> bool:
        """The class's rule is element-wise and this step creates no state (prepared first: that may create it).
        An element-wise class's state tensors all have their parameters' shapes (checked by :func:`step_bucket`)."""
        if not self.opt._elementwise:
            return False
        self.prepare()
        return not self.opt._creates_state(self.s, self.h)

    def apply(self, ps: Any, gs: Any, state_tensors: list[Any]) -> None:
        scalars = {k: v for k, v in self.s.items() if k not in self.keys}
        self.opt._apply(ps, gs, {**scalars, **dict(zip(self.keys, state_tensors, strict=True))}, self.h)

    def traced(self, backend: Any) -> bool:
        def rule(p: Any, g: Any, *state: Any) -> None:
            self.apply(p, g, list(state))

        return backend.run(rule, self.lists, readonly=(1,)) is not False


def _custom(b: Bucket) -> bool:
    return b.opt._overrides_run_lists()


def _run_custom(b: Bucket) -> bool:
    b.opt._run_lists(b.ps, b.gs, b.s, b.h, b.keys)
    return True


def _fused_applies(b: Bucket) -> bool:
    """The ``fused`` row's condition (also GradScaler's, :func:`_step_scaled`): ``fused`` not False, moments in the
    parameters' dtype, and the bucket laid out as torch's kernels read it (:meth:`Bucket.fusable`)."""
    return b.h["fused"] is not False and not b.mixed() and b.fusable()


def _run_fused(b: Bucket) -> bool:
    return bool(b.opt._fused(b.ps, b.gs, b.s, b.h))


def _run_mixed(b: Bucket) -> bool:
    b.prepare()
    with working_copies(b.s, b.moments, b.ps[0].dtype):
        b.opt._apply(b.ps, b.gs, b.s, b.h)
    return True


def _run_traced(b: Bucket) -> bool:
    return _run_mixed(b) if b.mixed() else _run_foreach(b)


def _run_blocked(b: Bucket) -> bool:
    for block in tiling.block_plan(b.lists):
        b.apply(block[0], block[1], block[2:])
    return True


def _run_foreach(b: Bucket) -> bool:
    b.prepare()
    b.opt._apply(b.ps, b.gs, b.s, b.h)
    return True


BUCKET_ROWS: tuple[tuple[str, Callable[[Bucket], bool], Callable[[Bucket], bool]], ...] = (
    ("custom", _custom, _run_custom),
    ("traced", lambda b: compiling(), _run_traced),
    ("fused", lambda b: _fused_applies(b), _run_fused),
    ("triton", lambda b: b.elementwise() and triton_kernels.usable(b.lists, sizes_checked=True),
     lambda b: b.traced(triton_kernels)),
    ("compiled", lambda b: b.elementwise() and kernels.usable(b.lists, sizes_checked=True),
     lambda b: b.traced(kernels)),
    ("mixed", lambda b: b.mixed(), _run_mixed),
    ("blocked", lambda b: b.elementwise() and tiling.blockable(b.ps), _run_blocked),
    ("foreach", lambda b: True, _run_foreach),
)
BUCKET_PATHS = tuple(name for name, _, _ in BUCKET_ROWS)

#: Rows :func:`only` never skips: a class's own path, the traced one (nothing else can run under tracing) and the
#: last row.
_KEPT = ("custom", "traced", "foreach")


def found_inf(flag: Tensor | None) -> bool:
    """Whether GradScaler's ``found_inf`` says to skip this step (a host read of the flag; None: no)."""
    return flag is not None and bool(flag.item())


def _step_scaled(opt: Stepper, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                 keys: list[str], custom: bool, memo: LayoutMemo | None = None) -> str:
    """GradScaler's contract for a bucket (``h`` holds ``grad_scale`` and ``found_inf``, either may be None).

    The ``fused`` row hands both to torch's fused kernel, which divides the gradients by ``grad_scale`` (writing
    the unscaled values into them, as torch's fused step does) and leaves parameters and state untouched where
    ``found_inf`` is set; the step count is then taken back by ``found_inf`` (torch's
    ``_foreach_sub_(state_steps, [found_inf] * n)``): no host read. Any other row: ``found_inf`` is read on the host
    and the bucket skipped (nothing touched, the count taken back), else it steps by the table on copies of the
    gradients divided by ``grad_scale`` (``p.grad`` is not touched)."""
    grad_scale, inf = h["grad_scale"], h["found_inf"]
    b = Bucket(opt, ps, gs, s, h, keys, memo)
    allowed = _allowed
    if (not (custom and _custom(b)) and not compiling() and (allowed is None or "fused" in allowed)
            and _fused_applies(b) and _run_fused(b)):
        if inf is not None and "step" in s:
            torch._foreach_sub_(s["step"], [inf] * len(s["step"]))
        taken["fused"] += 1
        return "fused"
    del h["grad_scale"], h["found_inf"]
    if found_inf(inf):
        if "step" in s:
            torch._foreach_sub_(s["step"], 1)
        taken["skipped"] += 1
        return "skipped"
    if grad_scale is not None:
        gs = list(torch._foreach_div(gs, grad_scale.reshape(())))
    return step_bucket(opt, ps, gs, s, h, keys, custom, memo)


def step_bucket(opt: Stepper, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                keys: list[str], custom: bool = True, memo: LayoutMemo | None = None) -> str:
    """Step one bucket on the list path by the first row of :data:`BUCKET_ROWS` that applies and accepts it;
    returns the path's name. ``custom=False`` skips the ``custom`` row (a class's own path falling back here).
    ``memo``: the bucket's :class:`LayoutMemo`, kept by a caller that steps the same bucket again.
    With GradScaler's ``grad_scale``/``found_inf`` in ``h`` (``fused=True``), see :func:`_step_scaled`."""
    if "found_inf" in h:
        return _step_scaled(opt, ps, gs, s, h, keys, custom, memo)
    b = Bucket(opt, ps, gs, s, h, keys, memo)
    if opt._elementwise:  # an element-wise rule's state has its parameters' shapes: a mismatch raises on any path
        b.check_shapes()
    allowed = _allowed
    for name, applies, run in BUCKET_ROWS:
        if name == "custom" and not custom:
            continue
        if allowed is not None and name not in allowed and name not in _KEPT:
            continue
        if applies(b) and run(b):
            if not compiling():  # a count changed under tracing would be a guard: a recompile every step
                taken[name] += 1
            return name
    raise AssertionError("the last row always applies")
