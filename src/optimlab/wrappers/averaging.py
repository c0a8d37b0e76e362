"""Weight averaging wrappers: stochastic weight averaging (SWA) and exponential moving average (EMA).

* SWA: Izmailov, Podoprikhin, Garipov, Vetrov, Wilson, "Averaging Weights Leads to Wider Optima and Better
  Generalization", UAI 2018, https://arxiv.org/abs/1803.05407. Reference code: timgaripov/swa (``train.py``,
  ``utils.moving_average``, ``utils.bn_update``).
* EMA / Polyak averaging: Polyak and Juditsky, "Acceleration of stochastic approximation by averaging", 1992;
  the decay warm-up ``min(decay, (1 + t) / (10 + t))`` is TensorFlow's ``tf.train.ExponentialMovingAverage``
  with ``num_updates``.

BatchNorm statistics must be recomputed for averaged weights: :func:`update_bn` (torch's
``torch.optim.swa_utils.update_bn``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._base import OptimizerWrapper

__all__ = ["SWA", "EMA", "update_bn"]


def _check_start_every(start: int | None, every: int) -> None:
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
        raise ValueError(f"Invalid start value: {start!r}; start must be an integer >= 0 (or None)")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"Invalid every value: {every!r}; every must be an integer >= 1")


class _AveragingWrapper(OptimizerWrapper):
    """Shared logic: when to average, per-parameter averages, swapping them in."""

    def __init__(
        self, optimizer: Optimizer, start: int | None, every: int, dtype: torch.dtype | None
    ) -> None:
        _check_start_every(start, every)
        if dtype is not None and (
            not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype.is_complex)
        ):
            raise ValueError(f"Invalid dtype value: {dtype!r}; dtype must be a floating-point torch.dtype")
        super().__init__(optimizer)
        self.start = start
        self.every = every
        self.dtype = dtype
        self.step_count = 0
        self.n_averaged = 0
        self._init_params(self._params())
        if start == 0:
            self.update_average()

    def _average_dtype(self, p: Tensor) -> torch.dtype:
        if self.dtype is None:
            # At least float32, never below the parameter's own precision.
            return torch.promote_types(p.dtype, torch.float32) if p.dtype.is_floating_point else p.dtype
        if torch.promote_types(self.dtype, p.dtype) != self.dtype:
            raise ValueError(f"Invalid dtype value: {self.dtype}; averaging a {p.dtype} parameter needs a "
                             f"dtype at least as precise as {p.dtype}")
        return self.dtype

    def _init_params(self, params: Iterable[Tensor]) -> None:
        params = list(params)
        dtypes = [self._average_dtype(p) for p in params]  # validate all before creating anything
        for p, dtype in zip(params, dtypes, strict=True):
            self.wrapper_state[p]["average"] = torch.zeros_like(p, dtype=dtype).detach()
            self.wrapper_state[p]["n_averaged"] = 0

    def _hyperparameters(self) -> dict[str, Any]:
        return {"start": self.start, "every": self.every}

    def _extra_state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "n_averaged": self.n_averaged}

    def _load_extra_state_dict(self, wrapper: dict[str, Any]) -> None:
        self.start = None if wrapper["start"] is None else int(wrapper["start"])
        self.every = int(wrapper["every"])
        self.step_count = int(wrapper["step"])
        self.n_averaged = int(wrapper["n_averaged"])

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step, then an averaging update at steps ``start, start + every, ...``."""
        self._check_not_swapped()
        loss = self._inner_step(closure)
        self.step_count += 1
        if self.start is not None and self.step_count >= self.start and (
            (self.step_count - self.start) % self.every == 0
        ):
            self.update_average()
        return loss

    @torch.no_grad()
    def update_average(self) -> None:
        """Add the current weights to the average now (called by :meth:`step` on schedule; call it yourself,
        e.g. once per epoch, with ``start=None``)."""
        self._check_not_swapped()
        buckets: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
        for p in self._params():
            st = self.wrapper_state[p]
            n = st["n_averaged"]
            avg = st["average"]
            if n == 0:
                avg.copy_(p)
            else:
                avgs, srcs = buckets.setdefault(n, ([], []))
                avgs.append(avg)
                srcs.append(p.detach() if p.dtype == avg.dtype else p.detach().to(avg.dtype))
            st["n_averaged"] = n + 1
        for n, (avgs, srcs) in buckets.items():
            self._accumulate(avgs, srcs, n)
        self.n_averaged += 1

    def _accumulate(self, averages: list[Tensor], params: list[Tensor], n: int) -> None:
        raise NotImplementedError  # pragma: no cover

    @contextlib.contextmanager
    def averaged(self, module: torch.nn.Module | None = None) -> Iterator[None]:
        """Evaluate with the averaged weights inside the block; training weights are restored bit-for-bit.

        With ``module``, its buffers are restored on exit too, so ``update_bn(loader, module)`` can be run
        inside the block without touching the training run's BatchNorm statistics. Parameters that have not
        been averaged yet (added after the last averaging) keep their current values.
        """
        if self.n_averaged == 0:
            raise RuntimeError(f"{type(self).__name__} has not averaged any weights yet")

        def source(p: Tensor) -> Tensor | None:
            st = self.wrapper_state[p]
            return st["average"] if st["n_averaged"] > 0 else None

        with self._swapped_params(source, module):
            yield


class SWA(_AveragingWrapper):
    r"""Stochastic weight averaging: an equal-weight running mean of the weights.

    After inner step ``s`` with ``s >= start`` and ``(s - start) % every == 0`` the weights are added to the
    running mean (Izmailov et al. 2018, Algorithm 1):

    .. math::
        w_\text{SWA} \leftarrow \frac{w_\text{SWA} \cdot n + w}{n + 1}, \qquad n \leftarrow n + 1 .

    ``start=0`` includes the initial weights (taken at construction). ``start=None`` averages only when
    :meth:`update_average` is called (the reference code averages once per epoch). Pair it with a constant or
    cyclical learning rate, e.g. ``torch.optim.swa_utils.SWALR(swa, swa_lr=...)``, which works on the wrapper.

    Args:
        optimizer: the inner optimizer.
        start: first step whose weights are averaged (``>= 0``), or ``None`` for manual averaging.
        every: averaging period in steps (``>= 1``), the paper's cycle length ``c``.
        dtype: dtype of the average; default ``promote_types(param.dtype, float32)``. A dtype less precise
            than a parameter's raises ``ValueError``.

    The averages, their counts, the step counter and ``n_averaged`` are in :meth:`state_dict`. Evaluate with
    :meth:`averaged`, after recomputing BatchNorm statistics with :func:`update_bn`.
    """

    def __init__(
        self, optimizer: Optimizer, start: int | None, every: int = 1, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(optimizer, start, every, dtype)

    def _accumulate(self, averages: list[Tensor], params: list[Tensor], n: int) -> None:
        torch._foreach_mul_(averages, n)
        torch._foreach_add_(averages, params)
        torch._foreach_div_(averages, n + 1)


class EMA(_AveragingWrapper):
    r"""Exponential moving average of the weights (Polyak averaging with exponential forgetting).

    The average starts as a copy of the weights at step ``start`` (``start=0``: the initial weights, taken at
    construction); then after every ``every``-th step

    .. math::
        \bar w \leftarrow \bar w + (1 - \beta_t)(w - \bar w) \quad (\texttt{torch.lerp}), \qquad
        \beta_t = \beta \ \text{or, with warm-up,}\ \min\!\left(\beta, \frac{1 + t}{10 + t}\right),

    where ``t`` is the number of EMA updates already applied after the initial copy (0 at the first update),
    the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``.

    Args:
        optimizer: the inner optimizer.
        decay: :math:`\beta \in [0, 1)`.
        warmup: use the decay warm-up above.
        start: step whose weights initialise the average (``>= 0``), or ``None`` for manual updates.
        every: update period in steps (``>= 1``).
        dtype: dtype of the average, as for :class:`SWA`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        decay: float = 0.999,
        warmup: bool = False,
        start: int | None = 0,
        every: int = 1,
        dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"Invalid decay value: {decay!r}; decay must be in [0, 1)")
        if not isinstance(warmup, bool):
            raise ValueError(f"Invalid warmup value: {warmup!r}; warmup must be a bool")
        self.decay = float(decay)
        self.warmup = warmup
        super().__init__(optimizer, start, every, dtype)

    def decay_at(self, t: int) -> float:
        """The decay used for the EMA update that has ``t`` updates before it (after the initial copy)."""
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "decay": self.decay, "warmup": self.warmup}

    def _load_extra_state_dict(self, wrapper: dict[str, Any]) -> None:
        super()._load_extra_state_dict(wrapper)
        self.decay = float(wrapper["decay"])
        self.warmup = bool(wrapper["warmup"])

    def _accumulate(self, averages: list[Tensor], params: list[Tensor], n: int) -> None:
        torch._foreach_lerp_(averages, params, 1.0 - self.decay_at(n - 1))


def update_bn(
    loader: Iterable[Any], model: torch.nn.Module, device: torch.device | str | None = None
) -> None:
    """Recompute BatchNorm running statistics of ``model`` with one pass over ``loader``.

    This is ``torch.optim.swa_utils.update_bn`` (the reference's ``utils.bn_update``): BatchNorm statistics
    are reset and re-estimated as a cumulative average over the batches; ``model``'s train/eval mode and the
    BatchNorm momenta are restored. Each batch is a tensor or a list/tuple whose first element is the input.
    Run it inside :meth:`SWA.averaged` (pass the model there to get the training statistics back afterwards)::

        with swa.averaged(model):
            update_bn(train_loader, model)
            evaluate(model)
    """
    torch.optim.swa_utils.update_bn(loader, model, device=device)
