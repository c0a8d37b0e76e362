"""Shared machinery for optimizer wrappers (Lookahead, gradient noise, weight averaging).

A wrapper is a real :class:`torch.optim.Optimizer` as far as torch can tell:

* it subclasses ``Optimizer`` and runs ``Optimizer.__init__`` (so step pre/post hooks, state_dict hooks and
  the profiler labels work);
* ``param_groups``, ``defaults`` and ``state`` are *the inner optimizer's own objects* (properties that
  forward), so ``torch.optim.lr_scheduler`` schedulers, ``torch.amp.GradScaler`` and any code reading
  ``optimizer.state`` act on the inner optimizer through the wrapper;
* its own per-parameter state (slow weights, averages, ...) lives in ``wrapper_state`` keyed by the parameter
  in memory, and in :meth:`state_dict` keyed by the parameter *index* (torch's numbering), never by tensor
  identity;
* torch's *global* step hooks (``register_optimizer_step_pre_hook``/``..._post_hook``) fire once per step, for
  the optimizer the user stepped (the outermost wrapper): a wrapper steps its inner optimizer with them suspended
  (:meth:`OptimizerWrapper._inner_step`), while the inner optimizer's own hooks still fire.

Checkpoint layout (version 1)::

    {
        "state": {...},          # the innermost torch optimizer's per-index state, as torch writes it
        "param_groups": [...],   # the shared param groups, as torch writes them
        "wrapper": {             # this wrapper
            "type": "Lookahead", "version": 1,
            "state": {0: {"slow_param": tensor}, ...},   # per-index wrapper state
            ...counters and hyperparameters (Python scalars, RNG state as a uint8 tensor)...
        },
        "inner": {...},          # the inner optimizer's remaining keys ({} for a torch optimizer; for a
                                 # wrapped wrapper its own "wrapper" and "inner")
    }

``"state"``/``"param_groups"`` are authoritative, so a wrapper checkpoint also loads into the bare inner
optimizer with ``inner.load_state_dict(sd)``. Everything is tensors and Python scalars/strings, so it
round-trips through ``torch.save``/``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim import optimizer as _torch_optimizer

from ..core.snapshot import Snapshot

__all__ = ["OptimizerWrapper"]

_STATE_DICT_VERSION = 1


class OptimizerWrapper(Optimizer):
    """Base class: an ``Optimizer`` that delegates to ``optimizer`` and adds per-parameter state of its own.

    Subclasses implement :meth:`step`, and optionally :meth:`_init_params` (create wrapper state for new
    parameters, called at construction and from :meth:`add_param_group`), :meth:`_extra_state_dict` and
    :meth:`_load_extra_state_dict` (counters and hyperparameters).
    """

    optimizer: Optimizer
    wrapper_state: defaultdict[Tensor, dict[str, Any]]

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer instance, got {type(optimizer).__name__}"
            )
        # Set before Optimizer.__init__: the forwarding properties read them.
        self.__dict__["optimizer"] = optimizer
        self.__dict__["_initializing"] = True
        self.__dict__["_init_param_groups"] = []
        # Optimizer.__init__ installs the hook dictionaries and patches step() for hooks/profiling. Its
        # param groups go to a throw-away list (shallow copies, so the inner's dicts are not touched).
        super().__init__([dict(g) for g in optimizer.param_groups], optimizer.defaults)
        self.__dict__["_initializing"] = False
        del self.__dict__["_init_param_groups"]
        self.wrapper_state = defaultdict(dict)
        self._swapped = False

    # ------------------------------------------------------------------ forwarding of torch's attributes
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        if self.__dict__.get("_initializing", False):
            return self.__dict__["_init_param_groups"]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if self.__dict__.get("_initializing", False):
            self.__dict__["_init_param_groups"] = value
        else:
            self.optimizer.param_groups = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        if not self.__dict__.get("_initializing", False):
            self.optimizer.defaults = value

    @property  # type: ignore[override]
    def state(self) -> defaultdict[Tensor, Any]:
        """The inner optimizer's per-parameter state (the wrapper's own is in ``wrapper_state``)."""
        return self.optimizer.state

    @state.setter
    def state(self, value: defaultdict[Tensor, Any]) -> None:
        if not self.__dict__.get("_initializing", False):
            self.optimizer.state = value

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Instance-level step patches (e.g. by LR schedulers) hold weak references to this object.
        state.pop("step", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._patch_step_function()

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        return f"{type(self).__name__}(\n{inner},\n    {extra}\n)"

    # ------------------------------------------------------------------ delegation
    def _inner_step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step the inner optimizer without firing torch's global step hooks a second time (they fired for this
        wrapper's step); the inner optimizer's own hooks fire as usual. (The global hook tables are swapped for
        empty ones during the inner step: a step taken meanwhile in another thread would not fire them either.)"""
        saved = _torch_optimizer._global_optimizer_pre_hooks, _torch_optimizer._global_optimizer_post_hooks
        _torch_optimizer._global_optimizer_pre_hooks = OrderedDict()
        _torch_optimizer._global_optimizer_post_hooks = OrderedDict()
        try:
            return self.optimizer.step(closure)
        finally:
            _torch_optimizer._global_optimizer_pre_hooks, _torch_optimizer._global_optimizer_post_hooks = saved

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer and create this wrapper's state for its parameters."""
        if self.__dict__.get("_initializing", False):
            Optimizer.add_param_group(self, param_group)
            return
        self.optimizer.add_param_group(param_group)
        self._init_params(self.param_groups[-1]["params"])

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ subclass hooks
    def _init_params(self, params: Iterable[Tensor]) -> None:
        """Create the wrapper's per-parameter state for ``params`` (default: none)."""

    def _hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments, saved in the state_dict and restored on load (Python scalars/strings)."""
        return {}

    def _extra_state_dict(self) -> dict[str, Any]:
        """Counters and other non-per-parameter state (tensors, Python scalars or strings)."""
        return {}

    def _load_extra_state_dict(self, wrapper: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state_dict` and :meth:`_hyperparameters` wrote."""

    def _cast_loaded(self, param: Tensor, key: str, value: Tensor) -> Tensor:
        """Move a loaded per-parameter tensor to the parameter's device (default keeps the saved dtype)."""
        return value.detach().to(device=param.device, copy=True)

    # ------------------------------------------------------------------ helpers
    def _params(self) -> list[Tensor]:
        """All parameters in torch's state_dict order (the index of a parameter is its position here)."""
        return [p for group in self.param_groups for p in group["params"]]

    def _check_not_swapped(self) -> None:
        if self._swapped:
            raise RuntimeError(
                f"{type(self).__name__}.step() called while other weights are swapped in; leave the "
                "context manager first"
            )

    @contextlib.contextmanager
    def _swapped_params(
        self, source: Callable[[Tensor], Tensor | None], module: torch.nn.Module | None = None
    ) -> Iterator[None]:
        """Copy ``source(p)`` into each parameter (skipped where it is None), restore exactly on exit.

        With ``module``, its buffers (e.g. BatchNorm running statistics) are restored on exit as well.
        """
        self._check_not_swapped()
        with torch.no_grad():
            params: list[Tensor] = []
            sources: list[Tensor] = []
            for p in self._params():
                src = source(p)
                if src is not None:
                    params.append(p)
                    sources.append(src)
            snapshot = Snapshot([*params, *(module.buffers() if module is not None else ())])
        self._swapped = True
        try:
            with torch.no_grad():
                for p, src in zip(params, sources, strict=True):
                    p.copy_(src)
            yield
        finally:
            snapshot.restore()
            self._swapped = False

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """Return inner state, shared param groups and this wrapper's state (see the module docstring)."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        inner = self.optimizer.state_dict()
        index = {id(p): i for i, p in enumerate(self._params())}
        per_index = {index[id(p)]: dict(s) for p, s in self.wrapper_state.items() if s and id(p) in index}
        wrapper: dict[str, Any] = {"type": type(self).__name__, "version": _STATE_DICT_VERSION}
        wrapper.update(self._hyperparameters())
        wrapper.update(self._extra_state_dict())
        wrapper["state"] = dict(sorted(per_index.items()))
        state_dict: dict[str, Any] = {
            "state": inner["state"],
            "param_groups": inner["param_groups"],
            "wrapper": wrapper,
            "inner": {k: v for k, v in inner.items() if k not in ("state", "param_groups")},
        }
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict written by :meth:`state_dict` of the same wrapper composition."""
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        wrapper = state_dict.get("wrapper")
        name = type(self).__name__
        if not isinstance(wrapper, dict) or wrapper.get("type") != name:
            found = wrapper.get("type") if isinstance(wrapper, dict) else None
            raise ValueError(
                f"state_dict was not written by {name} (its 'wrapper' entry names {found!r}); to load a bare "
                f"optimizer's state_dict use {name.lower()}.optimizer.load_state_dict(...)"
            )
        if wrapper.get("version") != _STATE_DICT_VERSION:
            raise ValueError(f"unsupported {name} state_dict version {wrapper.get('version')!r}")

        # Validate this wrapper's per-index state before anything is modified.
        params = self._params()
        loaded: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for raw_index, entry in wrapper.get("state", {}).items():
            i = int(raw_index)
            if not 0 <= i < len(params):
                raise ValueError(f"{name} state_dict has state for parameter index {i}, but there are "
                                 f"{len(params)} parameters")
            p = params[i]
            new_entry: dict[str, Any] = {}
            for key, value in entry.items():
                if isinstance(value, Tensor):
                    if value.shape != p.shape:
                        raise ValueError(f"{name} state_dict entry {key!r} of parameter {i} has shape "
                                         f"{tuple(value.shape)}, the parameter has {tuple(p.shape)}")
                    value = self._cast_loaded(p, key, value)
                new_entry[key] = value
            loaded[p] = new_entry

        inner = dict(state_dict.get("inner", {}))
        inner["state"] = state_dict["state"]
        inner["param_groups"] = state_dict["param_groups"]
        self.optimizer.load_state_dict(inner)

        self.wrapper_state = loaded
        self._load_extra_state_dict(wrapper)
        missing = [p for p in self._params() if p not in self.wrapper_state]
        if missing:
            self._init_params(missing)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
