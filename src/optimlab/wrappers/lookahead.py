"""Lookahead: k steps forward, 1 step back.

Zhang, Lucas, Hinton, Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019,
https://arxiv.org/abs/1907.08610. Reference code: michaelrzhang/lookahead, ``lookahead_pytorch.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._base import OptimizerWrapper

__all__ = ["Lookahead"]

_PULLBACK_MODES = ("none", "reset", "pullback")


class Lookahead(OptimizerWrapper):
    r"""Lookahead wrapper around any ``torch.optim.Optimizer``.

    The inner ("fast") optimizer takes ``k`` steps; then the slow weights move towards the fast ones and the
    fast weights restart from there (Algorithm 1 of the paper):

    .. math::
        \phi \leftarrow \phi + \alpha (\theta - \phi), \qquad \theta \leftarrow \phi .

    The slow weights :math:`\phi` start at the initial weights and are created when the wrapper is
    constructed (creating them lazily at the first step would make the first synchronisation a no-op). The
    interpolation is computed with ``torch.lerp`` (``phi + alpha * (theta - phi)``); ``alpha = 1`` gives the
    inner optimizer exactly.

    Args:
        optimizer: the inner optimizer.
        k: number of inner steps between synchronisations (``k >= 1``; paper and reference use 5).
        alpha: slow-weight step size in ``(0, 1]`` (paper: 0.5; the reference code defaults to 0.8).
        pullback: what happens to the inner optimizer's momentum at a synchronisation, for the state entries
            named in ``momentum_keys``:

            * ``"none"`` (default, as in the paper): kept as it is;
            * ``"reset"``: zeroed (in place);
            * ``"pullback"``: interpolated like the weights, against slow copies of the buffers that start
              at zero: ``m_slow += alpha * (m - m_slow); m = m_slow`` (the reference code's option). The
              reference code stores its slow copy as an alias of the inner buffer after the first
              synchronisation, which shrinks the momentum by ``alpha * (2 - alpha)`` at every later
              synchronisation; here the slow copy is a separate tensor, as the option describes.
        momentum_keys: inner state entries treated as momentum by ``"reset"``/``"pullback"``
            (``momentum_buffer`` of SGD, ``exp_avg`` of the Adam family).

    State: ``wrapper_state[p]["slow_param"]`` (and ``"slow_<key>"`` for ``"pullback"``) and the inner-step
    counter ``step``, all in :meth:`state_dict` under ``"wrapper"`` keyed by parameter index.
    Use :meth:`slow_weights` to evaluate with the slow weights.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        k: int = 5,
        alpha: float = 0.5,
        pullback: str = "none",
        momentum_keys: Iterable[str] = ("momentum_buffer", "exp_avg"),
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Invalid k value: {k!r}; k must be an integer >= 1")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Invalid alpha value: {alpha!r}; alpha must be in (0, 1]")
        if pullback not in _PULLBACK_MODES:
            raise ValueError(
                f"Invalid pullback value: {pullback!r}; pullback must be one of {_PULLBACK_MODES}"
            )
        keys = (momentum_keys,) if isinstance(momentum_keys, str) else tuple(momentum_keys)
        if not all(isinstance(key, str) for key in keys):
            raise ValueError(f"Invalid momentum_keys value: {momentum_keys!r}; expected strings")
        super().__init__(optimizer)
        self.k = k
        self.alpha = float(alpha)
        self.pullback = pullback
        self.momentum_keys = keys
        self.step_count = 0
        self._init_params(self._params())

    def _init_params(self, params: Iterable[Tensor]) -> None:
        for p in params:
            self.wrapper_state[p]["slow_param"] = p.detach().clone()

    def _hyperparameters(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha, "pullback": self.pullback,
                "momentum_keys": list(self.momentum_keys)}

    def _extra_state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count}

    def _load_extra_state_dict(self, wrapper: dict[str, Any]) -> None:
        self.k = int(wrapper["k"])
        self.alpha = float(wrapper["alpha"])
        self.pullback = str(wrapper["pullback"])
        self.momentum_keys = tuple(wrapper["momentum_keys"])
        self.step_count = int(wrapper["step"])

    def _cast_loaded(self, param: Tensor, key: str, value: Tensor) -> Tensor:
        return value.detach().to(device=param.device, dtype=param.dtype, copy=True)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every ``k``-th step also synchronises slow and fast weights."""
        self._check_not_swapped()
        loss = self._inner_step(closure)
        self.step_count += 1
        if self.step_count % self.k == 0:
            with torch.no_grad():
                self._synchronise()
        return loss

    def _synchronise(self) -> None:
        fast = self._params()
        slow = [self.wrapper_state[p]["slow_param"] for p in fast]
        torch._foreach_lerp_(slow, fast, self.alpha)  # phi += alpha * (theta - phi)
        torch._foreach_copy_(fast, slow)  # theta = phi
        if self.pullback == "none":
            return
        inner_state = self.optimizer.state
        for p in fast:
            st = inner_state.get(p)
            if not st:
                continue
            for key in self.momentum_keys:
                buf = st.get(key)
                if not isinstance(buf, Tensor):
                    continue
                if self.pullback == "reset":
                    buf.zero_()
                else:
                    own = self.wrapper_state[p]
                    slow_key = "slow_" + key
                    if slow_key not in own:
                        own[slow_key] = torch.zeros_like(buf)
                    own[slow_key].lerp_(buf, self.alpha)
                    buf.copy_(own[slow_key])

    @contextlib.contextmanager
    def slow_weights(self, module: torch.nn.Module | None = None) -> Iterator[None]:
        """Evaluate with the slow weights inside the block; the fast weights are restored bit-for-bit on exit.

        With ``module``, the module's buffers (e.g. BatchNorm statistics) are restored on exit as well.
        Stepping inside the block raises ``RuntimeError``.
        """
        with self._swapped_params(lambda p: self.wrapper_state[p]["slow_param"], module):
            yield
