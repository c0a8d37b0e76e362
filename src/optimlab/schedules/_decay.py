"""Warm-up, decay and warm-up-stable-decay (WSD) schedules, all returning a factor of the base (peak) lr."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

from ..core import validation
from ._base import Schedule, join

__all__ = [
    "linear_warmup",
    "exponential_warmup",
    "warmup",
    "step_decay",
    "multistep_decay",
    "exponential_decay",
    "cosine_decay",
    "linear_decay",
    "wsd",
]


def linear_warmup(warmup_steps: int, init_factor: float = 0.0) -> Schedule:
    """Linear warm-up from ``init_factor`` at step 0 to 1 at step ``warmup_steps``, then 1.

    ``factor(t) = init + (1 - init) * min(t, W) / W``. This is the "gradual warm-up" of Goyal et al. 2017,
    "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (arXiv:1706.02677, section 2.2), which ramps
    from ``lr / k`` to ``lr`` (``init_factor = 1 / k``) over 5 epochs.
    """
    w = validation.check_int("warmup_steps", warmup_steps, 1)
    init = validation.check_real("init_factor", init_factor, 0.0, 1.0)
    return Schedule(
        lambda s: init + (1.0 - init) * (min(s, w) / w),
        f"linear_warmup(warmup_steps={w}, init_factor={init})",
        float(w),
    )


def exponential_warmup(warmup_steps: int, init_factor: float = 1e-3) -> Schedule:
    """Geometric warm-up: ``factor(t) = init ** (1 - min(t, W) / W)``, from ``init_factor`` to 1 at step W."""
    w = validation.check_int("warmup_steps", warmup_steps, 1)
    init = validation.check_real("init_factor", init_factor, 0.0, 1.0, low_open=True)
    return Schedule(
        lambda s: init ** (1.0 - min(s, w) / w),
        f"exponential_warmup(warmup_steps={w}, init_factor={init})",
        float(w),
    )


def warmup(
    schedule: Schedule | Callable[[float], float],
    warmup_steps: int,
    init_factor: float = 0.0,
    mode: str = "linear",
) -> Schedule:
    """Prepend a warm-up to ``schedule``: ``join([linear_warmup(W, init), schedule], [W])``.

    ``schedule`` then sees ``step - W``, so give it the length of the run *after* warm-up. The result is
    continuous when ``schedule(0) == 1``, which holds for every decay in this module.

    Args:
        mode: ``"linear"`` (Goyal et al. 2017) or ``"exponential"`` (``init_factor`` must then be > 0).
    """
    validation.check_choice("mode", mode, ("linear", "exponential"))
    first = linear_warmup(warmup_steps, init_factor) if mode == "linear" else exponential_warmup(
        warmup_steps, init_factor
    )
    return join([first, schedule], [warmup_steps])


def step_decay(step_size: int, gamma: float = 0.1) -> Schedule:
    """Multiply by ``gamma`` every ``step_size`` steps: ``gamma ** floor(t / step_size)`` (torch StepLR)."""
    n = validation.check_int("step_size", step_size, 1)
    g = validation.check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    return Schedule(lambda s: g ** math.floor(s / n), f"step_decay(step_size={n}, gamma={g})", None)


def multistep_decay(milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """Multiply by ``gamma`` at each milestone: ``gamma ** #{m <= t}`` (torch ``MultiStepLR``)."""
    ms = [validation.check_int(f"milestones[{i}]", m, 1) for i, m in enumerate(milestones)]
    if not ms:
        raise ValueError("milestones must hold at least one step >= 1, got none")
    if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
        raise ValueError(f"milestones must be strictly increasing, got {ms}")
    g = validation.check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    return Schedule(
        lambda s: g ** bisect.bisect_right(ms, s),
        f"multistep_decay(milestones={ms}, gamma={g})",
        float(ms[-1]),
    )


def exponential_decay(gamma: float, end_factor: float = 0.0) -> Schedule:
    """``max(gamma ** t, end_factor)`` (torch ``ExponentialLR`` when ``end_factor = 0``)."""
    g = validation.check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    end = validation.check_real("end_factor", end_factor, 0.0, 1.0)
    end_step = math.log(end) / math.log(g) if (end > 0.0 and g < 1.0) else (0.0 if g == 1.0 else None)
    return Schedule(lambda s: max(g**s, end), f"exponential_decay(gamma={g}, end_factor={end})", end_step)


def cosine_decay(decay_steps: int, end_factor: float = 0.0) -> Schedule:
    """Half-cosine from 1 at step 0 to ``end_factor`` at step ``decay_steps``, then ``end_factor``.

    ``factor(t) = end + (1 - end) * (1 + cos(pi * min(t, T) / T)) / 2``, the annealing of Loshchilov & Hutter
    2017, "SGDR: Stochastic Gradient Descent with Warm Restarts" (ICLR, arXiv:1608.03983, eq. 5) without
    restarts; ``end_factor`` is ``eta_min / eta_max``.
    """
    t = validation.check_int("decay_steps", decay_steps, 1)
    end = validation.check_real("end_factor", end_factor, 0.0, 1.0)
    return Schedule(
        lambda s: end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * min(s, t) / t)),
        f"cosine_decay(decay_steps={t}, end_factor={end})",
        float(t),
    )


def linear_decay(decay_steps: int, end_factor: float = 0.0) -> Schedule:
    """Linear from 1 at step 0 to ``end_factor`` at step ``decay_steps``, then ``end_factor``."""
    t = validation.check_int("decay_steps", decay_steps, 1)
    end = validation.check_real("end_factor", end_factor, 0.0, 1.0)
    return Schedule(
        lambda s: end + (1.0 - end) * (1.0 - min(s, t) / t),
        f"linear_decay(decay_steps={t}, end_factor={end})",
        float(t),
    )


_COOLDOWNS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: 0.5 * (1.0 + math.cos(math.pi * x)),
    "1-sqrt": lambda x: 1.0 - math.sqrt(x),
}


def wsd(
    total_steps: int,
    warmup_steps: int,
    decay_steps: int,
    *,
    init_factor: float = 0.0,
    end_factor: float = 0.0,
    decay: str = "linear",
) -> Schedule:
    r"""Warm-up-stable-decay (trapezoidal) schedule, continuous at every phase boundary.

    With ``N = total_steps``, ``W = warmup_steps``, ``D = decay_steps`` and ``x = (t - (N - D)) / D``:

    * ``0 <= t <= W``: linear warm-up ``init + (1 - init) * t / W`` (skipped when ``W = 0``);
    * ``W <= t <= N - D``: the stable phase, factor 1;
    * ``N - D <= t <= N``: cool-down ``end + (1 - end) * c(x)`` with ``c(x) = 1 - x`` (``"linear"``),
      ``(1 + cos(pi x)) / 2`` (``"cosine"``) or ``1 - sqrt(x)`` (``"1-sqrt"``); ``c(0) = 1``, ``c(1) = 0``;
    * ``t >= N``: ``end_factor``.

    Each phase ends at the value the next starts with; the cool-down reaches the floor ``end_factor`` exactly
    at step ``N`` and holds it (no jump to the floor after the last cool-down step).

    References:
        Hu et al. 2024, "MiniCPM: Unveiling the Potential of Small Language Models with Scalable Training
        Strategies" (arXiv:2404.06395), the WSD scheduler. Hägele et al. 2024, "Scaling Laws and
        Compute-Optimal Training Beyond Fixed Training Durations" (NeurIPS, arXiv:2405.18392), the trapezoidal
        schedule and the ``1-sqrt`` cool-down ``1 - sqrt((n - N + N_decay) / N_decay)`` (their eq. for the
        cool-down phase); reference code epfml/schedules-and-scaling.
    """
    n = validation.check_int("total_steps", total_steps, 1)
    w = validation.check_int("warmup_steps", warmup_steps, 0)
    d = validation.check_int("decay_steps", decay_steps, 1)
    if w + d > n:
        raise ValueError(
            f"warmup_steps + decay_steps must be <= total_steps = {n}, got {w} + {d} = {w + d}"
        )
    init = validation.check_real("init_factor", init_factor, 0.0, 1.0)
    end = validation.check_real("end_factor", end_factor, 0.0, 1.0)
    validation.check_choice("decay", decay, tuple(_COOLDOWNS))
    shape = _COOLDOWNS[decay]
    decay_start = n - d

    def fn(s: float) -> float:
        if s < w:
            return init + (1.0 - init) * (s / w)
        if s <= decay_start:
            return 1.0
        if s >= n:
            return end
        return end + (1.0 - end) * shape((s - decay_start) / d)

    return Schedule(
        fn,
        f"wsd(total_steps={n}, warmup_steps={w}, decay_steps={d}, init_factor={init}, end_factor={end}, "
        f"decay={decay!r})",
        float(n),
    )
