"""SOAP against a single-tensor transcription of the authors' code (nikhilvyas/SOAP ``soap.py``, a1e5535), hand-derived
first steps, and the eigenbasis refresh."""

from __future__ import annotations

from itertools import chain

import pytest
import torch

import optimlab
from optimlab.algorithms import _matrix


# -- the reference: nikhilvyas/SOAP soap.py, its methods transcribed as functions on one tensor's state ---------------
class _Ref:
    """``SOAP.step`` for one parameter, line by line (``merge_dims``, ``project``, ``project_back``,
    ``update_preconditioner``, ``get_orthogonal_matrix``, ``get_orthogonal_matrix_QR``), including its per-step
    round trip of ``exp_avg``. Factors are created in torch's default dtype, as there (float64 in these tests)."""

    def __init__(self, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=10, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True):
        self.g = dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                      precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
                      merge_dims=merge_dims, precondition_1d=precondition_1d, normalize_grads=normalize_grads,
                      correct_bias=correct_bias)
        self.fmt = data_format
        self.state = {}

    def merge(self, grad, max_precond_dim):
        if self.fmt == "channels_last" and grad.dim() == 4:
            grad = grad.permute(0, 3, 1, 2)
        new_shape, curr = [], 1
        for sh in grad.shape:
            temp = curr * sh
            if temp > max_precond_dim:
                if curr > 1:
                    new_shape.append(curr)
                    curr = sh
                else:
                    new_shape.append(sh)
                    curr = 1
            else:
                curr = temp
        if curr > 1 or len(new_shape) == 0:
            new_shape.append(curr)
        return grad.reshape(new_shape)

    def step(self, p, grad):
        group, state = self.g, self.state
        if "step" not in state:
            state["step"] = 0
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        if "Q" not in state:
            self.init_preconditioner(grad, state, group["precondition_frequency"], group["precondition_1d"],
                                     group["shampoo_beta"] if group["shampoo_beta"] >= 0 else group["betas"][1],
                                     group["max_precond_dim"], group["merge_dims"])
            self.update_preconditioner(grad, state, group["max_precond_dim"], group["merge_dims"],
                                       group["precondition_1d"])
            return
        grad_projected = self.project(grad, state, group["merge_dims"], group["max_precond_dim"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["betas"]
        state["step"] += 1
        exp_avg.mul_(beta1).add_(grad_projected, alpha=(1.0 - beta1))
        exp_avg_sq.mul_(beta2).add_(grad_projected.square(), alpha=(1.0 - beta2))
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        step_size = group["lr"]
        if group["correct_bias"]:
            bias_correction1 = 1.0 - beta1 ** (state["step"])
            bias_correction2 = 1.0 - beta2 ** (state["step"])
            step_size = step_size * (bias_correction2**0.5) / bias_correction1
        norm_grad = self.project_back(exp_avg / denom, state, group["merge_dims"], group["max_precond_dim"])
        if group["normalize_grads"]:
            norm_grad = norm_grad / (1e-30 + torch.mean(norm_grad**2) ** 0.5)
        p.add_(norm_grad, alpha=-step_size)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=(-group["lr"] * group["weight_decay"]))
        self.update_preconditioner(grad, state, group["max_precond_dim"], group["merge_dims"],
                                   group["precondition_1d"])

    def init_preconditioner(self, grad, state, precondition_frequency, precondition_1d, shampoo_beta,
                            max_precond_dim, merge_dims):
        state["GG"] = []
        if grad.dim() == 1:
            if not precondition_1d or grad.shape[0] > max_precond_dim:
                state["GG"].append([])
            else:
                state["GG"].append(torch.zeros(grad.shape[0], grad.shape[0], device=grad.device))
        else:
            if merge_dims:
                grad = self.merge(grad, max_precond_dim)
            for sh in grad.shape:
                state["GG"].append([] if sh > max_precond_dim else torch.zeros(sh, sh, device=grad.device))
        state["Q"] = None
        state["precondition_frequency"] = precondition_frequency
        state["shampoo_beta"] = shampoo_beta

    def _permuted_shape(self, grad):
        return grad.permute(0, 3, 1, 2).shape

    def project(self, grad, state, merge_dims, max_precond_dim, back=False):
        original_shape = grad.shape
        if merge_dims:
            if grad.dim() == 4 and self.fmt == "channels_last":
                permuted_shape = self._permuted_shape(grad)
            grad = self.merge(grad, max_precond_dim)
        for mat in state["Q"]:
            if len(mat) > 0:
                grad = torch.tensordot(grad, mat, dims=[[0], [1 if back else 0]])
            else:
                grad = grad.permute(list(range(1, len(grad.shape))) + [0])
        if merge_dims:
            if self.fmt == "channels_last" and len(original_shape) == 4:
                grad = grad.reshape(permuted_shape).permute(0, 2, 3, 1)
            else:
                grad = grad.reshape(original_shape)
        return grad

    def project_back(self, grad, state, merge_dims, max_precond_dim):
        return self.project(grad, state, merge_dims, max_precond_dim, back=True)

    def update_preconditioner(self, grad, state, max_precond_dim, merge_dims, precondition_1d):
        if state["Q"] is not None:
            state["exp_avg"] = self.project_back(state["exp_avg"], state, merge_dims, max_precond_dim)
        if grad.dim() == 1:
            if precondition_1d and grad.shape[0] <= max_precond_dim:
                state["GG"][0].lerp_(grad.unsqueeze(1) @ grad.unsqueeze(0), 1 - state["shampoo_beta"])
        else:
            new_grad = self.merge(grad, max_precond_dim) if merge_dims else grad
            for idx, sh in enumerate(new_grad.shape):
                if sh <= max_precond_dim:
                    other = [*chain(range(idx), range(idx + 1, len(new_grad.shape)))]
                    outer = torch.tensordot(new_grad, new_grad, dims=[other] * 2)
                    state["GG"][idx].lerp_(outer, 1 - state["shampoo_beta"])
        if state["Q"] is None:
            state["Q"] = self.get_orthogonal_matrix(state["GG"])
        if state["step"] > 0 and state["step"] % state["precondition_frequency"] == 0:
            state["Q"] = self.get_orthogonal_matrix_QR(state, max_precond_dim, merge_dims)
        if state["step"] > 0:
            state["exp_avg"] = self.project(state["exp_avg"], state, merge_dims, max_precond_dim)

    @staticmethod
    def get_orthogonal_matrix(mat):
        final = []
        for m in mat:
            if len(m) == 0:
                final.append([])
                continue
            _, Q = torch.linalg.eigh(m + 1e-30 * torch.eye(m.shape[0], device=m.device))
            final.append(torch.flip(Q, [1]))
        return final

    def get_orthogonal_matrix_QR(self, state, max_precond_dim, merge_dims):
        orig_shape = state["exp_avg_sq"].shape
        if self.fmt == "channels_last" and len(orig_shape) == 4:
            permuted_shape = state["exp_avg_sq"].permute(0, 3, 1, 2).shape
        exp_avg_sq = self.merge(state["exp_avg_sq"], max_precond_dim) if merge_dims else state["exp_avg_sq"]
        final = []
        for ind, (m, o) in enumerate(zip(state["GG"], state["Q"], strict=True)):
            if len(m) == 0:
                final.append([])
                continue
            est_eig = torch.diag(o.T @ m @ o)
            sort_idx = torch.argsort(est_eig, descending=True)
            exp_avg_sq = exp_avg_sq.index_select(ind, sort_idx)
            o = o[:, sort_idx]
            Q, _ = torch.linalg.qr(m @ o)
            final.append(Q)
        if merge_dims:
            if self.fmt == "channels_last" and len(orig_shape) == 4:
                exp_avg_sq = exp_avg_sq.reshape(permuted_shape).permute(0, 2, 3, 1)
            else:
                exp_avg_sq = exp_avg_sq.reshape(orig_shape)
        state["exp_avg_sq"] = exp_avg_sq
        return final


@pytest.fixture
def float64_default():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def _grads(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    return [base + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(steps)]


CASES = [
    ((12, 7), {}),
    ((12, 7), dict(precondition_frequency=3, weight_decay=0.1, betas=(0.9, 0.99), shampoo_beta=0.8)),
    ((9, 16), dict(precondition_frequency=2, max_precond_dim=10, normalize_grads=True)),
    ((3, 4, 5), dict(precondition_frequency=4)),
    ((3, 4, 5), dict(precondition_frequency=3, merge_dims=True, max_precond_dim=15)),
    ((4, 3, 2, 2), dict(precondition_frequency=3, merge_dims=True, max_precond_dim=12, data_format="channels_last")),
    ((4,), dict(precondition_1d=True, precondition_frequency=6)),
    ((11,), {}),
    ((), dict(merge_dims=True)),
    ((8, 6), dict(correct_bias=False, precondition_frequency=5, eps=1e-6)),
    ((10, 6), dict(betas=(0.9, 0.99), precondition_frequency=4)),  # shampoo_beta -1: the factors use betas[1]
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("shape,options", CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_trajectory_equals_the_authors_code(shape, options, foreach, float64_default):
    """25 steps (the first only builds the preconditioner) in float64: parameters, moments, factors and bases equal
    the transcription of soap.py to round-off (rtol 1e-9: the reference rotates exp_avg back and forth every step,
    an identity in exact arithmetic, and estimates eigenvalues by a separate product). The factors are of full rank
    at the first refresh: where eigenvalues tie (a rank-deficient factor) the two estimates, equal up to round-off,
    may sort the tied columns differently, and QR then returns another (equally valid) basis."""
    init = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ref, ref_p = _Ref(lr=0.01, **options), init.clone()
    p = init.clone().requires_grad_()
    opt = optimlab.SOAP([p], lr=0.01, foreach=foreach, **options)
    for g in _grads(shape, 25):
        ref.step(ref_p, g.clone())
        p.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), ref_p, rtol=1e-9, atol=1e-12)
    st = opt.state[p]
    assert int(st["step"]) == ref.state["step"] + 1  # optimlab also counts the first, preconditioner-only step
    torch.testing.assert_close(st["exp_avg_sq"], ref.state["exp_avg_sq"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(st["exp_avg"], ref.state["exp_avg"], rtol=1e-9, atol=1e-12)
    for ours, theirs in zip(st["GG"], ref.state["GG"], strict=True):
        assert ours.numel() == (theirs.numel() if len(theirs) else 0)
        if ours.numel():
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(st["Q"], ref.state["Q"], strict=True):
        if ours.numel():
            torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10)


def test_first_steps_by_hand():
    """Step 1: nothing moves; L = (1 - b) G G^T, R = (1 - b) G^T G, Q = their eigenvectors (descending).
    Step 2, with G' = Q_L^T G Q_R: m = (1-b1) G', v = (1-b2) G'^2, and the update is
    -lr * sqrt(1-b2)/(1-b1) * Q_L (m / (sqrt(v)+eps)) Q_R^T = -lr * Q_L sign(G') Q_R^T * (1 - eps-terms),
    then weight decay on the updated weights."""
    g = torch.Generator().manual_seed(0)
    W0, G1, G2 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    W = W0.clone().requires_grad_()
    lr, wd, (b1, b2), eps = 0.01, 0.1, (0.95, 0.95), 1e-8
    opt = optimlab.SOAP([W], lr=lr, weight_decay=wd, eps=eps)
    W.grad = G1
    opt.step()
    assert torch.equal(W.detach(), W0)
    L, R = opt.state[W]["GG"]
    torch.testing.assert_close(L, (1 - b2) * G1 @ G1.T, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(R, (1 - b2) * G1.T @ G1, rtol=1e-14, atol=1e-15)
    QL, QR = opt.state[W]["Q"]
    for Q, F in ((QL, L), (QR, R)):
        torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[0], dtype=torch.float64), rtol=0, atol=1e-13)
        d = torch.diag(Q.T @ F @ Q)
        assert (d[:-1] >= d[1:] - 1e-14).all()  # descending eigenvalues
    W.grad = G2
    opt.step()
    Gp = QL.T @ G2 @ QR
    m, v = (1 - b1) * Gp, (1 - b2) * Gp**2
    W1 = W0 - lr * (1 - b2) ** 0.5 / (1 - b1) * (QL @ (m / (v.sqrt() + eps)) @ QR.T)
    W1 = W1 - lr * wd * W1
    torch.testing.assert_close(W.detach(), W1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.state[W]["exp_avg"], m, rtol=1e-12, atol=1e-15)


def test_eigenbasis_refresh_is_power_iteration_and_qr():
    """The refresh sorts the columns by diag(Q^T A Q) (descending) and orthonormalizes A Q; starting from the exact
    eigenbasis it returns that basis (up to column signs)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(6, 20, generator=g, dtype=torch.float64)
    A = X @ X.T
    Q = _matrix.eigenbasis(A)
    lam = torch.diag(Q.T @ A @ Q)
    assert (lam[:-1] > lam[1:]).all()
    shuffled = Q[:, torch.tensor([3, 0, 5, 1, 4, 2])]
    Q2, order = _matrix.eigenbasis_refresh(A, shuffled)
    assert order.tolist() == [1, 3, 5, 0, 4, 2]
    torch.testing.assert_close(Q2.abs(), Q.abs(), rtol=0, atol=1e-12)
    batched, _ = _matrix.eigenbasis_refresh(torch.stack([A, 2 * A]), torch.stack([shuffled, shuffled]))
    torch.testing.assert_close(batched[0], Q2, rtol=0, atol=1e-13)


def test_merge_dims_rule():
    assert _matrix.merge_dims_soap([3, 4, 5], 15) == [12, 5]
    assert _matrix.merge_dims_soap([3, 4, 5], 100) == [60]
    assert _matrix.merge_dims_soap([20, 3, 4], 12) == [20, 12]
    assert _matrix.merge_dims_soap([], 10) == [1]


def test_complex_parameters_are_refused():
    with pytest.raises(ValueError, match=r"Invalid params\[0\]"):
        optimlab.SOAP([torch.zeros(3, 3, dtype=torch.complex64, requires_grad=True)])


@pytest.mark.parametrize("name", ["soap", "shampoo", "muon"])
def test_bfloat16_state_keeps_its_dtypes_through_a_state_dict(name):
    """torch's load_state_dict casts floating state (and index tensors) to the parameter's dtype; the matrix
    optimizers keep float32 factors and bases for bfloat16 parameters, so the resumed run equals the unbroken one."""
    def make():
        p = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)).bfloat16().requires_grad_()
        return p, optimlab.create_optimizer(name, [p], lr=0.01, **({"precondition_frequency": 2}
                                                                    if name != "muon" else {}))

    def run(p, opt, start, steps):
        for k in range(start, start + steps):
            p.grad = torch.randn(6, 5, generator=torch.Generator().manual_seed(k)).bfloat16()
            opt.step()

    a, oa = make()
    run(a, oa, 0, 4)
    saved = {k: v for k, v in oa.state_dict().items()}
    b, ob = make()
    with torch.no_grad():
        b.copy_(a)
    ob.load_state_dict(saved)
    for key, value in oa.state[a].items():
        other = ob.state[b][key]
        for x, y in zip(value if isinstance(value, list) else [value], other if isinstance(other, list) else [other],
                        strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y), key
    run(a, oa, 4, 5)
    run(b, ob, 4, 5)
    assert torch.equal(a, b)
