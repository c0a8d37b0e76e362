"""What a study still has to run and about how long it will take on this machine (a short probe run per task).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optimlab.lab.catalog.presets import preset_lr
from optimlab.lab.catalog.tasks import get_task
from optimlab.lab.study.protocol import Protocol
from optimlab.lab.study.tuning import _collect
from optimlab.lab.training.results import load_records
from optimlab.lab.training.runner import RunConfig

__all__ = ["CostEstimate", "remaining_configs", "estimate_cost"]


@dataclass(frozen=True)
class CostEstimate:
    """What a protocol will cost on this machine, from a short probe run."""

    seconds: float  # expected wall time with ``jobs`` workers
    runs: int
    train_steps: int
    ms_per_step: float  # measured on the probe (one worker's threads)
    probe: str

    def describe(self) -> str:
        return (
            f"{self.runs} runs, {self.train_steps:,} training steps; expected about {_duration(self.seconds)} "
            f"({self.probe}; a busy machine runs slower)"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def remaining_configs(protocol: Protocol, optimizers: Sequence[str], out: str | os.PathLike) -> list[RunConfig]:
    """The runs ``protocol`` still has to do in ``out`` for ``optimizers``: the unfinished tuning trials and
    final runs (an optimizer still being tuned counts its final runs at its preset, as placeholders of the
    same cost)."""
    out = Path(out)
    records = load_records(out) if (out / "results.jsonl").exists() else []
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
    the threads a worker gets, and scale to ``configs`` (e.g. :func:`remaining_configs`) on ``jobs`` workers."""
    import torch

    from optimlab.lab.catalog.presets import build_optimizer

    task = get_task(protocol.task)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = task.load(data_dir)
        torch.manual_seed(0)
        model = task.model(data)
        opt = build_optimizer("adam", model)
        batches = task.batches(data, protocol.batch_size, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for i in range(probe_steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            x, y = next(batches)
            loss = task.loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        per_step = (time.perf_counter() - t0) / probe_steps
        model.eval()
        eval_cost = {}
        for split in task.final_splits:
            t0 = time.perf_counter()
            task.evaluate(model, data, split)
            eval_cost[split] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    seconds, steps = 0.0, 0
    for c in configs:
        evals = c.steps // c.eval_every + 1
        seconds += c.steps * per_step + evals * sum(eval_cost.get(s, 0.0) for s in c.splits if s != "test")
        seconds += eval_cost.get("test", 0.0) if "test" in c.splits else 0.0
        steps += c.steps
    workers = max(1, min(jobs, len(configs)))
    startup = 6.0 if workers > 1 and configs else 0.0  # spawning workers, importing torch, loading data
    return CostEstimate(
        seconds=seconds / workers + startup,
        runs=len(configs),
        train_steps=steps,
        ms_per_step=1e3 * per_step,
        probe=f"measured {1e3 * per_step:.1f} ms/step with {threads} thread(s) per worker, {workers} worker(s)",
    )
