"""Speed of optimlab.diagnostics against the targets of the diagnostics issue, on the default task's CNN.

1. The recorder's overhead on a training step (forward, backward, optimizer step) at its default interval
   (``every=20``, histograms on), at ``every=10`` and at ``every=1``: the time spent inside its hooks per step
   over the time of a plain step (blocks with and without the recorder, interleaved; medians) (target: < 5 %
   at the default interval).
2. A 2-D 21 x 21 filter-normalized landscape of the MNIST-1D CNN on 2,000 examples (target: < 2 minutes on 2 cores).
3. The top Hessian eigenvalue by power iteration on one batch (the task's batch of 100, and 1,000 examples)
   (target: < 10 s).
4. What ``compare --diagnostics`` adds to one run of the default comparison (DiagnosticsCallback).

    PYTHONPATH=src python3 benchmarks/diagnostics_speed.py            # full
    PYTHONPATH=src python3 benchmarks/diagnostics_speed.py --quick    # smoke test (small, noisy)
    PYTHONPATH=src python3 benchmarks/diagnostics_speed.py --only 2 3 # some parts (1 recorder, 2 landscape,
                                                                      # 3 eigenvalue, 4 compare run)

Timings on a shared machine are noisy: the recorder's overhead is a difference of two medians; run on a quiet
machine before trusting the figure.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import statistics
import time

import numpy as np
import torch

import optimlab
from optimlab import diagnostics
from optimlab.lab.catalog.presets import build_optimizer
from optimlab.lab.catalog.tasks import get_task
from optimlab.lab.training.runner import RunConfig, run


def _setup(spec: str, steps: int = 0, seed: int = 0):
    task = get_task("mnist1d-cnn")
    data = task.load()
    torch.manual_seed(seed)
    model = task.model(data)
    opt = build_optimizer(spec, model)
    g = torch.Generator().manual_seed(seed)
    batches = list(itertools.islice(task.batches(data, task.batch_size, g), 200))
    for x, y in batches[:steps]:
        opt.zero_grad(set_to_none=True)
        task.loss_fn(model(x), y).backward()
        opt.step()
    return task, data, model, opt, batches


def _steps(task, model, opt, batches, n: int) -> list[float]:
    times = []
    for x, y in itertools.islice(itertools.cycle(batches), n):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        task.loss_fn(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


class _TimedRecorder(diagnostics.Recorder):
    """The recorder with a stopwatch around its two hooks: its own cost, apart from the step's noise."""

    seconds = 0.0

    def _pre(self, *args):
        t0 = time.perf_counter()
        super()._pre(*args)
        self.seconds += time.perf_counter() - t0

    def _post(self, *args):
        t0 = time.perf_counter()
        super()._post(*args)
        self.seconds += time.perf_counter() - t0


def recorder_overhead(spec: str, every: int, rounds: int, block: int) -> tuple[float, float, float, float]:
    """(ms/step without the recorder, ms/step with it, the recorder's own ms per step, its overhead in % of a
    plain step). Per round one block of steps without and one with the recorder, interleaved; medians over
    rounds. The overhead is the time inside the recorder's hooks over the plain step time (the difference of the
    two step times is reported too but is at the mercy of the machine's noise)."""
    task, _, model, opt, batches = _setup(spec, steps=20)
    _steps(task, model, opt, batches, 50)  # warm up (kernels, allocator)
    plain, recorded, own = [], [], []
    for _ in range(rounds):
        plain.append(float(np.mean(_steps(task, model, opt, batches, block))))
        rec = _TimedRecorder(opt, model, every=every)
        recorded.append(float(np.mean(_steps(task, model, opt, batches, block))))
        rec.close()
        own.append(rec.seconds / block)
    a, b, c = statistics.median(plain), statistics.median(recorded), statistics.median(own)
    return 1e3 * a, 1e3 * b, 1e3 * c, 100 * c / a


def landscape_time(grid: int, examples: int) -> tuple[float, str]:
    task, data, model, opt, batches = _setup("sgdm", steps=200)
    evals = diagnostics.fixed_batches(data.x_train[:examples], data.y_train[:examples], 2000)
    dirs = diagnostics.random_directions(model, 2)
    t0 = time.perf_counter()
    res = diagnostics.landscape(model, task.loss_fn, evals, dirs, np.linspace(-1, 1, grid))
    return time.perf_counter() - t0, str(res.cost)


def eigen_time(examples: int) -> tuple[float, diagnostics.HessianEigen]:
    task, data, model, opt, batches = _setup("sgdm", steps=200)
    batch = (data.x_train[:examples], data.y_train[:examples])
    t0 = time.perf_counter()
    e = diagnostics.top_hessian_eigenvalue(model, task.loss_fn, batch, iters=100, tol=1e-3)
    return time.perf_counter() - t0, e


def compare_run_cost(steps: int) -> tuple[float, float]:
    from optimlab.lab.training.diagnostic_runs import DiagnosticsCallback

    config = RunConfig("mnist1d-cnn", "adam", 1e-3, 0, steps, 100, max(1, steps // 10))
    run(config)  # warm up
    t0 = time.perf_counter()
    run(config)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(config, callbacks=[DiagnosticsCallback()])
    return plain, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: small and noisy")
    p.add_argument("--rounds", type=int, default=None, help="rounds of part 1 (default 8; --quick: 2)")
    p.add_argument("--only", type=int, nargs="+", choices=[1, 2, 3, 4], default=[1, 2, 3, 4], help="parts to run")
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 8)
    block = 50 if args.quick else 200
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), optimlab {optimlab.__version__}; "
          "task mnist1d-cnn (batch 100)")
    if 1 in args.only:
        recorder_table(rounds, block)
    if 2 in args.only:
        grid = 5 if args.quick else 21
        secs, cost = landscape_time(grid, 2000)
        print(f"\n2. {grid}x{grid} filter-normalized landscape on 2,000 examples: {secs:.1f} s ({cost}); "
              "target for 21x21: < 120 s")
    if 3 in args.only:
        print("\n3. top Hessian eigenvalue by power iteration (iters <= 100, tol 1e-3); target < 10 s")
        for n in (100, 1000):
            secs, e = eigen_time(n)
            print(f"   batch of {n:4d}: {secs:.2f} s, lambda_max = {e.value:.4g} after {e.iterations} products "
                  f"({'converged' if e.converged else 'not converged'})")
    if 4 in args.only:
        steps = 200 if args.quick else 2000
        plain, diag = compare_run_cost(steps)
        print(f"\n4. one default run of {steps} steps (adam): {plain:.1f} s plain, {diag:.1f} s with "
              f"DiagnosticsCallback (+{diag - plain:.1f} s, {100 * (diag / plain - 1):.0f}%)")


def recorder_table(rounds: int, block: int) -> None:
    print(f"\n1. recorder overhead on a training step (blocks of {block} steps with and without, interleaved, "
          f"{rounds} rounds; medians)")
    print(f"{'optimizer':10s} {'every':>5s} {'plain ms':>9s} {'recorded ms':>12s} {'recorder ms':>12s} "
          f"{'overhead':>9s}")
    default = inspect.signature(diagnostics.Recorder).parameters["every"].default
    for spec in ("sgdm", "adam", "lamb"):
        for every in (default, 10, 1):
            a, b, c, pct = recorder_overhead(spec, every, rounds, block)
            print(f"{spec:10s} {every:5d} {a:9.3f} {b:12.3f} {c:12.4f} {pct:8.1f}%" + ("   (default interval)"
                                                                                  if every == default else ""))


if __name__ == "__main__":
    main()
