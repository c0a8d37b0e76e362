"""Cyclical learning rates (CLR), SGDR and one-cycle, with the matching momentum / beta1 cycles.

Learning-rate schedules return a factor of the base lr, which here is the *peak* lr: build the optimizer with
``lr = max_lr`` and give the lower end as a ratio (``min_factor = base_lr / max_lr`` for CLR,
``eta_min / eta_max`` for SGDR, ``1 / div_factor`` for one-cycle). Momentum schedules return absolute values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..core import validation
from ._base import Schedule

__all__ = ["cyclic", "cyclic_momentum", "sgdr", "one_cycle", "one_cycle_momentum"]

_CLR_MODES = ("triangular", "triangular2", "exp_range")


def _clr_wave(
    step_size_up: int,
    step_size_down: int | None,
    mode: str,
    gamma: float,
    scale_fn: Callable[[float], float] | None,
    scale_mode: str | None,
) -> tuple[Callable[[float], tuple[float, float]], str]:
    """Validate the CLR arguments; return ``s -> (position in the cycle in [0, 1], amplitude scale)``."""
    up = validation.check_int("step_size_up", step_size_up, 1)
    down = up if step_size_down is None else validation.check_int("step_size_down", step_size_down, 1)
    gamma = validation.check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    if scale_fn is None:
        validation.check_choice("mode", mode, _CLR_MODES)
        if scale_mode is not None:
            raise ValueError(
                f"scale_mode is set by mode={mode!r}; pass scale_mode only with a custom scale_fn"
            )
        if mode == "triangular":
            fn, scale_mode = (lambda x: 1.0), "cycle"
        elif mode == "triangular2":
            fn, scale_mode = (lambda x: 1.0 / (2.0 ** (x - 1))), "cycle"
        else:
            fn, scale_mode = (lambda x: gamma**x), "iterations"
        desc = f"step_size_up={up}, step_size_down={down}, mode={mode!r}, gamma={gamma}"
    else:
        if not callable(scale_fn):
            raise TypeError(f"scale_fn must be callable, got {type(scale_fn).__name__}")
        fn = scale_fn
        scale_mode = "cycle" if scale_mode is None else scale_mode
        validation.check_choice("scale_mode", scale_mode, ("cycle", "iterations"))
        desc = f"step_size_up={up}, step_size_down={down}, scale_fn={scale_fn!r}, scale_mode={scale_mode!r}"
    total = float(up + down)
    ratio = up / total
    by_cycle = scale_mode == "cycle"

    def wave(s: float) -> tuple[float, float]:
        # Smith 2017 / bckenstler/CLR, in torch.optim.lr_scheduler.CyclicLR's form (unequal up/down allowed).
        cycle = math.floor(1 + s / total)
        x = 1.0 + s / total - cycle
        pos = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        return pos, fn(cycle if by_cycle else s)

    return wave, desc


def cyclic(
    step_size_up: int,
    min_factor: float,
    *,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[float], float] | None = None,
    scale_mode: str | None = None,
) -> Schedule:
    r"""Cyclical learning rate (CLR) between ``min_factor`` and 1.

    ``factor(t) = min + (1 - min) * h(t) * scale(c)``, where ``h`` rises linearly from 0 to 1 over
    ``step_size_up`` steps and falls back over ``step_size_down`` (default: the same), ``c`` is the 1-based
    cycle (``scale_mode="cycle"``) or the step (``"iterations"``), and ``scale`` is 1 (``"triangular"``),
    ``1 / 2**(c - 1)`` (``"triangular2"``) or ``gamma**t`` (``"exp_range"``), or your ``scale_fn``.

    Build the optimizer with ``lr = max_lr`` and pass ``min_factor = base_lr / max_lr``; then the lr equals
    ``torch.optim.lr_scheduler.CyclicLR(opt, base_lr, max_lr, ...)`` step for step.

    References:
        Smith 2017, "Cyclical Learning Rates for Training Neural Networks" (WACV, arXiv:1506.01186),
        section 3.1; reference code bckenstler/CLR (``clr_callback.py``).
    """
    wave, desc = _clr_wave(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)
    lo = validation.check_real("min_factor", min_factor, 0.0, 1.0)

    def fn(s: float) -> float:
        pos, scale = wave(s)
        return lo + (1.0 - lo) * pos * scale

    return Schedule(fn, f"cyclic({desc}, min_factor={lo})", None)


def cyclic_momentum(
    step_size_up: int,
    *,
    step_size_down: int | None = None,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[float], float] | None = None,
    scale_mode: str | None = None,
) -> Schedule:
    """Momentum (or Adam's beta1) cycled inversely to :func:`cyclic` with the same arguments; absolute values.

    ``m(t) = max_momentum - (max_momentum - base_momentum) * h(t) * scale(c)``, as torch ``CyclicLR``
    (``cycle_momentum=True``, defaults 0.8 / 0.9). Smith 2018 ("A disciplined approach to neural network
    hyper-parameters: Part 1", arXiv:1803.09820) recommends cycling momentum inversely to the lr.
    """
    wave, desc = _clr_wave(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)
    hi = validation.check_real("max_momentum", max_momentum, 0.0, 1.0)
    lo = validation.check_real("base_momentum", base_momentum, 0.0, 1.0)
    if lo > hi:
        raise ValueError(f"base_momentum must be <= max_momentum = {hi}, got {lo}")

    def fn(s: float) -> float:
        pos, scale = wave(s)
        return hi - (hi - lo) * pos * scale

    return Schedule(fn, f"cyclic_momentum({desc}, base_momentum={lo}, max_momentum={hi})", None)


def sgdr(period: int, *, t_mult: int = 1, min_factor: float = 0.0) -> Schedule:
    r"""SGDR: cosine annealing with warm restarts.

    ``factor(t) = min + (1 - min) * (1 + cos(pi * T_cur / T_i)) / 2``, where the i-th cycle (from 0) lasts
    ``T_i = period * t_mult**i`` steps and ``T_cur`` counts the steps since the last restart. With
    ``min_factor = eta_min / base_lr`` it equals ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt,
    T_0=period, T_mult=t_mult, eta_min)``. It never ends (no final value to hold).

    References:
        Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts" (ICLR,
        arXiv:1608.03983), eq. (5); reference code loshchil/SGDR.
    """
    t0 = validation.check_int("period", period, 1)
    mult = validation.check_int("t_mult", t_mult, 1)
    lo = validation.check_real("min_factor", min_factor, 0.0, 1.0)

    def fn(s: float) -> float:
        if mult == 1:
            t_cur, t_i = s % t0, t0
        else:
            start, t_i = 0, t0
            while s >= start + t_i:
                start += t_i
                t_i *= mult
            t_cur = s - start
        return lo + (1.0 - lo) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0

    return Schedule(fn, f"sgdr(period={t0}, t_mult={mult}, min_factor={lo})", None)


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


def _one_cycle_ends(total_steps: int, pct_start: float, three_phase: bool) -> tuple[int, float, list[float]]:
    n = validation.check_int("total_steps", total_steps, 2)
    pct = validation.check_real("pct_start", pct_start, 0.0, 1.0, low_open=True, high_open=True)
    ends = [pct * n - 1.0, 2.0 * pct * n - 2.0, n - 1.0] if three_phase else [pct * n - 1.0, n - 1.0]
    starts = [0.0, *ends[:-1]]
    if any(e <= s for s, e in zip(starts, ends, strict=True)):
        need = "1 / total_steps < pct_start < (total_steps + 1) / (2 * total_steps)" if three_phase else (
            "1 / total_steps < pct_start < 1")
        raise ValueError(
            f"pct_start must satisfy {need} so that every phase lasts > 0 steps, "
            f"got {pct_start} with total_steps={n}"
        )
    return n, pct, ends


def _piecewise(ends: list[float], values: list[float], anneal: str) -> Callable[[float], float]:
    """Anneal ``values[k]`` -> ``values[k + 1]`` between ``ends[k - 1]`` (0 for k = 0) and ``ends[k]``."""
    f = _anneal_cos if anneal == "cos" else _anneal_linear
    last = ends[-1]

    def fn(s: float) -> float:
        if s >= last:  # hold the final value (torch's OneCycleLR extrapolates once, then raises)
            return values[-1]
        start = 0.0
        for k, end in enumerate(ends):  # the phase search of torch.optim.lr_scheduler.OneCycleLR
            if s <= end or k == len(ends) - 1:
                return f(values[k], values[k + 1], (s - start) / (end - start))
            start = end
        raise AssertionError("unreachable")

    return fn


def one_cycle(
    total_steps: int,
    *,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    anneal: str = "cos",
) -> Schedule:
    r"""1cycle: from ``1 / div_factor`` up to 1, then down to ``1 / (div_factor * final_div_factor)``.

    The base lr is ``max_lr``. Two phases (default, fastai's variant): anneal up over the first
    ``pct_start * total_steps - 1`` steps, then down to the minimum at step ``total_steps - 1``. Three phases
    (the paper's): up, symmetric back down to the initial lr, then an annihilation phase to the minimum.
    ``anneal`` is ``"cos"`` or ``"linear"``. Equals
    ``torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps, ...)`` for steps
    ``0 .. total_steps - 1``; from step ``total_steps - 1`` on it holds the minimum (torch extrapolates the
    cosine one step past the end and raises on the next).

    References:
        Smith & Topin 2018, "Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
        Rates" (arXiv:1708.07120); Smith 2018, "A disciplined approach to neural network hyper-parameters:
        Part 1" (arXiv:1803.09820); fastai ``fit_one_cycle``; torch ``OneCycleLR``.
    """
    n, pct, ends = _one_cycle_ends(total_steps, pct_start, three_phase)
    div = validation.check_real("div_factor", div_factor, 1.0)
    final_div = validation.check_real("final_div_factor", final_div_factor, 1.0)
    validation.check_choice("anneal", anneal, ("cos", "linear"))
    initial = 1.0 / div
    minimum = initial / final_div
    values = [initial, 1.0, initial, minimum] if three_phase else [initial, 1.0, minimum]
    return Schedule(
        _piecewise(ends, values, anneal),
        f"one_cycle(total_steps={n}, pct_start={pct}, div_factor={div}, final_div_factor={final_div}, "
        f"three_phase={three_phase}, anneal={anneal!r})",
        ends[-1],
    )


def one_cycle_momentum(
    total_steps: int,
    *,
    pct_start: float = 0.3,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
    anneal: str = "cos",
) -> Schedule:
    """The inverse momentum (or beta1) cycle of :func:`one_cycle`, absolute values, as torch ``OneCycleLR``.

    From ``max_momentum`` down to ``base_momentum`` while the lr rises, back to ``max_momentum`` while it
    falls (three phases: stays at ``max_momentum`` in the annihilation phase). Smith & Topin 2018
    (arXiv:1708.07120); Smith 2018 (arXiv:1803.09820), section 4.
    """
    n, pct, ends = _one_cycle_ends(total_steps, pct_start, three_phase)
    hi = validation.check_real("max_momentum", max_momentum, 0.0, 1.0)
    lo = validation.check_real("base_momentum", base_momentum, 0.0, 1.0)
    if lo > hi:
        raise ValueError(f"base_momentum must be <= max_momentum = {hi}, got {lo}")
    validation.check_choice("anneal", anneal, ("cos", "linear"))
    values = [hi, lo, hi, hi] if three_phase else [hi, lo, hi]
    return Schedule(
        _piecewise(ends, values, anneal),
        f"one_cycle_momentum(total_steps={n}, pct_start={pct}, base_momentum={lo}, max_momentum={hi}, "
        f"three_phase={three_phase}, anneal={anneal!r})",
        ends[-1],
    )
