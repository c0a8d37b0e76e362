"""optimlab.diagnostics: interpolation, filter-normalized directions, landscapes, trajectory PCA, evaluation modes,
and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from optimlab import diagnostics


class Quadratic(nn.Module):
    """f(theta) = 1/2 theta^T A theta - b^T theta over two parameter tensors (a 2x2 block and a vector)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64))
        self.v = nn.Parameter(torch.tensor([0.3, -0.7], dtype=torch.float64))
        g = torch.Generator().manual_seed(0)
        m = torch.randn(6, 6, generator=g, dtype=torch.float64)
        self.register_buffer("A", m @ m.T + torch.eye(6, dtype=torch.float64))
        self.register_buffer("b", torch.randn(6, generator=g, dtype=torch.float64))

    def flat(self) -> torch.Tensor:
        return torch.cat([self.w.reshape(-1), self.v])

    def forward(self, _=None) -> torch.Tensor:
        t = self.flat()
        return 0.5 * t @ self.A @ t - self.b @ t


def loss_of_output(out, _):
    return out


def test_interpolation_on_a_convex_quadratic_is_the_exact_parabola():
    model = Quadratic()
    a = [torch.randn(2, 2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    b = {"w": torch.randn(2, 2, dtype=torch.float64), "v": torch.randn(2, dtype=torch.float64), "A": model.A}
    alphas = np.linspace(-0.5, 1.5, 9)
    res = diagnostics.interpolate(model, a, b, loss_of_output, [(None, None)], alphas)
    ta = torch.cat([a[0].reshape(-1), a[1]])
    d = torch.cat([b["w"].reshape(-1), b["v"]]) - ta
    A, bb = model.A, model.b
    f0 = float(0.5 * ta @ A @ ta - bb @ ta)
    slope = float((A @ ta - bb) @ d)
    curv = float(d @ A @ d)
    np.testing.assert_allclose(res.loss, f0 + slope * alphas + 0.5 * curv * alphas**2, rtol=1e-13)
    assert res.cost.forward_passes == 9 and np.isnan(res.metric).all()
    alphas = diagnostics.default_alphas()
    assert res.alphas[0] == -0.5 and alphas[4] == pytest.approx(0.0) and alphas[24] == 1.0


def test_landscape_of_a_two_parameter_function_is_the_function_on_the_grid():
    from optimlab.lab.catalog.tasks import TASKS

    task = TASKS["rosenbrock"]
    model = task.model(None)
    ex = [torch.tensor([1.0, 0.0], dtype=torch.float64)]
    ey = [torch.tensor([0.0, 1.0], dtype=torch.float64)]
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-0.5, 2.0, 5)
    res = diagnostics.landscape(model, task.loss_fn, [(None, None)], [ex, ey], grid=[xs, ys])
    x0, y0 = task.start
    want = np.array([[(1 - (x0 + a)) ** 2 + 100 * ((y0 + b) - (x0 + a) ** 2) ** 2 for b in ys] for a in xs])
    assert res.loss.shape == (7, 5)
    np.testing.assert_allclose(res.loss, want, rtol=1e-14)
    assert model.xy.tolist() == list(task.start)  # restored
    one = diagnostics.landscape(model, task.loss_fn, [(None, None)], [ex], grid=xs)
    np.testing.assert_allclose(one.loss, [(1 - (x0 + a)) ** 2 + 100 * (y0 - (x0 + a) ** 2) ** 2 for a in xs],
                               rtol=1e-14)


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_filter_normalization_gives_each_filter_the_norm_of_the_weights_filter():
    model = _convnet()
    (d,) = diagnostics.random_directions(model, 1, seed=1)
    for (name, p), t in zip(model.named_parameters(), d, strict=True):
        if p.dim() <= 1:
            assert torch.count_nonzero(t) == 0, name  # biases and BatchNorm weights: ignored
            continue
        for i in range(p.shape[0]):  # one filter per output channel / row
            assert float(t[i].norm()) == pytest.approx(float(p[i].detach().norm()), rel=1e-6), (name, i)
        assert not torch.allclose(t, p)  # random, not the weights
    (kept,) = diagnostics.random_directions(model, 1, ignore=None, seed=1)
    for p, t in zip(model.parameters(), kept, strict=True):
        if p.dim() <= 1:
            assert torch.equal(t, p.detach())  # the reference's choice: d = theta for 1-d tensors
    (layer,) = diagnostics.random_directions(model, 1, norm="layer", seed=1)
    for p, t in zip(model.parameters(), layer, strict=True):
        if p.dim() > 1:
            assert float(t.norm()) == pytest.approx(float(p.detach().norm()), rel=1e-6)
    (raw,) = diagnostics.random_directions(model, 1, filter_normalize=False, seed=1)
    g = torch.Generator().manual_seed(1)
    assert all(torch.equal(t, torch.randn(p.shape, generator=g, dtype=torch.float64).float())
               for p, t in zip(model.parameters(), raw, strict=True))
    a, b = diagnostics.random_directions(model, 2, seed=3)
    assert not torch.equal(a[0], b[0])


def test_landscape_restores_the_model_and_handles_batchnorm_and_dropout():
    model = _convnet()
    model.insert(3, nn.Dropout(0.5))
    x, y = torch.randn(40, 2, 6, 6), torch.randint(0, 3, (40,))
    model.train()
    model(x)  # some running statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches = diagnostics.fixed_batches(x, y, 16)
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    dirs = diagnostics.random_directions(model, 2)
    acc = lambda out, t: (out.argmax(1) == t).float().mean()  # noqa: E731
    rng = torch.get_rng_state()
    res = diagnostics.landscape(model, nn.functional.cross_entropy, batches, dirs, grid=[-0.5, 0.0, 0.5], metric_fn=acc,
                                bn="eval")
    assert torch.equal(torch.get_rng_state(), rng)  # dropout off: no draws
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert res.loss[1, 1] == pytest.approx(float(nn.functional.cross_entropy(out, y)), rel=1e-6)
    assert res.metric[1, 1] == pytest.approx(float(acc(out, y)), rel=1e-6)
    # recompute: statistics re-estimated at the point, as update_bn does
    rec = diagnostics.landscape(model, nn.functional.cross_entropy, batches, dirs, grid=[0.0], bn="recompute")
    ref = _convnet()
    ref.insert(3, nn.Dropout(0.5))
    ref.load_state_dict(state)
    torch.optim.swa_utils.update_bn([b[0] for b in batches], ref)  # (the dropout comes after the BatchNorm)
    ref.eval()
    with torch.no_grad():
        want = float(nn.functional.cross_entropy(ref(x), y))
    assert rec.loss[0, 0] == pytest.approx(want, rel=1e-6)
    assert rec.cost.bn_batches == 3 and rec.cost.forward_passes == 6
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # statistics put back
    batch = diagnostics.landscape(model, nn.functional.cross_entropy, [(x, y)], dirs[:1], grid=[0.0], bn="batch")
    ref.train()
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        assert batch.loss[0] == pytest.approx(float(nn.functional.cross_entropy(ref(x), y)), rel=1e-6)


def test_non_finite_loss_at_a_grid_point_is_recorded_not_raised():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))

        def forward(self, _=None):
            return torch.exp(self.t[0] * 1000.0) - torch.log(1.0 + self.t[0])

    model = Exploding()
    grid = [-2.0, -0.5, 0.0, 1.0]
    res = diagnostics.landscape(model, loss_of_output, [(None, None)], [[torch.tensor([1.0], dtype=torch.float64)]],
                                grid)
    assert math.isnan(res.loss[0]) and math.isinf(res.loss[3])  # log of a negative number; exp overflow
    assert res.loss[2] == 1.0 and res.finite.tolist() == [False, True, True, False]
    assert res.to_dict()["loss"][0] is None


def test_trajectory_pca_finds_the_plane_of_a_planar_path():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2)).double()
    shapes = [p.shape for p in model.parameters()]
    center = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    u = [torch.randn(s, generator=g, dtype=torch.float64) * (len(s) > 1) for s in shapes]
    v = [torch.randn(s, generator=g, dtype=torch.float64) * (len(s) > 1) for s in shapes]
    ts = np.linspace(0, 1, 12)
    path = [[c + (3 * (1 - t)) * a + math.sin(4 * t) * b for c, a, b in zip(center, u, v, strict=True)] for t in ts]
    path[-1] = center
    pca = diagnostics.trajectory_pca(path, model=model)
    assert pca.coords.shape == (12, 2)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-10)
    assert (pca.coords[0] <= 0).all() and np.allclose(pca.coords[-1], 0)
    # every checkpoint is exactly reproduced from its two coordinates
    for point, (x, y) in zip(path, pca.coords, strict=True):
        recon = [c + x * d1 + y * d2 for c, d1, d2 in zip(center, *pca.directions, strict=True)]
        assert all(torch.allclose(r, p, atol=1e-10) for r, p in zip(recon, point, strict=True))
    # the directions are unit, orthogonal, and the principal axes of the centred difference matrix (sklearn's PCA)
    flat = [torch.cat([t.reshape(-1) for t in d]) for d in pca.directions]
    assert float(flat[0] @ flat[1]) == pytest.approx(0.0, abs=1e-10) and float(flat[0].norm()) == pytest.approx(1.0)
    rows = np.array([torch.cat([(p - c).reshape(-1) for p, c in zip(pt, center, strict=True)]).numpy() for pt in path])
    _, s, vt = np.linalg.svd(rows - rows.mean(0), full_matrices=False)
    for k in range(2):
        assert abs(float(flat[k].numpy() @ vt[k])) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(pca.explained_variance_ratio, (s**2 / (s**2).sum())[:2], rtol=1e-9)
    assert all(torch.count_nonzero(t) == 0 for d in pca.directions for t in d if t.dim() == 1)  # biasbn
    np.testing.assert_allclose(diagnostics.project(path[3], center, pca.directions), pca.coords[3], atol=1e-10)


# ------------------------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing lost


def test_bad_input_for_interpolation_and_landscapes():
    model = nn.Sequential(nn.Linear(3, 2))
    ce = nn.functional.cross_entropy
    batches = [(torch.randn(4, 3), torch.randint(0, 2, (4,)))]
    good = model.state_dict()
    before = {k: v.clone() for k, v in good.items()}
    with pytest.raises(ValueError, match=r"Invalid theta_b: .*without \['0.bias'\]"):
        diagnostics.interpolate(model, good, {"0.weight": good["0.weight"]}, ce, batches)
    with pytest.raises(ValueError, match=r"Invalid theta_b: .*unknown keys \['1.weight'\]"):
        diagnostics.interpolate(model, good, {**good, "1.weight": torch.zeros(2, 2)}, ce, batches)
    with pytest.raises(ValueError, match=r"Invalid theta_a\['0.weight'\]: 'shape \(3, 2\)'; expected shape \(2, 3\)"):
        diagnostics.interpolate(model, {**good, "0.weight": torch.zeros(3, 2)}, good, ce, batches)
    with pytest.raises(ValueError, match=r"Invalid theta_b: 'a sequence of 1 tensors'"):
        diagnostics.interpolate(model, good, [torch.zeros(2, 3)], ce, batches)
    with pytest.raises(TypeError, match=r"Invalid theta_a"):
        diagnostics.interpolate(model, 3.0, good, ce, batches)
    with pytest.raises(ValueError, match=r"Invalid alphas: 'an empty grid'; expected at least one point"):
        diagnostics.interpolate(model, good, good, ce, batches, alphas=[])
    with pytest.raises(ValueError, match=r"Invalid grid: 'an empty grid'"):
        diagnostics.landscape(model, ce, batches, diagnostics.random_directions(model, 1), grid=[])
    with pytest.raises(ValueError, match=r"Invalid grid\[1\]: 'an empty grid'"):
        diagnostics.landscape(model, ce, batches, diagnostics.random_directions(model, 2), grid=[[0.0], []])
    with pytest.raises(ValueError, match=r"Invalid alphas: \[0.0, nan\]; expected finite numbers"):
        diagnostics.interpolate(model, good, good, ce, batches, alphas=[0.0, math.nan])
    with pytest.raises(ValueError, match=r"Invalid batches: 'no batches'"):
        diagnostics.interpolate(model, good, good, ce, [])
    with pytest.raises(ValueError, match=r"Invalid directions: '3 directions'"):
        diagnostics.landscape(model, ce, batches, diagnostics.random_directions(model, 3))
    with pytest.raises(TypeError, match=r"wrap a single direction"):
        diagnostics.landscape(model, ce, batches, diagnostics.random_directions(model, 1)[0])
    with pytest.raises(ValueError, match=r"Invalid bn: 'stale'"):
        diagnostics.interpolate(model, good, good, ce, batches, bn="stale")
    with pytest.raises(ValueError, match=r"Invalid norm: 'l1'"):
        diagnostics.random_directions(model, 1, norm="l1")
    with pytest.raises(ValueError, match=r"has no parameters|at least one trainable parameter"):
        diagnostics.interpolate(nn.ReLU(), {}, {}, ce, batches)
    with pytest.raises(ValueError, match=r"at least one trainable parameter"):
        diagnostics.random_directions(nn.Sequential(), 1)
    with pytest.raises(ValueError, match=r"at least 2 checkpoints"):
        diagnostics.trajectory_pca([good], model=model)
    with pytest.raises(ValueError, match=r"Invalid checkpoints\[1\]"):
        diagnostics.trajectory_pca([[torch.zeros(2, 3)], [torch.zeros(3, 2)]])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing lost


def test_model_is_restored_when_the_loss_raises_mid_landscape():
    model = nn.Sequential(nn.Linear(3, 2))
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def failing(out, y):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        diagnostics.landscape(model, failing, [(torch.randn(4, 3), torch.randint(0, 2, (4,)))],
                              diagnostics.random_directions(model, 2))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
