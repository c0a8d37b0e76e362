"""One training run as a pure function of its config: ``run(RunConfig) -> record``.

The record holds the config, the optimizer's full settings, the learning curves (loss and metric on each split
the config names, at every evaluation, with the LR and the cumulative training time), summary numbers, and where
it ran (package versions, machine, threads). On CPU a config gives the same numbers every time it runs with the
same thread count.

Timing: training time excludes evaluation. Each step's forward+backward and ``optimizer.step()`` are timed apart,
in wall time and in this process's CPU time (``time.process_time``, which other processes on a busy machine do
not inflate the way they inflate wall time); the record keeps the medians over steps, so the optimizer's own
overhead is reported apart from the model's cost.

Evaluation: when the optimizer has ``eval()``/``train()`` methods (Schedule-Free optimizers, whose weights for
evaluation differ from those they train), ``optimizer.eval()`` is called before every evaluation and
``optimizer.train()`` after it; :meth:`Task.before_eval` is the hook where BatchNorm statistics would be
recomputed under those weights. A config that does not name the ``test`` split never sees it: the run gets its
data with the test split removed (tuning runs).

Hooks: pass ``callbacks`` (subclasses of :class:`Callback`) to observe or record anything during training --
update angles, distance from init, gradient histograms, per-layer trust ratios. Whatever a callback puts in
``ctx.extras`` is stored in the record under ``"extras"``. A callback that sets ``ctx.stop`` in
:meth:`Callback.on_eval` ends the run after that evaluation (:class:`StopAtTarget`: stop at a target); the test
split, where the config names it, is then evaluated where the run stopped.

Device: ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``: :mod:`optimlab.lab.training.device`) is where the model,
the data and every batch go; the record names it (``environment["device"]``, and ``["gpu"]`` on CUDA).

Checkpoints: with ``checkpoint`` (a :class:`~optimlab.lab.training.checkpoint.Checkpointing` with a folder), the run
saves its state when the policy says so and, when it finds a checkpoint of its own key there, continues from it;
the record is the one an unbroken run gives, except for what is measured rather than computed: the timings
(``train_seconds`` and ``train_cpu_seconds`` and the history's ``time``/``cpu`` are summed over the segments; the
per-step medians are over the steps of the record, each timed once, in the segment that kept it; ``wall_seconds``
sums the segments' wall time, reloading included) and the environment (of the last segment, with
``resumed_at``: the steps the run continued from). A run checkpoints only when every callback declares itself
resumable (:attr:`Callback.resumable`: its state is in ``ctx.extras`` or in its ``state_dict()``).

The config (:class:`~optimlab.lab.training.config.RunConfig`) and the record
(:class:`~optimlab.lab.training.record.RunRecord`) have modules of their own; ``RunConfig``, ``parse_schedule`` and
``build_schedule`` are importable from here too.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from optimlab.lab.catalog import adapter
from optimlab.lab.catalog.presets import build_optimizer
from optimlab.lab.catalog.tasks import SyntheticTask, Task, get_task
from optimlab.lab.training.checkpoint import CHECKPOINT_FORMAT, Checkpointing, load_checkpoint, save_checkpoint
from optimlab.lab.training.code_identity import code_identity
from optimlab.lab.training.config import RunConfig, build_schedule, parse_schedule
from optimlab.lab.training.device import describe_device, resolve_device, to_device
from optimlab.lab.training.record import RECORD_VERSION, RunRecord, finite_or_none
from optimlab.lab.training.results import LabWarning

__all__ = [
    "RunConfig",
    "RunContext",
    "Callback",
    "CallbackFactory",
    "TrajectoryCallback",
    "StopAtTarget",
    "run",
    "environment",
    "parse_schedule",
    "build_schedule",
]

@dataclass
class RunContext:
    """What callbacks see. ``step`` counts optimizer steps taken so far; a callback that sets ``stop`` in
    :meth:`Callback.on_eval` ends the run after that evaluation."""

    config: RunConfig
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    loss: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    stop: bool = False


class Callback:
    """Hook points of the run loop; override what you need.

    ``resumable``: set it to ``True`` where a run that stops and resumes from a checkpoint gives this callback's
    results unchanged: its state lives in ``ctx.extras`` (saved and restored with the run) or in ``state_dict()``
    / ``load_state_dict(state)`` methods (tensors, numbers, strings, containers). ``on_run_start`` is called on
    resume too, before ``ctx.extras`` and that state are restored. A run with a callback that is not resumable
    never checkpoints."""

    resumable: bool = False

    def on_run_start(self, ctx: RunContext) -> None: ...

    def after_backward(self, ctx: RunContext) -> None:
        """Gradients are in ``p.grad``; the optimizer has not stepped yet (do not modify ``p.grad``)."""

    def after_step(self, ctx: RunContext) -> None: ...

    def on_eval(self, ctx: RunContext, metrics: dict[str, float]) -> None:
        """After each evaluation (the first at step 0): ``metrics`` holds the raw values (``val_accuracy``...; the
        test split's at the last). Setting ``ctx.stop`` ends the run here."""

    def on_run_end(self, ctx: RunContext) -> None: ...


CallbackFactory = Callable[["RunConfig"], Sequence[Callback]]
"""A function ``config -> [Callback, ...]`` that an executor calls for every run, in the process that runs it."""


class TrajectoryCallback(Callback):
    """Records the parameter vector after every step (for the 2-D synthetic tasks)."""

    resumable = True

    def on_run_start(self, ctx: RunContext) -> None:
        ctx.extras["trajectory"] = [self._point(ctx.model)]

    def after_step(self, ctx: RunContext) -> None:
        ctx.extras["trajectory"].append(self._point(ctx.model))

    @staticmethod
    def _point(model: nn.Module) -> list[float]:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()


class StopAtTarget(Callback):
    """Stop the run at the first evaluation at which the curve ``key`` (default ``val_<metric>`` where the config
    evaluates the validation split, else ``train_<metric>``) reaches ``target``: the steps-to-result measurement of
    Shallue et al. (2018). Reached means a finite value ``>= target`` (``<=`` where lower is better; default: the
    task's direction), as :meth:`RunRecord.steps_to <optimlab.lab.training.record.RunRecord.steps_to>` counts it,
    the evaluation at step 0 included; so the stopped record's ``steps_to(target)`` is the step it stopped at.
    Puts ``{"key", "target", "step"}`` (``step``: where it was reached, ``None`` if never) in
    ``ctx.extras["stop_at_target"]``."""

    resumable = True

    def __init__(self, target: float, key: str | None = None, higher_is_better: bool | None = None) -> None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
            raise ValueError(f"Invalid target: {target!r}; expected a finite number")
        self.target, self.key, self.higher_is_better = target, key, higher_is_better

    def on_run_start(self, ctx: RunContext) -> None:
        split = "val" if "val" in ctx.config.splits else "train"
        key = self.key or f"{split}_{ctx.task.metric}"
        ctx.extras["stop_at_target"] = {"key": key, "target": self.target, "step": None}

    def on_eval(self, ctx: RunContext, metrics: dict[str, float]) -> None:
        info = ctx.extras["stop_at_target"]
        value = metrics.get(info["key"])
        higher = ctx.task.higher_is_better if self.higher_is_better is None else self.higher_is_better
        if value is not None and math.isfinite(value) and (value >= self.target if higher else value <= self.target):
            info["step"] = ctx.step
            ctx.stop = True


def _cpu_model() -> str:
    """The CPU's model name (Linux: the first ``model name`` of ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Package versions, machine (the CPU's model among them), threads, the UTC time it was asked for (the end of a
    run), the code's identity (:func:`~optimlab.lab.training.code_identity.code_identity`: a hash of the package's
    sources, and the git commit where it lives in a checkout) and the ``device``
    (:func:`~optimlab.lab.training.device.describe_device`) when given, stored next to every result."""
    try:
        from importlib.metadata import version

        optimlab_version = version("optimlab")
    except Exception:  # noqa: BLE001 - not installed, running from source
        optimlab_version = "source"
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "optimlab": optimlab_version,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": code_identity(),
        **(describe_device(device) if device is not None else {}),
    }


def run(
    config: RunConfig,
    callbacks: Sequence[Callback] = (),
    data_dir: str | None = None,
    progress: Any = None,
    *,
    device: str = "cpu",
    checkpoint: Checkpointing | None = None,
) -> RunRecord:
    """Train ``config.task`` with ``config.optimizer`` on ``device`` and return the run's record.

    ``progress`` is an optional object with ``update(n)`` and ``set_postfix_str(s)`` (a tqdm bar).
    A run whose training loss becomes non-finite stops there with ``status == "diverged"``.
    ``checkpoint``: save the run's state as it says, and resume from a checkpoint of this config found there
    (see the module's docstring).
    """
    where = resolve_device(device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    # Filling every new tensor with NaN (the default in deterministic mode) costs ~15% of a CPU step and is
    # not needed for determinism: no op used here reads uninitialised memory.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        return _run(config, callbacks, data_dir, progress, where, checkpoint)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _run(
    config: RunConfig,
    callbacks: Sequence[Callback],
    data_dir: str | None,
    progress: Any,
    device: torch.device,
    checkpoint: Checkpointing | None,
) -> RunRecord:
    task = get_task(config.task)
    data = task.load(data_dir)
    if "test" not in config.splits:
        data = task.hide_test(data)  # a run that does not report the test split cannot read it
    data = to_device(data, device)
    torch.manual_seed(config.seed)
    model = task.model(data).to(device)
    optimizer = build_optimizer(config.optimizer, model, lr=config.lr, steps=config.steps, **dict(config.hparams))
    settings = _settings(optimizer)  # as constructed: a schedule changes the lr from here on
    schedule = build_schedule(config.schedule, config.steps)
    scheduler = adapter.attach_schedule(optimizer, schedule)
    callbacks = list(callbacks)
    if isinstance(task, SyntheticTask) and not any(isinstance(c, TrajectoryCallback) for c in callbacks):
        callbacks.append(TrajectoryCallback())
    generator = torch.Generator().manual_seed(config.seed)
    batches = task.batches(data, config.batch_size, generator)
    ctx = RunContext(config, task, model, optimizer, data=data)
    has_modes = callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))
    resumable = checkpoint is not None and checkpoint.active and all(c.resumable for c in callbacks)
    saving = checkpoint if resumable else None

    curve_splits = [s for s in config.splits if s != "test"]  # the test split is evaluated once, at the end
    keys = ["step", "lr", "time", "cpu", "batch_loss"] + [f"{s}_{m}" for s in curve_splits for m in _metric_names(task)]
    test: dict[str, float | None] = {}
    history: dict[str, list[Any]] = {k: [] for k in keys}
    clock = {"wall": 0.0, "cpu": 0.0, "segments_wall": 0.0}
    fwd_bwd_cpu: list[float] = []
    step_cpu: list[float] = []
    step_wall: list[float] = []
    train_step_wall: list[float] = []
    batch_losses: list[float] = []
    samples = {"fwd_bwd_cpu": fwd_bwd_cpu, "step_cpu": step_cpu, "step_wall": step_wall,
               "train_step_wall": train_step_wall}
    status = "ok"
    resumed_at: list[int] = []

    def evaluate(final: bool = False) -> None:
        if has_modes:
            optimizer.eval()  # Schedule-Free: evaluate at the averaged point
        task.before_eval(model, optimizer, data)
        model.eval()
        history["step"].append(ctx.step)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        history["time"].append(clock["wall"])
        history["cpu"].append(clock["cpu"])
        history["batch_loss"].append(finite_or_none(float(np.mean(batch_losses))) if batch_losses else None)
        batch_losses.clear()
        metrics = {}
        for split in curve_splits:
            for name, value in task.evaluate(model, data, split).items():
                history[f"{split}_{name}"].append(finite_or_none(value))
                metrics[f"{split}_{name}"] = value
        if final and "test" in config.splits:
            for name, value in task.evaluate(model, data, "test").items():
                test[name] = finite_or_none(value)
                metrics[f"test_{name}"] = value
        for cb in callbacks:
            cb.on_eval(ctx, metrics)
        if ctx.stop and not final and "test" in config.splits:  # stopped by a callback: the test split here
            for name, value in task.evaluate(model, data, "test").items():
                test[name] = finite_or_none(value)
        model.train()
        if has_modes:
            optimizer.train()

    def state() -> dict[str, Any]:
        """Everything the rest of the run depends on, and the measurements so far (see checkpoint.py)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "key": config.key(),
            "device": device.type,
            "step": ctx.step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": _rng_state(device, generator),
            "history": history,
            "batch_losses": batch_losses,
            "clock": {**clock, "segments_wall": clock["segments_wall"] + time.perf_counter() - wall_start},
            "samples": {k: torch.tensor(v, dtype=torch.float64) for k, v in samples.items()},
            "extras": json.dumps(ctx.extras),
            "callbacks": [c.state_dict() if callable(getattr(c, "state_dict", None)) else None for c in callbacks],
            "resumed_at": resumed_at,
        }

    wall_start = time.perf_counter()
    for cb in callbacks:
        cb.on_run_start(ctx)
    saved = load_checkpoint(saving.folder, config.key()) if saving is not None else None  # type: ignore[arg-type]
    if saved is not None and not _matches(saved, config, device, len(callbacks)):
        saved = None
    if saved is not None:
        # the data position: the same stream, drawn up to the saved step, must leave the generator as saved
        for _ in range(saved["step"]):
            next(batches)
        if not torch.equal(generator.get_state(), saved["rng"]["generator"]):
            warnings.warn(
                f"{config.task}: its batches are not a function of the generator alone, so run {config.key()} "
                "cannot resume from its checkpoint; it starts from step 0",
                LabWarning,
                stacklevel=2,
            )
            generator.manual_seed(config.seed)
            batches = task.batches(data, config.batch_size, generator)
            saved = None
    if saved is None:
        evaluate()
    else:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(device, saved["rng"])
        ctx.step = saved["step"]
        history.update(saved["history"])
        batch_losses.extend(saved["batch_losses"])
        clock.update(saved["clock"])
        for k, v in samples.items():
            v.extend(saved["samples"][k].tolist())
        ctx.extras.clear()
        ctx.extras.update(json.loads(saved["extras"]))
        for cb, cb_state in zip(callbacks, saved["callbacks"], strict=True):
            if cb_state is not None:
                cb.load_state_dict(cb_state)  # type: ignore[attr-defined]
        resumed_at.extend(saved["resumed_at"] + [ctx.step])
        if progress is not None:
            progress.update(ctx.step)
    model.train()
    last_save = time.perf_counter()
    for step in range(ctx.step, config.steps):
        if ctx.stop:  # a callback ended the run at the evaluation just made
            break
        w0, c0 = time.perf_counter(), time.process_time()
        x, y = to_device(next(batches), device)
        loss = task.loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        c1 = time.process_time()
        ctx.loss = loss
        for cb in callbacks:
            cb.after_backward(ctx)
        w2, c2 = time.perf_counter(), time.process_time()
        optimizer.step()
        w3, c3 = time.perf_counter(), time.process_time()
        if scheduler is not None:
            scheduler.step()
        ctx.step = step + 1
        for cb in callbacks:
            cb.after_step(ctx)
        loss_value = loss.item()
        w4, c4 = time.perf_counter(), time.process_time()
        fwd_bwd_cpu.append(c1 - c0)
        step_cpu.append(c3 - c2)
        step_wall.append(w3 - w2)
        train_step_wall.append(w4 - w0)
        clock["wall"] += w4 - w0
        clock["cpu"] += c4 - c0
        batch_losses.append(loss_value)
        if progress is not None:
            progress.update(1)
        if not math.isfinite(loss_value):
            status = "diverged"
            break
        if ctx.step % config.eval_every == 0 or ctx.step == config.steps:
            evaluate(final=ctx.step == config.steps)
            if progress is not None:
                progress.set_postfix_str(_postfix(task, history, curve_splits))
        if saving is not None and ctx.step < config.steps and not ctx.stop:
            if saving.due(ctx.step, time.perf_counter() - last_save):
                try:
                    save_checkpoint(saving.folder, config.key(), state())  # type: ignore[arg-type]
                except OSError as e:  # a full disk, a folder this node cannot write: the run goes on without
                    warnings.warn(f"run {config.key()}: no more checkpoints ({e})", LabWarning, stacklevel=2)
                    saving = None
                last_save = time.perf_counter()
    if status == "diverged":
        evaluate(final=True)
    for cb in callbacks:
        cb.on_run_end(ctx)

    def median_ms(values: list[float]) -> float | None:
        return 1e3 * float(np.median(values)) if values else None

    env = environment(device)
    if resumed_at:
        env["resumed_at"] = resumed_at
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "key": config.key(),
        "config": asdict(config),
        "status": status,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "target": task.target,
        "optimizer_settings": settings,
        "history": history,
        "test": test if "test" in config.splits else None,
        "steps_done": ctx.step,
        "train_seconds": clock["wall"],
        "train_cpu_seconds": clock["cpu"],
        "time_per_step": float(np.median(train_step_wall)) if train_step_wall else None,
        "step_cpu_ms": median_ms(step_cpu),
        "step_wall_ms": median_ms(step_wall),
        "fwd_bwd_cpu_ms": median_ms(fwd_bwd_cpu),
        "wall_seconds": clock["segments_wall"] + time.perf_counter() - wall_start,
        "environment": env,
    }
    if ctx.extras:
        record["extras"] = ctx.extras
    return RunRecord.from_json(record)  # as JSON: the record a reader of results.jsonl gets, tuples as lists


def _matches(saved: dict[str, Any], config: RunConfig, device: torch.device, n_callbacks: int) -> bool:
    """Whether a loaded checkpoint fits this run (else a warning, and the run starts over)."""
    why = None
    if saved.get("device") != device.type:
        why = f"it was made on {saved.get('device')}, this run trains on {device.type}"
    elif not (isinstance(saved.get("step"), int) and 0 < saved["step"] < config.steps):
        why = f"its step {saved.get('step')!r} is not within the run's {config.steps} steps"
    elif len(saved.get("callbacks", ())) != n_callbacks:
        why = "it was made with other callbacks"
    if why is not None:
        warnings.warn(f"the checkpoint of run {config.key()} is ignored: {why}; it starts from step 0", LabWarning,
                      stacklevel=3)
    return why is None


def _rng_state(device: torch.device, generator: torch.Generator) -> dict[str, Any]:
    """The random states a run can draw from: torch's (CPU, and CUDA where the run trains), numpy's, Python's and
    the run's data generator (for the check after the fast-forward)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def _set_rng_state(device: torch.device, rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _metric_names(task: Task) -> list[str]:
    return ["loss"] if task.metric == "loss" else ["loss", task.metric]


def _postfix(task: Task, history: dict[str, list[Any]], splits: Sequence[str]) -> str:
    split = "val" if "val" in splits else splits[0]
    value = history[f"{split}_{task.metric}"][-1]
    return f"{split} {task.metric} {value:.4g}" if value is not None else f"{split} diverged"


def _settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The hyperparameters of the first param group (JSON-safe), with the class of each wrapped optimizer."""
    out: dict[str, Any] = {"class": type(optimizer).__name__}
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        out["inner"] = _settings(inner)
    for k, v in optimizer.param_groups[0].items():
        if k == "params":
            continue
        if isinstance(v, torch.Tensor):
            v = v.tolist()
        try:
            json.dumps(v)
        except TypeError:
            v = repr(v)
        out[k] = v
    return out
