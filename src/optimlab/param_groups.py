"""Parameter-group policy: which of a model's parameters get weight decay, and which go to Muon.

One home for the rules that split a model into optimizer groups, so that the registry
(:func:`optimlab.create_optimizer`, :func:`optimlab.no_decay_param_groups`) and :meth:`optimlab.Muon.from_model` share
them. It imports only torch: the algorithms and the registry both stand on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["is_no_decay", "muon_param_groups", "named_parameters", "no_decay_param_groups"]


def named_parameters(model: nn.Module) -> list[tuple[str, Tensor, nn.Module]]:
    """``(full name, parameter, owning module)`` for every trainable parameter, shared ones once."""
    out, seen = [], set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            out.append((f"{module_name}.{name}" if module_name else name, p, module))
    return out


def is_no_decay(name: str, p: torch.Tensor, module: nn.Module | None) -> bool:
    """Biases and normalisation weights: 1-d or scalar tensors (nanoGPT's ``p.dim() >= 2`` rule), or any
    parameter of a normalisation layer."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None:
        norm_types = norm_types + (rms,)
    return p.dim() < 2 or (module is not None and isinstance(module, norm_types))


def no_decay_param_groups(model: nn.Module, weight_decay: float,
                          exclude: Callable[[str, torch.Tensor], bool] | None = None,
                          no_decay_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Split a model's parameters into a decayed group and a group without weight decay.

    By default biases and normalisation weights go to the second group (``exclude(name, param)`` overrides
    the rule). ``no_decay_options`` are extra options for that group (e.g. ``{"layer_adaptation": False}``).
    Shared parameters are listed once.
    """
    decay, no_decay = [], []
    for full, p, module in named_parameters(model):
        excluded = exclude(full, p) if exclude is not None else is_no_decay(full, p, module)
        (no_decay if excluded else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, **(no_decay_options or {})})
    return groups


def muon_param_groups(params_or_model: nn.Module | Iterable[Any],
                      muon_params: Callable[[str, Tensor], bool] | Iterable[Any] | None,
                      exclude_from_decay: bool | Callable[[str, Tensor], bool],
                      adam_options: dict[str, Any], adam_weight_decay: float) -> list[dict[str, Any]]:
    """Muon's groups (``use_muon=True``) and the AdamW groups beside them, by the rule of
    :meth:`optimlab.Muon.from_model` (which documents it): for a module, the hidden matrices to Muon (not the
    embeddings, the output head or the first convolution), unless ``muon_params`` decides; for a list of parameters
    or of groups, matrices to Muon and each group split in two. Every AdamW group gets ``adam_options`` and the
    weight decay ``adam_weight_decay`` (0 for those ``exclude_from_decay`` picks, modules only)."""
    groups: list[dict[str, Any]] = []
    if isinstance(params_or_model, nn.Module):
        named = named_parameters(params_or_model)
        rule = _muon_rule(params_or_model, muon_params)
        muon = [(n, p) for n, p, _ in named if rule(n, p)]
        adam = [(n, p, m) for n, p, m in named if not rule(n, p)]
        if exclude_from_decay:
            pick = exclude_from_decay if callable(exclude_from_decay) else None
            excluded = [pick(n, p) if pick is not None else is_no_decay(n, p, m) for n, p, m in adam]
        else:
            excluded = [False] * len(adam)
        if muon:
            groups.append(dict(params=[p for _, p in muon], param_names=[n for n, _ in muon], use_muon=True))
        for skip in (False, True):
            part = [(n, p) for (n, p, _), e in zip(adam, excluded, strict=True) if e == skip]
            if part:
                groups.append(dict(params=[p for _, p in part], param_names=[n for n, _ in part],
                                   weight_decay=0.0 if skip else adam_weight_decay, **adam_options))
        return groups
    if exclude_from_decay:
        raise TypeError("Invalid params_or_model for exclude_from_decay: expected an nn.Module, got "
                        f"{type(params_or_model).__name__}")
    items = list(params_or_model)
    as_groups = items and isinstance(items[0], dict)
    chosen = _chosen(muon_params)
    adam_parts = []
    for g in items if as_groups else [{"params": items}]:
        ps = list(g["params"])
        options = {k: v for k, v in g.items() if k != "params"}
        to_muon = [chosen(f"{i}", p) if chosen is not None else p.dim() >= 2 for i, p in enumerate(ps)]
        if any(to_muon):
            groups.append({**options, "params": [p for p, m in zip(ps, to_muon, strict=True) if m],
                           "use_muon": True})
        if not all(to_muon):
            adam_parts.append({**options, "params": [p for p, m in zip(ps, to_muon, strict=True) if not m],
                               "weight_decay": adam_weight_decay, **adam_options})
    return groups + adam_parts


def _chosen(muon_params: Any) -> Callable[[str, Tensor], bool] | None:
    """The override as a predicate: a callable as is, a collection of names/parameters as membership."""
    if muon_params is None or callable(muon_params):
        return muon_params
    members = list(muon_params)
    names = {m for m in members if isinstance(m, str)}
    ids = {id(m) for m in members if isinstance(m, Tensor)}
    return lambda name, p: name in names or id(p) in ids


def _muon_rule(model: nn.Module, muon_params: Any) -> Callable[[str, Tensor], bool]:
    chosen = _chosen(muon_params)
    if chosen is not None:
        return chosen
    not_hidden: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.Embedding | nn.EmbeddingBag):
            not_hidden.update(id(p) for p in m.parameters(recurse=False))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        not_hidden.add(id(linears[-1].weight))
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if convs:
        not_hidden.add(id(convs[0].weight))
    return lambda name, p: p.dim() >= 2 and id(p) not in not_hidden
