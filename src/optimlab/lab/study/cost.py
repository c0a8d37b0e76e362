"""The lab's one cost model: what a study or an experiment has to run, and about how long it takes on this machine.

No time measured on another machine prices anything here (one guess remains: :data:`WORKER_START_SECONDS`, the
start of a pool of worker processes, which is not probed: that would spawn one). Short probes price the work on
this machine:

- :func:`probe` trains the task's model with Adam for a few steps at one batch size and thread count, times one
  evaluation of each of the task's final splits, and one forward pass (no gradient) of a batch; it runs once per
  task, batch size, thread count and data folder in a process (cached);
- :func:`probe_optimizer` times one lab optimizer stepping a single float64 tensor whose gradient is set by hand (no
  model), once per optimizer, size and thread count in a process.

The work it prices comes in three kinds:

- :class:`~optimlab.lab.training.runner.RunConfig` s, run by the executor on ``jobs`` workers with
  ``cpu_count // jobs`` torch threads each (a sweep, a tuned study): the steps times the probe's step, plus the
  evaluations (one per ``eval_every`` steps and one at the start, of each split; the test split once);
- :class:`Training`: a training loop that is not a RunConfig through the executor (a loop that stops at a
  target, a run with a recorder, a range test, the runs behind a landscape), with the evaluations and the extra
  forward or backward passes it makes (landscapes, interpolations, Hessian-vector products); it runs in this
  process, one piece after another;
- :class:`Steps`: optimizer steps on a small tensor without a model (closed-form and online toy problems), in
  this process.

:func:`remaining_configs` and :func:`estimate_cost` price a tuned study (``optimlab compare``, ``benchmark``);
:func:`planned_configs` lists a whole tuned study; :func:`estimate_work` prices a reproduce experiment's
``work(protocol)`` and :func:`count_work` counts its runs and steps without probing anything.

What the model leaves out: the probe steps Adam, so an optimizer with a costlier step (Shampoo, SOAP, Muon's
Newton-Schulz, a wrapper) is priced as Adam; callbacks and recorders that run every step; the Python work of a
toy loop beyond the optimizer's step; and a load that changes after the probe, which measures the machine as it
is at that moment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.presets import preset_lr
from optimlab.lab.catalog.tasks import get_task
from optimlab.lab.study.protocol import Protocol
from optimlab.lab.study.tuning import _collect
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import load_records
from optimlab.lab.training.runner import RunConfig

__all__ = [
    "CostEstimate",
    "Probe",
    "StepProbe",
    "Training",
    "Steps",
    "Work",
    "probe",
    "probe_optimizer",
    "planned_configs",
    "remaining_configs",
    "estimate_cost",
    "estimate_work",
    "count_work",
    "duration",
]

WORKER_START_SECONDS = 6.0  # spawning a pool of workers, importing torch and loading the data in each (a guess)
STEP_PROBE_STEPS = 200  # optimizer steps timed by probe_optimizer (after a few untimed ones)


@dataclass(frozen=True)
class CostEstimate:
    """What some work will cost on this machine, priced by short probe runs."""

    seconds: float  # expected wall time with ``jobs`` workers
    runs: int
    train_steps: int
    ms_per_step: float  # measured by the probe (one worker's threads); the mean over the work when it has several
    probe: str
    upper_bound: bool = False  # some runs stop at a target: ``seconds`` prices them at their caps

    @property
    def expected(self) -> str:
        """``expected about 12 s`` (``at most about 12 s`` for an upper bound)."""
        return f"{'at most' if self.upper_bound else 'expected'} about {duration(self.seconds)}"

    def describe(self) -> str:
        return (
            f"{self.runs} runs, {self.train_steps:,} training steps; {self.expected} "
            f"({self.probe}; a busy machine runs slower)"
        )


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``42 s``, ``12 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"




# ----------------------------------------------------------------------------------------------------
# The work


@dataclass(frozen=True)
class Training:
    """Training work that is not a RunConfig through the executor; it runs in this process.

    ``runs`` runs of ``steps`` steps of ``task`` at ``batch_size``; per run, ``evals`` evaluations of each split
    (``(split, count)`` pairs), ``forward`` more examples through the model without a gradient (landscape and
    interpolation points times their examples) and ``backward`` more examples through forward and backward (a
    Hessian-vector product counts two); ``threads``: the torch threads it sets (``None``: this process's).
    ``until_target``: a run stops at the first evaluation that reaches a target, so ``steps`` and ``evals`` are
    its cap and the price is an upper bound."""

    task: str
    batch_size: int
    steps: int
    runs: int = 1
    evals: tuple[tuple[str, int], ...] = ()
    forward: int = 0
    backward: int = 0
    threads: int | None = None
    until_target: bool = False

    def __post_init__(self) -> None:
        get_task(self.task)
        for name in ("batch_size", "runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("steps", "forward", "backward"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")

    @staticmethod
    def of(config: RunConfig, **more: Any) -> Training:
        """The work of ``config`` run in this process (e.g. inside ``ctx.cached``), with ``more`` fields
        (``forward``, ``backward``, ``threads``, ``runs``); its evaluations are counted as for a RunConfig."""
        return Training(config.task, config.batch_size, config.steps, evals=_evaluations(config), **more)


@dataclass(frozen=True)
class Steps:
    """``runs`` runs of ``steps`` steps of the lab optimizer ``optimizer`` (a spec, e.g. ``amsgrad``) on one float64
    tensor of ``numel`` elements whose gradient is set by hand: a closed-form or online toy problem; it runs in
    this process."""

    optimizer: str
    steps: int
    numel: int = 1
    runs: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "numel", "runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


Work = RunConfig | Training | Steps
"""One piece of work the model prices: a RunConfig (on the workers), :class:`Training` or :class:`Steps`."""


def _evaluations(config: RunConfig) -> tuple[tuple[str, int], ...]:
    evals = config.steps // config.eval_every + 1
    return tuple((s, 1 if s == "test" else evals) for s in config.splits)


def count_work(work: Sequence[Work]) -> tuple[int, int]:
    """``(runs, steps)`` of ``work``: training runs and their steps, toy runs and their optimizer steps (nothing
    is probed: cheap enough for ``--list``)."""
    runs = steps = 0
    for w in work:
        n = 1 if isinstance(w, RunConfig) else w.runs
        runs += n
        steps += n * w.steps
    return runs, steps


# ----------------------------------------------------------------------------------------------------
# The probes


@dataclass(frozen=True)
class Probe:
    """A task's costs on this machine at one batch size and thread count."""

    task: str
    batch_size: int
    threads: int
    step_seconds: float  # one training step: batch, forward, backward, Adam's step
    eval_seconds: dict[str, float]  # one evaluation of each of the task's final splits
    forward_seconds: float  # one example through the model, no gradient

    @property
    def backward_seconds(self) -> float:
        """One example through forward and backward (a training step's share per example)."""
        return self.step_seconds / self.batch_size

    def describe(self) -> str:
        return f"{1e3 * self.step_seconds:.3g} ms/step on {self.task} (batch {self.batch_size}, {self.threads} thr.)"


@dataclass(frozen=True)
class StepProbe:
    """One optimizer's step on a small tensor (no model) on this machine."""

    optimizer: str
    numel: int
    threads: int
    step_seconds: float

    def describe(self) -> str:
        return f"{1e6 * self.step_seconds:.3g} µs a step of {self.optimizer} on {self.numel} element(s)"


_PROBES: dict[tuple[Any, ...], Probe] = {}
_STEP_PROBES: dict[tuple[Any, ...], StepProbe] = {}


def probe(task_name: str, batch_size: int, *, threads: int, data_dir: str | None = None, steps: int = 20) -> Probe:
    """Time ``steps`` training steps of ``task_name`` with Adam at ``batch_size`` (after 3 untimed ones), one
    evaluation of each of its final splits and a forward pass of one batch, in this process with ``threads``
    torch threads (restored after); measured once per arguments in a process."""
    key = (task_name, batch_size, threads, data_dir, steps)
    if key in _PROBES:
        return _PROBES[key]
    import torch

    from optimlab.lab.catalog.presets import build_optimizer

    task = get_task(task_name)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = task.load(data_dir)
        torch.manual_seed(0)
        model = task.model(data)
        opt = build_optimizer("adam", model)
        batches = task.batches(data, batch_size, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for i in range(steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            x, y = next(batches)
            loss = task.loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        per_step = (time.perf_counter() - t0) / steps
        model.eval()
        eval_cost = {}
        for split in task.final_splits:
            t0 = time.perf_counter()
            task.evaluate(model, data, split)
            eval_cost[split] = time.perf_counter() - t0
        with torch.no_grad():
            x, y = next(batches)
            t0 = time.perf_counter()
            task.loss_fn(model(x), y).item()
            forward = (time.perf_counter() - t0) / batch_size
    finally:
        torch.set_num_threads(previous)
    _PROBES[key] = Probe(task_name, batch_size, threads, per_step, eval_cost, forward)
    return _PROBES[key]


def probe_optimizer(optimizer: str, numel: int = 1, *, threads: int, steps: int = STEP_PROBE_STEPS) -> StepProbe:
    """Time ``steps`` steps of the lab optimizer spec ``optimizer`` on one float64 tensor of ``numel`` elements
    (the gradient set by hand, the value read back each step, as the toy problems do), in this process with
    ``threads`` torch threads; measured once per arguments in a process."""
    key = (optimizer, numel, threads, steps)
    if key in _STEP_PROBES:
        return _STEP_PROBES[key]
    import torch

    from optimlab.lab.catalog.presets import build_optimizer

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(numel, dtype=torch.float64))])
        (p,) = model.parameters()
        opt = build_optimizer(optimizer, model)
        grad = torch.ones(numel, dtype=torch.float64)
        t0 = time.perf_counter()
        for i in range(steps + 10):
            if i == 10:
                t0 = time.perf_counter()
            p.grad = grad
            opt.step()
            p.detach()[0].item()
        per_step = (time.perf_counter() - t0) / steps
    finally:
        torch.set_num_threads(previous)
    _STEP_PROBES[key] = StepProbe(optimizer, numel, threads, per_step)
    return _STEP_PROBES[key]


# ----------------------------------------------------------------------------------------------------
# Pricing


def _config_seconds(c: RunConfig, p: Probe) -> float:
    evals = c.steps // c.eval_every + 1
    seconds = c.steps * p.step_seconds + evals * sum(p.eval_seconds.get(s, 0.0) for s in c.splits if s != "test")
    return seconds + (p.eval_seconds.get("test", 0.0) if "test" in c.splits else 0.0)


def _training_seconds(t: Training, p: Probe) -> float:
    one = t.steps * p.step_seconds + sum(n * p.eval_seconds.get(s, 0.0) for s, n in t.evals)
    return t.runs * (one + t.forward * p.forward_seconds + t.backward * p.backward_seconds)


def estimate_work(
    work: Sequence[Work], *, jobs: int = 1, data_dir: str | None = None, probe_steps: int = 20
) -> CostEstimate:
    """Price ``work`` on this machine: the RunConfigs on ``jobs`` workers with ``cpu_count // jobs`` threads each
    (their seconds shared among the workers, plus a pool's start per task when there are several workers), the
    :class:`Training` and :class:`Steps` pieces one after another in this process. Probes each task, batch size
    and thread count once (:func:`probe`, :func:`probe_optimizer`)."""
    import torch

    worker_threads = max(1, (os.cpu_count() or 1) // jobs)
    own_threads = torch.get_num_threads()
    configs = [w for w in work if isinstance(w, RunConfig)]
    used: dict[tuple[Any, ...], Probe | StepProbe] = {}

    def task_probe(task: str, batch_size: int, threads: int) -> Probe:
        p = probe(task, batch_size, threads=threads, data_dir=data_dir, steps=probe_steps)
        used[("task", task, batch_size, threads)] = p
        return p

    parallel = serial = step_seconds = 0.0
    for w in work:
        if isinstance(w, RunConfig):
            p = task_probe(w.task, w.batch_size, worker_threads)
            parallel += _config_seconds(w, p)
            step_seconds += w.steps * p.step_seconds
        elif isinstance(w, Training):
            p = task_probe(w.task, w.batch_size, w.threads or own_threads)
            serial += _training_seconds(w, p)
            step_seconds += w.runs * w.steps * p.step_seconds
        else:
            s = probe_optimizer(w.optimizer, w.numel, threads=own_threads)
            used[("steps", w.optimizer, w.numel)] = s
            serial += w.runs * w.steps * s.step_seconds
            step_seconds += w.runs * w.steps * s.step_seconds
    workers = max(1, min(jobs, len(configs)))
    startup = WORKER_START_SECONDS * len({c.task for c in configs}) if workers > 1 else 0.0
    runs, steps = count_work(work)
    measured = "; ".join(p.describe() for p in used.values()) or "nothing to measure"
    return CostEstimate(
        seconds=parallel / workers + startup + serial,
        runs=runs,
        train_steps=steps,
        ms_per_step=1e3 * step_seconds / steps if steps else 0.0,
        probe=f"measured {measured}",
        upper_bound=any(isinstance(w, Training) and w.until_target for w in work),
    )


# ----------------------------------------------------------------------------------------------------
# A tuned study: its runs, and what is left of them


def _todo(protocol: Protocol, optimizers: Sequence[str], records: Sequence[RunRecord]) -> list[RunConfig]:
    if protocol.studies > 1:  # every study's runs (a study already done adds nothing)
        return [c for p in protocol.study_protocols() for c in _todo(p, optimizers, records)]
    done = {r.key for r in records}
    study = _collect(protocol, optimizers, records)
    todo: list[RunConfig] = []
    by_key = {r.key: r for r in records}
    for spec, result in study.results.items():
        first = protocol.tuning_configs(spec)
        todo += [c for c in first if c.key() not in done]
        if all(c.key() in by_key for c in first):
            todo += [c for c in protocol.refine_configs(spec, [by_key[c.key()] for c in first]) if c.key() not in done]
        else:  # placeholders of the same cost for the refining trials still to be placed
            todo += [first[i % len(first)] for i in range(protocol.refine_trials)] if first else []
        sel = result.selection
        finals = protocol.final_configs(spec, sel.lr if sel else preset_lr(spec), sel.hparams if sel else {})
        todo += [c for c in finals if c.key() not in done]
    return todo


def remaining_configs(protocol: Protocol, optimizers: Sequence[str], out: str | os.PathLike) -> list[RunConfig]:
    """The runs ``protocol`` still has to do in ``out`` for ``optimizers``: the unfinished tuning trials and
    final runs (an optimizer still being tuned counts its final runs at its preset, as placeholders of the
    same cost)."""
    out = Path(out)
    records = load_records(out) if (out / "results.jsonl").exists() else []
    return _todo(protocol, optimizers, records)


def planned_configs(protocol: Protocol, optimizers: Sequence[str]) -> list[RunConfig]:
    """Every run of ``protocol`` for ``optimizers`` from an empty folder: the tuning trials (the refining ones as
    placeholders of the same cost) and the final runs at the presets (placeholders for the selected settings)."""
    return _todo(protocol, optimizers, [])


def estimate_cost(
    protocol: Protocol,
    configs: Sequence[RunConfig],
    *,
    jobs: int = 1,
    threads: int | None = None,
    data_dir: str | None = None,
    probe_steps: int = 20,
) -> CostEstimate:
    """Time ``probe_steps`` steps and one evaluation of each split of the task with Adam, in this process with
    the threads a worker gets (:func:`probe`), and scale to ``configs`` (e.g. :func:`remaining_configs`) on
    ``jobs`` workers."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    p = probe(protocol.task, protocol.batch_size, threads=threads, data_dir=data_dir, steps=probe_steps)
    per_step = p.step_seconds
    seconds, steps = 0.0, 0
    for c in configs:
        seconds += _config_seconds(c, p)
        steps += c.steps
    workers = max(1, min(jobs, len(configs)))
    startup = WORKER_START_SECONDS if workers > 1 and configs else 0.0
    return CostEstimate(
        seconds=seconds / workers + startup,
        runs=len(configs),
        train_steps=steps,
        ms_per_step=1e3 * per_step,
        probe=f"measured {1e3 * per_step:.1f} ms/step with {threads} thread(s) per worker, {workers} worker(s)",
    )
