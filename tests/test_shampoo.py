"""Shampoo against a single-tensor transcription of facebookresearch/optimizers' Distributed Shampoo default path
(f606606), hand-derived steps, blocking and the inverse root."""

from __future__ import annotations

import math
from functools import reduce
from itertools import chain

import pytest
import torch

import optimlab
from optimlab.algorithms import _matrix


# -- the reference, transcribed from distributed_shampoo.py, shampoo_preconditioner_list.py (RootInv),
# adagrad_preconditioner_list.py, matrix_functions.py and shampoo_utils.py, for one parameter on one process -------
def _merge_small_dims(tensor_shape, threshold):
    if 0 in tensor_shape:
        return (0,)
    squeezed = list(filter(lambda t: t != 1, reversed(tensor_shape))) or [1]
    new = [squeezed[0]]
    for n_done, nxt in enumerate(squeezed[1:], start=1):
        if len(new) + len(squeezed) - n_done > 1 and (d := new[-1] * nxt) <= threshold:
            new[-1] = d
        else:
            new.append(nxt)
    return tuple(reversed(new))


def _multi_dim_split(tensor, split_size):
    return reduce(lambda ts, dim: tuple(s for t in ts for s in torch.split(t, split_size, dim=dim)),
                  range(tensor.dim()), (tensor,))


def _matrix_inverse_root(A, root, epsilon):
    A_ridge = A.add(torch.eye(A.shape[0], dtype=A.dtype), alpha=epsilon)
    L, Q = torch.linalg.eigh(A_ridge)
    lambda_min = torch.min(L).item()
    if lambda_min < epsilon:
        L = L + (-lambda_min)
        L = L + epsilon
    return Q * L.pow(-1.0 / root).unsqueeze(0) @ Q.T


class _Ref:
    """``DistributedShampoo`` with ``RootInvShampooPreconditionerConfig`` (eigh), an Adam/RMSprop/AdaGrad/SGD or no
    grafting config, ``SingleDeviceDistributedConfig``, one parameter; beta3 = beta1; factors in torch's default
    dtype (float64 in these tests), unpacked."""

    def __init__(self, p, lr=1e-2, betas=(0.9, 1.0), epsilon=1e-12, weight_decay=0.0, weight_decay_type="decoupled",
                 max_preconditioner_dim=1024, precondition_frequency=1, start_preconditioning_step=-1,
                 use_bias_correction=True, grafting=None, grafting_beta2=0.999, grafting_epsilon=1e-8):
        self.lr, self.betas, self.epsilon, self.wd, self.wd_type = lr, betas, epsilon, weight_decay, weight_decay_type
        self.max_dim, self.freq, self.bias = max_preconditioner_dim, precondition_frequency, use_bias_correction
        self.start = precondition_frequency if start_preconditioning_step == -1 else start_preconditioning_step
        self.grafting, self.gbeta2, self.geps = grafting, grafting_beta2, grafting_epsilon
        self.p = p
        self.blocks = _multi_dim_split(p.view(_merge_small_dims(p.size(), self.max_dim)), self.max_dim)
        self.step_t = torch.tensor(0, dtype=torch.int64)
        self.filtered = [torch.zeros_like(b) for b in self.blocks] if betas[0] != 0.0 else None
        self.graft_v = [torch.zeros_like(b) for b in self.blocks]
        self.factors = [[torch.zeros(d, d) for d in b.shape] for b in self.blocks]
        self.inv = [[torch.eye(d) for d in b.shape] for b in self.blocks]
        self.bc2, self.gbc2 = torch.tensor(1.0), torch.tensor(1.0)

    def step(self, grad):
        grads = _multi_dim_split(grad.view(_merge_small_dims(grad.size(), self.max_dim)), self.max_dim)
        grads = [g.clone() for g in grads]
        step = self.step_t.add_(1)
        s = step.item()
        amortized = (s % self.freq == 0 and s > self.start) or s == self.start
        use_grafting_method = s < self.start and self.grafting is not None
        if self.wd != 0.0 and self.wd_type == "l2":
            torch._foreach_add_(grads, self.blocks, alpha=self.wd)
        beta1, beta2 = self.betas
        weighting = 1.0 if beta2 == 1.0 else 1 - beta2
        for g, fs in zip(grads, self.factors, strict=True):
            order = g.dim()
            outer = tuple(torch.tensordot(g, g, dims=[[*chain(range(k), range(k + 1, order))]] * 2)
                          for k in range(order))
            if beta2 != 1.0:
                torch._foreach_mul_(fs, beta2)
            torch._foreach_add_(fs, outer, alpha=weighting)
        if self.bias and beta2 < 1.0:
            self.bc2 = torch.tensor(1.0) - beta2**step
        if amortized:
            for fs, invs in zip(self.factors, self.inv, strict=True):
                for f, inv in zip(fs, invs, strict=True):
                    inv.copy_(_matrix_inverse_root(f / self.bc2, 2 * len(fs), self.epsilon))
        if self.grafting in ("adam", "rmsprop", "adagrad"):
            gb2 = 1.0 if self.grafting == "adagrad" else self.gbeta2
            w = 1.0 if self.grafting == "adagrad" else 1 - gb2
            if gb2 != 1.0:
                torch._foreach_mul_(self.graft_v, gb2)
            torch._foreach_addcmul_(self.graft_v, grads, grads, value=w)
            if self.grafting == "adam":
                self.gbc2 = torch.tensor(1.0) - gb2**step
        if beta1 != 0.0:
            filtered = self.filtered
            torch._foreach_lerp_(self.filtered, grads, weight=1 - beta1)
            if self.bias:
                filtered = torch._foreach_div(filtered, 1.0 - beta1 * beta1 ** (step - 1))
        else:
            filtered = grads

        def graft_direction(gs):
            if self.grafting == "sgd":
                return gs
            d = torch._foreach_div(self.graft_v, self.gbc2)
            torch._foreach_sqrt_(d)
            torch._foreach_add_(d, self.geps)
            return torch._foreach_div(gs, d)

        if use_grafting_method:
            P = graft_direction(filtered)
        else:
            P = tuple(reduce(lambda x, r: torch.tensordot(x, r, dims=([0], [0])), invs, g)
                      for g, invs in zip(filtered, self.inv, strict=True))
            if self.grafting is not None:
                gn = torch._foreach_norm(graft_direction(filtered))
                sn = torch._foreach_norm(P)
                torch._foreach_add_(sn, 1e-16)
                torch._foreach_div_(gn, sn)
                torch._foreach_mul_(P, gn)
        P = list(P)
        if self.wd != 0.0 and self.wd_type == "decoupled":
            torch._foreach_add_(P, self.blocks, alpha=self.wd)
        torch._foreach_mul_(P, -self.lr)
        torch._foreach_add_(list(self.blocks), P)


@pytest.fixture
def float64_default():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


OURS_DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), grafting="adam", precondition_frequency=100)
CASES = [
    ((12, 7), dict(precondition_frequency=3)),
    ((12, 7), dict(precondition_frequency=2, start_preconditioning_step=4, weight_decay=0.1, betas=(0.95, 0.99),
                   grafting_beta2=0.99, lr=0.02)),
    ((20, 9), dict(precondition_frequency=2, max_preconditioner_dim=8)),  # blocks 8, 8, 4 x 8, 1
    ((3, 1, 5, 4), dict(precondition_frequency=3, max_preconditioner_dim=16)),  # (3, 20): 16 + 4
    ((6, 5), dict(precondition_frequency=2)),  # merged to (30,): full-matrix on the vector
    ((11,), dict(precondition_frequency=2, grafting="rmsprop")),
    ((7, 6), dict(precondition_frequency=2, grafting="adagrad", betas=(0.0, 1.0))),
    ((7, 6), dict(precondition_frequency=2, grafting="sgd", weight_decay=0.05, weight_decay_type="l2")),
    ((7, 6), dict(precondition_frequency=2, grafting=None, use_bias_correction=False)),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("shape,options", CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_trajectory_equals_the_reference(shape, options, foreach, float64_default):
    """20 steps in float64 equal the transcription of Distributed Shampoo to round-off (1e-9 relative: eigh and the
    orders of the products differ), parameters and state."""
    kwargs = {**OURS_DEFAULTS, **options}
    init = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ref_p, p = init.clone(), init.clone().requires_grad_()
    ref = _Ref(ref_p, **kwargs)
    opt = optimlab.Shampoo([p], foreach=foreach, **kwargs)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    for _ in range(20):
        grad = base + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
        ref.step(grad.clone())
        p.grad = grad
        opt.step()
        torch.testing.assert_close(p.detach(), ref_p, rtol=1e-9, atol=1e-12)
    st = opt.state[p]
    flat = [f for fs in ref.factors for f in fs]
    assert len(st["factor_matrices"]) == len(flat)
    for ours, theirs in zip(st["factor_matrices"], flat, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(st["inv_factor_matrices"], [r for rs in ref.inv for r in rs], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_adam_grafting_before_the_first_root_is_adam():
    """Before start_preconditioning_step, Shampoo with Adam grafting is Adam (decoupled decay: AdamW)."""
    a = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p, q = a.clone().requires_grad_(), a.clone().requires_grad_()
    shampoo = optimlab.Shampoo([p], lr=0.01, weight_decay=0.01, precondition_frequency=50)
    adamw = torch.optim.AdamW([q], lr=0.01, weight_decay=0.01, eps=1e-8)
    for k in range(10):
        grad = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(k + 1))
        p.grad, q.grad = grad, grad.clone()
        shampoo.step()
        adamw.step()
    torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_first_preconditioned_step_by_hand():
    """With beta1 = 0, beta2 = 1 (sums), no grafting, start 1: L = G G^T, R = G^T G and the first step is
    -lr (L + eps I)^{-1/4} G (R + eps I)^{-1/4}; for a rank-r G = U S V^T that is -lr U S^0 V^T = -lr U V^T up to
    eps (the inverse fourth roots of S^2 on each side take S to S^0)."""
    g = torch.Generator().manual_seed(2)
    u, _ = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(4, 3, generator=g, dtype=torch.float64))
    G = (u * torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64)) @ v.T
    W = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
    opt = optimlab.Shampoo([W], lr=0.1, betas=(0.0, 1.0), grafting=None, precondition_frequency=1,
                           max_preconditioner_dim=6)  # (6, 4): not merged (24 > 6), one block
    W.grad = G
    opt.step()
    torch.testing.assert_close(opt.state[W]["factor_matrices"][0], G @ G.T, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(W.detach(), -0.1 * u @ v.T, rtol=0, atol=1e-6)


def test_inverse_root_and_its_regularisation():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(5, 8, generator=g, dtype=torch.float64)
    A = X @ X.T
    R = _matrix.inverse_root(A, 4.0, 1e-12)
    torch.testing.assert_close(torch.linalg.matrix_power(R, 4) @ (A + 1e-12 * torch.eye(5, dtype=torch.float64)),
                               torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-9)
    indefinite = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))  # eigenvalues shifted to min = eps
    torch.testing.assert_close(_matrix.inverse_root(indefinite, 2.0, 1e-2),
                               torch.diag(torch.tensor([3.01, 0.01], dtype=torch.float64) ** -0.5))
    stacked = _matrix.inverse_root(torch.stack([A, 2 * A]), 4.0, 1e-12)
    torch.testing.assert_close(stacked[1], _matrix.inverse_root(2 * A, 4.0, 1e-12))


def test_blocking_follows_merge_small_dims_and_multi_dim_split():
    assert _matrix.merge_small_dims((32, 3, 64, 64), 8192) == (96, 4096)
    assert _matrix.merge_small_dims((1, 2, 5, 1), 10) == (10,)
    assert _matrix.merge_small_dims((1, 2, 5, 1), 1) == (2, 5)
    assert _matrix.merge_small_dims((), 1024) == (1,) and _matrix.merge_small_dims((0, 3), 1024) == (0,)
    assert _matrix.merge_small_dims((768, 3072), 1024) == (768, 3072)
    assert _matrix.merge_small_dims((768, 3072), math.inf) == (768 * 3072,)  # as the reference: all merged
    for shape in [(32, 3, 64, 64), (1, 2, 5, 1), (768, 3072), (6, 5), (5,)]:
        for t in (8, 1024, math.inf):
            assert _matrix.merge_small_dims(shape, t) == _merge_small_dims(shape, t)
    t = torch.arange(5 * 3).reshape(5, 3)
    ours = [t[cut] for cut in _matrix.split_slices((5, 3), 2)]
    assert all(torch.equal(a, b) for a, b in zip(ours, _multi_dim_split(t, 2), strict=True))
    assert _matrix.split_slices((768, 3072), 1024) == [(slice(0, 768), slice(i, i + 1024)) for i in (0, 1024, 2048)]


def test_bad_start_step_is_refused():
    with pytest.raises(ValueError, match=r"Invalid start_preconditioning_step: 5; expected -1 or an int >= "):
        optimlab.Shampoo([torch.zeros(3, requires_grad=True)], precondition_frequency=10,
                         start_preconditioning_step=5)
    assert math.isinf(optimlab.Shampoo([torch.zeros(3, requires_grad=True)],
                                       max_preconditioner_dim=math.inf).defaults["max_preconditioner_dim"])
