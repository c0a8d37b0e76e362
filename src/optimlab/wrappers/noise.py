"""Annealed Gaussian gradient noise.

Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach, Martens, "Adding Gradient Noise Improves Learning for Very
Deep Networks", 2015, https://arxiv.org/abs/1511.06807. The authors published no code; optax's ``add_noise``
follows the paper (variance ``eta / (1 + t)**gamma``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._base import OptimizerWrapper

__all__ = ["GradientNoise"]

_ETA_IS = ("variance", "std")


class GradientNoise(OptimizerWrapper):
    r"""Add annealed Gaussian noise to the gradients the inner optimizer sees.

    At step :math:`t = 0, 1, 2, \dots` (``t`` is 0 at the first step) every gradient is replaced, for the
    inner step only, by :math:`g_t + \sigma_t \varepsilon` with :math:`\varepsilon \sim \mathcal N(0, I)` and

    .. math::
        \sigma_t^2 = \frac{\eta}{(1 + t)^\gamma} \quad (\texttt{eta\_is="variance"}, \text{default}), \qquad
        \sigma_t = \frac{\eta}{(1 + t)^\gamma} \quad (\texttt{eta\_is="std"}).

    The default follows the paper, which defines the *variance* (Section 2, with ``eta`` in {0.01, 0.3, 1.0}
    and ``gamma = 0.55``) as optax's ``add_noise`` does; ``eta_is="std"`` reads ``eta`` as the standard
    deviation ``c / (1 + t)**gamma``, as some write it.

    ``p.grad`` is never modified: during the inner step each ``p.grad`` is temporarily replaced by a noisy
    copy and the original tensor object is put back afterwards (also when the inner step raises). With a
    closure, the closure is evaluated once by this wrapper (before the noise is drawn) and the inner optimizer
    is stepped without one, so optimizers that re-evaluate the closure (LBFGS) are not supported.

    Noise is drawn in parameter order with ``torch.randn(..., generator=generator)`` in the gradient's dtype
    on the generator's device (then moved to the gradient's device). The generator state and ``t`` are in
    :meth:`state_dict`, so a resumed run draws the same noise.

    Args:
        optimizer: the inner optimizer.
        eta: noise scale ``eta >= 0`` (a variance by default, see ``eta_is``).
        gamma: annealing exponent ``gamma >= 0`` (paper: 0.55).
        generator: a ``torch.Generator`` to draw from (used and advanced in place).
        seed: seed for a new CPU generator; exclusive with ``generator``. With neither, a seed is drawn from
            torch's global generator (one draw), so runs are reproducible under ``torch.manual_seed``.
        eta_is: ``"variance"`` (default) or ``"std"``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        eta: float,
        gamma: float = 0.55,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        eta_is: str = "variance",
    ) -> None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (
            math.isfinite(eta) and eta >= 0
        ):
            raise ValueError(f"Invalid eta value: {eta!r}; eta must be a finite number >= 0")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (
            math.isfinite(gamma) and gamma >= 0
        ):
            raise ValueError(f"Invalid gamma value: {gamma!r}; gamma must be a finite number >= 0")
        if eta_is not in _ETA_IS:
            raise ValueError(f"Invalid eta_is value: {eta_is!r}; eta_is must be one of {_ETA_IS}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Invalid seed value: {seed!r}; seed must be an int")
        if generator is not None and seed is not None:
            raise ValueError("pass either generator or seed, not both")
        super().__init__(optimizer)
        if generator is None:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.eta = float(eta)
        self.gamma = float(gamma)
        self.eta_is = eta_is
        self.step_count = 0

    def _hyperparameters(self) -> dict[str, Any]:
        return {"eta": self.eta, "gamma": self.gamma, "eta_is": self.eta_is}

    def _extra_state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "generator_state": self.generator.get_state()}

    def _load_extra_state_dict(self, wrapper: dict[str, Any]) -> None:
        self.eta = float(wrapper["eta"])
        self.gamma = float(wrapper["gamma"])
        self.eta_is = str(wrapper["eta_is"])
        self.step_count = int(wrapper["step"])
        self.generator.set_state(wrapper["generator_state"].detach().to("cpu", torch.uint8).clone())

    def noise_std(self, t: int | None = None) -> float:
        """Standard deviation ``sigma_t`` of the noise at step ``t`` (default: the next step)."""
        t = self.step_count if t is None else t
        scale = self.eta / (1 + t) ** self.gamma
        return math.sqrt(scale) if self.eta_is == "variance" else scale

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluate ``closure`` (if any), then step the inner optimizer on noisy copies of the gradients."""
        self._check_not_swapped()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sigma = self.noise_std()
        swapped: list[tuple[Tensor, Tensor]] = []
        try:
            with torch.no_grad():
                for p in self._params():
                    grad = p.grad
                    if grad is None:
                        continue
                    if grad.is_sparse:
                        raise RuntimeError("GradientNoise does not support sparse gradients")
                    noisy = torch.randn(
                        grad.shape, generator=self.generator, dtype=grad.dtype, device=self.generator.device
                    ).to(grad.device)
                    noisy.mul_(sigma).add_(grad)  # g + sigma * eps
                    swapped.append((p, grad))
                    p.grad = noisy
            self._inner_step()
        finally:
            for p, grad in swapped:
                p.grad = grad
        self.step_count += 1
        return loss
