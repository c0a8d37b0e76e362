"""Optimizer specs for the lab: names with their commonly used settings and search spaces, composed with wrappers.

A spec is a string ``[wrapper[@k=v,...]+]...base[@k=v,...]``, for example ``sgdm``, ``nesterov``,
``adam@lr=3e-4,betas=(0.9,0.99)``, ``lookahead+radam`` or ``lookahead@k=10,alpha=0.8+sgdm``. Values are Python
literals. The base names are the keys of :data:`PRESETS`, each a name of the library's registry (``sgdm`` and
``nesterov`` included); ``optimlab list`` shows them.

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

from optimlab.lab.catalog import adapter
from optimlab.lab.catalog.space import MIN_LR_DECADES, Param, SearchSpace

__all__ = [
    "Preset",
    "ParsedSpec",
    "PRESETS",
    "WRAPPERS",
    "DEFAULT_OPTIMIZERS",
    "DERIVED",
    "resolve_derived",
    "LR_RANGE_FACTORS",
    "CHECK_STEPS",
    "parse_spec",
    "parse_kwargs",
    "preset_lr",
    "search_space",
    "fixed_settings",
    "build_optimizer",
    "check_spec",
]


# The run length ``build_optimizer`` sizes a preset's ``run_fractions`` to when it is not told the run's.
CHECK_STEPS = 100

# The default lr range of a preset: from LR_RANGE_FACTORS[0] x its lr to LR_RANGE_FACTORS[1] x its lr.
LR_RANGE_FACTORS: tuple[float, float] = (0.1, 100.0)


@dataclass(frozen=True)
class Preset:
    """A named optimizer: the library registry name, its commonly used settings and their source, and how the
    lab tunes it (``lr_range``: the lr's log-uniform range, default :data:`LR_RANGE_FACTORS` around ``lr``;
    ``tune``: further tuned hyperparameters; ``schedule``: a schedule the optimizer needs instead of the
    protocol's, e.g. ``"constant"`` for Schedule-Free methods; ``run_fractions``: settings that are lengths,
    given as fractions of the run and turned into steps when the run's length is known, e.g. AdEMAMix's
    warm-ups over the whole run, ``{"alpha_warmup": 1.0, "beta3_warmup": 1.0}``)."""

    library_name: str
    lr: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    exclude_from_decay: bool = False  # biases and norm weights: no decay, no layer-wise adaptation
    lr_range: tuple[float, float] | None = None
    tune: tuple[Param, ...] = ()
    schedule: str | None = None
    run_fractions: dict[str, float] = field(default_factory=dict)

    def run_settings(self, steps: int) -> dict[str, int]:
        """The ``run_fractions`` settings for a run of ``steps`` steps (at least one step each)."""
        return {k: max(1, int(round(f * steps))) for k, f in self.run_fractions.items()}

    @property
    def lr_space(self) -> Param:
        low, high = self.lr_range or (self.lr * LR_RANGE_FACTORS[0], self.lr * LR_RANGE_FACTORS[1])
        return Param("lr", float(f"{low:.4g}"), float(f"{high:.4g}"))


_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}

# The second tuned hyperparameter of the default spaces, from AlgoPerf's baseline search spaces
# (mlcommons/algorithmic-efficiency, algorithms/archived_paper_baselines/*/tuning_search_space.json, commit
# 2c90454): decoupled weight decay log-uniform over [5e-3, 1] (adamw, nadamw, shampoo; lamb's is [1e-3, 1]),
# 1 - beta1 log-uniform over [2e-2, 0.5] (adamw) and 1 - momentum over [5e-3, 0.3] (momentum, nesterov).
# One hyperparameter besides the lr per optimizer, the one the references tune that moves it most: with the
# default 6 quasi-random trials (+ 2 refining the lr), each further dimension thins the lr's coverage.
_DECAY = Param("weight_decay", 5e-3, 1.0)
_ONE_MINUS_BETA1 = Param("one_minus_beta1", 2e-2, 0.5)
_ONE_MINUS_MOMENTUM = Param("one_minus_momentum", 5e-3, 0.3)

# fmt: off
PRESETS: dict[str, Preset] = {
    "sgd": Preset("sgd", 0.1, {}, "plain minibatch SGD"),
    "sgdm": Preset("sgdm", 0.05, {"momentum": 0.9}, "heavy ball, momentum 0.9 (Polyak, 1964)",
                   tune=(_ONE_MINUS_MOMENTUM,)),
    "nesterov": Preset("nesterov", 0.05, {"momentum": 0.9, "nesterov": True},
                       "Nesterov momentum 0.9 in torch's form (Sutskever et al., 2013)", tune=(_ONE_MINUS_MOMENTUM,)),
    "sgdw": Preset("sgdw", 0.05, {"momentum": 0.9, "weight_decay": 5e-4},
                   "decoupled decay (Loshchilov & Hutter, 2019)", tune=(Param("weight_decay", 1e-5, 1e-2),)),
    "adagrad": Preset("adagrad", 0.01, {}, "Duchi et al., 2011; torch's default lr"),
    "rmsprop": Preset("rmsprop", 1e-3, {"alpha": 0.9}, "Tieleman & Hinton, 2012 (lecture 6e): decay 0.9"),
    "adam": Preset("adam", 1e-3, _ADAM, "Kingma & Ba, 2015", tune=(_ONE_MINUS_BETA1,)),
    "amsgrad": Preset("amsgrad", 1e-3, _ADAM, "Reddi et al., 2018"),
    "adamw": Preset("adamw", 1e-3, {**_ADAM, "weight_decay": 1e-2},
                    "Loshchilov & Hutter, 2019; torch's default decay 0.01",
                    tune=(_DECAY,)),
    "nadam": Preset("nadam", 2e-3, _ADAM, "Dozat, 2016; Keras' default lr 2e-3",
                    tune=(Param("one_minus_beta1", 4e-3, 0.1),)),  # AlgoPerf's NAdamW range
    "radam": Preset("radam", 1e-3, _ADAM, "Liu et al., 2020", tune=(_ONE_MINUS_BETA1,)),
    "adabound": Preset("adabound", 1e-3, {"final_lr": 0.1, "gamma": 1e-3}, "Luo et al., 2019"),
    "amsbound": Preset("amsbound", 1e-3, {"final_lr": 0.1, "gamma": 1e-3}, "Luo et al., 2019"),
    "lamb": Preset("lamb", 1e-2, {"betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 1e-2},
                   "You et al., 2020: decay 0.01 as for BERT; biases/norms excluded",
                   exclude_from_decay=True, tune=(Param("weight_decay", 1e-3, 1.0),)),  # AlgoPerf's LAMB range
    "lars": Preset("lars", 1.0, {"momentum": 0.9, "trust_coefficient": 1e-3, "weight_decay": 1e-4},
                   "You et al., 2017: eta 1e-3, momentum 0.9, decay 1e-4; biases/norms excluded",
                   exclude_from_decay=True),
    "swats": Preset("swats", 1e-3, {}, "Keskar & Socher, 2017"),
    # After Adam (issue 12). torch.optim's other classes, at torch's defaults unless the paper says otherwise.
    "adamax": Preset("adamax", 2e-3, _ADAM, "Kingma & Ba, 2015, Sec. 7.1: lr 2e-3 (torch's default)"),
    "adadelta": Preset("adadelta", 1.0, {"rho": 0.95, "eps": 1e-6},
                       "Zeiler, 2012: rho 0.95, eps 1e-6 (the paper's MNIST setting); lr 1 (torch's scale)"),
    "asgd": Preset("asgd", 1e-2, {"lambd": 1e-4, "alpha": 0.75, "t0": 1e6},
                   "Polyak & Juditsky, 1992; torch's defaults (t0 1e6: averaging starts after the run, so the "
                   "iterate is evaluated)"),
    "rprop": Preset("rprop", 1e-2, {"etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0)},
                    "Riedmiller & Braun, 1993: eta-/eta+ 0.5/1.2; a full-batch method, here on minibatches"),
    "adafactor": Preset("adafactor", 1e-2, {"beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0},
                        "Shazeer & Stern, 2018: relative step min(1e-2, 1/sqrt(t)), decay rate -0.8, clipping d 1, "
                        "eps2 1e-3 (torch's Adafactor)"),
    "lion": Preset("lion", 1e-4, {"betas": (0.9, 0.99), "weight_decay": 0.1},
                   "Chen et al., 2023 (google/automl lion): lr = AdamW's lr / 3..10, weight decay x 3..10 "
                   "(AdamW 1e-3, 0.01 -> 1e-4, 0.1), betas (0.9, 0.99)",
                   tune=(Param("weight_decay", 1e-3, 10.0),)),
    "schedulefree-sgd": Preset("schedulefree-sgd", 1.0, {"momentum": 0.9},
                               "Defazio et al., 2024 (facebookresearch/schedule_free SGDScheduleFree): lr 1, "
                               "momentum 0.9 (10-50x a classic SGD lr), its own warm-up (5 % of the run), no "
                               "schedule; evaluated at x (eval())",
                               lr_range=(0.01, 10.0), schedule="constant", run_fractions={"warmup_steps": 0.05}),
    "schedulefree-adamw": Preset("schedulefree-adamw", 2.5e-3, {"betas": (0.9, 0.999), "eps": 1e-8},
                                 "Defazio et al., 2024 (AdamWScheduleFree): lr 2.5e-3 (the reference's default; "
                                 "1-10x AdamW's), its own warm-up (5 % of the run), no schedule; evaluated at x",
                                 schedule="constant", run_fractions={"warmup_steps": 0.05}, tune=(_DECAY,)),
    "ademamix": Preset("ademamix", 1e-3, {"betas": (0.9, 0.999, 0.9999), "alpha": 5.0, "eps": 1e-8},
                       "Pagliardini et al., 2024 (apple/ml-ademamix): betas (0.9, 0.999, 0.9999), alpha 5 (paper: "
                       "5..8 for LMs), alpha and beta3 warm-ups over the whole run",
                       run_fractions={"alpha_warmup": 1.0, "beta3_warmup": 1.0}, tune=(_DECAY,)),
    "mars": Preset("mars", 3e-3, {"betas": (0.95, 0.99), "gamma": 0.025, "weight_decay": 0.0},
                   "Yuan et al., 2024 (AGI-Arena/MARS, MARS-AdamW): lr 3e-3, betas (0.95, 0.99), gamma 0.025; "
                   "1-D tensors by AdamW at lr_1d 3e-3 (the reference's default, follows the schedule)"),
    "prodigy": Preset("prodigy", 1.0, {"betas": (0.9, 0.999), "safeguard_warmup": True},
                      "Mishchenko & Defazio, 2024 (konstmish/prodigy): lr 1 (d estimates the step), "
                      "safeguard_warmup with a warm-up schedule; tuned over a narrow lr range (2 decades)",
                      lr_range=(0.1, 10.0)),
    "adopt": Preset("adopt", 1e-3, {"betas": (0.9, 0.9999), "eps": 1e-6},
                    "Taniguchi et al., 2024 (iShohei220/adopt): betas (0.9, 0.9999), eps 1e-6, clipping t^0.25"),
    # The matrix optimizers: create_optimizer gets the model (Muon splits it: hidden matrices to Muon, the first
    # convolution, embeddings, the output head and every 1-D tensor to AdamW).
    "muon": Preset("muon", 0.02, {"momentum": 0.95, "nesterov": True, "weight_decay": 0.01, "adamw_lr": 3e-4},
                   "Jordan et al., 2024 (KellerJordan/Muon, MuonWithAuxAdam): lr 0.02, momentum 0.95 Nesterov, "
                   "decay 0.01; the AdamW side (betas (0.9, 0.95)) at lr 3e-4, tuned too, as AdamW's lr",
                   lr_range=(1e-3, 1.0), tune=(Param("adamw_lr", 1e-4, 1e-1),)),
    "soap": Preset("soap", 3e-3, {"betas": (0.95, 0.95), "weight_decay": 0.01, "precondition_frequency": 10},
                   "Vyas et al., 2024 (nikhilvyas/SOAP): lr 3e-3, betas (0.95, 0.95), decay 0.01, "
                   "preconditioner refreshed every 10 steps", tune=(_DECAY,)),
    "shampoo": Preset("shampoo", 1e-3, {"betas": (0.9, 0.999), "epsilon": 1e-12, "weight_decay": 1e-5,
                                        "precondition_frequency": 20},
                      "Gupta et al., 2018; Shi et al., 2023 (facebookresearch/optimizers Distributed Shampoo "
                      "README: lr 1e-3, betas (0.9, 0.999), epsilon 1e-12, decay 1e-5, Adam grafting); "
                      "precondition_frequency 20 instead of 100 so a 1000-step run refreshes 50 times"),
    "kron": Preset("kron", 3e-4, {"b1": 0.9, "weight_decay": 0.0},
                   "Li (PSGD Kron; evanatyourservice/kron_torch, PyPI kron-torch 0.3.3 defaults): lr 3e-4, b1 0.9, "
                   "decay 0 (README: an lr about 3x below Adam's, decay 3-10x above), triangular factors up to "
                   "8192, preconditioner update probability 1 for 500 steps then annealed to 0.03; decay tuned",
                   tune=(Param("weight_decay", 1e-4, 1.0),)),
}
# fmt: on
# Issue 26: the methods the field trains with now (one appended entry each).
PRESETS["normuon"] = Preset(
    "normuon", 0.02, {"momentum": 0.95, "beta2": 0.95, "weight_decay": 0.01, "adamw_lr": 3e-4},
    "Li et al., 2025 (microsoft/dion configs/normuon_160m.yaml: lr 0.02, mu 0.95, decay 0.01, spectral_norm lr "
    "adjustment; dion's muon_beta2 0.95, Polar Express); the AdamW side at lr 3e-4 as Muon's preset, tuned too "
    "(dion's train.py gives it the same lr 0.02)",
    lr_range=(1e-3, 1.0), tune=(Param("adamw_lr", 1e-4, 1e-1),))

# Wrappers compose with any base by ``+``: name -> default keyword arguments.
WRAPPERS: dict[str, dict[str, Any]] = {
    "lookahead": {"k": 5, "alpha": 0.5},  # Zhang et al., 2019
    "noise": {"eta": 0.01, "gamma": 0.55},  # gradient noise, variance eta/(1+t)^gamma; Neelakantan et al., 2015
}

_WRAPPER_FACTORIES = {"lookahead": adapter.lookahead, "noise": adapter.gradient_noise}

# The default comparison: 15 optimizers, as before issue 12, so that it keeps its cost (195 runs). Five of the
# optimizers that came after Adam (Lion, Muon, SOAP, Schedule-Free AdamW, AdEMAMix) took the places of five whose
# result the others already show (Nesterov ~ SGDM, AMSGrad ~ Adam, AdaBound, SWATS, Lookahead(Adam)); those
# stay one ``--optimizers`` away.
DEFAULT_OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "sgdm",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "nadam",
    "radam",
    "lamb",
    "lars",
    "lion",
    "schedulefree-adamw",
    "ademamix",
    "muon",
    "soap",
)


@dataclass(frozen=True)
class ParsedSpec:
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


def parse_kwargs(text: str, spec: str, what: str = "optimizer spec") -> tuple[tuple[str, Any], ...]:
    """``'k=v,k2=v2'`` (Python literals) -> ``(("k", v), ("k2", v2))``; errors name ``what`` and ``spec``."""
    out = []
    for item in _split_top_level(text, ","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"{what} {spec!r}: expected key=value after '@', got {item!r}")
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{what} {spec!r}: value of {key.strip()!r} is not a literal: {value!r}") from e
        out.append((key.strip(), parsed))
    return tuple(out)


# The summary table's short names of settings (tables.settings_text): a spec must spell the argument out, so
# that one setting has one spelling and the same run one config key.
ABBREVIATIONS = {"wd": "weight_decay", "mom": "momentum", "1-beta1": "one_minus_beta1", "1-mom": "one_minus_momentum"}

# Tuned hyperparameters that stand for an optimizer argument (the spaces of AlgoPerf's baselines are over 1 - beta1,
# log-uniform, so that 0.9, 0.99 and 0.999 are equally far apart): name -> the argument it sets.
DERIVED = {"one_minus_beta1": "betas", "one_minus_momentum": "momentum"}


def resolve_derived(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with each :data:`DERIVED` hyperparameter turned into the argument it stands for:
    ``one_minus_beta1=x`` sets ``betas[0] = 1 - x`` (the other betas kept, default ``(0.9, 0.999)``) and
    ``one_minus_momentum=x`` sets ``momentum = 1 - x``."""
    out = dict(kwargs)
    for name in DERIVED:
        if name not in out:
            continue
        x = out.pop(name)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1:
            raise ValueError(f"Invalid {name}: {x!r}; expected 0 < {name} < 1")
        if name == "one_minus_beta1":
            betas = tuple(out.get("betas", (0.9, 0.999)))
            out["betas"] = (1.0 - x, *betas[1:])
        else:
            out["momentum"] = 1.0 - x
    return out


def parse_spec(spec: str) -> ParsedSpec:
    """Parse ``'lookahead+radam@lr=1e-3'`` into a :class:`ParsedSpec`; unknown names raise ValueError."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"optimizer spec must be a non-empty string, got {spec!r}")
    parts = _split_top_level(spec.replace(" ", "").lower(), "+")
    parsed = []
    for part in parts:
        name, _, args = part.partition("@")
        parsed.append((name, parse_kwargs(args, spec) if args else ()))
    for _, kwargs in parsed:
        for key, _ in kwargs:
            if key in ABBREVIATIONS:
                raise ValueError(
                    f"optimizer spec {spec!r}: {key!r} is the summary table's short name; write "
                    f"{ABBREVIATIONS[key]}= (e.g. {spec.replace(key + '=', ABBREVIATIONS[key] + '=')!r})"
                )
    *wrappers, (base, base_kwargs) = parsed
    if base not in PRESETS:
        raise ValueError(f"unknown optimizer {base!r} in spec {spec!r}; available: {', '.join(PRESETS)}")
    for name, _ in wrappers:
        if name not in WRAPPERS:
            raise ValueError(
                f"unknown wrapper {name!r} in spec {spec!r}; available: {', '.join(WRAPPERS)} "
                "(the optimizer comes last, e.g. 'lookahead+adam')"
            )
    return ParsedSpec(base, base_kwargs, tuple(wrappers))


def preset_lr(spec: str) -> float:
    """The LR a spec runs with when none is given: its ``@lr=`` override, else the preset's."""
    parsed = parse_spec(spec)
    return float(dict(parsed.kwargs).get("lr", parsed.preset.lr))


def search_space(spec: str) -> SearchSpace:
    """The search space the lab tunes ``spec`` over: its preset's lr range (centred on an ``@lr=`` override when
    the spec gives one, with the same width) and its ``tune`` hyperparameters that the spec does not fix (a spec
    that gives ``betas`` fixes ``one_minus_beta1``, one that gives ``momentum`` fixes ``one_minus_momentum``)."""
    parsed = parse_spec(spec)
    preset = parsed.preset
    lr = preset.lr_space
    given = dict(parsed.kwargs)
    if "lr" in given:
        factor = float(given["lr"]) / preset.lr
        lr = Param("lr", float(f"{lr.low * factor:.4g}"), float(f"{lr.high * factor:.4g}"))
    return SearchSpace((lr, *(p for p in preset.tune if p.name not in given and DERIVED.get(p.name) not in given)))


def fixed_settings(spec: str) -> dict[str, Any]:
    """The settings a spec runs with apart from the lr: the preset's, overridden by the spec's ``@k=v``."""
    parsed = parse_spec(spec)
    out = {**parsed.preset.kwargs, **dict(parsed.kwargs)}
    out.pop("lr", None)
    return out


def build_optimizer(
    spec: str, model: torch.nn.Module, lr: float | None = None, *, steps: int | None = None, **hparams: Any
) -> torch.optim.Optimizer:
    """Construct the optimizer a spec names for ``model``; ``lr`` and ``hparams`` (tuned values, e.g.
    ``weight_decay=3e-3``) override the spec's and the preset's settings. ``steps``: the run's length, for the
    preset's ``run_fractions`` (warm-ups as fractions of the run; default :data:`CHECK_STEPS`). The whole model
    goes to the library, so optimizers that build their own groups from it (Muon) get it."""
    parsed = parse_spec(spec)
    run_settings = parsed.preset.run_settings(CHECK_STEPS if steps is None else steps)
    kwargs = resolve_derived({**parsed.preset.kwargs, **run_settings, **dict(parsed.kwargs), **hparams})
    kwargs["lr"] = preset_lr(spec) if lr is None else float(lr)
    optimizer = adapter.create_optimizer(
        parsed.preset.library_name, model, exclude_from_decay=parsed.preset.exclude_from_decay, **kwargs
    )
    for name, wkwargs in reversed(parsed.wrappers):
        optimizer = _WRAPPER_FACTORIES[name](optimizer, **{**WRAPPERS[name], **dict(wkwargs)})
    return optimizer


def check_spec(spec: str, hparams: dict[str, Any] | None = None) -> None:
    """Build ``spec`` on a tiny model and take one step, so that a bad name, an unknown argument
    (``adam@lrr=1e-3``) or an invalid value fails here, with one message, before any run starts."""
    parse_spec(spec)  # its errors name the spec already
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
