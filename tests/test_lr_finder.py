"""Tests for optimlab.lr_finder: restoration bit for bit, sweeps, suggestions, accumulation, GradScaler, args."""

from __future__ import annotations

import math
import random

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optimlab.lr_finder import LRFinderResult, lr_find

matplotlib.use("Agg")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 6, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)  # shuffling draws from the global RNG


def _warm(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader) -> None:
    """Give the optimizer state (momentum buffers, step counters) and leave grads set."""
    for x, y in list(loader)[:2]:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    x, y = next(iter(loader))
    nn.functional.cross_entropy(model(x), y).backward()  # leave .grad populated


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer):
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_objs": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "state": {
            i: {k: (v, v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
            for i, p in enumerate(model.parameters())
        },
        "groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
        "n_state": len(opt.state),
    }


def _assert_restored(model: nn.Module, opt: torch.optim.Optimizer, snap, seed_rand: torch.Tensor) -> None:
    for k, v in model.state_dict(keep_vars=True).items():
        assert torch.equal(v.detach(), snap["model"][k]), k
        assert v.dtype == snap["model"][k].dtype
    for p, g, obj in zip(model.parameters(), snap["grads"], snap["grad_objs"], strict=True):
        assert p.grad is obj  # the same tensor object, refilled
        assert (g is None and p.grad is None) or torch.equal(p.grad, g)
    assert [m.training for m in model.modules()] == snap["training"]
    assert len(opt.state) == snap["n_state"]
    for i, p in enumerate(model.parameters()):
        assert set(opt.state[p]) == set(snap["state"][i])
        for k, (obj, val) in snap["state"][i].items():
            if torch.is_tensor(val):
                assert opt.state[p][k] is obj and torch.equal(obj, val), k
            else:
                assert opt.state[p][k] == val
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == snap["groups"]
    assert torch.equal(torch.rand(5), seed_rand)  # the global RNG continues as if lr_find never ran


def _setup(opt_name: str):
    model = _model()
    loader = _loader()
    if opt_name == "sgd":
        opt = torch.optim.SGD(
            [{"params": model[0].parameters(), "lr": 0.05}, {"params": model[4].parameters(), "lr": 0.01}],
            momentum=0.9,
            nesterov=True,
        )
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    _warm(model, opt, loader)
    model.eval()
    model[1].train()  # mixed per-module modes must come back as they were
    return model, opt, loader


def _expected_rand() -> tuple[torch.Tensor, int]:
    torch.manual_seed(123)
    return torch.rand(5), 123


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_restores_after_normal_sweep(opt_name) -> None:
    model, opt, loader = _setup(opt_name)
    snap = _snapshot(model, opt)
    expected, seed = _expected_rand()
    torch.manual_seed(seed)
    res = lr_find(model, opt, nn.functional.cross_entropy, loader, start_lr=1e-5, end_lr=1e-1, num_steps=30)
    assert res.stop_reason == "completed" and res.stop_index == 29 and len(res.lrs) == 30
    _assert_restored(model, opt, snap, expected)


def test_restores_after_divergence() -> None:
    model, opt, loader = _setup("sgd")
    snap = _snapshot(model, opt)
    expected, seed = _expected_rand()
    torch.manual_seed(seed)
    res = lr_find(model, opt, nn.functional.cross_entropy, loader, start_lr=1e-3, end_lr=1e6, num_steps=60)
    assert res.stop_reason in ("diverged", "nonfinite") and res.stop_index < 59
    _assert_restored(model, opt, snap, expected)


def test_restores_after_exception_in_loss() -> None:
    model, opt, loader = _setup("adamw")
    snap = _snapshot(model, opt)
    expected, seed = _expected_rand()
    calls = []

    def bad_loss(out, y):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, y)

    torch.manual_seed(seed)
    with pytest.raises(RuntimeError, match="boom"):
        lr_find(model, opt, bad_loss, loader, num_steps=20)
    assert len(calls) == 7
    _assert_restored(model, opt, snap, expected)


def test_nonfinite_loss_stops() -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.ones(4, 3), torch.zeros(4, 1))]
    n = []

    def loss_fn(out, y):
        n.append(1)
        return torch.tensor(float("nan")) if len(n) == 12 else nn.functional.mse_loss(out, y)

    res = lr_find(model, opt, loss_fn, data, num_steps=50, skip_start=0, skip_end=0)
    assert res.stop_reason == "nonfinite" and res.stop_index == 11 and len(res.lrs) == 12
    assert math.isnan(res.losses[-1]) and all(math.isfinite(v) for v in res.smoothed_losses[:-1])
    assert res.steepest_lr is not None and res.steepest_lr <= res.lrs[10]


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_lr_sequence(mode) -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []

    def loss_fn(out, y):
        seen.append(opt.param_groups[0]["lr"])
        return 0.0 * out.sum() + 1.0  # constant loss: never diverges

    res = lr_find(model, opt, loss_fn, [(torch.ones(1, 2), None)], start_lr=1e-4, end_lr=1.0, num_steps=21, mode=mode)
    want = np.geomspace(1e-4, 1.0, 21) if mode == "exp" else np.linspace(1e-4, 1.0, 21)
    np.testing.assert_allclose(res.lrs, want, rtol=1e-13, atol=0)
    assert seen == res.lrs  # the optimizer saw exactly these lrs
    assert res.lrs[0] == 1e-4 and res.lrs[-1] == 1.0
    assert opt.param_groups[0]["lr"] == 0.5
    assert len(opt.state) == 0  # state created by the sweep is removed again
    assert res.smoothed_losses == pytest.approx([1.0] * 21, rel=1e-12)  # bias correction: no warm-up dip


def test_smoothing_is_bias_corrected_ema() -> None:
    model = nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = iter([4.0, 2.0, 3.0, 1.0, 5.0])
    res = lr_find(model, opt, lambda out, y: 0.0 * out.sum() + next(losses), [(torch.ones(1, 1), None)],
                  num_steps=5, smooth=0.9, diverge_threshold=100.0)
    avg, want = 0.0, []
    for i, v in enumerate([4.0, 2.0, 3.0, 1.0, 5.0]):
        avg = 0.9 * avg + 0.1 * v
        want.append(avg / (1 - 0.9 ** (i + 1)))
    assert res.smoothed_losses == pytest.approx(want, rel=1e-14)
    assert res.losses == [4.0, 2.0, 3.0, 1.0, 5.0]


def test_suggestions_within_stable_range_linear_regression() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 256, 5
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0],
                                                                           dtype=torch.float64)
    y = x @ torch.randn(d, 1, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, 1, generator=g,
                                                                                   dtype=torch.float64)
    lr_crit = 2.0 / torch.linalg.eigvalsh(2.0 / n * x.T @ x).max().item()  # GD on MSE diverges above this
    model = nn.Linear(d, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_find(model, opt, nn.functional.mse_loss, [(x, y)], start_lr=1e-5, end_lr=10.0, num_steps=100)
    assert res.stop_reason == "diverged" and res.lrs[-1] > lr_crit  # the sweep found the unstable region
    for name, lr in res.suggestions.items():
        assert lr is not None and lr_crit / 100 < lr < lr_crit, (name, lr, lr_crit)
    assert res.minimum_lr == pytest.approx(res.lr_at_min_loss / 10, rel=1e-15)


def test_accumulation_equals_large_batch() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 4, generator=g, dtype=torch.float64)
    y = torch.randn(48, 1, generator=g, dtype=torch.float64)
    big = [(x[i : i + 12], y[i : i + 12]) for i in range(0, 48, 12)]
    small = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 48, 4)]

    def run(data, acc):
        torch.manual_seed(0)
        model = nn.Linear(4, 1).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
        count = []

        def loss_fn(out, t):
            count.append(1)
            return nn.functional.mse_loss(out, t)

        res = lr_find(model, opt, loss_fn, data, start_lr=1e-3, end_lr=1.0, num_steps=10, accumulation_steps=acc,
                      diverge_threshold=1e6)
        return res, len(count)

    ref, n_ref = run(big, 1)
    acc, n_acc = run(small, 3)
    assert n_ref == 10 and n_acc == 30
    np.testing.assert_allclose(acc.losses, ref.losses, rtol=1e-12)
    assert acc.lrs == ref.lrs


def test_grad_scaler_cpu() -> None:
    def run(scaler):
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(3)]
        return lr_find(model, opt, nn.functional.mse_loss, data, start_lr=1e-5, end_lr=1.0, num_steps=25,
                       grad_scaler=scaler, diverge_threshold=1e6)

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    assert scaler.is_enabled()
    before = (scaler.get_scale(), scaler._growth_tracker)
    res = run(scaler)
    ref = run(None)
    # power-of-two scaling is exact: the same losses as without a scaler
    assert res.losses == ref.losses
    assert (scaler.get_scale(), scaler._growth_tracker) == before  # scaler state restored (no growth leaked)


def test_restarts_iterable_and_rejects_one_shot_iterator() -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(3, 2, generator=g), torch.randn(3, 1, generator=g)) for _ in range(3)]
    seen = []

    def loss_fn(out, y):
        seen.append(y)
        return nn.functional.mse_loss(out, y)

    res = lr_find(model, opt, loss_fn, data, num_steps=10, end_lr=1e-2, diverge_threshold=1e6)
    assert len(res.lrs) == 10 and res.stop_reason == "completed"
    assert all(s is data[i % 3][1] for i, s in enumerate(seen))  # 0, 1, 2, 0, 1, 2, ...: restarted
    gen = iter(data)
    with pytest.raises(ValueError, match="re-iterable"):
        lr_find(model, opt, nn.functional.mse_loss, gen, num_steps=10, end_lr=1e-2, diverge_threshold=1e6)


def test_plot_marks_suggestions() -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 2, generator=g), torch.randn(16, 1, generator=g))]
    res = lr_find(model, opt, nn.functional.mse_loss, data, num_steps=60, start_lr=1e-4, end_lr=100.0)
    assert isinstance(res, LRFinderResult)
    ax = res.plot()
    n_marked = sum(v is not None for v in res.suggestions.values())
    assert n_marked == 3 and len(ax.collections) == n_marked and ax.get_xscale() == "log"
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_python_and_numpy_rng_restored() -> None:
    model, opt, loader = _setup("sgd")
    random.seed(5)
    np.random.seed(5)
    lr_find(model, opt, nn.functional.cross_entropy, loader, num_steps=5)
    r, a = random.random(), np.random.rand()
    random.seed(5)
    np.random.seed(5)
    assert (r, a) == (random.random(), np.random.rand())


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, ValueError, r"end_lr: 1.0; expected a finite number > start_lr = 1.0"),
        ({"start_lr": 2.0, "end_lr": 1.0}, ValueError, r"end_lr: 1.0; expected .* > start_lr"),
        ({"start_lr": 0.0}, ValueError, r"Invalid start_lr: 0.0; expected a finite number > 0"),
        ({"start_lr": -1e-3}, ValueError, r"Invalid start_lr: -0.001; expected a finite number > 0"),
        ({"end_lr": math.inf}, ValueError, r"end_lr"),
        ({"num_steps": 1}, ValueError, r"Invalid num_steps: 1; expected an integer >= 2"),
        ({"num_steps": 10.0}, TypeError, r"Invalid num_steps: 10.0; expected an integer"),
        ({"smooth": 1.0}, ValueError, r"Invalid smooth: 1.0; expected a finite number in \[0, 1\)"),
        ({"smooth": -0.1}, ValueError, r"Invalid smooth: -0.1; expected .* in \[0, 1\)"),
        ({"diverge_threshold": 1.0}, ValueError, r"Invalid diverge_threshold: 1.0; expected a finite number > 1"),
        ({"accumulation_steps": 0}, ValueError, r"Invalid accumulation_steps: 0; expected an integer >= 1"),
        ({"mode": "log"}, ValueError, r"Invalid mode: 'log'; expected one of \['exp', 'linear'\]"),
        ({"grad_scaler": object()}, TypeError, r"grad_scaler must be a torch.amp.GradScaler"),
        ({"skip_end": -1}, ValueError, r"Invalid skip_end: -1; expected an integer >= 0"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern) -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with pytest.raises(exc, match=pattern):
        lr_find(model, opt, nn.functional.mse_loss, [(torch.ones(1, 2), torch.ones(1, 1))], **kwargs)
    assert torch.equal(model.weight, before)


def test_numpy_numbers_are_accepted_as_arguments() -> None:
    """Integers and reals as optimlab.core.validation checks them (the schedules' checks too): numpy's count."""
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, opt, nn.functional.mse_loss, [(torch.ones(1, 2), torch.ones(1, 1))],
                     num_steps=np.int64(5), start_lr=np.float32(1e-3), end_lr=1.0)
    assert len(result.lrs) == 5 and result.lrs[0] == pytest.approx(1e-3)


def test_bad_objects() -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.ones(1, 2), torch.ones(1, 1))]
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        lr_find(lambda x: x, opt, nn.functional.mse_loss, data)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        lr_find(model, None, nn.functional.mse_loss, data)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        lr_find(model, opt, 3, data)
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pairs"):
        lr_find(model, opt, nn.functional.mse_loss, [torch.ones(1, 2)])


def test_tensor_lr_filled_in_place_and_restored() -> None:
    model = nn.Linear(3, 1)
    lr = torch.tensor(0.25)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    seen = []

    def loss_fn(out, y):
        seen.append((opt.param_groups[0]["lr"] is lr, lr.item()))
        return nn.functional.mse_loss(out, y)

    data = [(torch.ones(2, 3), torch.zeros(2, 1))]
    res = lr_find(model, opt, loss_fn, data, start_lr=1e-3, end_lr=1e-1, num_steps=5, diverge_threshold=1e6)
    assert all(same for same, _ in seen)
    assert [v for _, v in seen] == pytest.approx(res.lrs, rel=1e-6)  # float32 tensor
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.25


def test_steepest_suggestion_lies_on_the_way_down_to_the_minimum():
    """After a spike the smoothed loss decays again; that decay must not be taken for the steepest descent."""
    from optimlab.lr_finder import _suggest

    lrs = list(np.geomspace(1e-5, 10, 40))
    down = list(np.linspace(2.3, 1.0, 25))  # descent, steepest in the middle of it
    down[10:15] = list(np.linspace(down[10], down[10] - 0.6, 5))
    down[15:25] = list(np.linspace(down[14], 0.5, 10))
    after = [3.5, 3.3, 3.1, 2.9, 2.7, 2.5, 2.3, 2.1, 1.9, 1.7, 1.6, 1.55, 1.5, 1.45, 1.4]  # spike, then EMA decay
    steepest, _, _, at_min, _ = _suggest(lrs, down + after, 0, 0)
    assert steepest <= at_min and lrs[10] <= steepest <= lrs[15]
