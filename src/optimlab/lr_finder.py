"""The learning-rate range test ("LR finder") with exact restoration of everything it touches.

References:
    Smith 2017, "Cyclical Learning Rates for Training Neural Networks" (WACV, arXiv:1506.01186), section 3.3,
    "How can one estimate reasonable minimum and maximum boundary values?" (the LR range test).
    davidtvs/pytorch-lr-finder (``torch_lr_finder/lr_finder.py``: exponential / linear sweep, divergence stop,
    gradient accumulation, AMP); fastai ``Learner.lr_find`` and ``LRFinder`` callback
    (``fastai/callback/schedule.py``: bias-corrected EMA of the loss, stop at 4x the best smoothed loss,
    the ``valley``, ``steep`` and ``minimum`` suggestions).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from .core import validation
from .core.snapshot import Snapshot
from .wrappers._base import OptimizerWrapper

__all__ = ["LRFinderResult", "lr_find"]

_MODES = ("exp", "linear")


@dataclass
class LRFinderResult:
    """What :func:`lr_find` measured.

    Attributes:
        lrs: the lr used for each optimizer step that was taken or attempted (all param groups share it).
        losses: the raw training loss at that step (mean over accumulated micro-batches), computed with the weights
            *before* that step's update, as in fastai and pytorch-lr-finder; ``nan`` for a non-finite loss.
        smoothed_losses: the bias-corrected exponential moving average of ``losses``.
        steepest_lr: lr where the smoothed loss falls fastest, ``argmin d(loss) / d(log lr)`` (central
            differences), or ``None`` when too few points were recorded.
        valley_lr: fastai's "valley" suggestion (a point 1/3 + 1/6 of the way into the longest decreasing run of the
            smoothed loss), or ``None``.
        minimum_lr: the lr at the minimum smoothed loss divided by 10 (fastai's ``minimum``), or ``None``.
        lr_at_min_loss: the lr at the minimum smoothed loss (undivided), or ``None``.
        stop_index: index of the last recorded step.
        stop_reason: ``"completed"``, ``"diverged"`` (smoothed loss > ``diverge_threshold`` x best) or
            ``"nonfinite"`` (the loss was NaN or infinite).
        best_loss: the lowest smoothed loss seen.
        suggestion_window: ``(first, last)`` indices (inclusive) of the points the suggestions were taken from.
    """

    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    steepest_lr: float | None
    valley_lr: float | None
    minimum_lr: float | None
    lr_at_min_loss: float | None
    stop_index: int
    stop_reason: str
    best_loss: float
    suggestion_window: tuple[int, int] | None = None
    mode: str = field(default="exp")

    @property
    def suggestions(self) -> dict[str, float | None]:
        """``{"steepest": ..., "valley": ..., "minimum": ...}``."""
        return {"steepest": self.steepest_lr, "valley": self.valley_lr, "minimum": self.minimum_lr}

    def plot(self, ax: Any = None, *, raw: bool = True) -> Any:
        """Plot the smoothed (and, if ``raw``, the raw) loss against the lr and mark the suggestions.

        matplotlib is imported lazily (optional dependency). Returns the matplotlib ``Axes``.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.0, 4.0))
        lrs = np.asarray(self.lrs)
        if raw:
            ax.plot(lrs, self.losses, color="0.7", linewidth=0.8, label="loss")
        ax.plot(lrs, self.smoothed_losses, color="C0", label="smoothed loss")
        sm = np.asarray(self.smoothed_losses)
        for (name, lr), color in zip(self.suggestions.items(), ("C1", "C2", "C3"), strict=True):
            if lr is not None:
                i = int(np.argmin(np.abs(np.log(lrs) - math.log(lr))))
                ax.scatter([lr], [sm[i]], color=color, zorder=3, label=f"{name}: {lr:.2e}")
        if self.mode == "exp":
            ax.set_xscale("log")
        finite = sm[np.isfinite(sm)]
        if finite.size:  # a spike of the raw loss would flatten the curve: show up to 4x the best smoothed loss
            lo, hi = float(finite.min()), float(finite[0])
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), max(hi, 4.0 * lo if lo > 0 else hi) + 0.05 * abs(hi))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend()
        return ax


# ----------------------------------------------------------------------------------------------- suggestions


def _valley_index(losses: np.ndarray) -> int:
    """fastai ``valley``: longest decreasing subsequence, then 1/3 + 1/6 of the way into it."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def _suggest(
    lrs: list[float], smoothed: list[float], skip_start: int, skip_end: int, mode: str = "exp"
) -> tuple[float | None, float | None, float | None, float | None, tuple[int, int] | None]:
    count = len(smoothed)
    if count and not math.isfinite(smoothed[-1]):  # only the point that stopped the sweep can be non-finite
        count -= 1
    first, last = skip_start, count - 1 - skip_end
    if last - first + 1 < 3:
        return None, None, None, None, None
    lr = np.asarray(lrs[first : last + 1], dtype=np.float64)
    sm = np.asarray(smoothed[first : last + 1], dtype=np.float64)
    i_min = int(np.argmin(sm))
    # Steepest descent on the way *down* to the minimum: past it the smoothed loss is rising, and the EMA decaying
    # after a spike would otherwise look like a steep descent at a far too large lr.
    slope = np.gradient(sm, np.log(lr)) if mode == "exp" else np.gradient(sm, lr)
    steepest = float(lr[int(np.argmin(slope[: i_min + 1]))]) if i_min >= 1 else float(lr[0])
    valley = float(lr[_valley_index(sm)])
    at_min = float(lr[i_min])
    return steepest, valley, at_min / 10.0, at_min, (first, last)


# --------------------------------------------------------------------------------------------- restoration


def _snap(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_snap(v) for v in value)
    return copy.deepcopy(value)


def _restore(original: Any, saved: Any) -> Any:
    """Return ``original`` with its values reset to ``saved``; tensors are refilled in place (same objects)."""
    if isinstance(original, torch.Tensor) and isinstance(saved, torch.Tensor):
        if original.shape == saved.shape and original.dtype == saved.dtype and original.device == saved.device:
            with torch.no_grad():
                original.copy_(saved)
            return original
        return saved
    if isinstance(original, (tuple, list)) and isinstance(saved, (tuple, list)) and len(original) == len(saved):
        items = [_restore(o, s) for o, s in zip(original, saved, strict=True)]
        if isinstance(original, list):
            original[:] = items
            return original
        return type(saved)(items)
    return copy.deepcopy(saved)


def _restore_entry(entry: dict[str, Any], saved: dict[str, Any]) -> None:
    """Reset a state dict (per-parameter state) to ``saved``: tensors refilled in place, keys added since removed."""
    for k in [k for k in entry if k not in saved]:
        del entry[k]
    for k, v in saved.items():
        entry[k] = _restore(entry[k], v) if k in entry else _snap(v)


class _WrapperCheckpoint:
    """An optimlab wrapper's own state (slow weights, averages, counters, RNG state), restored in place."""

    def __init__(self, wrapper: OptimizerWrapper) -> None:
        self.wrapper = wrapper
        self.entries = {p: (entry, {k: _snap(v) for k, v in entry.items()})
                        for p, entry in wrapper.wrapper_state.items()}
        self.extra = _snap({**wrapper._hyperparameters(), **wrapper._extra_state_dict()})

    def restore(self) -> None:
        state = self.wrapper.wrapper_state
        for p in [p for p in state if p not in self.entries]:
            del state[p]
        for p, (entry, saved) in self.entries.items():
            _restore_entry(entry, saved)
            state[p] = entry
        self.wrapper._load_extra_state_dict(_snap(self.extra))


class _Checkpoint:
    """An in-memory copy of everything ``lr_find`` changes, restored bit for bit with :meth:`restore`.

    For a wrapper stack (Lookahead, GradientNoise, SWA, EMA, in any order and depth) each wrapper's own state is
    restored too; an optimizer of another kind whose ``state_dict()`` holds more than ``state`` and
    ``param_groups`` gets that ``state_dict()`` back with ``load_state_dict`` (so everything it saves is restored)."""

    def __init__(self, model: nn.Module, optimizer: Optimizer, scaler: Any) -> None:
        # the values of the model's parameters and buffers and of the optimizer's parameters, the modules' modes
        self.weights = Snapshot([*model.parameters(), *model.buffers(),
                                 *(p for group in optimizer.param_groups for p in group["params"])], model.modules())
        self.grads = [(t, t.grad, None if t.grad is None else t.grad.detach().clone()) for t, _ in self.weights.tensors]
        self.optimizer = optimizer
        self.wrappers: list[_WrapperCheckpoint] = []
        inner = optimizer
        while isinstance(inner, OptimizerWrapper):
            self.wrappers.append(_WrapperCheckpoint(inner))
            inner = inner.optimizer
        self.inner = inner
        inner_sd = None if isinstance(inner, torch.optim.Optimizer) and type(inner).state_dict is \
            torch.optim.Optimizer.state_dict else inner.state_dict()
        self.inner_extra = None if inner_sd is None or set(inner_sd) <= {"state", "param_groups"} else \
            copy.deepcopy(inner_sd)
        self.opt_state = {p: (s, {k: _snap(v) for k, v in s.items()}) for p, s in optimizer.state.items()}
        self.groups = [
            {k: (v, _snap(v)) for k, v in group.items() if k != "params"} for group in optimizer.param_groups
        ]
        self.scaler = scaler
        self.scaler_state = None if scaler is None else {k: (v, _snap(v)) for k, v in vars(scaler).items()}
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.py_rng = random.getstate()
        self.np_rng = np.random.get_state()

    def restore(self) -> None:
        self.weights.restore()
        with torch.no_grad():
            for t, grad, saved in self.grads:
                if grad is not None:
                    grad.copy_(saved)
                t.grad = grad
        state = self.optimizer.state
        for p in list(state.keys()):
            if p not in self.opt_state:
                del state[p]
        for p, (entry, saved) in self.opt_state.items():
            _restore_entry(entry, saved)
            state[p] = entry
        for group, saved in zip(self.optimizer.param_groups, self.groups, strict=True):
            for k in [k for k in group if k != "params" and k not in saved]:
                del group[k]
            for k, (original, snap) in saved.items():
                group[k] = _restore(original, snap)
        for wrapper in self.wrappers:
            wrapper.restore()
        if self.inner_extra is not None:
            self.inner.load_state_dict(copy.deepcopy(self.inner_extra))
        if self.scaler is not None and self.scaler_state is not None:
            for k, (original, snap) in self.scaler_state.items():
                setattr(self.scaler, k, _restore(original, snap))
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.py_rng)
        np.random.set_state(self.np_rng)


# ----------------------------------------------------------------------------------------------------- sweep


def _to_device(x: Any, device: torch.device | None) -> Any:
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


class _Batches:
    """Endless batches from ``data``, restarting its iterator when it is exhausted."""

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data
        self.it: Iterator[Any] | None = None
        self.count = 0

    def next(self) -> Any:
        if self.it is None:
            self.it = iter(self.data)
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.data)
            try:
                batch = next(self.it)
            except StopIteration:
                raise ValueError(
                    f"data yielded no batch after {self.count} batches and cannot be restarted; pass a re-iterable "
                    "such as a DataLoader or a list, not a one-shot iterator or generator"
                ) from None
        self.count += 1
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"data must yield (inputs, targets) pairs, got {type(batch).__name__}")
        return batch


def lr_find(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: Iterable[Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    smooth: float = 0.98,
    diverge_threshold: float = 4.0,
    accumulation_steps: int = 1,
    grad_scaler: torch.amp.GradScaler | None = None,
    device: torch.device | str | None = None,
    skip_start: int | None = None,
    skip_end: int = 5,
) -> LRFinderResult:
    r"""Run the LR range test, then put the model, optimizer, scaler and RNGs back exactly as they were.

    Step ``i`` (``0 <= i < num_steps``) trains on ``accumulation_steps`` batches with every param group's lr set
    to ``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))`` (``mode="exp"``, the usual choice) or
    ``start_lr + (end_lr - start_lr) * i / (num_steps - 1)`` (``"linear"``), so the sweep starts at ``start_lr``
    and ends at ``end_lr``. The recorded loss is smoothed with a bias-corrected EMA,
    ``a_i = smooth * a_{i-1} + (1 - smooth) * loss_i``, ``s_i = a_i / (1 - smooth ** (i + 1))`` (fastai's
    ``AvgSmoothLoss``). The sweep stops early when ``s_i > diverge_threshold * min_{j<=i} s_j`` or the loss is
    NaN / infinite.

    Suggestions are taken from the smoothed curve without its first ``skip_start`` (default
    ``num_steps // 10``, as fastai) and last ``skip_end`` points: the steepest descent
    (``argmin ds / d log lr``), fastai's ``valley`` and the lr at the minimum divided by 10. They are ``None``
    when fewer than 3 points remain. Take them as a starting point, not an answer (Smith 2017, section 3.3,
    reads the bounds of a cyclical schedule off the plot).

    Restoration: the parameters, buffers (BatchNorm running stats and ``num_batches_tracked`` included) and
    ``.grad`` of the model and of every parameter of the optimizer, each module's train/eval flag, the
    optimizer's ``state`` and every param-group entry, the own state of every wrapper in a wrapper stack (slow
    weights, averages, counters, the noise generator: everything its ``state_dict()`` holds), the
    ``grad_scaler``'s state and the global RNGs (torch CPU, CUDA if initialised, Python ``random``, NumPy) are saved
    in memory before the sweep and restored in a ``finally`` block, whatever happens (divergence, NaN, an
    exception, which then propagates). Tensors are
    restored with ``copy_`` into the original objects, so outside references stay valid. Memory cost: one copy
    of the model and of the optimizer state.

    Args:
        model: the model; ``loss_fn(model(inputs), targets)`` must return a scalar loss. Set to train mode for
            the sweep.
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters.
        loss_fn: callable ``(outputs, targets) -> scalar tensor``.
        data: a re-iterable (DataLoader, list, ...) of ``(inputs, targets)`` batches; restarted when exhausted.
        start_lr, end_lr: the sweep's first and last lr, ``0 < start_lr < end_lr``.
        num_steps: optimizer steps in the sweep, >= 2.
        mode: ``"exp"`` or ``"linear"`` spacing of the lrs.
        smooth: EMA coefficient in ``[0, 1)``; 0 disables smoothing.
        diverge_threshold: stop when the smoothed loss exceeds this multiple (> 1) of the best one.
        accumulation_steps: micro-batches per optimizer step (the loss of each is divided by this).
        grad_scaler: an optional ``torch.amp.GradScaler``; the backward pass, step and update go through it.
        device: if given, batches (tensors, or tuples / lists / dicts of them) are moved there; the model is not
            moved.
        skip_start, skip_end: points left out at either end of the curve when computing the suggestions.

    Returns:
        An :class:`LRFinderResult`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (outputs, targets) -> loss, got {type(loss_fn).__name__}")
    start_lr = validation.check_real("start_lr", start_lr, 0.0, low_open=True)
    end_lr = validation.check_real("end_lr", end_lr, start_lr, low_open=True, expected=f"> start_lr = {start_lr}")
    num_steps = validation.check_int("num_steps", num_steps, 2)
    validation.check_choice("mode", mode, _MODES)
    smooth = validation.check_real("smooth", smooth, 0.0, 1.0, high_open=True)
    diverge_threshold = validation.check_real("diverge_threshold", diverge_threshold, 1.0, low_open=True)
    accumulation_steps = validation.check_int("accumulation_steps", accumulation_steps, 1)
    if grad_scaler is not None and not isinstance(grad_scaler, torch.amp.GradScaler):
        raise TypeError(f"grad_scaler must be a torch.amp.GradScaler or None, got {type(grad_scaler).__name__}")
    skip_start = num_steps // 10 if skip_start is None else validation.check_int("skip_start", skip_start, 0)
    skip_end = validation.check_int("skip_end", skip_end, 0)
    dev = None if device is None else torch.device(device)

    if mode == "exp":
        ratio = end_lr / start_lr
        schedule = [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]
    else:
        schedule = [start_lr + (end_lr - start_lr) * (i / (num_steps - 1)) for i in range(num_steps)]
    schedule[-1] = end_lr

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    best = math.inf
    stop_reason = "completed"
    checkpoint = _Checkpoint(model, optimizer, grad_scaler)
    try:
        model.train()
        batches = _Batches(data)
        avg = 0.0
        for i, lr in enumerate(schedule):
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            finite = True
            for _ in range(accumulation_steps):
                inputs, targets = batches.next()
                loss = loss_fn(model(_to_device(inputs, dev)), _to_device(targets, dev))
                value = float(loss.detach())
                if not math.isfinite(value):
                    finite = False
                    break
                loss = loss / accumulation_steps
                (loss if grad_scaler is None else grad_scaler.scale(loss)).backward()
                total += value / accumulation_steps
            lrs.append(lr)
            if not finite:
                losses.append(math.nan)
                smoothed.append(math.nan)
                stop_reason = "nonfinite"
                break
            if grad_scaler is None:
                optimizer.step()
            else:
                grad_scaler.step(optimizer)
                grad_scaler.update()
            avg = smooth * avg + (1.0 - smooth) * total
            s = avg / (1.0 - smooth ** (i + 1))
            losses.append(total)
            smoothed.append(s)
            best = min(best, s)
            if s > diverge_threshold * best:
                stop_reason = "diverged"
                break
    finally:
        checkpoint.restore()

    steepest, valley, minimum, at_min, window = _suggest(lrs, smoothed, skip_start, skip_end, mode)
    return LRFinderResult(
        lrs=lrs,
        losses=losses,
        smoothed_losses=smoothed,
        steepest_lr=steepest,
        valley_lr=valley,
        minimum_lr=minimum,
        lr_at_min_loss=at_min,
        stop_index=len(lrs) - 1,
        stop_reason=stop_reason,
        best_loss=best,
        suggestion_window=window,
        mode=mode,
    )
