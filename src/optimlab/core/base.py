"""The base class every optimlab optimizer derives from.

It owns everything that is not the algorithm: hyperparameter validation (at construction, before ``params`` is
read, as torch does, and in ``add_param_group``), lazy state creation, ``maximize``, complex parameters, sparse
gradients, tensor learning rates, torch's implementation flags (``foreach``, ``fused``, ``capturable``,
``differentiable``), ``state_dict`` compatibility, and the choice between the plain per-parameter loop and the list
(``foreach``) path. A subclass supplies three small methods:

* ``_validate(group)``: raise ``ValueError``/``TypeError`` for a bad hyperparameter (call ``super()._validate``);
* ``_init_state(p, state, group)``: create the per-parameter state (torch's key names); state left empty is not
  stored, so ``optimizer.state`` holds an entry only for parameters that have state (as torch's does);
* ``_update(p, g, s, h)``: the update rule, written once. ``p`` and ``g`` are a parameter and its gradient *or*
  lists of them; ``s`` maps state names to tensors (or lists); ``h`` holds the group's hyperparameters as Python
  numbers plus the 0-d state values (``h["step"]``) of this bucket. The rule must never write into ``g``.

and optionally ``_prepare``, ``_fused``, ``_sparse_update``, ``_needs_base_lr``, and these class attributes:

* ``_scalar_state``: 0-d state read into ``h`` as numbers (default ``("step",)``);
* ``_moment_keys``: state a ``moment_dtype`` option may store in lower precision;
* ``_elementwise``: the rule treats every element on its own (it may run on blocks and compiled loops);
* ``_has_fused``: ``_fused`` runs torch's fused kernel for this rule, so ``fused=True`` is accepted (and forces it);
  without it ``fused=True`` raises ``RuntimeError``, as for a torch optimizer without a fused implementation;
* ``_supports_sparse``: sparse gradients are accepted; each goes, one tensor at a time, through
  ``_sparse_update`` (default: the plain rule itself, which for SGD is torch's sparse path). Without it a sparse
  gradient raises ``RuntimeError``;
* ``_supports_differentiable``: ``differentiable=True`` is accepted: the step runs the plain loop with autograd
  recording, so gradients flow through the parameters, gradients and state (not through hyperparameter tensors).
  The classes that set it are checked against torch's differentiable step. Without it it raises
  ``NotImplementedError``. ``capturable=True`` (CUDA-graph capture) always raises ``NotImplementedError``: every
  step reads the step count on the host.

The torch flags are in every group with torch's defaults (``foreach=None``, ``fused=None``, ``capturable=False``,
``differentiable=False``), so a subclass needs no code for them. A learning rate schedule is the scheduler's business:
torch's schedulers set ``initial_lr`` when they are created; a rule that needs the base lr (AdaBound's bounds,
``decay_scale="schedule"``) reads it with :func:`optimlab.core.blocks.schedule_multiplier` (the scheduler's
``initial_lr``, else the group's ``base_lr``, the lr at construction, recorded where ``_needs_base_lr`` says so).

On the list path, parameters are bucketed by device, dtype, state layout and 0-d state values (the step count),
so every scalar in ``h`` is exact for every tensor of the bucket, and the list path computes the same numbers as
the plain loop. A parameter listed twice in a group (torch warns about it) is stepped once per occurrence, in order,
as torch's for-loop does: the occurrences go to successive rounds of the step, never into one list or kernel.
"""

from __future__ import annotations

import inspect
import operator
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from functools import cache
from itertools import repeat
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from . import dispatch, ops, validation
from .ops import TensorOrList

__all__ = ["FP16_TINY", "TORCH_FLAGS", "Optimizer", "ParamsT", "fused_sgd_drops_updates", "new_step", "plan_stats",
           "scaling"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


#: The smallest normal float16, about: a smaller ``eps`` warns with float16 parameters (subnormal or zero there).
FP16_TINY = 6.1e-5


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


#: torch's implementation flags, with torch's defaults: every optimlab group carries them.
TORCH_FLAGS: dict[str, Any] = {"maximize": False, "foreach": None, "fused": None, "capturable": False,
                               "differentiable": False}

#: Where torch has fused optimizer kernels (``torch.optim.optimizer._get_fused_kernels_supported_devices``).
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")

#: torch 2.13's ``_fused_sgd_`` on CPU does not write back float16/bfloat16 elements of full SIMD chunks (16 of 24
#: elements of a step never move); torch itself never picks it by default. The default path never uses it there.
_FUSED_SGD_BROKEN = (torch.float16, torch.bfloat16)


def fused_sgd_drops_updates(ps: list[Tensor]) -> bool:
    """True where ``torch._fused_sgd_`` is known to drop updates: float16/bfloat16 parameters on CPU."""
    return ps[0].device.type == "cpu" and ps[0].dtype in _FUSED_SGD_BROKEN


def scaling(h: dict[str, Any], device: torch.device) -> dict[str, Tensor | None]:
    """``grad_scale`` and ``found_inf`` for a fused kernel on ``device`` (None unless GradScaler set them on the
    optimizer: see :func:`optimlab.core.dispatch._step_scaled`): the kernel divides the gradients by
    ``grad_scale`` and skips the update where ``found_inf`` is nonzero, as torch's ``_fused_adam`` passes them."""
    return {k: None if h.get(k) is None else h[k].to(device) for k in ("grad_scale", "found_inf")}


@cache
def _bool_options(cls: type) -> tuple[str, ...]:
    """The options of ``cls`` that must be a bool: torch's flags, and every constructor argument whose default is
    a bool (``amsgrad``, ``nesterov``, ``centered``, ...)."""
    signature = inspect.signature(cls.__init__).parameters.values()
    declared = [a.name for a in signature if isinstance(a.default, bool)]
    return tuple(dict.fromkeys(["maximize", "capturable", "differentiable", *declared]))


def _rounds(entries: list[tuple[Tensor, Tensor, dict[str, Any]]]) -> list[list[tuple[Tensor, Tensor, dict[str, Any]]]]:
    """Split a group's entries so that no round holds a parameter twice: round ``k`` holds the ``k``-th occurrence
    of each repeated parameter, so stepping the rounds in turn steps each occurrence in order, as torch's for-loop
    does (a list, a fused kernel or a compiled loop given one tensor twice would update it once, or race)."""
    if len(entries) < 2 or len(set(map(id, [e[0] for e in entries]))) == len(entries):
        return [entries]
    rounds: list[list[tuple[Tensor, Tensor, dict[str, Any]]]] = []
    seen: dict[int, int] = {}
    for entry in entries:
        k = seen.get(id(entry[0]), 0)
        seen[id(entry[0])] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(entry)
    return rounds


_is_sparse = operator.attrgetter("is_sparse")

#: Step plans reused (``hits``) and built (``built``) in this process (see :class:`_Plan`).
plan_stats: Counter[str] = Counter()


def _bucketing(opt: Optimizer, entries: list[tuple[Tensor, Tensor, dict[str, Any]]],
               use_lists: bool) -> list[tuple[list[int], tuple[tuple[str, float], ...]]]:
    """Count this step for a round's entries, then bucket them: on the list path by device, dtype, complexity,
    state layout and 0-d state values (read on the host), else one bucket per entry. Returns each bucket's entry
    indices and its 0-d values as ``(name, number)`` pairs."""
    opt._advance([state for _, _, state in entries])
    buckets: dict[Any, list[int]] = defaultdict(list)
    scalar_state = opt._scalar_state
    for i, (p, _, state) in enumerate(entries):
        scalars = tuple((k, float(state[k])) for k in scalar_state if k in state)
        key = (p.device, p.dtype, torch.is_complex(p), tuple(sorted(state)), scalars)
        buckets[key if use_lists else (i,) + key].append(i)
    return [(idx, key[-1]) for key, idx in buckets.items()]


def _refuse_compile(opt: Optimizer) -> None:
    raise RuntimeError(f"{type(opt).__name__} does not support torch.compile(opt.step) ({opt._compile_unsupported}); "
                       "compile the model instead and call step() outside the compiled function")


# The same, as calls that torch.compile runs eagerly, outside the graph (torch's own lazy form of
# ``torch.compiler.disable``, which imports dynamo on the first call, not here): under tracing the host reads of
# the step count cost one graph break per round, not one per ``.item()``; an error raised there reaches the user
# as it is (raised inside the traced code, dynamo would fall back to tracing the step eagerly). Only called under
# tracing.
_bucketing_outside_graph = torch._disable_dynamo(_bucketing)
_refuse_compile_outside_graph = torch._disable_dynamo(_refuse_compile)


class _Bucket:
    """One bucket of a step on the list path: its parameters and their state dicts, in order, and what the lists
    are built from (state names; complex parameters as real views). Built once by the bucketing, reused by
    :class:`_Plan` while the layout stays the same; the gradients and state tensors are read anew every step."""

    __slots__ = ("complex_", "lens", "memo", "params", "scalar_keys", "states", "tensor_keys")

    def __init__(self, opt: Optimizer, entries: list[tuple[Tensor, Tensor, dict[str, Any]]]) -> None:
        self.params = [p for p, _, _ in entries]
        self.states = [st for _, _, st in entries]
        self.lens = [len(st) for st in self.states]
        first = self.states[0]
        self.complex_ = torch.is_complex(self.params[0])
        self.tensor_keys = [k for k, v in first.items() if isinstance(v, Tensor) and k not in opt._scalar_state]
        self.scalar_keys = [k for k in opt._scalar_state if k in first]
        self.memo = dispatch.LayoutMemo()  # the shapes and layout checked, re-checked cheaply while they hold

    def run(self, opt: Optimizer, gs: list[Tensor], h: dict[str, Any]) -> bool:
        """Step the bucket by :func:`optimlab.core.dispatch.step_bucket`; False if the step created state."""
        sts = self.states
        s: dict[str, Any] = {k: [st[k] for st in sts] for k in self.tensor_keys}
        ps = self.params
        if self.complex_:  # complex tensors as (..., 2) real views; 0-d counters stay as they are
            ps, gs = [torch.view_as_real(p) for p in ps], [torch.view_as_real(g) for g in gs]
            s = {k: [torch.view_as_real(t) if t.is_complex() else t for t in v] for k, v in s.items()}
        s.update({k: [st[k] for st in sts] for k in self.scalar_keys})
        dispatch.step_bucket(opt, ps, gs, s, h, self.tensor_keys, memo=self.memo)
        new = [k for k in s if k not in sts[0]]
        for k in new:  # state the rule created on this step (e.g. SGD's momentum buffer)
            for st, v in zip(sts, s[k], strict=True):
                st[k] = torch.view_as_complex(v) if self.complex_ else v
        return not new


class _Plan:
    """A group's step on the list path, kept from one step to the next so that a steady-state step skips the
    per-parameter Python work (state lookup and creation, 0-d values read one by one, bucket keys, views).

    Valid while nothing the bucketing depends on changed, checked every step: the same group and parameter list,
    the same parameters with and without a gradient, no sparse gradient, the same state dicts (same objects, same
    number of entries: ``load_state_dict`` or a reset state is noticed), the same ``fused``/``foreach``/
    ``differentiable`` flags, and 0-d state values still equal within each bucket (one ``torch.stack`` per bucket
    and name). Hyperparameter *values* are never cached: ``h`` is built from the group every step, so a scheduler
    changing lr, betas or weight decay is seen at once. ``add_param_group`` and ``load_state_dict`` drop every
    plan; a step that creates state (SGD's first momentum step) plans again on the next step. ``p.data = t`` of
    another shape or layout is noticed by each bucket's :class:`optimlab.core.dispatch.LayoutMemo` (a state of the
    old size raises); not noticed: ``p.data = t`` with another dtype or device (call ``load_state_dict`` or
    :meth:`Optimizer.invalidate_plans`).
    """

    __slots__ = ("flags", "group", "mask", "pids", "rounds", "stepped", "stepped_states", "whole")

    def __init__(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor | None], hp: dict[str, Any],
                 entries: list[tuple[Tensor, Tensor, dict[str, Any]]], rounds: list[list[_Bucket]]) -> None:
        self.group = group
        self.pids = tuple(map(id, params))
        self.mask = tuple(g is None for g in grads)
        self.flags = (hp["fused"], hp["foreach"], hp["differentiable"])
        self.rounds = rounds
        self.stepped = [p for b in (b for r in rounds for b in r) for p in b.params]
        self.stepped_states = [st for b in (b for r in rounds for b in r) for st in b.states]
        only = rounds[0][0].params if len(rounds) == 1 and len(rounds[0]) == 1 else []
        self.whole = len(only) == len(params) and all(map(operator.is_, only, params))  # one bucket of all, in order

    def valid(self, opt: Optimizer, group: dict[str, Any], params: list[Tensor], grads: list[Tensor | None],
              hp: dict[str, Any]) -> bool:
        if (self.group is not group or (hp["fused"], hp["foreach"], hp["differentiable"]) != self.flags
                or tuple(map(id, params)) != self.pids or tuple(map(operator.is_, grads, repeat(None))) != self.mask):
            return False
        if any(map(_is_sparse, (g for g in grads if g is not None) if True in self.mask else grads)):
            return False
        if not all(map(operator.is_, map(opt.state.get, self.stepped), self.stepped_states)):
            return False
        for rnd in self.rounds:
            for b in rnd:
                if list(map(len, b.states)) != b.lens:
                    return False
                if len(b.states) < 2:
                    continue
                for k in b.scalar_keys:
                    try:
                        vals = torch.stack([st[k] for st in b.states]).tolist()
                    except (RuntimeError, TypeError):
                        return False
                    if vals.count(vals[0]) != len(vals):
                        return False
        return True

    def run(self, opt: Optimizer, grads: list[Tensor | None], hp: dict[str, Any]) -> bool:
        """One step by the plan; False if it created state (then the plan is dropped)."""
        stable = True
        for rnd in self.rounds:
            opt._advance([st for b in rnd for st in b.states])
            for b in rnd:
                h = dict(hp)
                first = b.states[0]
                h.update((k, float(first[k])) for k in b.scalar_keys)  # equal within the bucket (checked)
                stable = b.run(opt, grads if self.whole else [p.grad for p in b.params], h) and stable
        return stable


class Optimizer(torch.optim.Optimizer):
    """Base class: see the module docstring. Not an algorithm by itself."""

    #: 0-d state entries that are read as Python numbers into ``h`` (and kept in their own dtype on load).
    _scalar_state: tuple[str, ...] = ("step",)

    #: State that a ``moment_dtype`` option may store in lower precision (the classes that offer the option).
    _moment_keys: tuple[str, ...] = ()

    #: ``_fused`` runs torch's fused kernel for this rule: ``fused=True`` is accepted and forces it.
    _has_fused = False

    #: Sparse gradients are accepted; each goes through :meth:`_sparse_update`.
    _supports_sparse = False

    #: ``differentiable=True`` is accepted (the plain loop under autograd, checked against torch's).
    _supports_differentiable = False

    #: Why the step cannot be traced by ``torch.compile``: then ``torch.compile(opt.step)`` raises one clear
    #: ``RuntimeError`` rather than an internal error of the compiler; None: the step traces (the ``traced`` row of
    #: :mod:`optimlab.core.dispatch`).
    _compile_unsupported: str | None = None

    #: State the step creates (not ``_init_state``) with its parameter's shape, e.g. SGD's ``momentum_buffer``:
    #: ``load_state_dict`` checks its shape as it does the state ``_init_state`` creates (:meth:`_state_spec`).
    _lazy_param_state: tuple[str, ...] = ()

    #: State ``_init_state`` may create that a checkpoint may lack (e.g. Prodigy's ``p0``).
    _optional_state: tuple[str, ...] = ()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        for key, value in TORCH_FLAGS.items():
            defaults.setdefault(key, value)
        self._validate(dict(defaults))  # torch's order: bad hyperparameters are reported before params are read
        super().__init__(params, defaults)
        if defaults["fused"]:  # torch's contract with GradScaler (see _scaled_entries), as torch's fused classes
            self._step_supports_amp_scaling = True

    # -- subclass interface ------------------------------------------------------------------------------------
    def _validate(self, group: dict[str, Any]) -> None:
        validation.check_lr(group["lr"])
        if "weight_decay" in group:
            validation.check_nonneg("weight_decay", group["weight_decay"])
        if "eps" in group:
            validation.check_positive("eps", group["eps"])
        if "betas" in group:
            validation.check_betas(group["betas"])
        for flag in _bool_options(type(self)):  # a string "False" would otherwise read as True
            if flag in group and not isinstance(group[flag], bool):
                validation.fail(flag, group[flag], "a bool", TypeError)
        for flag in ("foreach", "fused"):
            if group[flag] not in (None, True, False):
                validation.fail(flag, group[flag], "None, True or False", TypeError)
        if "moment_dtype" in group:
            validation.check_moment_dtype(group["moment_dtype"], group.get("betas", (0.0,))[0])
        self._check_implementation(group)

    def _check_implementation(self, group: dict[str, Any]) -> None:
        """``fused``, ``capturable`` and ``differentiable`` with torch's meaning, or the error torch would give."""
        name = type(self).__name__
        if group["capturable"]:
            raise NotImplementedError(
                f"{name}: capturable=True (a step that can be captured in a CUDA graph) is not supported: optimlab "
                "reads the step count and hyperparameters on the host every step; use capturable=False")
        if group["differentiable"]:
            if not self._supports_differentiable:
                raise NotImplementedError(f"{name}: differentiable=True is not supported by this optimizer")
            if group["fused"]:
                raise RuntimeError("`fused` does not support `differentiable`")
            if group["foreach"]:
                raise RuntimeError("`foreach` does not support `differentiable`: use foreach=False or None")
            for key, value in group.items():
                tensors = value if isinstance(value, tuple | list) and key != "params" else (value,)
                if key != "params" and any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
                    raise NotImplementedError(
                        f"{name}: differentiable=True differentiates through parameters, gradients and state; "
                        f"a hyperparameter tensor that requires grad ({key}) is not supported")
        if group["fused"]:
            if not self._has_fused:
                raise RuntimeError(f"{name} has no fused implementation (torch's fused kernels exist for SGD, "
                                   "Adam, AdamW and Adagrad): leave fused=None, the default takes the fastest path")
            if group["foreach"]:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        raise NotImplementedError

    def _needs_base_lr(self, group: dict[str, Any]) -> bool:
        """Whether the group's rule reads its base lr (see :func:`optimlab.core.blocks.schedule_multiplier`): then
        the lr at construction is kept in the group as ``base_lr`` (saved in the ``state_dict``)."""
        return group.get("decay_scale") == "schedule"

    # -- torch.optim.Optimizer contract ------------------------------------------------------------------------
    def invalidate_plans(self) -> None:
        """Forget the cached step plans (see :class:`_Plan`): the next step buckets every group anew. Called by
        ``add_param_group`` and ``load_state_dict``; needed by hand only after ``p.data = t`` changed a
        parameter's dtype or device."""
        self.__dict__.get("_plans", {}).clear()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.invalidate_plans()
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._validate(group)
        except Exception:
            self.param_groups.pop()
            raise
        if self._needs_base_lr(group):
            group.setdefault("base_lr", group["lr"].clone() if isinstance(group["lr"], Tensor) else group["lr"])
        eps = group.get("eps")
        if isinstance(eps, float) and eps < FP16_TINY and any(p.dtype == torch.float16 for p in group["params"]):
            warnings.warn(f"{type(self).__name__}: eps={eps:g} rounds to zero in float16, so a step divides by zero "
                          "where the second moment underflows; use eps >= 1e-4 or float32 master weights",
                          UserWarning, stacklevel=3)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, checked: every loaded group passes the constructor's checks
        (``_validate``), and every parameter's loaded state has the keys and shapes its state would have here
        (:meth:`_state_spec`), else ``ValueError`` naming the argument, or the parameter index and the key, and
        the optimizer is left as it was (torch's load-state-dict post-hooks have run by then)."""
        self.invalidate_plans()
        before = self.state, self.param_groups
        super().load_state_dict(state_dict)
        try:
            # A checkpoint written by torch.optim, an older torch or an older optimlab may lack some of our
            # options: use the defaults. (Our own state_dict has them all, so loading it adds nothing.)
            for group in self.param_groups:
                for key, value in self.defaults.items():
                    group.setdefault(key, value)
                if self._needs_base_lr(group):
                    group.setdefault("base_lr", group.get("initial_lr", group["lr"]))
                self._validate(group)
            self._check_loaded_state()
        except Exception:
            self.state, self.param_groups = before  # torch's load built new ones: the old are untouched
            raise
        # torch casts every floating state tensor except `step` to the parameter's dtype; our other 0-d counters
        # (NAdam's mu_product, SWATS's phase and rates) keep their saved dtype so a resumed run continues bit for bit.
        # Older torch checkpoints hold `step` as a Python number: it becomes a tensor, as torch's __setstate__ does.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if isinstance(value, Tensor) and value.dim() == 0 and key != "step":
                    self.state[p][key] = value.detach().clone().cpu()  # host counters, as they were created
                elif key in self._scalar_state and isinstance(value, int | float) and not isinstance(value, bool):
                    self.state[p][key] = torch.tensor(float(value), dtype=_get_scalar_dtype())
        for group in self.param_groups:  # torch cast the moments to the parameters' dtype: store them as chosen
            for p in group["params"]:
                if p in self.state:
                    self._cast_moments(p, self.state[p], group)

    def _state_spec(self, p: Tensor, group: dict[str, Any]) -> tuple[dict[str, torch.Size], set[str]]:
        """The state a checkpoint must hold for ``p`` in ``group``: the shape of each state tensor, and the keys
        that must be present. That is what :meth:`_init_state` creates (run on a ``meta`` copy of ``p``: nothing is
        allocated), less ``_optional_state``, plus ``_lazy_param_state`` (state the step creates) with ``p``'s
        shape. Adafactor's factored moments, SWATS's 0-d rates and every class's ``step`` come out as they are."""
        fresh: dict[str, Any] = {}
        with torch.no_grad():
            for probe in ((torch.empty_like(p, device="meta"), p) if type(p) in (Tensor, torch.nn.Parameter)
                          else (p,)):
                try:
                    fresh = {}
                    self._init_state(probe, fresh, group)
                    break
                except Exception:  # noqa: BLE001 - e.g. a rule that reads values: try the parameter itself
                    fresh = {}
        shapes = {k: v.shape for k, v in fresh.items() if isinstance(v, Tensor)}
        shapes.update((k, p.shape) for k in self._lazy_param_state)
        return shapes, set(fresh) - set(self._optional_state)

    def _check_loaded_state(self) -> None:
        """``ValueError`` unless each parameter's loaded state has its :meth:`_state_spec` keys and shapes."""
        name = type(self).__name__
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                i, index = index, index + 1
                if not state:
                    continue  # no state: it is created at the next step
                shapes, required = self._state_spec(p, group)
                missing = sorted(required - set(state))
                if missing:
                    raise ValueError(f"{name}.load_state_dict: the state of parameter {i} has no {missing[0]!r} "
                                     f"(it has {sorted(state)}; {name} keeps {sorted(required)}): a checkpoint "
                                     "of another optimizer or another configuration")
                for key, value in state.items():
                    expected = shapes.get(key)
                    if expected is None or not isinstance(value, Tensor) or value.shape == expected:
                        continue
                    start = f"{name}.load_state_dict: state {key!r} of parameter {i} has shape {tuple(value.shape)}"
                    if expected == p.shape:
                        raise ValueError(f"{start}, the parameter has {tuple(p.shape)}: a checkpoint of another "
                                         "model (a layer of another size?)")
                    raise ValueError(f"{start}; expected {tuple(expected)}"
                                     + (" (a 0-d tensor)" if not expected else f" for a parameter of shape "
                                        f"{tuple(p.shape)}: a checkpoint of another model"))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        if self._compile_unsupported is not None and dispatch.compiling():
            _refuse_compile_outside_graph(self)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):  # torch: autograd records the step
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

    @staticmethod
    def _check_fused_param(p: Tensor) -> None:
        if not (p.device.type in _FUSED_DEVICES and torch.is_floating_point(p)):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               f"devices: {list(_FUSED_DEVICES)} but {p.dtype} and {p.device.type}")

    def _step_group(self, group: dict[str, Any]) -> None:
        hp = self._hyperparameters(group)
        attrs = self.__dict__
        scaled = "found_inf" in attrs or "grad_scale" in attrs  # set by GradScaler.step (fused=True), or by hand
        if scaled:
            hp["grad_scale"], hp["found_inf"] = attrs.get("grad_scale"), attrs.get("found_inf")
        params = group["params"]
        grads = [p.grad for p in params]
        plans = self.__dict__.setdefault("_plans", {})
        traced = dispatch.compiling()  # under torch.compile: no step plan (its checks read values on the host)
        plan = None if traced else plans.get(id(group))
        if plan is not None and plan.valid(self, group, params, grads, hp):
            plan_stats["hits"] += 1
            if plan.run(self, grads, hp):
                return
            plans.pop(id(group), None)  # the step changed the state layout: plan again next step
            return
        plans.pop(id(group), None)
        entries, sparse = [], []
        fresh: dict[int, tuple[Tensor, dict[str, Any]]] = {}
        check_fused = hp["fused"] is True
        states = self.state
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            if check_fused:
                self._check_fused_param(p)
            state = states.get(p)
            if not state:  # new, or stateless so far (SGD without momentum): nothing is stored until it has state
                if id(p) in fresh:  # the same parameter again in this group: the same state
                    state = fresh[id(p)][1]
                else:
                    state = {}
                    self._init_state(p, state, group)
                    if self._moment_keys:
                        self._cast_moments(p, state, group)
                    fresh[id(p)] = (p, state)
            if dispatch.entry_path(hp, g) == "sparse":
                if not self._supports_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients; "
                                       "use torch.optim.SparseAdam or dense gradients")
                sparse.append((p, g, state))
            else:
                entries.append((p, g, state))
        if scaled and (sparse or not dispatch.lists_mode(hp)):  # the list path's buckets do it in step_bucket
            entries, sparse = self._scaled_entries(hp, entries, sparse)
        layouts = [tuple(sorted(st)) for _, _, st in entries]
        rounds = _rounds(entries)
        built = [self._step_entries(rnd, hp) for rnd in rounds]
        for p, g, state in sparse:
            if not traced:
                dispatch.taken["sparse"] += 1
            self._advance([state])
            h = dict(hp)
            h.update((k, float(state[k])) for k in self._scalar_state if k in state)
            self._sparse_update(p, g, state, h)
        for p, state in fresh.values():
            if state:
                self.state[p] = state
        # The next steps reuse this step's bucketing while nothing it depends on changes (see _Plan).
        if (entries and not sparse and not fresh and not traced and dispatch.lists_mode(hp)
                and all(b is not None for b in built)
                and layouts == [tuple(sorted(st)) for _, _, st in entries]):
            plan_stats["built"] += 1
            plans[id(group)] = _Plan(group, params, grads, hp, entries, [b for b in built if b is not None])

    def _scaled_entries(self, hp: dict[str, Any], entries: list[tuple[Tensor, Tensor, dict[str, Any]]],
                        sparse: list[tuple[Tensor, Tensor, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
        """GradScaler's contract for the entries that do not take the list path (``foreach=False`` groups,
        sparse gradients) of an optimizer whose ``grad_scale``/``found_inf`` are set: all of them skip the step
        when ``found_inf`` is set (state created, not counted, as torch's fused step); else they step on the
        gradients divided by ``grad_scale``, as copies (``p.grad`` is not touched). The list path's buckets do the
        same in :func:`optimlab.core.dispatch.step_bucket`, or hand both to torch's fused kernel."""
        on_lists = dispatch.lists_mode(hp)
        rest = [] if on_lists else entries
        if dispatch.found_inf(hp.get("found_inf")):
            return (entries if on_lists else []), []
        grad_scale = hp.get("grad_scale")
        if grad_scale is not None:
            rest = [(p, g / grad_scale, st) for p, g, st in rest]
            sparse = [(p, g / grad_scale, st) for p, g, st in sparse]
        return (entries if on_lists else rest), sparse

    def _step_entries(self, entries: list[tuple[Tensor, Tensor, dict[str, Any]]],
                      hp: dict[str, Any]) -> list[_Bucket] | None:
        """Step one round; returns its buckets (for the step plan) on the list path, else None."""
        if not entries:
            return []
        use_lists = dispatch.lists_mode(hp)
        # Under torch.compile the host part (count the step, read the 0-d values, bucket) runs outside the graph.
        traced = dispatch.compiling()
        keyed = (_bucketing_outside_graph if traced else _bucketing)(self, entries, use_lists)
        out = []
        for idx, scalars in keyed:
            h = dict(hp)
            h.update(scalars)
            bucket = _Bucket(self, [entries[i] for i in idx])
            if use_lists:
                bucket.run(self, [entries[i][1] for i in idx], h)
                out.append(bucket)
            else:
                if not traced:
                    dispatch.taken[dispatch.entry_path(hp, entries[idx[0]][1])] += 1
                self._run_bucket([entries[i] for i in idx], h, as_list=False)
        return out if use_lists else None

    def _sparse_update(self, p: Tensor, g: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        """One parameter with a sparse gradient (classes with ``_supports_sparse``): by default the plain rule on
        the sparse tensor, which is how torch's SGD treats it (``add``, ``mul``, ``clone`` accept sparse tensors)."""
        self._prepare(state, h)
        self._apply(p, g, state, h)

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
            dispatch.step_bucket(self, ps, gs, s, h, tensor_keys)
            new = {k: v for k, v in s.items() if k not in bucket[0][2]}
        else:
            one = {k: v[0] for k, v in s.items()}
            self._prepare(one, h)
            with dispatch.working_copies(one, [k for k in tensor_keys if k in self._moment_keys], ps[0].dtype):
                self._apply(ps[0], gs[0], one, h)
            new = {k: [v] for k, v in one.items() if k not in bucket[0][2]}
        for k, values in new.items():  # state the rule created on this step (e.g. SGD's momentum buffer)
            for (_, _, st), v in zip(bucket, values, strict=True):
                st[k] = torch.view_as_complex(v) if complex_ else v

    def _apply(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        self._update(p, ops.neg(g) if h["maximize"] else g, s, h)

    def _overrides_run_lists(self) -> bool:
        """The class has a list path of its own (it overrides :meth:`_run_lists`): the ``custom`` row of
        :mod:`optimlab.core.dispatch`."""
        return type(self)._run_lists is not Optimizer._run_lists

    def _overrides_fused(self) -> bool:
        """The class maps its rule onto torch's fused kernel (it overrides :meth:`_fused`): the ``fused`` row."""
        return type(self)._fused is not Optimizer._fused

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        """The generic list path: the bucket rows of :mod:`optimlab.core.dispatch` (fused kernel, Triton, compiled
        C loop, working copies, blocked, whole lists). A class with a rule of its own (a reduction per tensor)
        overrides this (the ``custom`` row) and may call ``super()._run_lists`` where its own path does not apply."""
        dispatch.step_bucket(self, ps, gs, s, h, tensor_keys, custom=False)

    # -- optional subclass hooks for the fast path ----------------------------------------------------------------
    #: The rule treats every element independently (no norm over a tensor, no 0-d state written inside
    #: ``_update``), so it may run on blocks of views of the tensors. Every state tensor of such a class has its
    #: parameter's shape (the list path checks that every step: :func:`optimlab.core.dispatch.step_bucket`).
    _elementwise = False

    def _prepare(self, s: dict[str, Any], h: dict[str, Any]) -> None:
        """Once per bucket and step, before the rule: advance 0-d state and put derived scalars into ``h``."""

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool:
        """True when this step's rule adds state entries (then it runs unblocked)."""
        return False

    def _fused(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        """Run torch's fused kernel for this bucket and return True, where the algorithm maps onto one."""
        return False
