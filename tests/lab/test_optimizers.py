"""Optimizer specs: presets, composition with wrappers, overrides, search spaces and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimlab
from optimlab.lab.catalog.presets import (
    DEFAULT_OPTIMIZERS,
    LR_RANGE_FACTORS,
    PRESETS,
    build_optimizer,
    check_spec,
    fixed_settings,
    parse_spec,
    preset_lr,
    search_space,
)


def test_default_list_keeps_its_size_and_gains_the_optimizers_after_adam() -> None:
    assert len(DEFAULT_OPTIMIZERS) == 15  # the same number of runs as before issue 12
    assert {
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
    } == set(DEFAULT_OPTIMIZERS)


@pytest.mark.parametrize("spec", [*DEFAULT_OPTIMIZERS, "amsbound", "sgdw", "lookahead+radam"])
def test_every_spec_builds_and_steps(spec: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(spec, model)
    x = torch.randn(16, 4)
    for _ in range(2):  # SOAP's first step only initialises its preconditioner
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert opt.param_groups[0]["lr"] == preset_lr(spec)


def test_presets_reach_the_library_with_their_settings() -> None:
    model = nn.Linear(3, 3)
    opt = build_optimizer("nesterov", model)
    assert isinstance(opt, optimlab.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"] is True
    lamb = build_optimizer("lamb", model)
    decays = sorted(g["weight_decay"] for g in lamb.param_groups)
    assert decays == [0.0, 0.01]  # the bias is excluded from decay, as LAMB users do


def test_lookahead_composes_and_keeps_its_settings() -> None:
    from optimlab.wrappers import Lookahead

    opt = build_optimizer("lookahead@k=10,alpha=0.8+radam@lr=3e-4", nn.Linear(2, 2))
    assert isinstance(opt, Lookahead)
    assert opt.param_groups[0]["lr"] == 3e-4


def test_spec_parsing() -> None:
    s = parse_spec("Lookahead+adam@lr=3e-4,betas=(0.9,0.99)")
    assert s.base == "adam" and dict(s.kwargs) == {"lr": 3e-4, "betas": (0.9, 0.99)}
    assert s.wrappers == (("lookahead", ()),)
    assert preset_lr("adam@lr=3e-4") == 3e-4 and preset_lr("sgdm") == PRESETS["sgdm"].lr
    lr = search_space("adam").lr
    assert (lr.low, lr.high) == pytest.approx([1e-3 * f for f in LR_RANGE_FACTORS])
    assert fixed_settings("adamw@eps=1e-6") == {"betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 1e-2}


@pytest.mark.parametrize(
    ("spec", "hparams", "message"),
    [
        ("adam@lrr=1e-3", None, "unexpected keyword argument 'lrr'"),
        ("adam@betas=(0.9,1.5)", None, "Invalid beta"),
        ("adamw", {"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_check_spec_builds_and_steps_before_any_run(spec: str, hparams, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        check_spec(spec, hparams)
    assert spec in str(e.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adamx", "unknown optimizer 'adamx'"),
        ("adam+lookahead", "unknown optimizer 'lookahead'"),
        ("swa+adam", "unknown wrapper 'swa'"),
        ("adam@lr", "expected key=value"),
        ("adam@lr=fast", "not a literal"),
        ("", "non-empty string"),
    ],
)
def test_bad_specs_raise(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)
