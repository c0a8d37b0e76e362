"""Training runs with diagnostics attached, for the diagnostics commands and for ``compare --diagnostics``.

Everything here goes through the runner (:func:`optimlab.lab.training.runner.run`), so a diagnosed run is the same run,
to the bit, as the one ``compare`` makes with the same config: the recorder and the probes only read the model
between steps (``tests/lab/test_diagnose.py`` checks the histories agree).

* :class:`RecorderCallback` attaches :class:`optimlab.diagnostics.Recorder` to the run's optimizer and, every
  ``noise_every`` steps, estimates the gradient noise scale on a batch of its own stream;
* :class:`CaptureCallback` keeps the initial weights, chosen checkpoints and the trained model (in memory);
* :class:`DiagnosticsCallback` is what ``compare --diagnostics`` attaches: the Walk-with-SGD quantities and the
  ``|g|`` histograms of the first steps (cheap, JSON-serialisable, into ``record.extras["diagnostics"]``) and,
  at the end of the run, the sharpness of the final weights and the loss on the line from the initialization to
  the solution (:func:`final_weights_diagnostics`);
* :func:`rerun_with_diagnostics` recomputes those extras for a finished record that lacks them (a run is a pure
  function of its config).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from optimlab import diagnostics as D
from optimlab.lab.catalog.tasks import ClassificationTask, LanguageTask, SyntheticTask, Task
from optimlab.lab.training.progress import Progress
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.runner import Callback, RunConfig, RunContext, run

__all__ = [
    "eval_batches",
    "metric_fn",
    "RecorderCallback",
    "CaptureCallback",
    "DiagnosticsCallback",
    "TrainedRun",
    "train",
    "final_weights_diagnostics",
    "rerun_with_diagnostics",
]


# ----------------------------------------------------------------------------------------------------
# Task adapters: fixed evaluation batches and metrics


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == y).float().mean()


def metric_fn(task: Task) -> Callable[[Any, Any], Any] | None:
    """Accuracy for a classification task; ``None`` otherwise (perplexity is ``exp(loss)``)."""
    return _accuracy if isinstance(task, ClassificationTask) else None


def eval_batches(task: Task, data: Any, split: str = "train", examples: int = 2000,
                 batch_size: int | None = None) -> list[tuple[Any, Any]]:
    """A fixed evaluation set: the first ``examples`` examples of ``split`` (classification), ``examples``
    windows of the task's context drawn with a fixed seed (language), or the single point (synthetic)."""
    if isinstance(task, SyntheticTask):
        return [(None, None)]
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples must be a positive integer, got {examples!r}")
    if isinstance(task, ClassificationTask):
        x, y = {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
                "test": (data.x_test, data.y_test)}[split]
        n = min(examples, len(y))
        return D.fixed_batches(x[:n], y[:n], batch_size or task.eval_batch_size)
    if isinstance(task, LanguageTask):
        stream = {"train": data.train, "val": data.val, "test": data.test}[split]
        g = torch.Generator().manual_seed(4321)
        starts = torch.randint(len(stream) - task.block_size - 1, (examples,), generator=g)
        chunk = stream[starts[:, None] + torch.arange(task.block_size + 1)]
        return D.fixed_batches(chunk[:, :-1], chunk[:, 1:], batch_size or task.batch_size)
    raise ValueError(f"task {task.name!r} has no evaluation batches for diagnostics")


def _one_batch(batches: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    if len(batches) == 1:
        return batches[0]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


# ----------------------------------------------------------------------------------------------------
# Callbacks


class RecorderCallback(Callback):
    """Attach a :class:`~optimlab.diagnostics.Recorder` to the run's optimizer; the history goes to
    ``ctx.extras[key]`` at the end of the run (and stays in :attr:`recorder`).

    ``noise_every`` (0: never): estimate the gradient noise scale every so many steps on a training batch drawn
    from a stream of its own (seeded from the run's seed), split into ``noise_parts`` slices."""

    def __init__(self, every: int | Callable[[int], bool] = 20, histograms: bool | Callable[[int], bool] = False,
                 noise_every: int = 0, noise_parts: int = 4, key: str = "recorder",
                 data_dir: str | None = None) -> None:
        self.every, self.histograms, self.key = every, histograms, key
        self.noise_every, self.noise_parts, self.data_dir = int(noise_every), int(noise_parts), data_dir
        self.recorder: D.Recorder | None = None
        self._noise_batches: Iterable[Any] | None = None

    def on_run_start(self, ctx: RunContext) -> None:
        self.recorder = D.Recorder(ctx.optimizer, ctx.model, every=self.every, histograms=self.histograms)
        if self.noise_every and not isinstance(ctx.task, SyntheticTask):
            g = torch.Generator().manual_seed(ctx.config.seed + 7919)
            self._noise_batches = ctx.task.batches(ctx.task.load(self.data_dir), ctx.config.batch_size, g)

    def after_step(self, ctx: RunContext) -> None:
        if self._noise_batches is not None and ctx.step % self.noise_every == 0 and self.recorder is not None:
            self.recorder.record_noise_scale(ctx.model, ctx.task.loss_fn, next(self._noise_batches),
                                             self.noise_parts)

    def on_run_end(self, ctx: RunContext) -> None:
        if self.recorder is not None:
            self.recorder.close()
            ctx.extras[self.key] = self.recorder.to_dict()


class CaptureCallback(Callback):
    """Keep (in memory, not in the record) the initial weights, the weights after the steps in ``steps``, and
    the trained model itself."""

    def __init__(self, steps: Iterable[int] = ()) -> None:
        self.steps = set(int(s) for s in steps)
        self.theta0: list[torch.Tensor] = []
        self.checkpoints: list[tuple[int, list[torch.Tensor]]] = []
        self.model: nn.Module | None = None

    def on_run_start(self, ctx: RunContext) -> None:
        self.theta0 = D.current_weights(ctx.model)
        if 0 in self.steps:
            self.checkpoints.append((0, [t.clone() for t in self.theta0]))

    def after_step(self, ctx: RunContext) -> None:
        if ctx.step in self.steps:
            self.checkpoints.append((ctx.step, D.current_weights(ctx.model)))

    def on_run_end(self, ctx: RunContext) -> None:
        self.model = ctx.model


def _optimizer_eval(optimizer: Any) -> Callable[[], None]:
    """Put an optimizer with ``eval()``/``train()`` (Schedule-Free) in eval mode, so the model holds the weights
    it is evaluated at; returns the call that undoes it (nothing for other optimizers)."""
    if callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None)):
        optimizer.eval()
        return optimizer.train
    return lambda: None


def final_weights_diagnostics(task: Task, data: Any, model: nn.Module, theta0: Any, *, examples: int = 1000,
                              sharpness_examples: int = 500, iters: int = 50, tol: float = 1e-3,
                              alphas: Iterable[float] | None = None, seed: int = 0) -> dict[str, Any]:
    """The sharpness of ``model``'s current weights and the loss from ``theta0`` to them, JSON-serialisable.

    ``sharpness``: the top Hessian eigenvalue by power iteration (:func:`optimlab.diagnostics.
    top_hessian_eigenvalue`) on the first ``sharpness_examples`` training examples; ``interpolation``: the
    training loss (and metric) on the first ``examples`` training examples along the line from the
    initialization to the solution (Goodfellow et al., 2015), on a grid from -0.2 to 1.2. The model is left
    as it was."""
    train = eval_batches(task, data, "train", examples)
    sharp_batch = _one_batch(eval_batches(task, data, "train", sharpness_examples))
    top = D.top_hessian_eigenvalue(model, task.loss_fn, sharp_batch, iters=iters, tol=tol, seed=seed)
    grid = D.default_alphas(15) if alphas is None else list(alphas)
    line = D.interpolate(model, theta0, D.current_weights(model), task.loss_fn, train, grid,
                         metric_fn=metric_fn(task))
    return {"sharpness": {**top.to_dict(), "examples": sharpness_examples if not isinstance(task, SyntheticTask)
                          else 1},
            "interpolation": {**line.to_dict(), "examples": line.cost.examples}}


class DiagnosticsCallback(Callback):
    """What ``compare --diagnostics`` attaches to each run; everything lands in ``record.extras[key]``:

    * ``"walk"``: the recorder's whole-model series (cosine of consecutive updates, distance from the
      initialization, update/gradient norms, lr) and per-layer effective lr and trust ratios, at steps
      ``every, 2*every, ...`` (default: about 100 records per run) and at each of the first ``first`` steps;
    * ``"histograms"``: ``|g|`` histograms on the recorder's fixed log bins at each of the first ``first`` steps
      and at the other recorded steps that are multiples of ``hist_every`` (the RAdam paper's waterfall);
    * ``"sharpness"`` and ``"interpolation"``: :func:`final_weights_diagnostics` at the end of the run
      (``final=False`` skips them).

    JSON-serialisable (``None`` for non-finite values; floats to 6 significant digits). Its cost on the default
    task: ``benchmarks/diagnostics_speed.py``.
    """

    def __init__(self, every: int | None = None, first: int = 20, hist_every: int | None = None,
                 final: bool = True, key: str = "diagnostics", data_dir: str | None = None,
                 examples: int = 1000, sharpness_examples: int = 500, iters: int = 50) -> None:
        self.every, self.first, self.hist_every, self.final, self.key = every, int(first), hist_every, final, key
        self.data_dir, self.examples, self.iters = data_dir, examples, iters
        self.sharpness_examples = sharpness_examples
        self._recorder: D.Recorder | None = None
        self._theta0: list[torch.Tensor] = []

    def on_run_start(self, ctx: RunContext) -> None:
        steps = ctx.config.steps
        every = self.every or max(1, steps // 100)
        hist_every = self.hist_every or max(every, steps // 10)
        first = self.first

        def when(t: int) -> bool:
            return t <= first or t % every == 0

        def hist(t: int) -> bool:
            return t <= first or t % hist_every == 0

        self._recorder = D.Recorder(ctx.optimizer, ctx.model, every=when, histograms=hist)
        self._theta0 = D.current_weights(ctx.model)

    def on_run_end(self, ctx: RunContext) -> None:
        if self._recorder is None:
            return
        rec = self._recorder
        rec.close()
        d = rec.to_dict()
        out: dict[str, Any] = {
            "layers": d["layers"],
            "walk": {k: d[k] for k in ("step", "lr", "cos_prev", "dist_init", "dist_init_sq", "update_norm",
                                       "grad_norm")},
            "layer": {k: d["layer"][k] for k in ("effective_lr", "trust_ratio")},
            "histograms": {"bins": d["bins"], "step": [s for s, h in zip(d["step"], d["hist"]["grad"],
                                                                          strict=True) if h is not None],
                           "grad": [h for h in d["hist"]["grad"] if h is not None],
                           "grad_outside": [h for h in d["hist_outside"]["grad"] if h is not None]},
        }
        if self.final and ctx.step > 0:
            data = getattr(ctx, "data", None)  # the run's data where the runner passes it, else loaded
            undo = _optimizer_eval(ctx.optimizer)  # the weights the run is evaluated at (Schedule-Free: x)
            try:
                out.update(final_weights_diagnostics(ctx.task, data if data is not None else
                                                     ctx.task.load(self.data_dir), ctx.model, self._theta0,
                                                     examples=self.examples,
                                                     sharpness_examples=self.sharpness_examples, iters=self.iters))
            except ValueError as e:  # e.g. a task without evaluation batches: keep the rest
                out["final_error"] = str(e)
            finally:
                undo()
        ctx.extras[self.key] = _rounded(out)


def _rounded(value: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits (the record stays small: about half the characters)."""
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    return value


def rerun_with_diagnostics(record: RunRecord | RunConfig, data_dir: str | None = None,
                           callback: DiagnosticsCallback | None = None) -> dict[str, Any]:
    """The ``DiagnosticsCallback`` extras of a finished run, by running its config again (the same numbers: a run
    is a pure function of its config and thread count)."""
    config = record if isinstance(record, RunConfig) else record.config
    cb = callback or DiagnosticsCallback(data_dir=data_dir)
    return run(config, callbacks=[cb], data_dir=data_dir).extras[cb.key]


# ----------------------------------------------------------------------------------------------------
# One diagnosed run for the commands


@dataclass
class TrainedRun:
    """A finished run: its record (with the recorder's history in ``record.extras["recorder"]``), the
    initial weights, the captured checkpoints and the trained model."""

    spec: str
    config: RunConfig
    record: RunRecord
    theta0: list[torch.Tensor]
    checkpoints: list[tuple[int, list[torch.Tensor]]]
    model: nn.Module
    recorder: D.Recorder | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> list[torch.Tensor]:
        return D.current_weights(self.model)

    @property
    def label(self) -> str:
        return self.spec


def train(config: RunConfig, *, every: int | Callable[[int], bool] | None = 10,
          histograms: bool | Callable[[int], bool] = False, checkpoint_steps: Iterable[int] = (),
          noise_every: int = 0, data_dir: str | None = None, progress: bool = True) -> TrainedRun:
    """Run ``config`` through the runner with a recorder (``every=None``: none) and a capture of weights."""
    capture = CaptureCallback(checkpoint_steps)
    callbacks: list[Callback] = [capture]
    recorder_cb = None
    if every is not None:
        recorder_cb = RecorderCallback(every, histograms, noise_every=noise_every, data_dir=data_dir)
        callbacks.append(recorder_cb)
    bar = Progress(config.steps, f"{config.optimizer} lr={config.lr:g}: training", progress, "step")
    try:
        record = run(config, callbacks=callbacks, data_dir=data_dir, progress=bar)
    finally:
        bar.close()
    if not record.ok:
        print(f"  {config.optimizer}: the run diverged at step {record.steps_done}; "
              "diagnostics use the weights where it stopped", flush=True)
    assert capture.model is not None
    return TrainedRun(config.optimizer, config, record, capture.theta0, capture.checkpoints, capture.model,
                      recorder_cb.recorder if recorder_cb else None)
