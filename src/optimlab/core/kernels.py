"""Compiled CPU kernels for update rules, generated from the rule itself: one pass over memory per step.

Why. An optimizer step is bound by memory bandwidth, and an eager rule makes one pass per operation. torch has
single-pass (fused) kernels only for its own SGD, Adam, AdamW and Adagrad. For every other rule optimlab
*traces* the same ``_update`` it runs eagerly: the rule is called once with symbolic tensors (:class:`Sym`)
that record each operation of :mod:`optimlab.core.ops` instead of computing it. The record is turned into one C
loop (load each parameter, gradient and state element once, compute, store), compiled with the system's C
compiler, cached on disk and called through :mod:`ctypes` on the tensors' memory. The rule is still written
once; the kernel is what the rule *is*, element by element.

What a kernel supports: element-wise arithmetic (``add``, ``mul``, ``div``, ``lerp``, ``addcmul``,
``addcdiv``, ``sqrt``, ``maximum``, ``clamp``, ``reciprocal``, ``neg``, ``abs``, ``sign``), comparisons (``gt``,
``ge``, ``lt``, ``le``: a mask held as 1 or 0 in the compute type) and ``where`` on float32 and float64 contiguous CPU
tensors, with state stored in bfloat16 beside float32 parameters (widened on load, rounded to nearest even on
store); Python-number hyperparameters, passed at run time, so a schedule changing the lr does not recompile;
per-tensor scalars (a LAMB trust ratio); and per-tensor sums of any traced expression (``||w||^2``,
``||r||^2``, a dot product), accumulated in float64. A rule that does anything else (a norm inside the rule, a
0-d tensor, an unknown method) cannot be traced; the caller then runs it eagerly. The elements are split into
``torch.get_num_threads()`` equal ranges, run by torch's own OpenMP threads where torch uses GNU libgomp (the
kernel links against the very library torch loaded), else by POSIX threads the kernel creates; one thread below
128K elements.

Where the cache lives: ``$OPTIMLAB_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/optimlab/kernels``, else
``~/.cache/optimlab/kernels``; one ``.c`` and one ``.so`` per kernel, named by a hash of the source, the
compiler and the CPU. A cold kernel costs one compiler call (0.06-0.2 s with gcc 12 ``-O3`` on the 2-core test
machine); a warm one is a ``dlopen``. An optimizer has one to three kernels (LAMB: two; RAdam: one, for the
steps before rectification).

How to turn it off: ``OPTIMLAB_KERNELS=0`` in the environment or :func:`set_enabled` ``(False)``; without a C
compiler (``$CC``, else ``cc``/``gcc``/``clang`` on ``PATH``) it is off by itself. Every rule then runs on
the eager path (torch's fused kernels where they exist, cache-blocked ``torch._foreach_*`` otherwise), which
needs no compiler and gives the same results to round-off.

Numerics: each element is computed in the tensor's dtype with the operations in the rule's order, as torch's
CPU kernels do; the compiler may contract ``a + b*c`` into one fused multiply-add, as torch's vectorised
kernels do. Results equal the plain path to round-off (checked by the test matrix), not bit for bit.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import operator
import os
import platform
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import tensors

__all__ = [
    "Sym",
    "Untraceable",
    "cache_dir",
    "compiler",
    "enabled",
    "run",
    "set_enabled",
    "stats",
    "trace_rule",
    "usable",
]

_C_TYPES = {torch.float32: ("float", "sqrtf"), torch.float64: ("double", "sqrt")}
_IS_CPU = operator.attrgetter("is_cpu")
_DTYPE = operator.attrgetter("dtype")
#: Below this many elements a kernel runs on the calling thread only.
_MIN_PARALLEL_ELEMS = 1 << 17
#: Elements per inner chunk of a loop that sums: 32 independent float64 partial sums per expression (two
#: sums over 25M fp32 elements: 16 lanes 7.1 ms, 32 lanes 3.9 ms, 64 lanes 3.8 ms; 2 threads, AVX-512).
_LANES = 32


class Untraceable(Exception):
    """The rule uses something a kernel cannot express; run it eagerly instead."""


# -- tracing --------------------------------------------------------------------------------------------------
class _Trace:
    """The record of one traced rule: instructions in SSA form, and the run-time values of its scalars."""

    def __init__(self) -> None:
        self.instrs: list[tuple[str, ...]] = []
        self.scalars: list[float] = []

    def node(self, op: str, *args: str) -> str:
        self.instrs.append((op, *args))
        return f"n{len(self.instrs) - 1}"

    def operand(self, x: Any) -> str:
        if isinstance(x, Sym):
            if x.trace is not self:
                raise Untraceable("symbols of two traces mixed")
            return x.node
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise Untraceable(f"operand of type {type(x).__name__}")
        self.scalars.append(float(x))
        return f"s{len(self.scalars) - 1}"


class Sym:
    """A symbolic tensor: each operation on it (the subset of torch's API that :mod:`optimlab.core.ops` uses on a
    single tensor) appends one instruction to its trace instead of computing anything. In-place methods rebind
    the symbol to the new value, so aliasing in the rule (``m = ema_(s["exp_avg"], g, beta)``) is preserved."""

    __slots__ = ("node", "readonly", "trace")

    def __init__(self, trace: _Trace, node: str, readonly: bool = False) -> None:
        self.trace, self.node, self.readonly = trace, node, readonly

    def _new(self, op: str, *args: Any) -> Sym:
        return Sym(self.trace, self.trace.node(op, *(self.trace.operand(a) for a in args)))

    def _set(self, other: Sym) -> Sym:
        if self.readonly:
            raise RuntimeError("an update rule wrote into its gradient (the rule must never modify p.grad)")
        self.node = other.node
        return self

    # out-of-place
    def clone(self, **_: Any) -> Sym:
        return Sym(self.trace, self.node)

    def neg(self) -> Sym:
        return self._new("neg", self)

    def add(self, other: Any, alpha: float = 1.0) -> Sym:
        if isinstance(other, Sym):
            return self._new("add", self, other, alpha)
        return self._new("adds", self, other * alpha if alpha != 1 else other)  # torch: x + alpha * scalar

    def sub(self, other: Any, alpha: float = 1.0) -> Sym:
        return self.add(other, alpha=-alpha)

    def mul(self, other: Any) -> Sym:
        return self._new("mul", self, other)

    def div(self, other: Any) -> Sym:
        return self._new("div", self, other)

    def sqrt(self) -> Sym:
        return self._new("sqrt", self)

    def reciprocal(self) -> Sym:
        return self._new("recip", self)

    def maximum(self, other: Sym) -> Sym:
        return self._new("max", self, other)

    def abs(self) -> Sym:
        return self._new("abs", self)

    def sign(self) -> Sym:
        return self._new("sign", self)

    # comparisons: a mask (1 or 0 in the compute type), consumed by ``torch.where``
    def gt(self, other: Any) -> Sym:
        return self._new("gt", self, other)

    def ge(self, other: Any) -> Sym:
        return self._new("ge", self, other)

    def lt(self, other: Any) -> Sym:
        return self._new("lt", self, other)

    def le(self, other: Any) -> Sym:
        return self._new("le", self, other)

    def _where(self, a: Any, b: Any) -> Sym:
        """``torch.where(self, a, b)``: ``self`` is the mask."""
        return self._new("where", self, a, b)

    def clamp(self, min: float | None = None, max: float | None = None) -> Sym:  # noqa: A002 - torch's names
        out = self
        if min is not None:
            out = out._new("clampmin", out, min)
        if max is not None:
            out = out._new("clampmax", out, max)
        return out

    def lerp(self, end: Sym, weight: float) -> Sym:
        return self._new("lerp", self, end, weight)

    def addcmul(self, a: Sym, b: Sym, value: float = 1.0) -> Sym:
        return self._new("addcmul", self, a, b, value)

    def addcdiv(self, a: Sym, b: Sym, value: float = 1.0) -> Sym:
        return self._new("addcdiv", self, a, b, value)

    # in place
    def add_(self, other: Any, alpha: float = 1.0) -> Sym:
        return self._set(self.add(other, alpha))

    def sub_(self, other: Any, alpha: float = 1.0) -> Sym:
        return self._set(self.sub(other, alpha))

    def mul_(self, other: Any) -> Sym:
        return self._set(self.mul(other))

    def div_(self, other: Any) -> Sym:
        return self._set(self.div(other))

    def sqrt_(self) -> Sym:
        return self._set(self.sqrt())

    def abs_(self) -> Sym:
        return self._set(self.abs())

    def sign_(self) -> Sym:
        return self._set(self.sign())

    def neg_(self) -> Sym:
        return self._set(self.neg())

    def reciprocal_(self) -> Sym:
        return self._set(self.reciprocal())

    def clamp_(self, min: float | None = None, max: float | None = None) -> Sym:  # noqa: A002
        return self._set(self.clamp(min, max))

    def copy_(self, other: Sym) -> Sym:  # no instruction: the symbol now names ``other``'s value
        if not isinstance(other, Sym) or other.trace is not self.trace:
            raise Untraceable("copy_ from something that is not a symbol of this trace")
        return self._set(other)

    def lerp_(self, end: Sym, weight: float) -> Sym:
        return self._set(self.lerp(end, weight))

    def addcmul_(self, a: Sym, b: Sym, value: float = 1.0) -> Sym:
        return self._set(self.addcmul(a, b, value))

    def addcdiv_(self, a: Sym, b: Sym, value: float = 1.0) -> Sym:
        return self._set(self.addcdiv(a, b, value))

    # operators
    __add__ = __radd__ = add
    __mul__ = __rmul__ = mul
    __truediv__ = div
    __neg__ = neg
    __abs__ = abs
    __gt__ = gt
    __ge__ = ge
    __lt__ = lt
    __le__ = le

    def __sub__(self, other: Any) -> Sym:
        return self.sub(other)

    def __rsub__(self, other: Any) -> Sym:
        return self.neg().add(other)

    def __rtruediv__(self, other: Any) -> Sym:
        return self.reciprocal().mul(other)

    def __bool__(self) -> bool:
        raise Untraceable("a rule branched on a tensor value")

    _FUNCTIONS: dict[Any, str] = {torch.neg: "neg", torch.add: "add", torch.sub: "sub", torch.mul: "mul",
                                  torch.div: "div", torch.sqrt: "sqrt", torch.maximum: "maximum",
                                  torch.clamp: "clamp", torch.lerp: "lerp", torch.addcmul: "addcmul",
                                  torch.addcdiv: "addcdiv", torch.reciprocal: "reciprocal", torch.abs: "abs",
                                  torch.sign: "sign", torch.gt: "gt", torch.ge: "ge", torch.lt: "lt",
                                  torch.le: "le", torch.where: "_where"}

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        name = cls._FUNCTIONS.get(func)
        if name is None or not args or not isinstance(args[0], Sym):
            raise Untraceable(f"torch function {getattr(func, '__name__', func)}")
        out = kwargs.pop("out", None)
        result = getattr(args[0], name)(*args[1:], **kwargs)
        if out is None:
            return result
        if not isinstance(out, Sym):
            raise Untraceable("out= a real tensor")
        return out._set(result)


def trace_rule(rule: Callable[..., Any], n_lists: int, n_per_tensor: int = 0, readonly: Sequence[int] = ()
               ) -> tuple[_Trace, list[tuple[int, str]], list[str]] | None:
    """Call ``rule(*syms, *per_tensor_syms)`` once on symbols (see :func:`run`) and return its record: the trace,
    the stores ``(list index, node)`` of the lists it wrote, and the nodes it asked to sum; None if it cannot be
    traced. Shared by every backend that turns a trace into a kernel (this module's C, the Triton kernels)."""
    trace = _Trace()
    syms = [Sym(trace, trace.node("load", str(j)), readonly=j in readonly) for j in range(n_lists)]
    scalars = [Sym(trace, f"q{k}") for k in range(n_per_tensor)]
    start = [s.node for s in syms]
    try:
        result = rule(*syms, *scalars)
        sums = list(result) if isinstance(result, list | tuple) else []  # a lambda may return its last Sym
        sum_nodes = [trace.operand(x) for x in sums]
    except Untraceable:
        return None
    return trace, [(j, s.node) for j, s in enumerate(syms) if s.node != start[j]], sum_nodes


# -- C source -------------------------------------------------------------------------------------------------
_COMPARE = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _expr(ins: tuple[str, ...], sqrt: str, bf16: frozenset[int]) -> str:
    op, a = ins[0], ins[1:]
    match op:
        case "load":
            return f"bf16_load(v{a[0]}[e])" if int(a[0]) in bf16 else f"v{a[0]}[e]"
        case "neg":
            return f"-{a[0]}"
        case "add":
            return f"{a[0]} + {a[2]} * {a[1]}"
        case "adds":
            return f"{a[0]} + {a[1]}"
        case "mul":
            return f"{a[0]} * {a[1]}"
        case "div":
            return f"{a[0]} / {a[1]}"
        case "sqrt":
            return f"{sqrt}({a[0]})"
        case "recip":
            return f"(T)1 / {a[0]}"
        case "abs":  # fabs on the value widened to double: exact, and -0.0 -> +0.0, NaN -> NaN as torch.abs
            return f"(T)fabs((double){a[0]})"
        case "sign":  # torch.sign: -1, 0 or 1, and 0 for -0.0 and for NaN
            return f"(T)(({a[0]} > (T)0) - ({a[0]} < (T)0))"
        case "gt" | "ge" | "lt" | "le":  # a mask, 1 or 0; NaN compares false
            return f"(T)({a[0]} {_COMPARE[op]} {a[1]})"
        case "where":
            return f"{a[0]} != (T)0 ? {a[1]} : {a[2]}"
        case "max":  # torch.maximum propagates NaN from either side
            return f"({a[0]} > {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]}"
        case "clampmin":  # NaN stays NaN, as in torch.clamp
            return f"{a[0]} < {a[1]} ? {a[1]} : {a[0]}"
        case "clampmax":
            return f"{a[0]} > {a[1]} ? {a[1]} : {a[0]}"
        case "lerp":  # torch's formula, exact at both ends
            return (f"{a[2]} < (T)0.5 ? {a[0]} + {a[2]} * ({a[1]} - {a[0]}) "
                    f": {a[1]} - ({a[1]} - {a[0]}) * ((T)1 - {a[2]})")
        case "addcmul":
            return f"{a[0]} + {a[3]} * {a[1]} * {a[2]}"
        case "addcdiv":
            return f"{a[0]} + {a[3]} * {a[1]} / {a[2]}"
    raise AssertionError(op)


_BF16 = """\
static inline float bf16_load(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t bf16_store(float f) {  /* round to nearest even, NaN stays NaN: as torch's conversion */
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}"""


#: The exported entry point: splits the elements into ``nthreads`` equal ranges (inside tensors where needed) and
#: runs them on torch's OpenMP team (or POSIX threads), each summing into its own slice of ``red``.
_DRIVER = """\
typedef struct { int64_t ntens; const int64_t* off; void* const* ptrs; const double* sc; const double* pt;
                 double* red; int64_t begin, end; } job_t;
static void* run_job(void* arg) {
  const job_t* j = (const job_t*)arg;
  run_range(j->ntens, j->off, j->ptrs, j->sc, j->pt, j->red, j->begin, j->end);
  return 0;
}
#ifdef OPTIMLAB_OPENMP  /* torch's own OpenMP runtime (already loaded): the threads torch computes with */
extern void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);
typedef struct { job_t* jobs; int64_t n; } team_t;
static void team_body(void* arg) {
  const team_t* team = (const team_t*)arg;
  for (int64_t k = omp_get_thread_num(); k < team->n; k += omp_get_num_threads()) run_job(&team->jobs[k]);
}
#endif
void optimlab_kernel(int64_t ntens, const int64_t* off, void* const* ptrs, const double* sc, const double* pt,
                     double* red, int64_t red_stride, int64_t nthreads) {
  job_t jobs[64];
  if (nthreads < 1) nthreads = 1;
  if (nthreads > 64) nthreads = 64;
  const int64_t total = off[ntens];
  for (int64_t k = 0; k < nthreads; k++) {
    jobs[k] = (job_t){ntens, off, ptrs, sc, pt, red + k * red_stride, total * k / nthreads,
                      total * (k + 1) / nthreads};
  }
  if (nthreads == 1) { run_job(&jobs[0]); return; }
#ifdef OPTIMLAB_OPENMP
  team_t team = {jobs, nthreads};  /* a smaller team than asked for runs the remaining jobs in turn */
  GOMP_parallel(team_body, &team, (unsigned)nthreads, 0);
#else
  pthread_t threads[64];
  int started[64] = {0};
  for (int64_t k = 1; k < nthreads; k++) started[k] = pthread_create(&threads[k], 0, run_job, &jobs[k]) == 0;
  for (int64_t k = 1; k < nthreads; k++) if (!started[k]) run_job(&jobs[k]);  /* no thread: run it here */
  run_job(&jobs[0]);
  for (int64_t k = 1; k < nthreads; k++) if (started[k]) pthread_join(threads[k], 0);
#endif
}
"""


def _source(instrs: Sequence[tuple[str, ...]], stores: Sequence[tuple[int, str]], sums: Sequence[str],
            dtypes: Sequence[torch.dtype], n_scalars: int, n_per_tensor: int) -> str:
    """C for one traced rule. ``dtypes[j]`` is list ``j``'s storage type; arithmetic is in ``dtypes[0]``'s type
    (bfloat16 storage is widened to float on load and rounded to nearest even on store)."""
    ctype, sqrt = _C_TYPES[dtypes[0]]
    bf16 = frozenset(j for j, d in enumerate(dtypes) if d == torch.bfloat16)
    store = {j: "bf16_store({})" if j in bf16 else "{}" for j in range(len(dtypes))}
    body = [f"const T n{i} = {_expr(ins, sqrt, bf16)};" for i, ins in enumerate(instrs)]
    body += [f"v{var}[e] = {store[var].format(node)};" for var, node in stores]
    vtype = {j: "uint16_t" if j in bf16 else "T" for j in range(len(dtypes))}
    lines = [
        *(["#define OPTIMLAB_OPENMP 1"] if _openmp_library() else []),
        "#include <pthread.h>",
        "#include <stdint.h>",
        "#include <string.h>",
        "#include <math.h>",
        f"typedef {ctype} T;",
        *([_BF16] if bf16 else []),
        "static void run_range(int64_t ntens, const int64_t* restrict off, void* const* restrict ptrs,",
        "                      const double* restrict sc, const double* restrict pt, double* restrict red,",
        "                      int64_t begin, int64_t end) {",
        *(f"  const T s{k} = (T)sc[{k}];" for k in range(n_scalars)),
        "  int64_t t = 0;",
        "  while (t < ntens && off[t + 1] <= begin) t++;",
        "  for (; t < ntens && off[t] < end; t++) {",
        "    const int64_t lo = (begin > off[t] ? begin : off[t]) - off[t];",
        "    const int64_t hi = (end < off[t + 1] ? end : off[t + 1]) - off[t];",
        *(f"    {vtype[j]}* restrict v{j} = ({vtype[j]}*)ptrs[{j} * ntens + t];" for j in range(len(dtypes))),
        *(f"    const T q{k} = (T)pt[{k} * ntens + t];" for k in range(n_per_tensor)),
    ]
    if not sums:
        lines += ["    for (int64_t e = lo; e < hi; e++) {", *(f"      {b}" for b in body), "    }"]
    else:
        acc = [f"a{r}" for r in range(len(sums))]
        lines += [f"    double {a}[{_LANES}] = {{0}};" for a in acc]
        lines += [
            "    int64_t i = lo;",
            f"    for (; i + {_LANES} <= hi; i += {_LANES}) {{",
            f"      for (int k = 0; k < {_LANES}; k++) {{",
            "        const int64_t e = i + k;",
            *(f"        {b}" for b in body),
            *(f"        {a}[k] += (double){s};" for a, s in zip(acc, sums, strict=True)),
            "      }",
            "    }",
            "    for (int64_t e = i; e < hi; e++) {",
            *(f"      {b}" for b in body),
            *(f"      {a}[0] += (double){s};" for a, s in zip(acc, sums, strict=True)),
            "    }",
        ]
        for r, a in enumerate(acc):
            lines += [f"    {{ double z = 0; for (int k = 0; k < {_LANES}; k++) z += {a}[k]; "
                      f"red[{r} * ntens + t] += z; }}"]
    lines += ["  }", "}", _DRIVER]
    return "\n".join(lines)


# -- compiling and caching ------------------------------------------------------------------------------------
_enabled = os.environ.get("OPTIMLAB_KERNELS", "1").strip().lower() not in ("0", "false", "off", "no")
_lock = threading.Lock()
_loaded: dict[tuple[Any, ...], Callable[..., None] | None] = {}  # None: this kernel cannot be had in this process
_MISSING = object()
_compiler: list[str] | None = None
_compiler_id: str | None = None
_omp: str | None = None
_stats = {"compiled": 0, "loaded": 0, "runs": 0, "failed": 0}

#: Seconds one compiler call may take before it is killed (a cold kernel takes 0.06-0.2 s here). After a timeout
#: this process compiles nothing more (kernels already built still load): a hanging compiler costs one bounded
#: wait, not one per kernel or per step. ``$OPTIMLAB_KERNEL_TIMEOUT`` sets it.
COMPILE_TIMEOUT_S = float(os.environ.get("OPTIMLAB_KERNEL_TIMEOUT", "60"))
_compiler_hung = False
_warned: set[tuple[str, ...]] = set()  # each kind of trouble is reported once per process (not per kernel or step)
_cache_verdicts: dict[str, str | None] = {}  # cache folder -> why it is refused (None: it is safe)
_library_fds: list[int] = []  # kept open: each kernel is loaded from the very file that was verified


def enabled() -> bool:
    """Whether compiled kernels are used (on by default where a C compiler exists)."""
    return _enabled and compiler() is not None


def set_enabled(flag: bool) -> bool:
    """Turn compiled kernels on or off for this process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


def stats() -> dict[str, int]:
    """Counters: kernels ``compiled`` and ``loaded`` by this process, kernel ``runs``, ``failed`` compiles."""
    return dict(_stats)


def cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    explicit = os.environ.get("OPTIMLAB_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optimlab" / "kernels"


def _uid() -> int:
    return os.geteuid()


def _warn_once(key: tuple[str, ...], message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"optimlab: {message}", RuntimeWarning, stacklevel=6)


def _flags() -> list[str]:
    arch = "-mcpu=native" if platform.machine().lower() in ("arm64", "aarch64") else "-march=native"
    return ["-O3", arch, "-std=c11", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-pthread"]


def _run_bounded(cmd: Sequence[str], timeout: float, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; on timeout the whole process group is killed (a compiler driver's children
    too) and ``subprocess.TimeoutExpired`` is raised."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _timed_out(cmd: Sequence[str]) -> None:
    global _compiler_hung
    _compiler_hung = True
    _warn_once(("timeout",), f"the C compiler ({' '.join(cmd[:2])} ...) did not finish within {COMPILE_TIMEOUT_S:g} "
               "s and was killed; this process compiles no more kernels and runs the eager path where none is "
               "cached (set $OPTIMLAB_KERNEL_TIMEOUT to allow longer)")


def compiler() -> list[str] | None:
    """The C compiler command used for kernels (``$CC``, else ``cc``, ``gcc`` or ``clang``), or None.

    ``$CC`` may hold a launcher and the compiler (``CC="ccache gcc"``): the command is identified (for the cache
    key) by what ``<command> --version`` prints, i.e. the compiler's version, not the launcher's."""
    global _compiler, _compiler_id
    if _compiler_id is None:
        candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
        for name in candidates:
            words = name.split()
            path = shutil.which(words[0])
            if path is None:
                continue
            cmd = [path, *words[1:]]
            try:
                out = _run_bounded([*cmd, "--version"], timeout=min(30.0, COMPILE_TIMEOUT_S))
                if out.returncode != 0 or not out.stdout.strip():
                    continue
            except subprocess.TimeoutExpired:
                _timed_out(cmd)
                continue
            except OSError:
                continue
            version = out.stdout.strip().splitlines()[0]
            digest = hashlib.sha256(out.stdout.encode()).hexdigest()[:12]
            _compiler, _compiler_id = cmd, f"{version}|{digest}|{_cpu_id()}"
            break
        else:
            _compiler_id = ""
    return _compiler


def _openmp_library() -> str | None:
    """The OpenMP runtime torch runs its parallel kernels on, when it is GNU libgomp (Linux wheels). Kernels link
    against this very file, so their threads are torch's: no second team of threads competing with torch's
    (which spin for a while after each parallel op, right before an optimizer step). Else None: POSIX threads."""
    global _omp
    if _omp is None:
        _omp = ""
        try:
            if "OpenMP" in torch.__config__.parallel_info():
                for line in Path("/proc/self/maps").read_text().splitlines():
                    path = line.split()[-1] if len(line.split()) >= 6 else ""
                    if os.path.basename(path).startswith("libgomp") and ".so" in path and os.path.exists(path):
                        _omp = path
                        break
        except OSError:
            pass
    return _omp or None


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [line for line in info if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return hashlib.sha256("\n".join(sorted(set(keep))).encode()).hexdigest()[:16]
    except OSError:
        return platform.processor() or platform.machine()


def _unsafe(directory: Path) -> str | None:
    """Why a kernel cache folder must not be used, or None.

    The libraries in it run in the training process, so, as OpenSSH does for its keys and pip for its cache: the
    folder must be owned by this user and writable by no one else, and every folder above it owned by this user or
    root and not writable by others unless it has the sticky bit (``/tmp``: others can then neither rename nor
    delete what is not theirs)."""
    uid = _uid()
    try:
        real = directory.resolve()
        st = real.stat()
        if st.st_uid != uid:
            return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
        if st.st_mode & 0o022:
            who = "group and others" if st.st_mode & 0o022 == 0o022 else "group" if st.st_mode & 0o020 else "others"
            return f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):o})"
        for parent in real.parents:
            st = parent.stat()
            if st.st_uid not in (uid, 0):
                return f"is inside {parent}, which is owned by uid {st.st_uid}"
            if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                return f"is inside {parent}, which others can write (mode {stat.S_IMODE(st.st_mode):o})"
    except OSError as exc:
        return f"cannot be checked ({exc})"
    return None


def _safe_cache(directory: Path) -> bool:
    """Create the folder (private) if needed and check it once per process; warn and refuse an unsafe one."""
    key = str(directory)
    if key not in _cache_verdicts:
        try:
            missing = [d for d in (directory, *directory.parents) if not d.exists()]
            for d in reversed(missing):  # each created private: mkdir(parents=True) would use the umask
                d.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:  # read-only or missing HOME (user nobody): nothing unsafe, just no cache
            _cache_verdicts[key] = f"cannot be created ({exc})"
            _warn_once(("cache", key), f"the kernel cache folder {directory} cannot be created ({exc}), so compiled "
                       "kernels are off and the eager path runs (the same results; torch's fused kernels are still "
                       "used where they exist). To use compiled kernels, set $OPTIMLAB_KERNEL_CACHE to a folder you "
                       "can write")
            return False
        problem = _unsafe(directory)
        _cache_verdicts[key] = problem
        if problem is not None:
            _warn_once(("cache", key), f"the kernel cache folder {directory} {problem}, so its libraries could have "
                       "been planted by someone else: compiled kernels are off for it and the eager path runs. Use a "
                       "folder only you can write (chmod go-w, or set $OPTIMLAB_KERNEL_CACHE)")
    return _cache_verdicts[key] is None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(cc: list[str], source: str, key: str, directory: Path, link: list[str]) -> None:
    """Compile in a private temporary folder, then move the library into the cache under a name that holds its
    hash, and only then (atomically) the record of that hash: a reader never sees a record without its library,
    and processes building the same kernel at once (DDP ranks) each leave a consistent pair."""
    build = tempfile.mkdtemp(prefix=f".build-{key}-", dir=directory)
    try:
        src, lib = f"optimlab_{key}.c", f"optimlab_{key}.so"
        Path(build, src).write_text(source)
        try:
            done = _run_bounded([*cc, *_flags(), "-o", lib, src, *link], timeout=COMPILE_TIMEOUT_S, cwd=build)
        except subprocess.TimeoutExpired:
            _timed_out(cc)
            raise
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        data = Path(build, lib).read_bytes()
        digest = _digest(data)
        os.chmod(Path(build, lib), 0o755)
        os.replace(Path(build, lib), directory / f"optimlab_{key}-{digest[:16]}.so")
        os.replace(Path(build, src), directory / f"optimlab_{key}.c")
        Path(build, "sha256").write_text(digest + "\n")
        os.replace(Path(build, "sha256"), directory / f"optimlab_{key}.sha256")
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _open_verified(key: str, directory: Path) -> tuple[int, Path] | None:
    """Open the cached library of ``key`` if it matches the hash recorded when it was built: the open file (loaded
    through ``/proc/self/fd``, so the bytes checked are the bytes loaded) and its path. None if there is none, or
    if it does not match (then warn: it was damaged or replaced, and is rebuilt)."""
    record = directory / f"optimlab_{key}.sha256"
    try:
        digest = record.read_text().strip()
    except OSError:
        return None
    path = directory / f"optimlab_{key}-{digest[:16]}.so"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        ok = st.st_uid == _uid() and not st.st_mode & 0o022 and _digest(b"".join(chunks)) == digest
    except OSError:
        ok = False
    if not ok:
        os.close(fd)
        _warn_once(("mismatch", str(path)), f"the cached kernel {path} does not match the hash recorded when it was "
                   "built (damaged, or replaced by someone else): it was not loaded, and was rebuilt")
        return None
    return fd, path


def _dlopen(fd: int, path: Path) -> Callable[..., None]:
    proc_path = f"/proc/self/fd/{fd}"
    lib = ctypes.CDLL(proc_path if os.path.exists(proc_path) else str(path))
    fn = lib.optimlab_kernel
    fn.restype = None
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]  # ... red, red_stride, nthreads
    _library_fds.append(fd)  # never closed: a reused descriptor number would name another library to dlopen
    return fn


def _load(structure: tuple[Any, ...], make_source: Callable[[], str]) -> Callable[..., None] | None:
    """The kernel for a traced rule's ``structure`` (everything its C depends on): from this process's table, or
    loaded from the disk cache (after checking the folder and the library's recorded hash), or compiled into it.
    The source is written and hashed only on a table miss, not on every step."""
    cc = compiler()
    if cc is None:
        return None
    structure = (*structure, _compiler_id, _openmp_library())
    fn = _loaded.get(structure, _MISSING)
    if fn is not _MISSING:
        return fn
    with _lock:
        if structure in _loaded:
            return _loaded[structure]
        fn = None
        directory = cache_dir()
        if _safe_cache(directory):
            source = make_source()
            omp = _openmp_library()
            link = [omp, f"-Wl,-rpath,{os.path.dirname(omp)}"] if omp else []
            key = hashlib.sha256("\0".join([source, _compiler_id or "", " ".join(_flags()), " ".join(link)])
                                 .encode()).hexdigest()[:24]
            fn = _load_or_build(cc, source, key, directory, link)
        _loaded[structure] = fn
        return fn


def _load_or_build(cc: list[str], source: str, key: str, directory: Path,
                   link: list[str]) -> Callable[..., None] | None:
    for attempt in range(2):  # a cached library that does not verify, or does not load, is rebuilt once
        opened = _open_verified(key, directory)
        if opened is None:
            if _compiler_hung:
                return None
            try:
                _build(cc, source, key, directory, link)
            except subprocess.TimeoutExpired:
                _stats["failed"] += 1
                return None
            except (OSError, subprocess.SubprocessError) as exc:
                _stats["failed"] += 1
                detail = (getattr(exc, "stderr", "") or str(exc)).strip()
                status = f" (exit status {exc.returncode})" if isinstance(exc, subprocess.CalledProcessError) else ""
                _warn_once(("compile", " ".join(cc), detail[:200]), f"compiling a kernel failed{status}, so the "
                           f"eager path runs instead: {detail[:500]}")
                return None
            _stats["compiled"] += 1
            opened = _open_verified(key, directory)
            if opened is None:
                return None
        try:
            fn = _dlopen(*opened)
        except (OSError, AttributeError) as exc:
            os.close(opened[0])
            if attempt == 0:
                with contextlib.suppress(OSError):
                    (directory / f"optimlab_{key}.sha256").unlink()  # rebuild it
                continue
            _warn_once(("dlopen", str(opened[1])), f"loading the compiled kernel {opened[1]} failed, so the eager "
                       f"path runs instead: {exc}")
            return None
        _stats["loaded"] += 1
        return fn
    return None


# -- running --------------------------------------------------------------------------------------------------
def _storage_ok(dtype: torch.dtype, compute: torch.dtype) -> bool:
    return dtype == compute or (dtype == torch.bfloat16 and compute == torch.float32)


def usable(lists: Sequence[Sequence[Tensor]], owner: str = "optimlab", sizes_checked: bool = False) -> bool:
    """Whether these aligned lists of tensors can run in a kernel: kernels enabled, plain contiguous CPU
    tensors, the first list float32 or float64 and every list of that dtype, or bfloat16 beside float32
    (lower-precision state such as ``moment_dtype=torch.bfloat16``).

    A kernel walks every tensor ``i`` over ``lists[0][i].numel()`` elements, so every ``lists[j][i]`` must have
    ``lists[0][i]``'s shape: otherwise ``RuntimeError`` (:func:`optimlab.core.tensors.check_shapes`, naming
    ``owner``), never a decline to an eager path. ``sizes_checked``: the caller has checked that already.
    Contiguous tensors of one shape are laid out alike, so a kernel reads them element for element."""
    if not lists or not lists[0] or not enabled():
        return False
    compute = lists[0][0].dtype
    if compute not in _C_TYPES:
        return False
    if not sizes_checked:
        tensors.check_shapes(lists, owner)
    for lst in lists:  # this runs every step, over every tensor: C-level map() calls, no Python loop per tensor
        dtype = lst[0].dtype
        if not _storage_ok(dtype, compute):
            return False
        if (not tensors.is_plain(lst) or not all(map(_IS_CPU, lst))
                or set(map(_DTYPE, lst)) != {dtype} or not all(map(Tensor.is_contiguous, lst))):
            return False
    return True


def run(rule: Callable[..., Sequence[Sym] | None], lists: Sequence[Sequence[Tensor]],
        per_tensor: Sequence[Tensor] = (), readonly: Sequence[int] = ()) -> Tensor | None | bool:
    """Trace ``rule`` and run it as one compiled loop over the tensors.

    ``rule(*syms, *per_tensor_syms)`` receives one :class:`Sym` per list (``lists[j][i]`` is tensor ``i``'s
    ``j``-th operand; all have its shape) and one per ``per_tensor`` 1-d tensor (its
    element ``i`` is the scalar for tensor ``i``). It updates the symbols in place and may return a list of
    expressions to sum over each tensor's elements (any other return value is ignored). Lists whose indices
    are in ``readonly`` must not be written.

    Returns False if the rule cannot be traced or compiled (nothing was touched: run it eagerly), else the
    sums as a float64 tensor of shape ``(len(returned), len(lists[0]))`` (None when it returned nothing).
    ``usable(lists)`` must hold.
    """
    traced = trace_rule(rule, len(lists), len(per_tensor), readonly)
    if traced is None:
        return False
    trace, stores, sum_nodes = traced
    dtypes = [lst[0].dtype for lst in lists]
    structure = (tuple(trace.instrs), tuple(stores), tuple(sum_nodes), tuple(dtypes), len(trace.scalars),
                 len(per_tensor))
    fn = _load(structure, lambda: _source(trace.instrs, stores, sum_nodes, dtypes, len(trace.scalars),
                                          len(per_tensor)))
    if fn is None:
        return False
    n = len(lists[0])
    sizes = list(map(Tensor.numel, lists[0]))
    off = torch.tensor([0, *sizes], dtype=torch.int64).cumsum_(0)
    ptrs = torch.tensor([x for lst in lists for x in map(Tensor.data_ptr, lst)], dtype=torch.int64)
    sc = torch.tensor(trace.scalars or [0.0], dtype=torch.float64)
    pt = (torch.stack([x.detach().to(device="cpu", dtype=torch.float64).reshape(n) for x in per_tensor])
          if per_tensor else torch.zeros(1, dtype=torch.float64))
    total = int(off[-1])
    threads = max(1, min(torch.get_num_threads(), 64, total // _MIN_PARALLEL_ELEMS))
    red = torch.zeros(threads, max(1, len(sum_nodes)), n, dtype=torch.float64)
    fn(n, off.data_ptr(), ptrs.data_ptr(), sc.data_ptr(), pt.data_ptr(), red.data_ptr(), red[0].numel(), threads)
    _stats["runs"] += 1
    return red.sum(0)[: len(sum_nodes)] if sum_nodes else None
