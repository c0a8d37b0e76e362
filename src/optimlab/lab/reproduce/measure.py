"""What the claims measure with: a tuned study that stops the claim when it is not complete, a study's final runs in
seed order, missing numbers as NaN, a training loop that stops at a target, and the two-sample comparisons the
verdict rules use.

A run's numbers come from its record (:class:`~optimlab.lab.training.record.RunRecord`: ``final``, ``at``, ``test``,
``steps_to``), which gives ``None`` for a missing value and never looks at the run's status; a claim that counts a
diverged run as missing says so (``or_nan(r.test("accuracy")) if r.ok else math.nan``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: an experiment module is read by every command (``optimlab reproduce list``)
    from optimlab.lab.study.tuning import StudyResult
    from optimlab.lab.training.record import RunRecord

__all__ = ["tuned_study", "finals", "or_nan", "mean", "std", "welch"]


def tuned_study(ctx: Any, task: str, optimizers: Sequence[str], protocol: Any, subdir: str,
                callbacks: Any = None) -> StudyResult:
    """``ctx.tune``: :func:`~optimlab.lab.study.tuning.tune_and_run` in ``ctx.folder / subdir`` (the protocol of
    ``optimlab compare``, resumable by config key; ``callbacks`` as ``ctx.tune`` takes them). Raises
    KeyboardInterrupt when the study was interrupted or is not complete, so the experiment stops there (instead of
    computing a verdict from half a study; what finished is kept in the folder) and the same command resumes it."""
    result = ctx.tune(task, list(optimizers), protocol, subdir, callbacks=callbacks)
    if result.interrupted or not result.complete:
        raise KeyboardInterrupt
    return result


def finals(result: StudyResult, spec: str) -> list[RunRecord]:
    """The final runs of ``spec`` in ``result``, in seed order."""
    return sorted(result.results[spec].finals, key=lambda r: r.config.seed)


def or_nan(value: float | None) -> float:
    """``value`` as a float; NaN for ``None`` (a value a record does not have, or that was not finite)."""
    return math.nan if value is None else float(value)


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
