"""Where a small model's optimizer step spends its time: the host-overhead breakdown (analysis, not a target).

On a small model (``--tensors`` tensors of ``--numel`` elements; default 300 x 64, the small-model case of
``benchmarks/step_speed.py --small``) a step moves little data, so its time is the host's: Python per tensor, list
building, kernel calls per list. This script times steady-state ``opt.step()`` calls (median over ``--steps``, after
``--warmup`` untimed steps), then repeats them with timers wrapped around the pieces of a step and prints, per
implementation, the median per step of each piece (inclusive times: a piece's time contains the pieces it calls):

- optimlab: ``step`` > ``_step_group`` (the per-parameter loop: grad and state lookup, the bucket key; in a steady
  state instead ``plan.valid``, the cached step plan checked, and ``plan.run``) > ``_advance`` (the step counters,
  one ``_foreach_add_``), ``_run_bucket`` (the lists built from the bucket) > ``dispatch.step_bucket`` (the path
  table) > ``_run_lists`` > ``_fused`` (torch's fused kernel where optimlab calls it), ``_prepare`` (0-d state,
  derived scalars), ``kernels.usable`` (the per-tensor checks), ``kernels.run`` > ``trace_rule`` (the rule traced
  again every step) and the compiled C loop's call;
- torch kernels, in whichever implementation calls them: ``torch._fused_adam_``/``_fused_adamw_``/``_fused_sgd_``,
  ``torch._foreach_add_``/``_foreach_mul_`` (0-d counters and products) and the total of every other
  ``torch._foreach_*`` call.

Usage (from the repository root)::

    PYTHONPATH=src python3 benchmarks/host_overhead.py                     # Adam, SGD(momentum), NAdam
    PYTHONPATH=src python3 benchmarks/host_overhead.py --only NAdam --profile   # and cProfile's top functions

Timings on a shared machine are noisy: compare pieces within one run; ``--rounds`` keeps the fastest round.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["breakdown", "main", "small_model"]

Factory = Callable[[list[torch.nn.Parameter]], Any]


def small_model(tensors: int = 300, numel: int = 64, seed: int = 0) -> list[torch.nn.Parameter]:
    """``tensors`` fp32 parameters of ``numel`` elements each, with gradients set (a fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(numel, generator=gen) * 0.05) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(numel, generator=gen) * 1e-2
    return params


@contextlib.contextmanager
def no_torch_fused() -> Iterator[None]:
    """optimlab without torch's fused kernels: its rules then run as its own compiled C loop."""
    from optimlab.core import tensors  # noqa: PLC0415

    orig = tensors.fused_kernels_support
    tensors.fused_kernels_support = lambda ts: False
    try:
        yield
    finally:
        tensors.fused_kernels_support = orig


def _c_loop(factory: Factory) -> Factory:
    factory.context = no_torch_fused  # type: ignore[attr-defined]
    return factory


def _implementations() -> dict[str, dict[str, Factory]]:
    import optimlab  # noqa: PLC0415 - the benchmark runs with PYTHONPATH=src

    optim = torch.optim
    return {
        "Adam": {"optimlab": lambda ps: optimlab.Adam(ps, lr=1e-3),
                 "optimlab C loop": _c_loop(lambda ps: optimlab.Adam(ps, lr=1e-3)),
                 "torch fused": lambda ps: optim.Adam(ps, lr=1e-3, fused=True),
                 "torch foreach": lambda ps: optim.Adam(ps, lr=1e-3, foreach=True)},
        "SGD(momentum)": {"optimlab": lambda ps: optimlab.SGD(ps, lr=1e-2, momentum=0.9),
                          "torch fused": lambda ps: optim.SGD(ps, lr=1e-2, momentum=0.9, fused=True),
                          "torch foreach": lambda ps: optim.SGD(ps, lr=1e-2, momentum=0.9, foreach=True)},
        "NAdam": {"optimlab": lambda ps: optimlab.NAdam(ps, lr=2e-3),
                  "torch foreach": lambda ps: optim.NAdam(ps, lr=2e-3, foreach=True)},
    }


class _Timers:
    """Inclusive wall time per named piece, accumulated per step."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.steps: list[dict[str, float]] = []

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        current, calls, clock = self.current, self.calls, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                current[name] += clock() - t
                calls[name] += 1

        return timed

    def end_step(self) -> None:
        self.steps.append(dict(self.current))
        self.current.clear()


@contextlib.contextmanager
def _patched(timers: _Timers, opt: Any) -> Iterator[None]:
    """Timers around the pieces of a step (restored afterwards)."""
    from optimlab.core import base, dispatch, kernels  # noqa: PLC0415

    undo: list[tuple[Any, str, Any, bool]] = []

    def patch(obj: Any, attr: str, name: str, wrap_result: Callable[[Any], Any] | None = None) -> None:
        if not hasattr(obj, attr):
            return  # a piece this version of the code does not have
        had = attr in vars(obj)
        orig = getattr(obj, attr)
        undo.append((obj, attr, vars(obj).get(attr), had))
        fn = timers.wrap(orig, name)
        if wrap_result is not None:
            inner = fn

            def fn(*args: Any, **kwargs: Any) -> Any:
                return wrap_result(inner(*args, **kwargs))

        setattr(obj, attr, fn)

    cls = type(opt)
    if isinstance(opt, base.Optimizer):
        for attr in ("_step_group", "_advance", "_run_bucket", "_run_lists", "_fused", "_prepare"):
            patch(cls, attr, attr)
        patch(base._Plan, "valid", "plan.valid")
        patch(base._Plan, "run", "plan.run")
        patch(dispatch, "step_bucket", "dispatch.step_bucket")
        patch(kernels, "usable", "kernels.usable")
        patch(kernels, "run", "kernels.run")
        patch(kernels, "trace_rule", "  trace_rule")
        patch(kernels, "_load", "  _load", wrap_result=lambda f: f if f is None else timers.wrap(f, "  C loop"))
    for name in ("_fused_adam_", "_fused_adamw_", "_fused_sgd_", "_foreach_add_", "_foreach_mul_"):
        patch(torch, name, f"torch.{name}")
    others = [n for n in dir(torch) if n.startswith("_foreach_") and n not in ("_foreach_add_", "_foreach_mul_")]
    for name in others:
        patch(torch, name, "torch._foreach_* (other)")
    try:
        yield
    finally:
        for obj, attr, orig, had in reversed(undo):
            if had:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)


def _timed_steps(opt: Any, steps: int, timers: _Timers | None = None) -> list[float]:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
        if timers is not None:
            timers.end_step()
    return times


def breakdown(factory: Factory, tensors: int, numel: int, steps: int, warmup: int,
              rounds: int = 1) -> tuple[float, dict[str, float], dict[str, float]]:
    """(median ms per step untimed, {piece: median ms per step}, {piece: calls per step}) for one implementation."""
    with getattr(factory, "context", contextlib.nullcontext)():
        return _breakdown(factory, tensors, numel, steps, warmup, rounds)


def _breakdown(factory: Factory, tensors: int, numel: int, steps: int, warmup: int,
               rounds: int) -> tuple[float, dict[str, float], dict[str, float]]:
    best_ms, best_pieces, calls = float("inf"), {}, {}
    for _ in range(max(1, rounds)):
        opt = factory(small_model(tensors, numel))
        _timed_steps(opt, warmup)
        ms = statistics.median(_timed_steps(opt, steps)) * 1e3
        timers = _Timers()
        with _patched(timers, opt):
            _timed_steps(opt, steps, timers)
        names = {k for s in timers.steps for k in s}
        pieces = {k: statistics.median(s.get(k, 0.0) for s in timers.steps) * 1e3 for k in names}
        if ms < best_ms:
            best_ms, best_pieces = ms, pieces
            calls = {k: v / steps for k, v in timers.calls.items()}
    return best_ms, best_pieces, calls


_ORDER = ["_step_group", "plan.valid", "plan.run", "_advance", "_run_bucket", "dispatch.step_bucket", "_run_lists",
          "_fused", "_prepare", "kernels.usable",
          "kernels.run", "  trace_rule", "  _load", "  C loop"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensors", type=int, default=300)
    ap.add_argument("--numel", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="repeat; the fastest round is printed")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads (default 2; 1 takes torch's per-tensor OpenMP regions out)")
    ap.add_argument("--only", default="", help="comma-separated algorithm names (Adam, SGD(momentum), NAdam)")
    ap.add_argument("--profile", action="store_true", help="also print cProfile's top functions for optimlab")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    impls = _implementations()
    if args.only:
        wanted = {s.strip().lower() for s in args.only.split(",")}
        impls = {k: v for k, v in impls.items() if k.lower() in wanted}
    print(f"torch {torch.__version__}, {args.tensors} tensors x {args.numel} fp32 elements, torch threads "
          f"{torch.get_num_threads()}; median of {args.steps} steps after {args.warmup}; best of {args.rounds}")
    for algo, by_impl in impls.items():
        print(f"\n{algo}")
        for label, factory in by_impl.items():
            ms, pieces, calls = breakdown(factory, args.tensors, args.numel, args.steps, args.warmup, args.rounds)
            print(f"  {label:<14} {ms * 1e3:8.0f} us/step")
            keys = [k for k in _ORDER if k in pieces] + sorted(k for k in pieces if k not in _ORDER)
            for k in keys:
                if pieces[k] > 0 or calls.get(k):
                    print(f"      {k:<28} {pieces[k] * 1e3:8.0f} us   ({calls.get(k, 0):g} calls/step)")
            if args.profile and label.startswith("optimlab"):
                with getattr(factory, "context", contextlib.nullcontext)():
                    opt = factory(small_model(args.tensors, args.numel))
                    _timed_steps(opt, args.warmup)
                    prof = cProfile.Profile()
                    prof.enable()
                    _timed_steps(opt, args.steps)
                    prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
                print("\n".join("      " + ln for ln in out.getvalue().splitlines() if ln.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
