"""Tests for optimlab.schedules: closed forms, torch equivalence, continuity, ScheduleLR resume, bad args."""

from __future__ import annotations

import io
import math
import random

import matplotlib
import numpy as np
import pytest
import torch

from optimlab.schedules import (
    Schedule,
    ScheduleLR,
    constant,
    cosine_decay,
    cyclic,
    cyclic_momentum,
    exponential_decay,
    exponential_warmup,
    join,
    linear_decay,
    linear_warmup,
    multistep_decay,
    one_cycle,
    one_cycle_momentum,
    plot_schedule,
    scale_lr_for_batch_size,
    sgdr,
    step_decay,
    warmup,
    wsd,
)

matplotlib.use("Agg")

REL = 1e-12  # float64 round-off of base * factor versus torch's base + (max - base) * x


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-15)


def _sgd(lrs=(0.1, 0.01), momentum=0.9) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, momentum=momentum)


def _adam(lrs=(0.1, 0.01)) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def _momenta(opt: torch.optim.Optimizer) -> list[float]:
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def _run_pair(ours: ScheduleLR, theirs, steps: int, momentum: bool) -> None:
    for t in range(steps):
        for g1, g2 in zip(ours.optimizer.param_groups, theirs.optimizer.param_groups, strict=True):
            assert close(g1["lr"], g2["lr"]), (t, g1["lr"], g2["lr"])
        if momentum:
            for m1, m2 in zip(_momenta(ours.optimizer), _momenta(theirs.optimizer), strict=True):
                assert close(m1, m2), (t, m1, m2)
        ours.optimizer.step()
        theirs.optimizer.step()
        ours.step()
        theirs.step()


# ------------------------------------------------------------------------------------------- closed forms


def test_warmups_and_decays_closed_form() -> None:
    f = linear_warmup(10, init_factor=0.1)
    assert f(0) == 0.1 and close(f(5), 0.55) and f(10) == 1.0 and f(1000) == 1.0
    g = exponential_warmup(4, init_factor=1e-4)
    assert close(g(0), 1e-4) and close(g(2), 1e-2) and g(4) == 1.0 and g(50) == 1.0
    c = cosine_decay(100, end_factor=0.1)
    assert c(0) == 1.0 and close(c(50), 0.55) and close(c(100), 0.1) and close(c(10**6), 0.1)
    rng = random.Random(0)
    for _ in range(50):
        t = rng.uniform(0, 100)
        assert close(c(t), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 100)))
    lin = linear_decay(20, end_factor=0.5)
    assert lin(0) == 1.0 and close(lin(10), 0.75) and lin(20) == 0.5 and lin(21) == 0.5
    s = step_decay(30, gamma=0.5)
    assert [s(t) for t in (0, 29, 30, 59, 60, 95)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    m = multistep_decay([10, 25], gamma=0.1)
    assert [m(t) for t in (0, 9, 10, 24, 25, 10_000)] == [1.0, 1.0, 0.1, 0.1, 0.1**2, 0.1**2]
    e = exponential_decay(0.9, end_factor=0.5)
    assert close(e(3), 0.729) and e(100) == 0.5
    assert constant(0.3)(12345) == 0.3


def test_torch_step_and_multistep_equal() -> None:
    for sched, make in (
        (step_decay(7, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
        (multistep_decay([5, 12, 30], 0.3), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [5, 12, 30], 0.3)),
    ):
        ours, theirs = ScheduleLR(_sgd(), sched), make(_sgd())
        _run_pair(ours, theirs, 60, momentum=False)


def test_join_and_warmup() -> None:
    f = warmup(cosine_decay(90, end_factor=0.0), warmup_steps=10, init_factor=0.0)
    assert f(0) == 0.0 and close(f(5), 0.5) and f(10) == 1.0
    assert close(f(55), 0.5) and close(f(100), 0.0) and close(f(500), 0.0)
    assert f.end_step == 100
    g = join([constant(1.0), constant(0.5), linear_decay(10)], [3, 7])
    assert [g(t) for t in (0, 2.999, 3, 6, 7)] == [1.0, 1.0, 0.5, 0.5, 1.0]
    assert close(g(12), 0.5) and g(17) == 0.0
    assert "cosine_decay(decay_steps=90" in repr(f)
    assert isinstance(f, Schedule)


def test_wsd_phases_and_continuity() -> None:
    n, w, d = 100, 10, 20
    for decay in ("linear", "cosine", "1-sqrt"):
        f = wsd(n, w, d, init_factor=0.05, end_factor=0.1, decay=decay)
        assert f(0) == 0.05 and f(w) == 1.0 and f(50) == 1.0 and f(n - d) == 1.0
        assert close(f(n), 0.1) and f(n + 1) == 0.1 and f(10 * n) == 0.1
        for b in (w, n - d, n):  # continuous at every phase boundary, including the floor at the end
            for eps in (1e-6, 1e-9, 1e-12):
                tol = 2 * math.sqrt(eps / d) if decay == "1-sqrt" else 2 * eps
                assert abs(f(b - eps) - f(b)) <= tol and abs(f(b + eps) - f(b)) <= tol, (decay, b, eps)
        x = 0.25  # mid cool-down
        shape = {"linear": 1 - x, "cosine": 0.5 * (1 + math.cos(math.pi * x)), "1-sqrt": 1 - math.sqrt(x)}[decay]
        assert close(f(n - d + x * d), 0.1 + 0.9 * shape)
        values = [f(t) for t in range(n + 5)]
        assert all(b <= a for a, b in zip(values[w:], values[w + 1 :], strict=False))  # non-increasing after W
    no_warm = wsd(50, 0, 10)
    assert no_warm(0) == 1.0 and no_warm(50) == 0.0


def test_one_cycle_boundaries_continuity_and_past_end() -> None:
    n = 100
    for three in (False, True):
        for anneal in ("cos", "linear"):
            f = one_cycle(n, pct_start=0.25, div_factor=25.0, final_div_factor=1e4, three_phase=three, anneal=anneal)
            m = one_cycle_momentum(n, pct_start=0.25, three_phase=three, anneal=anneal)
            assert close(f(0), 1 / 25) and f(24) == 1.0 and m(0) == 0.95 and m(24) == 0.85
            bounds = [24.0, 48.0, 99.0] if three else [24.0, 99.0]
            if three:
                assert close(f(48), 1 / 25) and close(m(48), 0.95)
            assert close(f(99), 1 / 25 / 1e4) and close(m(99), 0.95)
            for t in (100, 101, 10_000):  # past the end: hold the final value, no error
                assert f(t) == f(99) and m(t) == m(99)
            for b in bounds:
                for sch in (f, m):
                    assert abs(sch(b - 1e-9) - sch(b)) < 1e-8 and abs(sch(b + 1e-9) - sch(b)) < 1e-8


def test_sgdr_closed_form() -> None:
    f = sgdr(10, t_mult=2, min_factor=0.1)
    # cycles: [0, 10), [10, 30), [30, 70)
    assert f(0) == 1.0 and f(10) == 1.0 and f(30) == 1.0 and f(70) == 1.0
    assert close(f(5), 0.55) and close(f(20), 0.55) and close(f(50), 0.55)
    assert f(9.999999) < 0.1 + 1e-9


def test_cyclic_closed_form() -> None:
    f = cyclic(4, 0.25, mode="triangular2")
    # cycle 1 peaks at step 4 with 1, cycle 2 peaks at 12 with amplitude halved
    assert f(0) == 0.25 and f(4) == 1.0 and f(8) == 0.25 and close(f(12), 0.25 + 0.75 * 0.5)
    g = cyclic(3, 0.5, step_size_down=1)
    assert [g(t) for t in range(5)] == [0.5, 0.5 + 0.5 / 3, 0.5 + 1 / 3, 1.0, 0.5]


def test_scale_lr_for_batch_size() -> None:
    assert scale_lr_for_batch_size(0.1, 256, 8192) == pytest.approx(3.2, rel=1e-15)
    assert scale_lr_for_batch_size(1e-3, 64, 256, rule="sqrt") == pytest.approx(2e-3, rel=1e-15)


# ------------------------------------------------------------------------------------- torch equivalence


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("make_opt", [_sgd, _adam])
@pytest.mark.parametrize("down", [None, 7])
def test_equals_torch_cyclic_lr(mode, make_opt, down) -> None:
    maxs, ratio, up, gamma = (0.1, 0.01), 0.1, 5, 0.97
    theirs = torch.optim.lr_scheduler.CyclicLR(
        make_opt(maxs), base_lr=[m * ratio for m in maxs], max_lr=list(maxs), step_size_up=up,
        step_size_down=down, mode=mode, gamma=gamma, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9,
    )
    ours = ScheduleLR(
        make_opt(maxs),
        cyclic(up, ratio, step_size_down=down, mode=mode, gamma=gamma),
        cyclic_momentum(up, step_size_down=down, mode=mode, gamma=gamma, base_momentum=0.8, max_momentum=0.9),
    )
    _run_pair(ours, theirs, 150, momentum=True)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("make_opt", [_sgd, _adam])
def test_equals_torch_one_cycle(three_phase, anneal, make_opt) -> None:
    n, pct = 97, 0.3
    maxs = (0.1, 0.01)
    theirs = torch.optim.lr_scheduler.OneCycleLR(
        make_opt(maxs), max_lr=list(maxs), total_steps=n, pct_start=pct, anneal_strategy=anneal,
        div_factor=20.0, final_div_factor=100.0, three_phase=three_phase, base_momentum=0.8, max_momentum=0.93,
    )
    ours = ScheduleLR(
        make_opt(maxs),
        one_cycle(n, pct_start=pct, div_factor=20.0, final_div_factor=100.0, three_phase=three_phase,
                  anneal=anneal),
        one_cycle_momentum(n, pct_start=pct, base_momentum=0.8, max_momentum=0.93, three_phase=three_phase,
                           anneal=anneal),
    )
    _run_pair(ours, theirs, n, momentum=True)  # compares steps 0 .. n - 1, the whole run, then steps both to n
    final = [maxs[0] / 20.0 / 100.0, maxs[1] / 20.0 / 100.0]
    for _ in range(5):  # one and many steps past the end: we hold the final value
        assert ours.last_epoch >= n
        for got, want in zip([g["lr"] for g in ours.optimizer.param_groups], final, strict=True):
            assert close(got, want)
        ours.optimizer.step()
        ours.step()
    # torch extrapolates the last phase at step n (a wrong value) and raises on the step after
    assert theirs.last_epoch == n and not close(theirs.optimizer.param_groups[0]["lr"], final[0])
    theirs.optimizer.step()
    with pytest.raises(ValueError, match="Tried to step"):
        theirs.step()


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_equals_torch_cosine_warm_restarts(t_mult) -> None:
    maxs, ratio = (0.1, 0.01), 0.05
    # torch's eta_min is absolute and shared by all groups: use one group so min_factor = eta_min / base_lr
    theirs = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        _sgd(maxs[:1]), T_0=7, T_mult=t_mult, eta_min=maxs[0] * ratio
    )
    ours = ScheduleLR(_sgd(maxs[:1]), sgdr(7, t_mult=t_mult, min_factor=ratio))
    _run_pair(ours, theirs, 200, momentum=False)


# -------------------------------------------------------------------------------------------- ScheduleLR


def test_schedule_lr_per_group_tensor_lr_and_momentum() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    lr_tensor = torch.tensor(0.2)
    opt = torch.optim.Adam([{"params": [p1], "lr": lr_tensor}, {"params": [p2], "lr": 0.02}], betas=(0.9, 0.999))
    f = wsd(20, 5, 5, end_factor=0.1)
    m = one_cycle_momentum(20, pct_start=0.25)
    sched = ScheduleLR(opt, f, m)
    assert opt.param_groups[0]["lr"] is lr_tensor  # filled in place, never replaced
    for t in range(30):
        assert opt.param_groups[0]["lr"].item() == pytest.approx(0.2 * f(t), rel=1e-6)  # float32 tensor
        assert opt.param_groups[1]["lr"] == 0.02 * f(t)
        assert opt.param_groups[1]["betas"] == (m(t), 0.999)
        assert opt.param_groups[0]["lr"] is lr_tensor
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == 0.02 * 0.1  # held past the end


def test_schedule_lr_needs_momentum_for_momentum_schedule() -> None:
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="momentum_schedule.*param_groups\\[0\\]"):
        ScheduleLR(opt, constant(), one_cycle_momentum(10))


def _train(opt, sched, model, steps, log):
    for _ in range(steps):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(len(log)))  # data depends on the step only
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        log.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"], opt.param_groups[0]["momentum"]))


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.05}, {"params": model[1].parameters(), "lr": 0.01}],
        momentum=0.9,
    )
    sched = ScheduleLR(opt, one_cycle(50, pct_start=0.3), one_cycle_momentum(50, pct_start=0.3))
    return model, opt, sched


def test_schedule_lr_state_dict_resume_is_exact() -> None:
    model, opt, sched = _setup()
    full: list = []
    _train(opt, sched, model, 60, full)  # 10 steps past the end of the cycle
    reference = [p.detach().clone() for p in model.parameters()]

    model, opt, sched = _setup()
    part: list = []
    _train(opt, sched, model, 25, part)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)

    model2, opt2, sched2 = _setup()  # fresh objects, as in a new process
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.schedule is not None and sched2.last_epoch == 25
    _train(opt2, sched2, model2, 35, part)
    assert part == full
    for p, r in zip(model2.parameters(), reference, strict=True):
        assert torch.equal(p, r)


def test_schedule_lr_load_alone_reapplies_values() -> None:
    _, opt, sched = _setup()
    for _ in range(17):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert "schedule" not in state and "optimizer" not in state
    _, opt2, sched2 = _setup()
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert _momenta(opt2) == _momenta(opt)


# ------------------------------------------------------------------------------------------------- plot


def test_plot_schedule_returns_figure() -> None:
    fig = plot_schedule(one_cycle(100), 100, momentum=one_cycle_momentum(100), base_lr=0.1)
    axes = fig.get_axes()
    assert len(axes) == 2
    ys = axes[0].get_lines()[0].get_ydata()
    assert len(ys) == 100 and max(ys) == pytest.approx(0.1)
    import matplotlib.pyplot as plt

    plt.close(fig)


# --------------------------------------------------------------------------------------------- bad args


@pytest.mark.parametrize(
    ("make", "exc", "pattern"),
    [
        (lambda: linear_warmup(0), ValueError, r"Invalid warmup_steps: 0; expected an integer >= 1"),
        (lambda: linear_warmup(-5), ValueError, r"Invalid warmup_steps: -5; expected an integer >= 1"),
        (lambda: linear_warmup(5.0), TypeError, r"Invalid warmup_steps: 5.0; expected an integer"),
        (lambda: linear_warmup(5, init_factor=1.5), ValueError, r"init_factor: 1.5; expected .* in \[0, 1\]"),
        (lambda: exponential_warmup(5, init_factor=0.0), ValueError, r"init_factor: 0.0; expected .* \(0, 1\]"),
        (lambda: cosine_decay(0), ValueError, r"Invalid decay_steps: 0; expected an integer >= 1"),
        (lambda: cosine_decay(10, end_factor=-0.1), ValueError, r"end_factor"),
        (lambda: cosine_decay(10, end_factor=2.0), ValueError, r"end_factor: 2.0; expected .* \[0, 1\]"),
        (lambda: step_decay(0), ValueError, r"step_size"),
        (lambda: step_decay(3, gamma=0.0), ValueError, r"gamma"),
        (lambda: multistep_decay([5, 5]), ValueError, r"milestones must be strictly increasing"),
        (lambda: multistep_decay([]), ValueError, r"milestones"),
        (lambda: exponential_decay(1.5), ValueError, r"gamma"),
        (lambda: wsd(100, 60, 50), ValueError, r"warmup_steps \+ decay_steps must be <= total_steps = 100"),
        (lambda: wsd(100, -1, 50), ValueError, r"Invalid warmup_steps: -1; expected an integer >= 0"),
        (lambda: wsd(100, 10, 0), ValueError, r"Invalid decay_steps: 0; expected an integer >= 1"),
        (lambda: wsd(100, 10, 10, decay="sqrt"), ValueError,
         r"Invalid decay: 'sqrt'; expected one of \['1-sqrt', 'cosine', 'linear'\]"),
        (lambda: cyclic(5, 0.1, mode="triangle"), ValueError, r"Invalid mode: 'triangle'; expected one of"),
        (lambda: cyclic(0, 0.1), ValueError, r"Invalid step_size_up: 0; expected an integer >= 1"),
        (lambda: cyclic(5, 0.1, step_size_down=0), ValueError, r"step_size_down"),
        (lambda: cyclic(5, 1.5), ValueError, r"min_factor: 1.5; expected .* \[0, 1\]"),
        (lambda: cyclic(5, 0.1, mode="exp_range", gamma=0.0), ValueError, r"gamma"),
        (lambda: cyclic(5, 0.1, scale_mode="cycle"), ValueError, r"scale_mode"),
        (lambda: cyclic(5, 0.1, scale_fn=lambda x: 1.0, scale_mode="epoch"), ValueError,
         r"Invalid scale_mode: 'epoch'; expected one of \['cycle', 'iterations'\]"),
        (lambda: cyclic_momentum(5, base_momentum=0.95, max_momentum=0.9), ValueError, r"base_momentum must be <="),
        (lambda: sgdr(0), ValueError, r"Invalid period: 0; expected an integer >= 1"),
        (lambda: sgdr(-3), ValueError, r"period"),
        (lambda: sgdr(10, t_mult=0), ValueError, r"Invalid t_mult: 0; expected an integer >= 1"),
        (lambda: sgdr(10, min_factor=1.2), ValueError, r"min_factor"),
        (lambda: one_cycle(1), ValueError, r"Invalid total_steps: 1; expected an integer >= 2"),
        (lambda: one_cycle(100, pct_start=0.0), ValueError, r"pct_start"),
        (lambda: one_cycle(100, pct_start=1.0), ValueError, r"pct_start"),
        (lambda: one_cycle(10, pct_start=0.05), ValueError, r"pct_start must satisfy"),
        (lambda: one_cycle(10, pct_start=0.6, three_phase=True), ValueError, r"pct_start must satisfy"),
        (lambda: one_cycle(100, div_factor=0.5), ValueError, r"div_factor: 0.5; expected .* >= 1"),
        (lambda: one_cycle(100, final_div_factor=0.5), ValueError, r"final_div_factor"),
        (lambda: one_cycle(100, anneal="cosine"), ValueError, r"anneal: 'cosine'; expected one of \['cos', 'linear'"),
        (lambda: one_cycle_momentum(100, base_momentum=0.99), ValueError, r"base_momentum must be <="),
        (lambda: join([], []), ValueError, r"schedules must hold at least one"),
        (lambda: join([constant(), constant()], []), ValueError, r"boundaries must have"),
        (lambda: join([constant(), constant()], [0]), ValueError, r"boundaries must be finite and strictly"),
        (lambda: warmup(constant(), 5, mode="cubic"), ValueError, r"Invalid mode: 'cubic'; expected one of"),
        (lambda: constant()(-1), ValueError, r"step must be a finite number >= 0"),
        (lambda: scale_lr_for_batch_size(0.1, 0, 10), ValueError, r"base_batch_size"),
        (lambda: scale_lr_for_batch_size(-0.1, 10, 10), ValueError, r"base_lr"),
        (lambda: scale_lr_for_batch_size(0.1, 10, 10, rule="log"), ValueError, r"Invalid rule: 'log'; expected one of"),
        (lambda: plot_schedule(constant(), 0), ValueError, r"total_steps"),
        (lambda: ScheduleLR(_sgd(), 0.5), TypeError, r"schedule must be callable"),
        (lambda: ScheduleLR(_sgd(), constant(), last_step=-2), ValueError, r"last_step must be an integer >= -1"),
    ],
)
def test_bad_arguments(make, exc, pattern) -> None:
    with pytest.raises(exc, match=pattern):
        make()


def test_arguments_are_checked_as_numbers_not_bools() -> None:
    """The checks of optimlab.core.validation: numpy integers and reals are numbers, a bool is not (TypeError),
    NaN and infinity are out of any range (ValueError)."""
    assert linear_warmup(np.int64(5))(5) == 1.0
    assert cosine_decay(10, end_factor=np.float32(0.5))(10) == 0.5
    with pytest.raises(TypeError, match="Invalid warmup_steps: True; expected an integer >= 1"):
        linear_warmup(True)
    with pytest.raises(TypeError, match="Invalid end_factor: False; expected a real number"):
        cosine_decay(10, end_factor=False)
    with pytest.raises(ValueError, match="Invalid end_factor: nan"):
        cosine_decay(10, end_factor=math.nan)
    with pytest.raises(ValueError, match="Invalid factor: inf; expected a finite number >= 0"):
        constant(math.inf)
