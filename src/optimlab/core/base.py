"""The base class every optimlab optimizer derives from.

It owns everything that is not the algorithm: hyperparameter validation (at construction and in
``add_param_group``), lazy state creation, ``maximize``, complex parameters, sparse-gradient errors, tensor
learning rates, and the choice between the plain per-parameter loop and the list (``foreach``) path. A subclass
supplies three small methods:

* ``_validate(group)``: raise ``ValueError``/``TypeError`` for a bad hyperparameter;
* ``_init_state(p, state, group)``: create the per-parameter state (torch's key names);
* ``_update(p, g, s, h)``: the update rule, written once. ``p`` and ``g`` are a parameter and its gradient *or*
  lists of them; ``s`` maps state names to tensors (or lists); ``h`` holds the group's hyperparameters as Python
  numbers plus the 0-d state values (``h["step"]``) of this bucket. The rule must never write into ``g``.

On the list path, parameters are bucketed by device, dtype, state layout and 0-d state values (the step count),
so every scalar in ``h`` is exact for every tensor of the bucket, and the list path computes the same numbers as
the plain loop.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from . import blocked, kernels
from . import ops as F
from . import validation as V
from .ops import TensorOrList

__all__ = ["Optimizer", "ParamsT", "new_step"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


_FP16_TINY = 6.1e-5  # smallest normal float16


def _number(value: Any) -> Any:
    """Hyperparameters as Python numbers: a tensor lr is read once per step (a host sync on an accelerator).

    Derived scalars (``lr / (1 - beta1^t)``) are then computed in float64. torch.optim computes them in the lr
    tensor's dtype, so with a *float32* tensor lr Adam, AdamW, NAdam and Adagrad differ from torch by float32
    rounding of those scalars (about 1e-9 relative after 100 steps); with a float or float64 lr they agree exactly.
    """
    if isinstance(value, Tensor):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_number(v) for v in value)
    return value


def new_step() -> Tensor:
    """A fresh step counter, as torch.optim keeps it (a 0-d float tensor of the default scalar dtype)."""
    return torch.tensor(0.0, dtype=_get_scalar_dtype())


@contextmanager
def _working_copies(s: dict[str, Any], keys: list[str], dtype: torch.dtype) -> Iterator[None]:
    """Within the block, ``s[k]`` for state stored in another dtype is a copy in ``dtype``; on exit the copy is
    rounded back into the stored tensor. A tensor or a list of tensors."""
    low = [k for k in keys if F.first(s[k]).dtype != dtype]
    stored = {k: s[k] for k in low}
    for k in low:
        s[k] = [t.to(dtype) for t in s[k]] if isinstance(s[k], list) else s[k].to(dtype)
    try:
        yield
    finally:
        for k in low:
            for dst, src in zip(*(([x] if isinstance(x, Tensor) else x) for x in (stored[k], s[k])), strict=True):
                dst.copy_(src)
            s[k] = stored[k]


class Optimizer(torch.optim.Optimizer):
    """Base class: see the module docstring. Not an algorithm by itself."""

    #: 0-d state entries that are read as Python numbers into ``h`` (and kept in their own dtype on load).
    _scalar_state: tuple[str, ...] = ("step",)

    #: State that a ``moment_dtype`` option may store in lower precision (the classes that offer the option).
    _moment_keys: tuple[str, ...] = ()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        defaults.setdefault("maximize", False)
        defaults.setdefault("foreach", None)
        super().__init__(params, defaults)

    # -- subclass interface ------------------------------------------------------------------------------------
    def _validate(self, group: dict[str, Any]) -> None:
        V.check_lr(group["lr"])
        if "weight_decay" in group:
            V.check_nonneg("weight_decay", group["weight_decay"])
        if "eps" in group:
            V.check_positive("eps", group["eps"])
        if "betas" in group:
            V.check_betas(group["betas"])
        for flag in ("maximize",):
            if not isinstance(group[flag], bool):
                V.fail(flag, group[flag], "a bool", TypeError)
        if group["foreach"] not in (None, True, False):
            V.fail("foreach", group["foreach"], "None, True or False", TypeError)
        if "moment_dtype" in group:
            V.check_moment_dtype(group["moment_dtype"], group.get("betas", (0.0,))[0])

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- torch.optim.Optimizer contract ------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("initial_lr", group["lr"].clone() if isinstance(group["lr"], Tensor) else group["lr"])
        try:
            self._validate(group)
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise
        eps = group.get("eps")
        if isinstance(eps, float) and eps < _FP16_TINY and any(p.dtype == torch.float16 for p in group["params"]):
            warnings.warn(f"{type(self).__name__}: eps={eps:g} rounds to zero in float16, so a step divides by zero "
                          "where the second moment underflows; use eps >= 1e-4 or float32 master weights",
                          UserWarning, stacklevel=3)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # A checkpoint written by torch.optim (or by an older optimlab) may lack our options: use the defaults.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group.setdefault("initial_lr", group["lr"])
        # torch casts every floating state tensor except `step` to the parameter's dtype; our other 0-d counters
        # (NAdam's mu_product, SWATS's phase and rates) keep their saved dtype so a resumed run continues bit for bit.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if isinstance(value, Tensor) and value.dim() == 0 and key != "step":
                    self.state[p][key] = value.detach().clone().cpu()  # host counters, as they were created
        for group in self.param_groups:  # torch cast the moments to the parameters' dtype: store them as chosen
            for p in group["params"]:
                self._cast_moments(p, self.state.get(p, {}), group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    # -- machinery ---------------------------------------------------------------------------------------------
    def _hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return {k: _number(v) for k, v in group.items() if k != "params"}

    def _cast_moments(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        dtype = group.get("moment_dtype")
        if dtype is None or p.is_complex():
            return
        for key in self._moment_keys:
            if key in state and state[key].dtype != dtype:
                state[key] = state[key].to(dtype)

    def _advance(self, states: list[dict[str, Any]]) -> None:
        """Count this step: ``step += 1`` for every state that keeps a step (one list call, not one op per tensor)."""
        steps = [state["step"] for state in states if "step" in state]
        if steps:
            torch._foreach_add_(steps, 1)

    def _step_group(self, group: dict[str, Any]) -> None:
        hp = self._hyperparameters(group)
        entries = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients; "
                                   "use torch.optim.SparseAdam or dense gradients")
            state = self.state[p]
            if not state:
                self._init_state(p, state, group)
                self._cast_moments(p, state, group)
            entries.append((p, p.grad, state))
        if not entries:
            return
        self._advance([state for _, _, state in entries])
        use_lists = hp["foreach"] is not False
        buckets: dict[Any, list[tuple[Tensor, Tensor, dict[str, Any]]]] = defaultdict(list)
        for i, (p, g, state) in enumerate(entries):
            scalars = tuple((k, float(state[k])) for k in self._scalar_state if k in state)
            key = (p.device, p.dtype, torch.is_complex(p), tuple(sorted(state)), scalars)
            buckets[key if use_lists else (i,) + key].append((p, g, state))
        for key, bucket in buckets.items():
            h = dict(hp)
            h.update(key[-1])
            self._run_bucket(bucket, h, as_list=use_lists)

    def _run_bucket(self, bucket: list[tuple[Tensor, Tensor, dict[str, Any]]], h: dict[str, Any],
                    as_list: bool) -> None:
        complex_ = torch.is_complex(bucket[0][0])
        def real(t: Tensor) -> Tensor:  # complex tensors as (..., 2) real views; 0-d counters stay as they are
            return torch.view_as_real(t) if t.is_complex() else t

        tensor_keys = [k for k, v in bucket[0][2].items() if isinstance(v, Tensor) and k not in self._scalar_state]
        ps = [real(p) for p, _, _ in bucket]
        gs = [real(g) for _, g, _ in bucket]
        s: dict[str, Any] = {k: [real(st[k]) for _, _, st in bucket] for k in tensor_keys}
        s.update({k: [st[k] for _, _, st in bucket] for k in self._scalar_state if k in bucket[0][2]})
        if as_list:
            self._run_lists(ps, gs, s, h, tensor_keys)
            new = {k: v for k, v in s.items() if k not in bucket[0][2]}
        else:
            one = {k: v[0] for k, v in s.items()}
            self._prepare(one, h)
            with _working_copies(one, tensor_keys, ps[0].dtype):
                self._apply(ps[0], gs[0], one, h)
            new = {k: [v] for k, v in one.items() if k not in bucket[0][2]}
        for k, values in new.items():  # state the rule created on this step (e.g. SGD's momentum buffer)
            for (_, _, st), v in zip(bucket, values, strict=True):
                st[k] = torch.view_as_complex(v) if complex_ else v

    def _apply(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        self._update(p, F.neg(g) if h["maximize"] else g, s, h)

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        """The fast path: torch's fused kernel where the algorithm maps onto one, else the rule on cache-sized
        blocks where it is element-wise, else the rule on whole lists (see :mod:`optimlab.core.blocked`)."""
        mixed = any(s[k][0].dtype != ps[0].dtype for k in tensor_keys)  # moments stored in lower precision
        if not mixed and self._fused(ps, gs, s, h):
            return
        self._prepare(s, h)
        if self._elementwise and not self._creates_state(s, h) and self._compiled(ps, gs, s, h, tensor_keys):
            return
        if mixed:  # no kernel reads them: compute on copies in the parameters' dtype (model-sized, this step only)
            with _working_copies(s, tensor_keys, ps[0].dtype):
                self._apply(ps, gs, s, h)
            return
        if not self._elementwise or self._creates_state(s, h) or not blocked.blockable(ps):
            self._apply(ps, gs, s, h)
            return
        scalars = {k: v for k, v in s.items() if k not in tensor_keys}
        for block in blocked.block_plan([ps, gs, *(s[k] for k in tensor_keys)]):
            self._apply(block[0], block[1], {**scalars, **dict(zip(tensor_keys, block[2:], strict=True))}, h)

    def _compiled(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                  tensor_keys: list[str]) -> bool:
        """Run the rule as one compiled loop (see :mod:`optimlab.core.kernels`); False if it cannot be."""
        lists = [ps, gs, *(s[k] for k in tensor_keys)]
        if not kernels.usable(lists):
            return False
        scalars = {k: v for k, v in s.items() if k not in tensor_keys}

        def rule(p: Any, g: Any, *state: Any) -> None:
            self._apply(p, g, {**scalars, **dict(zip(tensor_keys, state, strict=True))}, h)

        return kernels.run(rule, lists, readonly=(1,)) is not False

    # -- optional subclass hooks for the fast path ----------------------------------------------------------------
    #: The rule treats every element independently (no norm over a tensor, no 0-d state written inside
    #: ``_update``), so it may run on blocks of views of the tensors.
    _elementwise = False

    def _prepare(self, s: dict[str, Any], h: dict[str, Any]) -> None:
        """Once per bucket and step, before the rule: advance 0-d state and put derived scalars into ``h``."""

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool:
        """True when this step's rule adds state entries (then it runs unblocked)."""
        return False

    def _fused(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        """Run torch's fused kernel for this bucket and return True, where the algorithm maps onto one."""
        return False
