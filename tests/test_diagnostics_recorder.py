"""optimlab.diagnostics.Recorder: closed forms on a quadratic, trajectory neutrality over the whole test registry
and the wrappers, trust ratios against the applied update, histograms and the gradient noise scale."""

from __future__ import annotations

import math

import numpy as np
import optim_db
import problems
import pytest
import torch

import optimlab
from optimlab import diagnostics

# ------------------------------------------------------------------------------------------------------------
# Closed forms: full-batch GD on a quadratic


def _gd_on_quadratic(lr: float, steps: int, every: int = 1):
    lam = [torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([10.0], dtype=torch.float64)]
    theta0 = [torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)]
    params = [t.clone().requires_grad_() for t in theta0]
    opt = optimlab.SGD(params, lr=lr)
    rec = diagnostics.Recorder(opt, every=every)
    for _ in range(steps):
        opt.zero_grad()
        sum(0.5 * (l * p * p).sum() for l, p in zip(lam, params, strict=True)).backward()
        opt.step()
    rec.close()
    # closed form: theta_t = (1 - lr*lambda)^t theta_0, element-wise
    a = np.concatenate([x.numpy() for x in lam])
    t0 = np.concatenate([x.numpy() for x in theta0])
    theta = np.array([(1 - lr * a) ** t * t0 for t in range(steps + 1)])
    return rec, theta


def test_gd_beyond_one_over_lambda_max_oscillates_and_cosine_goes_to_minus_one():
    lr = 0.19  # lambda_max = 10: 1 - lr*10 = -0.9 dominates 1 - lr*1 = 0.81, 1 - lr*3 = 0.43
    rec, theta = _gd_on_quadratic(lr, 60)
    delta = np.diff(theta, axis=0)
    cos = [np.nan] + [delta[t] @ delta[t - 1] / np.linalg.norm(delta[t]) / np.linalg.norm(delta[t - 1])
                      for t in range(1, len(delta))]
    got = rec.array("cos_prev")
    assert rec.history["step"] == list(range(1, 61))
    assert math.isnan(got[0])
    np.testing.assert_allclose(got[1:], cos[1:], rtol=1e-12, atol=1e-14)
    assert got[-1] < -0.999 and got[5] > -0.999  # settles at -1
    # per layer: the one-element layer (lambda = 10) flips sign every step: cosine exactly -1
    np.testing.assert_allclose(rec.array("layer.cos_prev")[1:, 1], -1.0, rtol=0, atol=1e-15)


def test_distance_from_init_and_norms_match_the_closed_form_iterate():
    lr = 0.19
    rec, theta = _gd_on_quadratic(lr, 30, every=3)
    steps = np.array(rec.history["step"])
    np.testing.assert_array_equal(steps, np.arange(3, 31, 3))
    dist = np.linalg.norm(theta[steps] - theta[0], axis=1)
    np.testing.assert_allclose(rec.array("dist_init"), dist, rtol=1e-12)
    np.testing.assert_allclose(rec.array("dist_init_sq"), dist**2, rtol=1e-12)
    upd = np.linalg.norm(theta[steps] - theta[steps - 1], axis=1)
    np.testing.assert_allclose(rec.array("update_norm"), upd, rtol=1e-12)
    lam = np.array([1.0, 3.0, 10.0])
    grad = lam * theta[steps - 1]
    np.testing.assert_allclose(rec.array("grad_norm"), np.linalg.norm(grad, axis=1), rtol=1e-12)
    # effective lr per layer of plain SGD is the lr itself
    np.testing.assert_allclose(rec.array("layer.effective_lr"), lr, rtol=1e-12)
    # with every=3 the cosine needs the update of step t-1: recorded too
    delta = np.diff(theta, axis=0)
    cos = [delta[t - 1] @ delta[t - 2] / np.linalg.norm(delta[t - 1]) / np.linalg.norm(delta[t - 2]) for t in steps]
    np.testing.assert_allclose(rec.array("cos_prev"), cos, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Trajectory neutrality: bit-identical parameters and state with and without the recorder


def _run(make, record: int | None, steps: int = 12):
    params = problems.make_params(torch.float64, seed=3)
    opt = make(params)
    rec = diagnostics.Recorder(opt, every=record) if record else None
    problems.run(opt, params, steps, seed=5)
    if rec is not None:
        assert len(rec.history["step"]) == steps // record
        rec.close()
    return params, opt.state_dict()


def _assert_same(a, b):
    pa, sa = a
    pb, sb = b
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y)
    flat_a = [v for st in sa["state"].values() for v in st.values() if isinstance(v, torch.Tensor)]
    flat_b = [v for st in sb["state"].values() for v in st.values() if isinstance(v, torch.Tensor)]
    assert len(flat_a) == len(flat_b) and all(torch.equal(x, y) for x, y in zip(flat_a, flat_b, strict=True))


@pytest.mark.parametrize("case", optim_db.CASES, ids=[optim_db.case_id(c) for c in optim_db.CASES])
def test_recording_is_trajectory_neutral_for_every_registered_optimizer(case):
    info, cfg = case
    def make(params):
        return info.make(params, **cfg)

    plain = _run(make, None)
    _assert_same(plain, _run(make, 1))
    _assert_same(plain, _run(make, 5))


WRAPPERS = {
    "lookahead": lambda ps: optimlab.Lookahead(optimlab.Adam(ps, lr=0.01), k=3, alpha=0.5),
    "lookahead_lamb": lambda ps: optimlab.Lookahead(optimlab.LAMB(ps, lr=0.01, weight_decay=0.01), k=2),
    "gradient_noise": lambda ps: optimlab.GradientNoise(optimlab.SGD(ps, lr=0.05, momentum=0.9), eta=0.1, seed=1),
    "gradient_noise_lars": lambda ps: optimlab.GradientNoise(optimlab.LARS(ps, lr=1.0), eta=0.01, seed=2),
    "swa": lambda ps: optimlab.SWA(optimlab.AdamW(ps, lr=0.01), start=2, every=2),
    "ema": lambda ps: optimlab.EMA(optimlab.RAdam(ps, lr=0.01), decay=0.9),
    "composed": lambda ps: optimlab.SWA(optimlab.Lookahead(optimlab.GradientNoise(optimlab.NAdam(ps, lr=0.01),
                                                                                   eta=0.01, seed=0), k=2),
                                        start=1, every=1),
    "torch_adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
}


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_recording_is_trajectory_neutral_for_the_wrappers(name):
    make = WRAPPERS[name]
    plain = _run(make, None)
    _assert_same(plain, _run(make, 1))
    _assert_same(plain, _run(make, 4))


def test_every_registered_optimizer_is_in_the_neutrality_test():
    assert {info.name for info in optim_db.DB} >= set(optimlab.OPTIMIZERS)


def test_lookahead_update_includes_the_synchronisation():
    params = problems.make_params(torch.float64, seed=1)
    opt = optimlab.Lookahead(optimlab.SGD(params, lr=0.1), k=2, alpha=0.5)
    rec = diagnostics.Recorder(opt, every=1)
    before = []
    for k in range(4):
        before.append([p.detach().clone() for p in params])
        problems.run(opt, params, 1, start=k)
    after = [p.detach() for p in params]
    want = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before[-1], strict=True)))
    assert rec.history["update_norm"][-1] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Trust ratios, checked against the update the optimizer applied


def _layer_steps(make, steps=6):
    params = problems.make_params(torch.float64, seed=4)
    params[2] = params[2].detach().zero_().requires_grad_()  # a zero-weight layer: the guarded ratio 1
    opt = make(params)
    rec = diagnostics.Recorder(opt, every=1)
    out = []
    for k in range(steps):
        before = [p.detach().clone() for p in params]
        problems.run(opt, params, 1, start=k)
        grads = [p.grad.detach().clone() for p in params]
        deltas = [p.detach() - b for p, b in zip(params, before, strict=True)]
        state = [{k2: v.clone() for k2, v in opt.state[p].items()} for p in params] if hasattr(opt, "state") else []
        out.append((before, grads, deltas, state, rec.history["layer"]["trust_ratio"][-1]))
    return out


# maximize with weight decay and the "norm" denominator: the only case where the ratio sees the sign of g
@pytest.mark.parametrize("cfg", [dict(), dict(trust_denominator="norm"), dict(maximize=True, weight_decay=0.0),
                                 dict(maximize=True, trust_denominator="norm")])
def test_lars_trust_ratios_are_the_ones_applied(cfg):
    cfg = dict(cfg)
    lr, wd = 0.5, cfg.pop("weight_decay", 0.01)
    make = lambda ps: optimlab.LARS(ps, lr=lr, momentum=0.0, weight_decay=wd, trust_coefficient=0.02, **cfg)  # noqa: E731
    for t, (before, grads, deltas, _, ratios) in enumerate(_layer_steps(make)):
        for w, g, d, r in zip(before, grads, deltas, ratios, strict=True):
            g = -g if cfg.get("maximize") else g
            u = g + wd * w
            # without momentum the step is exactly -lr * ratio * (g + wd w)
            torch.testing.assert_close(d, -lr * r * u, rtol=1e-10, atol=1e-14)
        assert t > 0 or ratios[2] == 1.0  # zero weights at the first step: the guard


@pytest.mark.parametrize("cfg", [dict(weight_decay=0.01), dict(bias_correction=False), dict(max_weight_norm=1.5)])
def test_lamb_trust_ratios_are_the_ones_applied(cfg):
    lr = 0.01
    make = lambda ps: optimlab.LAMB(ps, lr=lr, **cfg)  # noqa: E731
    betas, eps, wd = (0.9, 0.999), 1e-6, cfg.get("weight_decay", 0.0)
    for t, (before, _, deltas, state, ratios) in enumerate(_layer_steps(make), start=1):
        for w, d, st, r in zip(before, deltas, state, ratios, strict=True):
            bc1, bc2 = (1 - betas[0] ** t, 1 - betas[1] ** t) if cfg.get("bias_correction", True) else (1, 1)
            direction = (st["exp_avg"] / bc1) / ((st["exp_avg_sq"] / bc2).sqrt() + eps) + wd * w
            torch.testing.assert_close(d, -lr * r * direction, rtol=1e-9, atol=1e-15)
            w_norm = min(float(w.norm()), cfg.get("max_weight_norm", math.inf))
            if w_norm > 0:
                assert r == pytest.approx(w_norm / float(direction.norm()), rel=1e-10)
        assert t > 1 or ratios[2] == 1.0


def test_trust_ratios_absent_where_the_optimizer_has_none_and_for_excluded_groups():
    model = torch.nn.Linear(3, 2)
    opt = optimlab.create_optimizer("lamb", model, lr=0.01, weight_decay=0.01, exclude_from_decay=True)
    rec = diagnostics.Recorder(opt, model, every=1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ratios = dict(zip(rec.layers, rec.history["layer"]["trust_ratio"][0], strict=True))
    assert math.isfinite(ratios["weight"]) and math.isnan(ratios["bias"])  # the bias is excluded from adaptation
    opt2 = optimlab.Adam(model.parameters(), lr=0.01)
    rec2 = diagnostics.Recorder(opt2, every=1)
    opt2.step()
    assert all(math.isnan(r) for r in rec2.history["layer"]["trust_ratio"][0])
    noisy = optimlab.GradientNoise(optimlab.LARS(model.parameters(), lr=1.0), eta=0.1, seed=0)
    assert not diagnostics.has_trust_ratios(noisy)


# ------------------------------------------------------------------------------------------------------------
# Histograms, bad input, JSON


def test_abs_histogram_bins_are_fixed_and_log_spaced():
    bins = diagnostics.LogBins(-3, 1, 2)  # edges 1e-3, 10^-2.5, 1e-2, ..., 10
    assert bins.count == 8
    np.testing.assert_allclose(bins.edges, 10.0 ** np.arange(-3, 1.01, 0.5))
    x = torch.tensor([0.0, -0.0, 1e-5, 2e-3, -5e-3, 0.02, 0.5, 0.99, 3.0, 100.0, math.inf, math.nan])
    h = diagnostics.abs_histogram([x[:6], x[6:]], bins)
    assert h.counts.tolist() == [1, 1, 1, 0, 0, 2, 1, 0]
    assert (h.zero, h.under, h.over, h.nonfinite, h.total) == (2, 1, 1, 2, 12)


def test_recorder_histograms_count_every_element():
    params = problems.make_params(torch.float64)
    opt = optimlab.Adam(params, lr=0.01)
    rec = diagnostics.Recorder(opt, every=2, bins=diagnostics.LogBins(-8, 1, 1))
    problems.run(opt, params, 4)
    n = sum(p.numel() for p in params)
    for key in ("grad", "update", "step_size"):
        for counts, outside in zip(rec.history["hist"][key], rec.history["hist_outside"][key], strict=True):
            assert len(counts) == 9 and sum(counts) + sum(outside) == n
    # Adam's first step moves every coordinate by lr (= 0.02 here): all updates in the bin [1e-2, 1e-1)
    rec1 = diagnostics.Recorder(optimlab.Adam(ps := problems.make_params(torch.float64), lr=0.02), every=1,
                                bins=diagnostics.LogBins(-8, 1, 1))
    problems.run(rec1.optimizer, ps, 1)
    assert rec1.history["hist"]["update"][0][6] == n


def test_recorder_bad_input():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r"Invalid every: 0; expected a positive integer"):
        diagnostics.Recorder(optimlab.SGD([p], lr=0.1), every=0)
    with pytest.raises(TypeError, match=r"Invalid optimizer"):
        diagnostics.Recorder([p])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Invalid per_decade"):
        diagnostics.LogBins(-3, 1, 0)
    with pytest.raises(ValueError, match=r"Invalid high"):
        diagnostics.LogBins(1, -3)


def test_recorder_to_dict_is_json_and_close_stops_recording():
    import json

    params = problems.make_params(torch.float64)
    opt = optimlab.LAMB(params, lr=0.01)
    rec = diagnostics.Recorder(opt, every=1)
    problems.run(opt, params, 3)
    rec.close()
    problems.run(opt, params, 2, start=3)
    d = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert d["step"] == [1, 2, 3] and d["cos_prev"][0] is None and len(d["layers"]) == len(params)
    assert rec.steps == 3


# ------------------------------------------------------------------------------------------------------------
# Gradient noise scale


def test_noise_scale_estimates_are_unbiased():
    # micro-batch gradients G + noise with per-example covariance Sigma: a micro-batch of b examples has
    # covariance Sigma / b. Known |G|^2 = 5, tr(Sigma) = 40.
    g = torch.Generator().manual_seed(0)
    G = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    sd = torch.tensor([1.0, 2.0, 3.0, math.sqrt(26.0)], dtype=torch.float64)  # variances sum to 40
    b, k, draws = 8, 4, 4000
    ests = [diagnostics.noise_scale_from_gradients(
        [[G + sd * torch.randn(4, generator=g, dtype=torch.float64) / math.sqrt(b)] for _ in range(k)], b)
        for _ in range(draws)]
    g2 = np.array([e.g2 for e in ests])
    tr = np.array([e.trace for e in ests])
    assert abs(g2.mean() - 5.0) < 4 * g2.std() / math.sqrt(draws)
    assert abs(tr.mean() - 40.0) < 4 * tr.std() / math.sqrt(draws)
    tracker = diagnostics.NoiseScaleTracker(beta=0.999)
    for e in ests:
        smooth = tracker.update(e)
    assert smooth == pytest.approx(8.0, rel=0.1)


def test_gradient_noise_scale_touches_nothing():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.3),
                                torch.nn.Linear(16, 3)).double()
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randint(0, 3, (32,))
    loss_fn = torch.nn.functional.cross_entropy
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    est = diagnostics.gradient_noise_scale(model, loss_fn, (x, y), parts=4)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers, strict=True))
    assert model.training
    # the same numbers from the four slices' gradients computed by hand (with the same dropout draws)
    with torch.random.fork_rng():
        manual = []
        for i in range(4):
            loss = loss_fn(model(x[8 * i:8 * i + 8]), y[8 * i:8 * i + 8])
            manual.append([t.detach() for t in torch.autograd.grad(loss, list(model.parameters()))])
    ref = diagnostics.noise_scale_from_gradients(manual, 8)
    assert est.g2 == pytest.approx(ref.g2, rel=1e-12) and est.trace == pytest.approx(ref.trace, rel=1e-12)
    with pytest.raises(ValueError, match="Invalid parts"):
        diagnostics.gradient_noise_scale(model, loss_fn, (x, y), parts=1)


def test_recorder_records_the_noise_scale_with_the_step():
    model = torch.nn.Linear(4, 1).double()
    opt = optimlab.SGD(model.parameters(), lr=0.01)
    rec = diagnostics.Recorder(opt, model, every=1)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    mse = torch.nn.functional.mse_loss
    mse(model(x), y).backward()
    opt.step()
    smooth = rec.record_noise_scale(model, mse, (x, y), parts=4)
    assert rec.history["noise"]["step"] == [1] and rec.history["noise"]["b_simple_ema"] == [smooth]
