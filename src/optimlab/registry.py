"""One registry of optimizers by lower-case name, and :func:`create_optimizer`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import algorithms
from .param_groups import no_decay_param_groups

__all__ = ["OPTIMIZERS", "OptimizerSpec", "create_optimizer", "no_decay_param_groups", "register_optimizer"]


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry: the class and the keyword arguments the name implies (e.g. ``amsgrad=True``)."""

    cls: type[torch.optim.Optimizer]
    preset: dict[str, Any] = field(default_factory=dict)
    doc: str = ""


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register_optimizer(name: str, cls: type[torch.optim.Optimizer], doc: str = "", **preset: Any) -> None:
    """Add ``name`` (lower case) to the registry used by :func:`create_optimizer` and the lab."""
    if name != name.lower():
        raise ValueError(f"Invalid name: {name!r}; expected a lower-case name")
    OPTIMIZERS[name] = OptimizerSpec(cls, dict(preset), doc)


register_optimizer("sgd", algorithms.SGD, "plain SGD")
register_optimizer("sgdm", algorithms.SGD, "SGD with heavy-ball momentum 0.9", momentum=0.9)
register_optimizer("nesterov", algorithms.SGD, "SGD with Nesterov momentum 0.9", momentum=0.9, nesterov=True)
register_optimizer("sgdw", algorithms.SGDW, "SGD with momentum 0.9 and decoupled weight decay", momentum=0.9)
register_optimizer("adagrad", algorithms.Adagrad, "Adagrad")
register_optimizer("rmsprop", algorithms.RMSprop, "RMSProp")
register_optimizer("adam", algorithms.Adam, "Adam")
register_optimizer("amsgrad", algorithms.Adam, "Adam with AMSGrad", amsgrad=True)
register_optimizer("adamw", algorithms.AdamW, "Adam with decoupled weight decay")
register_optimizer("nadam", algorithms.NAdam, "Nesterov Adam")
register_optimizer("radam", algorithms.RAdam, "rectified Adam")
register_optimizer("adabound", algorithms.AdaBound, "AdaBound")
register_optimizer("amsbound", algorithms.AMSBound, "AMSBound")
register_optimizer("lars", algorithms.LARS, "LARS")
register_optimizer("lamb", algorithms.LAMB, "LAMB")
register_optimizer("swats", algorithms.SWATS, "SWATS: Adam, then SGD with momentum")

# The other torch.optim classes and the element-wise optimizers that came after Adam.
register_optimizer("adamax", algorithms.Adamax, "Adamax: Adam with the infinity norm")
register_optimizer("adadelta", algorithms.Adadelta, "Adadelta")
register_optimizer("asgd", algorithms.ASGD, "averaged SGD")
register_optimizer("rprop", algorithms.Rprop, "Rprop: per-element step sizes from gradient signs")
register_optimizer("adafactor", algorithms.Adafactor, "Adafactor: factored second moment, relative step size")
register_optimizer("lion", algorithms.Lion, "Lion: sign of an interpolated momentum")
register_optimizer("schedulefree-sgd", algorithms.ScheduleFreeSGD, "Schedule-Free SGD (call train()/eval())")
register_optimizer("schedulefree-adamw", algorithms.ScheduleFreeAdamW, "Schedule-Free AdamW (call train()/eval())")
register_optimizer("ademamix", algorithms.AdEMAMix, "AdEMAMix: Adam plus a slow momentum")
register_optimizer("mars", algorithms.MARS, "MARS-AdamW: variance-reduced AdamW")
register_optimizer("prodigy", algorithms.Prodigy, "Prodigy: Adam with an estimated step size (lr 1)")
register_optimizer("adopt", algorithms.ADOPT, "ADOPT: Adam normalised by the previous second moment")

# The matrix optimizers. A class with a ``from_model`` builds its own groups in create_optimizer.
register_optimizer("muon", algorithms.Muon,
                   "Muon (Newton-Schulz-orthogonalized momentum) for hidden matrices, AdamW for the rest")
register_optimizer("soap", algorithms.SOAP, "SOAP: Adam in the eigenbasis of Shampoo's preconditioner")
register_optimizer("shampoo", algorithms.Shampoo,
                   "Shampoo with Adam grafting and blocking (Distributed Shampoo's recipe)")
register_optimizer("normuon", algorithms.NorMuon,
                   "NorMuon: Muon normalized by a per-row second moment (microsoft/dion), AdamW for the rest")
register_optimizer("kron", algorithms.Kron,
                   "PSGD Kron: momentum whitened by a Kronecker-factored preconditioner (kron-torch's recipe)")

# Options that switch layer-wise adaptation off, for the optimizers that have it.
_ADAPTATION_OFF = {"layer_adaptation": False}


def create_optimizer(name: str, params_or_model: nn.Module | Iterable[Any], *,
                     exclude_from_decay: bool | Callable[[str, torch.Tensor], bool] = False,
                     **kwargs: Any) -> torch.optim.Optimizer:
    """Build a registered optimizer by lower-case name: ``create_optimizer("lamb", model, lr=1e-3)``.

    Args:
        name: a key of :data:`OPTIMIZERS` (``"sgd"``, ``"sgdm"``, ``"nesterov"``, ``"sgdw"``, ``"adagrad"``,
            ``"rmsprop"``, ``"adam"``, ``"amsgrad"``, ``"adamw"``, ``"nadam"``, ``"radam"``, ``"adabound"``,
            ``"amsbound"``, ``"lars"``, ``"lamb"``, ``"swats"``, ...).
        params_or_model: an ``nn.Module`` or what a torch optimizer accepts (parameters or groups).
        exclude_from_decay: with a module, ``True`` puts biases and normalisation weights in a group without
            weight decay and, for LARS/LAMB, without layer-wise adaptation (as LARS/LAMB users do); a callable
            ``(name, param) -> bool`` chooses the excluded parameters instead.
        **kwargs: the optimizer's own arguments; they override the name's preset.

    Defaults: what is not given is the class's own default (for the torch equivalents, torch's: a drop-in
    behaves as the torch optimizer it replaces), after the name's preset in :data:`OPTIMIZERS`, which only
    names a variant (``sgdm``: ``momentum=0.9``; ``amsgrad``: ``amsgrad=True``). So ``create_optimizer("muon",
    model)`` has torch.optim.Muon's lr 1e-3 and weight decay 0.1. The lab's presets that ``optimlab list``
    shows (Muon: lr 0.02, weight decay 0.01, KellerJordan's settings) are the settings its comparisons start
    from (:data:`optimlab.lab.catalog.presets.PRESETS`); the library does not apply them: pass them as arguments.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"Invalid name: {name!r}; expected one of {sorted(OPTIMIZERS)}")
    spec = OPTIMIZERS[key]
    options = {**spec.preset, **kwargs}
    from_model = getattr(spec.cls, "from_model", None)
    if from_model is not None:  # the class splits the model into its own groups (Muon: hidden matrices / AdamW)
        return from_model(params_or_model, exclude_from_decay=exclude_from_decay, **options)
    if exclude_from_decay:
        if not isinstance(params_or_model, nn.Module):
            raise TypeError("Invalid params_or_model for exclude_from_decay: expected an nn.Module, got "
                            f"{type(params_or_model).__name__}")
        exclude = exclude_from_decay if callable(exclude_from_decay) else None
        extra = _ADAPTATION_OFF if "layer_adaptation" in _init_args(spec.cls) else {}
        wd = options.pop("weight_decay", _default(spec.cls, "weight_decay"))
        params: Any = no_decay_param_groups(params_or_model, wd, exclude, extra)
    else:
        params = params_or_model.parameters() if isinstance(params_or_model, nn.Module) else params_or_model
    return spec.cls(params, **options)


def _init_args(cls: type) -> dict[str, Any]:
    import inspect

    return dict(inspect.signature(cls.__init__).parameters)


def _default(cls: type, arg: str) -> Any:
    param = _init_args(cls).get(arg)
    return 0.0 if param is None else param.default
