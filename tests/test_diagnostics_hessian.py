"""optimlab.diagnostics.hessian: power iteration and Hutchinson's trace against known and explicit Hessians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from optimlab import diagnostics


class Quadratic(nn.Module):
    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        n = A.shape[0]
        self.a = nn.Parameter(torch.linspace(-1, 1, n - 2, dtype=torch.float64).reshape(-1))
        self.b = nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
        self.register_buffer("A", A)

    def forward(self, _=None) -> torch.Tensor:
        t = torch.cat([self.a, self.b])
        return 0.5 * t @ self.A @ t


def out_loss(out, _):
    return out


def _spd(eigs: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T


def test_power_iteration_finds_the_known_top_eigenvalues_of_a_quadratic():
    eigs = [7.0, -3.0, 2.0, 1.0, 0.5, 0.1]
    model = Quadratic(_spd(eigs))
    top = diagnostics.top_hessian_eigenvalue(model, out_loss, (None, None), iters=500, tol=1e-12)
    assert top.converged and top.value == pytest.approx(7.0, rel=1e-9)
    both = diagnostics.top_hessian_eigenvalues(model, out_loss, (None, None), k=3, iters=1000, tol=1e-12)
    assert [e.value for e in both] == pytest.approx([7.0, -3.0, 2.0], rel=1e-8)  # by magnitude, with deflation
    assert both[0].to_dict()["converged"] is True


def test_hutchinson_is_exact_on_a_diagonal_hessian():
    eigs = [5.0, 2.0, -1.0, 0.25]
    model = Quadratic(torch.diag(torch.tensor(eigs, dtype=torch.float64)))
    tr = diagnostics.hessian_trace(model, out_loss, (None, None), iters=3, tol=0.0)
    assert tr.samples == pytest.approx([sum(eigs)] * 3, rel=1e-14)  # v^T D v = tr(D) for every Rademacher v
    assert tr.value == pytest.approx(6.25, rel=1e-14)


def _mlp_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, 2, dtype=torch.float64)
    return model, x, y


def _explicit_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = math.prod(s)
            params[n] = flat[i:i + k].reshape(s)
            i += k
        return nn.functional.mse_loss(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0)


def test_power_iteration_and_trace_match_the_explicit_hessian_of_a_small_mlp():
    model, x, y = _mlp_problem()
    H = _explicit_hessian(model, x, y)
    evals = torch.linalg.eigvalsh(H)
    top = evals[evals.abs().argmax()].item()
    est = diagnostics.top_hessian_eigenvalue(model, nn.functional.mse_loss, (x, y), iters=3000, tol=1e-13)
    assert est.value == pytest.approx(top, rel=1e-7)
    # the eigenvector is the explicit Hessian's
    v = torch.cat([t.reshape(-1) for t in est.vector])
    assert float((H @ v - top * v).norm()) < 1e-5 * abs(top)
    tr = diagnostics.hessian_trace(model, nn.functional.mse_loss, (x, y), iters=500, tol=0.0)
    exact = float(torch.trace(H))
    # Hutchinson's variance with Rademacher vectors is 2 * sum_{i != j} H_ij^2
    sd = math.sqrt(2 * float((H**2).sum() - (torch.diag(H) ** 2).sum()) / len(tr.samples))
    assert abs(tr.value - exact) < 4 * sd
    assert tr.std_error == pytest.approx(sd, rel=0.1)


def test_several_batches_give_the_hessian_of_the_mean_loss():
    model, x, y = _mlp_problem()
    one = diagnostics.top_hessian_eigenvalue(model, nn.functional.mse_loss, (x, y), iters=2000, tol=1e-13)
    # uneven batches: 12 + 8 examples, weighted by size
    split = diagnostics.top_hessian_eigenvalue(model, nn.functional.mse_loss, [(x[:12], y[:12]), (x[12:], y[12:])],
                                               iters=2000, tol=1e-13)
    assert split.value == pytest.approx(one.value, rel=1e-9)


def test_hessian_leaves_grads_modes_and_buffers_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    for bn in ("eval", "batch"):
        diagnostics.top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y), iters=5, bn=bn)
        diagnostics.hessian_trace(model, nn.functional.cross_entropy, (x, y), iters=5, bn=bn)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training and torch.equal(torch.get_rng_state(), rng)


def test_hessian_bad_input_and_non_finite_loss():
    model, x, y = _mlp_problem()
    with pytest.raises(ValueError, match=r"Invalid iters: 0; expected a positive integer"):
        diagnostics.top_hessian_eigenvalue(model, nn.functional.mse_loss, (x, y), iters=0)
    with pytest.raises(ValueError, match=r"Invalid tol"):
        diagnostics.hessian_trace(model, nn.functional.mse_loss, (x, y), tol=-1.0)
    with pytest.raises(ValueError, match=r"Invalid bn: 'recompute'"):
        diagnostics.top_hessian_eigenvalue(model, nn.functional.mse_loss, (x, y), bn="recompute")
    with pytest.raises(ValueError, match=r"at least one trainable parameter"):
        diagnostics.top_hessian_eigenvalue(nn.ReLU(), nn.functional.mse_loss, (x, y))
    bad = (x, torch.full_like(y, math.inf))
    assert math.isnan(diagnostics.top_hessian_eigenvalue(model, nn.functional.mse_loss, bad).value)
    assert math.isnan(diagnostics.hessian_trace(model, nn.functional.mse_loss, bad).value)
    # a linear model: the Hessian of a linear loss is zero
    lin = nn.Linear(3, 1, bias=False).double()
    zero = diagnostics.top_hessian_eigenvalue(lin, lambda out, _: out.sum(), (x, None))
    assert zero.value == 0.0 and zero.converged
    assert np.isfinite(diagnostics.hessian_trace(lin, lambda out, _: out.sum(), (x, None)).value)
