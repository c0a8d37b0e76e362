"""Issue 22: the default search spaces tune more than the lr where the references do (AlgoPerf's baseline spaces),
with the same trial budget for every optimizer, and the report says what each searched."""

from __future__ import annotations

import pytest
from torch import nn

from optimlab.lab.catalog.presets import (
    DEFAULT_OPTIMIZERS,
    PRESETS,
    build_optimizer,
    check_spec,
    resolve_derived,
    search_space,
)
from optimlab.lab.catalog.space import trial_points
from optimlab.lab.study.protocol import default_protocol

DECOUPLED_DECAY = ("adamw", "lamb", "lion", "schedulefree-adamw", "ademamix", "soap", "sgdw")


def _names(spec: str) -> list[str]:
    return [p.name for p in search_space(spec).params]


def test_the_default_spaces_tune_what_the_references_tune() -> None:
    for name in DECOUPLED_DECAY:
        assert _names(name) == ["lr", "weight_decay"], name
    for name in ("adam", "nadam", "radam"):
        assert _names(name) == ["lr", "one_minus_beta1"], name
    for name in ("sgdm", "nesterov"):
        assert _names(name) == ["lr", "one_minus_momentum"], name
    assert _names("muon") == ["lr", "adamw_lr"]
    # AlgoPerf's ranges (algorithms/archived_paper_baselines/{adamw,momentum,lamb}/tuning_search_space.json)
    wd = search_space("adamw").params[1]
    assert (wd.low, wd.high, wd.log) == (5e-3, 1.0, True)
    b1 = search_space("adam").params[1]
    assert (b1.low, b1.high, b1.log) == (2e-2, 0.5, True)
    mom = search_space("sgdm").params[1]
    assert (mom.low, mom.high, mom.log) == (5e-3, 0.3, True)
    assert search_space("lamb").params[1].low == 1e-3


def test_every_default_optimizer_gets_the_same_budget_and_at_most_one_dimension_besides_the_lr() -> None:
    protocol = default_protocol("mnist1d-mlp")
    counts = {name: len(protocol.tuning_configs(name)) for name in DEFAULT_OPTIMIZERS}
    assert set(counts.values()) == {protocol.budget - protocol.refine_trials}, counts
    assert all(len(search_space(name).params) <= 2 for name in DEFAULT_OPTIMIZERS)
    for name in DEFAULT_OPTIMIZERS:  # every trial setting builds and steps
        for point in protocol.trial_settings(name):
            check_spec(name, {k: v for k, v in point.items() if k != "lr"} or None)


def test_the_trial_points_cover_the_second_dimension() -> None:
    space = search_space("adamw")
    points = trial_points(space, 6)
    wds = sorted(p["weight_decay"] for p in points)
    assert len(set(wds)) == 6 and wds[0] < 0.03 and wds[-1] > 0.2  # spread over the log range, not one value


def test_one_minus_beta1_and_momentum_set_the_argument_they_stand_for() -> None:
    model = nn.Linear(3, 3)
    group = build_optimizer("adam", model, one_minus_beta1=0.05).param_groups[0]
    assert group["betas"] == pytest.approx((0.95, 0.999))
    group = build_optimizer("ademamix", model, steps=10, one_minus_beta1=0.2).param_groups[0]
    assert group["betas"] == pytest.approx((0.8, 0.999, 0.9999))  # the other betas kept
    assert build_optimizer("sgdm", model, one_minus_momentum=0.01).param_groups[0]["momentum"] == pytest.approx(0.99)
    assert PRESETS["adam"].kwargs["betas"] == (0.9, 0.999)  # the preset is not changed
    assert resolve_derived({"lr": 1.0}) == {"lr": 1.0}


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, True, "0.1"])
def test_a_bad_one_minus_value_is_named(value) -> None:
    with pytest.raises(ValueError, match="one_minus_beta1"):
        resolve_derived({"one_minus_beta1": value})


def test_a_spec_that_fixes_the_argument_fixes_its_tuned_form() -> None:
    assert _names("adam@betas=(0.8,0.999)") == ["lr"]
    assert _names("sgdm@momentum=0.5") == ["lr"]
    assert _names("adamw@weight_decay=0.1") == ["lr"]
