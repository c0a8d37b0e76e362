"""Optimizer specs for the lab: names with their commonly used settings and search spaces, composed with wrappers.

A spec is a string ``[wrapper[@k=v,...]+]...base[@k=v,...]``, for example ``sgdm``, ``nesterov``,
``adam@lr=3e-4,betas=(0.9,0.99)``, ``lookahead+radam`` or ``lookahead@k=10,alpha=0.8+sgdm``. Values are Python
literals. The base names are the library's registry names plus the lab's presets (``sgdm``, ``nesterov``).

Each :class:`Preset` is the one entry an optimizer needs in the lab: its library name, its commonly used settings
(from the paper or the reference/torch defaults) and its search space for tuning: the lr, log-uniform over
``lr_range`` (default: a tenth of the preset lr to a hundred times it, three decades; presets come from papers on
larger models and longer runs, whose best lr is usually lower than a small model's), and optionally a second
hyperparameter where the literature tunes one (``tune``, e.g. AdamW's weight decay). Adding an optimizer to the
lab is one entry in :data:`PRESETS`; adding it to the default comparison is one name in
:data:`DEFAULT_OPTIMIZERS`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

import torch

from optimlab.lab import library
from optimlab.lab.space import MIN_LR_DECADES, Param, SearchSpace

__all__ = [
    "Preset",
    "OptimizerSpec",
    "PRESETS",
    "WRAPPERS",
    "DEFAULT_OPTIMIZERS",
    "LR_RANGE_FACTORS",
    "parse_spec",
    "parse_kwargs",
    "preset_lr",
    "search_space",
    "fixed_settings",
    "build_optimizer",
    "check_spec",
]


# The default lr range of a preset: from LR_RANGE_FACTORS[0] x its lr to LR_RANGE_FACTORS[1] x its lr.
LR_RANGE_FACTORS: tuple[float, float] = (0.1, 100.0)


@dataclass(frozen=True)
class Preset:
    """A named optimizer: the library registry name, its commonly used settings and their source, and how the
    lab tunes it (``lr_range``: the lr's log-uniform range, default :data:`LR_RANGE_FACTORS` around ``lr``;
    ``tune``: further tuned hyperparameters; ``schedule``: a schedule the optimizer needs instead of the
    protocol's, e.g. ``"constant"`` for Schedule-Free methods)."""

    library_name: str
    lr: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    exclude_from_decay: bool = False  # biases and norm weights: no decay, no layer-wise adaptation
    lr_range: tuple[float, float] | None = None
    tune: tuple[Param, ...] = ()
    schedule: str | None = None

    @property
    def lr_space(self) -> Param:
        low, high = self.lr_range or (self.lr * LR_RANGE_FACTORS[0], self.lr * LR_RANGE_FACTORS[1])
        return Param("lr", float(f"{low:.4g}"), float(f"{high:.4g}"))


_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}

# fmt: off
PRESETS: dict[str, Preset] = {
    "sgd": Preset("sgd", 0.1, {}, "plain minibatch SGD"),
    "sgdm": Preset("sgdm", 0.05, {"momentum": 0.9}, "heavy ball, momentum 0.9 (Polyak, 1964)"),
    "nesterov": Preset("nesterov", 0.05, {"momentum": 0.9, "nesterov": True},
                       "Nesterov momentum 0.9 in torch's form (Sutskever et al., 2013)"),
    "sgdw": Preset("sgdw", 0.05, {"momentum": 0.9, "weight_decay": 5e-4},
                   "decoupled decay (Loshchilov & Hutter, 2019)", tune=(Param("weight_decay", 1e-5, 1e-2),)),
    "adagrad": Preset("adagrad", 0.01, {}, "Duchi et al., 2011; torch's default lr"),
    "rmsprop": Preset("rmsprop", 1e-3, {"alpha": 0.9}, "Tieleman & Hinton, 2012 (lecture 6e): decay 0.9"),
    "adam": Preset("adam", 1e-3, _ADAM, "Kingma & Ba, 2015"),
    "amsgrad": Preset("amsgrad", 1e-3, _ADAM, "Reddi et al., 2018"),
    "adamw": Preset("adamw", 1e-3, {**_ADAM, "weight_decay": 1e-2},
                    "Loshchilov & Hutter, 2019; torch's default decay 0.01",
                    tune=(Param("weight_decay", 1e-4, 1.0),)),
    "nadam": Preset("nadam", 2e-3, _ADAM, "Dozat, 2016; Keras' default lr 2e-3"),
    "radam": Preset("radam", 1e-3, _ADAM, "Liu et al., 2020"),
    "adabound": Preset("adabound", 1e-3, {"final_lr": 0.1, "gamma": 1e-3}, "Luo et al., 2019"),
    "amsbound": Preset("amsbound", 1e-3, {"final_lr": 0.1, "gamma": 1e-3}, "Luo et al., 2019"),
    "lamb": Preset("lamb", 1e-2, {"betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 1e-2},
                   "You et al., 2020: decay 0.01 as for BERT; biases/norms excluded",
                   exclude_from_decay=True),
    "lars": Preset("lars", 1.0, {"momentum": 0.9, "trust_coefficient": 1e-3, "weight_decay": 1e-4},
                   "You et al., 2017: eta 1e-3, momentum 0.9, decay 1e-4; biases/norms excluded",
                   exclude_from_decay=True),
    "swats": Preset("swats", 1e-3, {}, "Keskar & Socher, 2017"),
}
# fmt: on

# Wrappers compose with any base by ``+``: name -> default keyword arguments.
WRAPPERS: dict[str, dict[str, Any]] = {
    "lookahead": {"k": 5, "alpha": 0.5},  # Zhang et al., 2019
    "noise": {"eta": 0.01, "gamma": 0.55},  # gradient noise, variance eta/(1+t)^gamma; Neelakantan et al., 2015
}

_WRAPPER_FACTORIES = {"lookahead": library.lookahead, "noise": library.gradient_noise}

DEFAULT_OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "sgdm",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "amsgrad",
    "adamw",
    "nadam",
    "radam",
    "adabound",
    "lamb",
    "lars",
    "swats",
    "lookahead+adam",
)


@dataclass(frozen=True)
class OptimizerSpec:
    """A parsed spec: the base preset name and its overrides, and the wrappers from outermost to innermost."""

    base: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    wrappers: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    @property
    def preset(self) -> Preset:
        return PRESETS[self.base]


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses/brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_kwargs(text: str, spec: str) -> tuple[tuple[str, Any], ...]:
    out = []
    for item in _split_top_level(text, ","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"optimizer spec {spec!r}: expected key=value after '@', got {item!r}")
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"optimizer spec {spec!r}: value of {key.strip()!r} is not a literal: {value!r}") from e
        out.append((key.strip(), parsed))
    return tuple(out)


def parse_spec(spec: str) -> OptimizerSpec:
    """Parse ``'lookahead+radam@lr=1e-3'`` into an :class:`OptimizerSpec`; unknown names raise ValueError."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"optimizer spec must be a non-empty string, got {spec!r}")
    parts = _split_top_level(spec.replace(" ", "").lower(), "+")
    parsed = []
    for part in parts:
        name, _, args = part.partition("@")
        parsed.append((name, parse_kwargs(args, spec) if args else ()))
    *wrappers, (base, base_kwargs) = parsed
    if base not in PRESETS:
        raise ValueError(f"unknown optimizer {base!r} in spec {spec!r}; available: {', '.join(PRESETS)}")
    for name, _ in wrappers:
        if name not in WRAPPERS:
            raise ValueError(
                f"unknown wrapper {name!r} in spec {spec!r}; available: {', '.join(WRAPPERS)} "
                "(the optimizer comes last, e.g. 'lookahead+adam')"
            )
    return OptimizerSpec(base, base_kwargs, tuple(wrappers))


def preset_lr(spec: str) -> float:
    """The LR a spec runs with when none is given: its ``@lr=`` override, else the preset's."""
    parsed = parse_spec(spec)
    return float(dict(parsed.kwargs).get("lr", parsed.preset.lr))


def search_space(spec: str) -> SearchSpace:
    """The search space the lab tunes ``spec`` over: its preset's lr range (centred on an ``@lr=`` override when
    the spec gives one, with the same width) and its ``tune`` hyperparameters that the spec does not fix."""
    parsed = parse_spec(spec)
    preset = parsed.preset
    lr = preset.lr_space
    given = dict(parsed.kwargs)
    if "lr" in given:
        factor = float(given["lr"]) / preset.lr
        lr = Param("lr", float(f"{lr.low * factor:.4g}"), float(f"{lr.high * factor:.4g}"))
    return SearchSpace((lr, *(p for p in preset.tune if p.name not in given)))


def fixed_settings(spec: str) -> dict[str, Any]:
    """The settings a spec runs with apart from the lr: the preset's, overridden by the spec's ``@k=v``."""
    parsed = parse_spec(spec)
    out = {**parsed.preset.kwargs, **dict(parsed.kwargs)}
    out.pop("lr", None)
    return out


def build_optimizer(
    spec: str, model: torch.nn.Module, lr: float | None = None, **hparams: Any
) -> torch.optim.Optimizer:
    """Construct the optimizer a spec names for ``model``; ``lr`` and ``hparams`` (tuned values, e.g.
    ``weight_decay=3e-3``) override the spec's and the preset's settings."""
    parsed = parse_spec(spec)
    kwargs = {**parsed.preset.kwargs, **dict(parsed.kwargs), **hparams}
    kwargs["lr"] = preset_lr(spec) if lr is None else float(lr)
    optimizer = library.create_optimizer(
        parsed.preset.library_name, model, exclude_from_decay=parsed.preset.exclude_from_decay, **kwargs
    )
    for name, wkwargs in reversed(parsed.wrappers):
        optimizer = _WRAPPER_FACTORIES[name](optimizer, **{**WRAPPERS[name], **dict(wkwargs)})
    return optimizer


def check_spec(spec: str, hparams: dict[str, Any] | None = None) -> None:
    """Build ``spec`` on a tiny model and take one step, so that a bad name, an unknown argument
    (``adam@lrr=1e-3``) or an invalid value fails here, with one message, before any run starts."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    try:
        optimizer = build_optimizer(spec, model, **(hparams or {}))
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
    except TypeError as e:
        raise ValueError(f"optimizer spec {spec!r}{_with(hparams)}: {e}") from None
    except ValueError as e:
        raise ValueError(f"optimizer spec {spec!r}{_with(hparams)}: {e}") from None


def _with(hparams: dict[str, Any] | None) -> str:
    return f" with {hparams}" if hparams else ""


def _check_presets() -> None:
    """Every preset's lr range spans at least :data:`MIN_LR_DECADES` decades around its lr."""
    for name, p in PRESETS.items():
        lr = p.lr_space
        if not (lr.low <= p.lr <= lr.high and lr.decades >= MIN_LR_DECADES - 1e-9):
            raise ValueError(
                f"preset {name!r}: lr range {lr.low:g}..{lr.high:g} must contain its lr {p.lr:g} and span at "
                f"least {MIN_LR_DECADES:g} decades"
            )


_check_presets()
