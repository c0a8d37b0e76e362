"""GPU kernels for update rules, generated from the same trace as the C kernels: one Triton kernel per rule.

Why. On a GPU an optimizer step is bound by memory bandwidth as on a CPU, and an eager rule on
``torch._foreach_*`` lists makes one pass over memory per operation (torch has single-pass kernels only for its
own SGD, Adam, AdamW and Adagrad). :mod:`optimlab.core.kernels` already *traces* every element-wise rule (the
class's own ``_update`` called with symbolic tensors, :class:`~optimlab.core.kernels.Sym`) and turns the record
into one C loop; this module turns the very same record into one `Triton <https://triton-lang.org>`_ kernel:
load each parameter, gradient and state element once, compute in registers, store once.

Layout: one launch per bucket (a multi-tensor apply). A small int64 table on the device, built once per layout
(the tensors' addresses and sizes) and cached, holds each list's data pointers, the tensors' sizes, and for each
program (one per ``BLOCK`` elements of one tensor) its tensor and the offset of its block. A program loads its
pointers from the table, so any number of tensors of any sizes runs in one launch, and no host work beyond a
dictionary lookup is repeated while the tensors stay the same. Full blocks are loaded and stored without a mask
(128-bit accesses where every pointer is 16-byte aligned: a second compiled variant, ``ALIGNED=False``, serves
views that are not); only a tensor's last block is masked.

What a kernel supports, as the C backend: the traced element-wise operations (table :data:`OPS`, one line
each); Python-number hyperparameters passed as run-time arguments (as the bits of a float64, so a schedule
changing the lr never recompiles and float64 rules keep float64 scalars); per-tensor scalars (a LAMB trust
ratio, a SWATS rate: a tensor on the device, never read on the host); per-tensor sums of any traced expression
(``||w||^2``, a dot product): each program sums its block in float64 and a second small kernel adds the blocks
of each tensor in a fixed order, so the sums are deterministic (no atomics). Storage dtypes: float32, float64,
bfloat16 and float16, per list, so bfloat16/float16 parameters and bfloat16 moments are read and written in
their own dtype while every step computes in float32 (float64 for float64 parameters). Division and square
root round to nearest (``div_rn``, ``sqrt_rn``), as torch's CUDA kernels do; ``a + b*c`` may be contracted into
a fused multiply-add, as nvcc does for torch. Results equal the plain loop to round-off, not bit for bit.

Triton is optional (``pip install optimlab[gpu]``): nothing here imports it until a kernel runs, and without it
:func:`usable` is False, so CUDA keeps the eager path. ``OPTIMLAB_TRITON=0`` or :func:`set_enabled` turns it
off. Kernels are compiled by Triton on first use and kept in Triton's own cache (``~/.triton/cache``,
``$TRITON_CACHE_DIR``). Under Triton's interpreter (``TRITON_INTERPRET=1``) the same kernels run on CPU tensors,
which is how the tests check them without a GPU.

The interface is :mod:`optimlab.core.kernels`' own: ``usable(lists)`` and ``run(rule, lists, per_tensor=(),
readonly=())``, so a caller picks the backend by the tensors' device.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import linecache
import os
import re
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import kernels, tensors

__all__ = [
    "MIN_TRITON",
    "OPS",
    "available",
    "compile_offline",
    "enabled",
    "interpreting",
    "run",
    "set_enabled",
    "source",
    "stats",
    "usable",
]

#: The oldest Triton release these kernels are tested with (3.9.0 in full; 3.5.1: compiled kernels and the
#: interpreter, whose per-tensor sum kernel then falls back to torch).
MIN_TRITON = (3, 5)
#: Elements per program and warps per program: 8 fp32 elements per thread, two 128-bit accesses per operand.
_BLOCK = 1024
_NUM_WARPS = 4
#: Block partial sums added per iteration of the per-tensor sum kernel.
_SUM_BLOCK = 256
#: Layouts (device tables) kept per process.
_MAX_LAYOUTS = 64


class _Float:
    """A compute dtype as Triton source: its type (``t``) and its division and square root rounded to nearest
    (Triton's own ``/`` and ``tl.sqrt`` are approximate in float32: ``div.full.f32``, ``sqrt.approx.ftz.f32``)."""

    def __init__(self, t: str, div: str, sqrt: str) -> None:
        self.t, self._div, self._sqrt = t, div, sqrt

    def div(self, a: str, b: str) -> str:
        return self._div.format(a, b)

    def sqrt(self, a: str) -> str:
        return self._sqrt.format(a)


_FLOAT = {torch.float32: _Float("tl.float32", "tl.fdiv({}, {}, ieee_rounding=True)", "tl.sqrt_rn({})"),
          torch.float64: _Float("tl.float64", "(({}) / ({}))", "tl.sqrt({})")}  # float64 div and sqrt: IEEE already

#: The traced operations: one Triton expression each, from the instruction's operands ``a`` (node, scalar and
#: per-tensor names, in the order :class:`~optimlab.core.kernels.Sym` records them) and ``f``, the compute dtype
#: (its type ``f.t``, its correctly rounded division and square root). Adding a traced op is one line here; an op
#: missing here makes :func:`run` return False (the caller's eager path runs), never a wrong kernel.
OPS: dict[str, Callable[[Sequence[str], _Float], str]] = {
    "neg": lambda a, f: f"-{a[0]}",
    "add": lambda a, f: f"{a[0]} + {a[2]} * {a[1]}",  # x + alpha * y
    "adds": lambda a, f: f"{a[0]} + {a[1]}",  # x + scalar
    "mul": lambda a, f: f"{a[0]} * {a[1]}",
    "div": lambda a, f: f.div(a[0], a[1]),
    "sqrt": lambda a, f: f.sqrt(a[0]),
    "recip": lambda a, f: f.div("1.0", a[0]),
    "max": lambda a, f: f"tl.where(({a[0]} > {a[1]}) | ({a[0]} != {a[0]}), {a[0]}, {a[1]})",  # NaN from either
    "clampmin": lambda a, f: f"tl.where({a[0]} < {a[1]}, {a[1]}, {a[0]})",  # NaN stays NaN, as in torch.clamp
    "clampmax": lambda a, f: f"tl.where({a[0]} > {a[1]}, {a[1]}, {a[0]})",
    "lerp": lambda a, f: (f"tl.where({a[2]} < 0.5, {a[0]} + {a[2]} * ({a[1]} - {a[0]}), "  # torch's formula
                          f"{a[1]} - ({a[1]} - {a[0]}) * (1.0 - {a[2]}))"),
    "addcmul": lambda a, f: f"{a[0]} + {a[3]} * {a[1]} * {a[2]}",
    "addcdiv": lambda a, f: f"{a[0]} + " + f.div(f"{a[3]} * {a[1]}", a[2]),
    # sign and comparison ops (as kernels.Sym records them): exact, so equal to torch bit for bit
    "abs": lambda a, f: f"tl.abs({a[0]})",  # clears the sign bit: |-0.0| = +0.0, |NaN| = NaN
    "sign": lambda a, f: f"(({a[0]} > 0).to({f.t}) - ({a[0]} < 0).to({f.t}))",  # sign(NaN) = sign(-0.0) = 0
    "gt": lambda a, f: f"({a[0]} > {a[1]}).to({f.t})",  # a mask, 1 or 0 in the compute type; NaN compares false
    "ge": lambda a, f: f"({a[0]} >= {a[1]}).to({f.t})",
    "lt": lambda a, f: f"({a[0]} < {a[1]}).to({f.t})",
    "le": lambda a, f: f"({a[0]} <= {a[1]}).to({f.t})",
    "where": lambda a, f: f"tl.where({a[0]} != 0, {a[1]}, {a[2]})",
}

_TL_TYPES = {torch.float32: "tl.float32", torch.float64: "tl.float64", torch.bfloat16: "tl.bfloat16",
             torch.float16: "tl.float16"}
#: How each storage dtype is addressed: bfloat16 as its 16 bits, widened and rounded by hand (below).
_TL_STORAGE = {**_TL_TYPES, torch.bfloat16: "tl.uint16"}
#: bfloat16 bits to float32 (exact), and float32 to bfloat16 bits rounded to nearest even with NaN kept NaN: the C
#: kernels' conversion and torch's. Written out because Triton's interpreter truncates where the GPU rounds.
_BF16_LOAD = "(({}).to(tl.uint32) << 16).to(tl.float32, bitcast=True)"
_BF16_STORE = ("tl.where(({0} & 0x7FFFFFFF) > 0x7F800000, ({0} >> 16) | 0x40, "
               "({0} + 0x7FFF + (({0} >> 16) & 1)) >> 16).to(tl.uint16)")
#: Block sums: Triton's own sum combiner, which the interpreter runs as one numpy sum.
_SUM = "tl.standard._sum_combine"
_TRUE = ("1", "true", "on", "yes")

#: The fixed kernel that adds each tensor's block sums (the generated kernels write one partial sum per block).
_SUPPORT = '''\
import triton
import triton.language as tl


@triton.jit(do_not_specialize=["n", "nblk", "first"])
def _segment_sums(meta, part, red, n: tl.int64, nblk: tl.int64, first: tl.int64, SB: tl.constexpr):
    """red[r, t] = the sum of tensor t's block partials part[r, first[t]:first[t+1]], in a fixed order."""
    t = tl.program_id(0).to(tl.int64)
    r = tl.program_id(1).to(tl.int64)
    lo = tl.load(meta + first + t)
    hi = tl.load(meta + first + t + 1)
    acc = tl.full([SB], 0.0, tl.float64)
    for b in range(lo, hi, SB):
        idx = b + tl.arange(0, SB)
        acc += tl.load(part + r * nblk + idx, mask=idx < hi, other=0.0)
    tl.store(red + r * n + t, tl.reduce(acc, 0, tl.standard._sum_combine))
'''

_enabled = os.environ.get("OPTIMLAB_TRITON", "1").strip().lower() not in ("0", "false", "off", "no")
_available: bool | None = None
_lock = threading.Lock()
_support: dict[bool, dict[str, Any]] = {}
_kernels: dict[tuple[Any, ...], Any] = {}  # structure -> Triton function, or None (generation failed)
_layouts: OrderedDict[tuple[Any, ...], tuple[Tensor, int, int, bool, int]] = OrderedDict()
_warned: set[str] = set()
_MISSING = object()
_stats = {"generated": 0, "runs": 0, "failed": 0, "layouts": 0}


class _Unsupported(Exception):
    """The trace holds an operation this backend has no expression for (see :data:`OPS`)."""


def available() -> bool:
    """Whether Triton :data:`MIN_TRITON` or newer is installed (checked without importing it)."""
    global _available
    if _available is None:
        _available = False
        if importlib.util.find_spec("triton") is not None:
            try:
                release = tuple(int(x) for x in re.findall(r"\d+", importlib.metadata.version("triton"))[:2])
            except importlib.metadata.PackageNotFoundError:
                release = ()
            _available = release >= MIN_TRITON
    return _available


def enabled() -> bool:
    """Whether Triton kernels are used: Triton installed and not turned off."""
    return _enabled and available()


def set_enabled(flag: bool) -> bool:
    """Turn Triton kernels on or off for this process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


def interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def stats() -> dict[str, int]:
    """Counters: kernels ``generated``, kernel ``runs``, ``failed`` kernels, device tables built (``layouts``)."""
    return dict(_stats)


def _compute(dtype: torch.dtype) -> torch.dtype | None:
    """The dtype a step computes in for parameters of ``dtype``."""
    if dtype == torch.float64:
        return torch.float64
    return torch.float32 if dtype in (torch.float32, torch.bfloat16, torch.float16) else None


def _storage_ok(dtype: torch.dtype, compute: torch.dtype) -> bool:
    if compute == torch.float64:
        return dtype == torch.float64
    return dtype in (torch.float32, torch.bfloat16, torch.float16)


def usable(lists: Sequence[Sequence[Tensor]], owner: str = "optimlab", sizes_checked: bool = False) -> bool:
    """Whether these aligned lists of tensors can run in a Triton kernel: enabled, plain contiguous tensors on one
    CUDA device (CPU tensors too under the interpreter), every list of one dtype; float64 parameters with float64
    lists, else any mix of float32, bfloat16 and float16 (computed in float32). Every ``lists[j][i]`` must have
    ``lists[0][i]``'s shape (a kernel walks ``lists[0][i].numel()`` elements of each): otherwise ``RuntimeError``
    (as :func:`optimlab.core.kernels.usable`; ``sizes_checked``: the caller has checked that already)."""
    if not lists or not lists[0] or not enabled():
        return False
    first = lists[0][0]
    device = first.device
    if not (device.type == "cuda" or (device.type == "cpu" and interpreting())):
        return False
    compute = _compute(first.dtype)
    if compute is None:
        return False
    if not sizes_checked:
        tensors.check_shapes(lists, owner)
    for lst in lists:
        dtype = lst[0].dtype
        if not _storage_ok(dtype, compute):
            return False
        if not tensors.is_plain(lst):
            return False
        for t in lst:
            if t.device != device or t.dtype != dtype or not t.is_contiguous():
                return False
    return True


# -- source ---------------------------------------------------------------------------------------------------
def source(instrs: Sequence[tuple[str, ...]], stores: Sequence[tuple[int, str]], sums: Sequence[str],
           dtypes: Sequence[torch.dtype], n_scalars: int, n_per_tensor: int) -> str:
    """The Triton source of one traced rule (a trace as :func:`optimlab.core.kernels.trace_rule` returns it).
    ``dtypes[j]`` is list ``j``'s storage dtype; arithmetic is in float32, or float64 for float64 parameters."""
    compute = _compute(dtypes[0])
    if compute is None:
        raise _Unsupported(f"parameters of dtype {dtypes[0]}")
    ctype, fl = _TL_TYPES[compute], _FLOAT[compute]
    n_lists = len(dtypes)
    blocky: set[str] = set()  # names holding a block of elements (the others are per-program scalars)

    def expr(ins: tuple[str, ...]) -> str:
        op, args = ins[0], ins[1:]
        make = OPS.get(op)
        if make is None:
            raise _Unsupported(f"traced op {op!r}")
        return make(args, fl)

    def body(masked: bool) -> list[str]:
        lines = ["mask = offs < size"] if masked else []
        for i, ins in enumerate(instrs):
            if ins[0] == "load":
                j = int(ins[1])
                load = f"tl.load(v{j} + offs, mask=mask, other=0)" if masked else f"tl.load(v{j} + offs)"
                if dtypes[j] == torch.bfloat16:
                    load = _BF16_LOAD.format(load)
                lines.append(f"n{i} = {load}.to({ctype})")
                blocky.add(f"n{i}")
            else:
                lines.append(f"n{i} = {expr(ins)}")
                if any(a in blocky for a in ins[1:]):
                    blocky.add(f"n{i}")
        for j, node in stores:
            value = node if node in blocky else f"({node} + zero)"
            if dtypes[j] == torch.bfloat16:
                lines.append(f"u{j} = {value}.to(tl.float32).to(tl.uint32, bitcast=True)")
                value = _BF16_STORE.format(f"u{j}")
            else:
                value = f"{value}.to({_TL_TYPES[dtypes[j]]})"
            lines.append(f"tl.store(v{j} + offs, {value}" + (", mask=mask)" if masked else ")"))
        for r, node in enumerate(sums):
            value = node if node in blocky else f"({node} + zero)"
            if masked:
                value = f"tl.where(mask, {value}, 0.0)"
            lines.append(f"tl.store(part + {r} * nblk + pid, tl.reduce({value}.to(tl.float64), 0, {_SUM}))")
        return lines

    unmasked, masked = body(False), body(True)
    bits = [f"b{k}" for k in range(n_scalars)]
    no_spec = ", ".join(f'"{x}"' for x in ["n", "nblk", *bits])
    params = ", ".join(["meta", "pt", "part", "n: tl.int64", "nblk: tl.int64", *(f"{b}: tl.int64" for b in bits),
                        "BLOCK: tl.constexpr", "ALIGNED: tl.constexpr"])
    table = f"{n_lists} * n + 2 * n + 1"  # meta: pointers (lists x n), sizes (n), first blocks (n + 1), blocks
    lines = [
        f"@triton.jit(do_not_specialize=[{no_spec}])",
        f"def optimlab_rule({params}):",
        "    pid = tl.program_id(0).to(tl.int64)",
        f"    t = tl.load(meta + {table} + pid)",
        f"    start = tl.load(meta + {table} + nblk + pid)",
        f"    size = tl.load(meta + {n_lists} * n + t)",
        *(f"    s{k} = b{k}.to(tl.int64).to(tl.float64, bitcast=True).to({ctype})" for k in range(n_scalars)),
        *(f"    q{k} = tl.load(pt + {k} * n + t).to({ctype})" for k in range(n_per_tensor)),
        *(f"    v{j} = tl.load(meta + {j} * n + t).to(tl.pointer_type({_TL_STORAGE[d]}))"
          for j, d in enumerate(dtypes)),
        "    offs = start + tl.arange(0, BLOCK)",
        f"    zero = tl.full([BLOCK], 0.0, {ctype})",
        "    if ALIGNED:  # every pointer 16-byte aligned: 128-bit loads and stores",
        *(f"        v{j} = tl.multiple_of(v{j}, 16)" for j in range(n_lists)),
        "        offs = tl.max_contiguous(tl.multiple_of(offs, BLOCK), BLOCK)",
        "    if start + BLOCK <= size:  # a full block: no mask",
        *(f"        {line}" for line in unmasked),
        "    else:  # the tensor's last block",
        *(f"        {line}" for line in masked),
    ]
    return "\n".join(lines) + "\n"


def _exec(src: str, name: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run generated source as a module whose text ``inspect`` (hence Triton) can read: registered in
    :mod:`linecache` under a name that is no file, so nothing is written to or read back from disk."""
    filename = f"<optimlab-triton-{name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace["__name__"] = f"optimlab_triton_{name}"
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 - our own generated source
    return namespace


def _helpers(interp: bool) -> dict[str, Any]:
    """The support module (the per-tensor sum kernel), built once per interpreter setting."""
    if interp not in _support:
        _support[interp] = _exec(_SUPPORT, "support" + ("_interp" if interp else ""), {})
    return _support[interp]


def _function(structure: tuple[Any, ...], make_source: Callable[[], str]) -> Any:
    """The Triton function for a traced rule's structure, generated on a table miss (None: cannot be generated)."""
    fn = _kernels.get(structure, _MISSING)
    if fn is not _MISSING:
        return fn
    with _lock:
        if structure in _kernels:
            return _kernels[structure]
        fn = None
        try:
            src = make_source()
            name = hashlib.sha256(src.encode()).hexdigest()[:16] + ("_interp" if structure[-1] else "")
            fn = _exec("import triton\nimport triton.language as tl\n\n\n" + src, name, {})["optimlab_rule"]
            _stats["generated"] += 1
        except _Unsupported:
            fn = None  # an op this backend lacks: the caller runs the rule another way
        _kernels[structure] = fn
        return fn


def _layout(lists: Sequence[Sequence[Tensor]], device: torch.device) -> tuple[Tensor, int, int, bool, int]:
    """The device table for these tensors (see the module docstring), cached by their addresses and sizes:
    ``(meta, n, nblk, aligned, offset of the first-block column)``."""
    ptrs = [t.data_ptr() for lst in lists for t in lst]
    sizes = [t.numel() for t in lists[0]]
    key = (device, _BLOCK, len(lists), tuple(ptrs), tuple(sizes))
    hit = _layouts.get(key)
    if hit is not None:
        _layouts.move_to_end(key)
        return hit
    n = len(sizes)
    nb = torch.tensor([(s + _BLOCK - 1) // _BLOCK for s in sizes], dtype=torch.int64)
    first = torch.cat([torch.zeros(1, dtype=torch.int64), nb.cumsum(0)])
    nblk = int(first[-1])
    owner = torch.repeat_interleave(torch.arange(n, dtype=torch.int64), nb)
    start = (torch.arange(nblk, dtype=torch.int64) - first[owner]) * _BLOCK
    meta = torch.cat([torch.tensor(ptrs, dtype=torch.int64), torch.tensor(sizes, dtype=torch.int64), first, owner,
                      start]).to(device)
    entry = (meta, n, nblk, all(p % 16 == 0 for p in ptrs), len(lists) * n + n)
    _layouts[key] = entry
    _stats["layouts"] += 1
    while len(_layouts) > _MAX_LAYOUTS:
        _layouts.popitem(last=False)
    return entry


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


class _Device:
    """Launch on the tensors' CUDA device (Triton launches on the current one)."""

    def __init__(self, device: torch.device) -> None:
        self.guard = (device.type == "cuda" and device.index is not None
                      and device.index != torch.cuda.current_device())
        self.device = device

    def __enter__(self) -> None:
        if self.guard:
            self.ctx = torch.cuda.device(self.device)
            self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.guard:
            self.ctx.__exit__(*exc)


def _structure(rule: Callable[..., Any], lists: Sequence[Sequence[Tensor]], n_per_tensor: int,
               readonly: Sequence[int]) -> tuple[tuple[Any, ...], Any, list[str]] | None:
    traced = kernels.trace_rule(rule, len(lists), n_per_tensor, readonly)
    if traced is None:
        return None
    trace, stores, sum_nodes = traced
    dtypes = tuple(lst[0].dtype for lst in lists)
    structure = (tuple(trace.instrs), tuple(stores), tuple(sum_nodes), dtypes, len(trace.scalars), n_per_tensor,
                 interpreting())
    return structure, trace, sum_nodes


def run(rule: Callable[..., Sequence[Any] | None], lists: Sequence[Sequence[Tensor]],
        per_tensor: Sequence[Tensor] = (), readonly: Sequence[int] = ()) -> Tensor | None | bool:
    """Trace ``rule`` and run it as one Triton kernel over the tensors: :func:`optimlab.core.kernels.run`'s
    contract (the rule, ``per_tensor``, ``readonly``, the return value), on the tensors' device. The sums are a
    float64 tensor on that device; nothing is read back to the host. Returns False, having touched nothing, if
    the rule cannot be traced or has an operation this backend lacks. ``usable(lists)`` must hold."""
    found = _structure(rule, lists, len(per_tensor), readonly)
    if found is None:
        return False
    structure, trace, sum_nodes = found
    fn = _function(structure, lambda: source(*structure[:6]))
    if fn is None:
        return False
    device = lists[0][0].device
    meta, n, nblk, aligned, first = _layout(lists, device)
    n_sums = len(sum_nodes)
    pt = (torch.stack([x.detach().to(device=device, dtype=torch.float64).reshape(n) for x in per_tensor])
          if per_tensor else meta)
    part = torch.empty(n_sums * nblk, dtype=torch.float64, device=device) if n_sums and nblk else meta
    with _Device(device):
        if nblk:
            try:
                fn[(nblk,)](meta, pt, part, n, nblk, *(_bits(x) for x in trace.scalars), BLOCK=_BLOCK,
                            ALIGNED=aligned, num_warps=_NUM_WARPS, enable_fp_fusion=True)
            except Exception as exc:  # noqa: BLE001 - Triton failed before launching: nothing was touched
                _stats["failed"] += 1
                _kernels[structure] = None
                _warn_once(repr(structure), "optimlab: a Triton kernel failed to compile, using the eager path "
                           f"instead: {type(exc).__name__}: {str(exc)[:500]}")
                return False
        _stats["runs"] += 1
        if not n_sums:
            return None
        red = torch.zeros((n_sums, n), dtype=torch.float64, device=device)
        if nblk:
            try:
                _helpers(structure[-1])["_segment_sums"][(n, n_sums)](meta, part, red, n, nblk, first,
                                                                      SB=_SUM_BLOCK, num_warps=1)
            except Exception as exc:  # noqa: BLE001 - the update ran: finish the sums with torch
                _warn_once("segment_sums", "optimlab: the Triton per-tensor sum kernel failed, summing with torch: "
                           f"{type(exc).__name__}: {str(exc)[:500]}")
                owner = meta[first + n + 1: first + n + 1 + nblk]
                red.index_add_(1, owner, part.view(n_sums, nblk))
        return red


def compile_offline(rule: Callable[..., Any], dtypes: Sequence[torch.dtype], n_per_tensor: int = 0,
                    readonly: Sequence[int] = (), arch: int = 90, aligned: bool = True) -> Any:
    """Compile the kernel of ``rule`` for lists of ``dtypes`` with Triton's CUDA compiler for an NVIDIA GPU of
    compute capability ``arch`` (90: H100/H200), without a device: Triton's compiled kernel (its ``asm`` holds
    the PTX and the cubin). For checks that the generated source is valid Triton beyond the interpreter, and to
    time a cold compile. Raises if the rule cannot be traced or compiled."""
    import triton  # noqa: PLC0415 - optional dependency, imported on use
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    class _Meta:  # trace_rule needs only the lists' count and dtypes
        def __init__(self, dtype: torch.dtype) -> None:
            self.dtype = dtype

    lists = [[_Meta(d)] for d in dtypes]
    traced = kernels.trace_rule(rule, len(lists), n_per_tensor, readonly)
    if traced is None:
        raise ValueError("the rule cannot be traced")
    trace, stores, sum_nodes = traced
    structure = (tuple(trace.instrs), tuple(stores), tuple(sum_nodes), tuple(dtypes), len(trace.scalars),
                 n_per_tensor, False)
    if interpreting():
        raise RuntimeError("compile_offline needs TRITON_INTERPRET unset")
    fn = _function(structure, lambda: source(*structure[:6]))
    if fn is None:
        raise ValueError("the rule has an operation this backend lacks")
    signature = {"meta": "*i64", "pt": "*fp64", "part": "*fp64", "n": "i64", "nblk": "i64",
                 **{f"b{k}": "i64" for k in range(len(trace.scalars))}, "BLOCK": "constexpr", "ALIGNED": "constexpr"}
    src = ASTSource(fn=fn, signature=signature, constexprs={"BLOCK": _BLOCK, "ALIGNED": aligned},
                    attrs={(k,): [["tt.divisibility", 16]] for k in range(3)})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": _NUM_WARPS, "enable_fp_fusion": True})


def _compile_sums_offline(arch: int = 90) -> Any:
    """:func:`compile_offline` for the fixed per-tensor sum kernel."""
    import triton  # noqa: PLC0415 - optional dependency, imported on use
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    fn = _helpers(False)["_segment_sums"]
    signature = {"meta": "*i64", "part": "*fp64", "red": "*fp64", "n": "i64", "nblk": "i64", "first": "i64",
                 "SB": "constexpr"}
    src = ASTSource(fn=fn, signature=signature, constexprs={"SB": _SUM_BLOCK},
                    attrs={(k,): [["tt.divisibility", 16]] for k in range(3)})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": 1})
