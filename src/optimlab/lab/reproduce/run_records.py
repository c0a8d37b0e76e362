"""Small helpers shared by the claims of part B: numbers read from lab run records, a training loop that stops at a
target, and the two-sample comparisons the verdict rules use.

A record is what :func:`optimlab.lab.training.runner.run` returns (``history``, ``test``, ``status``, ``config``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "final_value",
    "value_at",
    "test_value",
    "steps_to_target_from_record",
    "train_to_target",
    "welch",
    "mean",
    "std",
    "tune",
]


def _finite(v: Any) -> float:
    return float(v) if v is not None and math.isfinite(float(v)) else math.nan


def final_value(rec: dict[str, Any], key: str) -> float:
    """The last value of ``history[key]`` (e.g. ``"val_accuracy"``); NaN for a diverged run or a missing value."""
    values = rec["history"].get(key) or []
    if rec.get("status") != "ok" or not values:
        return math.nan
    return _finite(values[-1])


def value_at(rec: dict[str, Any], key: str, step: int) -> float:
    """``history[key]`` at the first evaluation at or after ``step`` (NaN if none, or diverged before)."""
    for s, v in zip(rec["history"]["step"], rec["history"].get(key) or [], strict=False):
        if s >= step:
            return _finite(v)
    return math.nan


def test_value(rec: dict[str, Any], name: str) -> float:
    """The test split's ``name`` (``"accuracy"``, ``"loss"``, ``"perplexity"``); NaN when missing or diverged."""
    if rec.get("status") != "ok" or not rec.get("test"):
        return math.nan
    return _finite(rec["test"].get(name))


def steps_to_target_from_record(rec: dict[str, Any], key: str, target: float, higher_is_better: bool) -> float:
    """The first evaluated step whose ``history[key]`` reaches ``target``; ``inf`` if never."""
    from optimlab.lab.present.stats import time_to_target

    return time_to_target(rec["history"]["step"], rec["history"].get(key) or [], target,
                          higher_is_better=higher_is_better)


def train_to_target(
    task_name: str,
    spec: str,
    lr: float,
    *,
    seed: int,
    batch_size: int,
    max_steps: int,
    eval_every: int,
    target: float,
    schedule: str = "constant",
    hparams: dict[str, float] | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Train like :func:`optimlab.lab.training.runner.run` (same seeding, model, batches, optimizer specs and schedules)
    but stop at the first evaluation whose validation metric reaches ``target``: the steps-to-result measurement of
    Shallue et al. (2018). Returns ``{"steps": first step at target or None, "evals": [[step, value], ...],
    "status": "ok" | "diverged" | "not reached", "seconds": ...}``."""
    import torch

    from optimlab.lab.catalog import adapter
    from optimlab.lab.catalog.presets import build_optimizer
    from optimlab.lab.catalog.tasks import get_task
    from optimlab.lab.training.runner import parse_schedule

    task = get_task(task_name)
    data = task.hide_test(task.load(data_dir))
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)  # as the lab's runner: no op here reads uninitialised memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_num_threads(1)  # small models: one thread is as fast, and the same on every machine
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)
        model = task.model(data)
        optimizer = build_optimizer(spec, model, lr=lr, **(hparams or {}))
        name, kwargs = parse_schedule(schedule)
        scheduler = adapter.attach_schedule(optimizer, adapter.create_schedule(name, max_steps, **kwargs))
        batches = task.batches(data, batch_size, torch.Generator().manual_seed(seed))
        sign = 1.0 if task.higher_is_better else -1.0
        evals: list[list[float]] = []
        status, reached = "not reached", None
        model.train()
        for step in range(1, max_steps + 1):
            x, y = next(batches)
            loss = task.loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if not math.isfinite(loss.item()):
                status = "diverged"
                break
            if step % eval_every == 0 or step == max_steps:
                model.eval()
                value = task.evaluate(model, data, "val")[task.metric]
                model.train()
                evals.append([step, value])
                if math.isfinite(value) and sign * value >= sign * target:
                    status, reached = "ok", step
                    break
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.set_num_threads(threads)
    return {"steps": reached, "evals": evals, "status": status, "seconds": time.perf_counter() - start}


def mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def std(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if len(vals) < 2:
        return math.nan
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(mean(a) - mean(b), two-sided Welch p)``; p is NaN when a side has fewer than two finite values or both
    have zero variance (then the difference alone decides, as the rules say)."""
    from optimlab.lab.present.stats import welch_test

    fa = [float(v) for v in a if math.isfinite(v)]
    fb = [float(v) for v in b if math.isfinite(v)]
    if not fa or not fb:
        return math.nan, math.nan
    diff = sum(fa) / len(fa) - sum(fb) / len(fb)
    try:
        return diff, float(welch_test(fa, fb).p)
    except (ValueError, ZeroDivisionError):
        return diff, math.nan


def tune(ctx: Any, task: str, optimizers: Sequence[str], protocol: Any, subdir: str) -> Any:
    """``ctx.tune`` (:func:`optimlab.lab.study.tuning.tune_and_run` in ``ctx.folder / subdir``, the protocol of
    ``optimlab compare``); raises KeyboardInterrupt when interrupted."""
    study = ctx.tune(task, list(optimizers), protocol, subdir)
    if study.interrupted:
        raise KeyboardInterrupt
    return study
