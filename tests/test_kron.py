"""PSGD Kron against PyPI kron-torch 0.3.3 (``kron_torch/kron.py``), and its own promises: the factors' shapes, the
update schedule, the whitening fit, seeds and resume.

kron-torch draws the probe ``V`` from torch's global generator (``torch.randn_like``) and optimlab from its own
seeded generator, so the trajectories are compared with the same ``V`` given to both (one shared stream, in parameter
order). kron-torch's schedule itself is deterministic (a counter, no coin), so it is compared as it is. The
reference's ``torch.compile`` decorators are switched off (eager on CPU; compiling changes nothing but round-off).
"""

from __future__ import annotations

import io

import pytest
import torch

import optimlab
from optimlab.algorithms.kron import ProbSchedule, diagonal_dims, merged_shape, precond_update_prob_schedule

SHAPES = [(7,), (5, 6), (4, 3, 3, 2), (3, 40)]  # a vector, a matrix, a 4-D conv filter, a 40 > max_size_triangular
STEPS = 12
# float32 throughout; the two differ in the order of contractions (einsum vs one dimension at a time): observed
# differences are 1-2 ulps of the parameters after 12 steps.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture
def kron_torch(monkeypatch):
    kt = pytest.importorskip("kron_torch.kron")
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    return kt


class _Probes:
    """One stream of probes ``V``, shared out in call order (both implementations draw one per parameter and
    update, in parameter order)."""

    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(7)

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.gen, dtype=like.dtype)


def _grads(params, step):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen) + 0.5 * p.detach() for p in params]


def _run(make, steps=STEPS, shapes=SHAPES):
    torch.manual_seed(0)
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    opt = make(params)
    for t in range(steps):
        for p, g in zip(params, _grads(params, t), strict=True):
            p.grad = g
        opt.step()
    return [p.detach().clone() for p in params], opt


def _injected(probes):
    class Injected(optimlab.Kron):
        def _draw_v(self, gen, like):
            return probes(like)
    return Injected


CONFIGS = {
    "every-step": (dict(preconditioner_update_probability=1.0, weight_decay=0.01), {}),
    "schedule": (dict(weight_decay=0.01), dict(schedule=dict(max_prob=1.0, min_prob=0.2, decay=0.5, flat_start=3))),
    "half-one-diag-grad": (dict(preconditioner_update_probability=0.5, memory_save_mode="one_diag",
                                momentum_into_precond_update=False), {}),
    "smart-no-merge": (dict(preconditioner_update_probability=1.0, memory_save_mode="smart_one_diag",
                            merge_dims=False, b1=0.5), {}),
    "all-diag-scaled-bf16-mu": (dict(preconditioner_update_probability=1.0, memory_save_mode="all_diag",
                                     precond_init_scale=2.0, precond_lr=0.3, mu_dtype=torch.bfloat16), {}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_kron_torch(kron_torch, monkeypatch, name):
    kw, extra = CONFIGS[name]
    kw = dict(lr=0.01, max_size_triangular=30, **kw)
    ref_kw, our_kw = dict(kw), dict(kw)
    if "schedule" in extra:
        ref_kw["preconditioner_update_probability"] = kron_torch.precond_update_prob_schedule(**extra["schedule"])
        our_kw["preconditioner_update_probability"] = precond_update_prob_schedule(**extra["schedule"])
    probes = _Probes()
    monkeypatch.setattr(torch, "randn_like", lambda x, *a, **k: probes(x))
    ref, ref_opt = _run(lambda ps: kron_torch.Kron(ps, **ref_kw))
    monkeypatch.undo()
    ours, opt = _run(lambda ps: _injected(_Probes())(ps, **our_kw))
    for shape, a, b in zip(SHAPES, ref, ours, strict=True):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL, msg=lambda m, s=shape: f"{s}: {m}")
    for ref_p, p in zip(ref_opt.param_groups[0]["params"], opt.param_groups[0]["params"], strict=True):
        for qa, qb in zip(ref_opt.state[ref_p]["Q"], opt.state[p]["Q"], strict=True):
            torch.testing.assert_close(qb, qa, rtol=1e-4, atol=1e-5)


def test_default_schedule_equals_kron_torch(kron_torch):
    ref, ours = kron_torch.precond_update_prob_schedule(), precond_update_prob_schedule()
    assert ours == ProbSchedule()
    for n in (0.0, 499.0, 500.0, 501.0, 1000.0, 4000.0, 10000.0):
        n32 = torch.tensor(n, dtype=torch.float32)
        assert torch.equal(ours(n32), ref(n32)), n
    assert ours(0.0) == 1.0 and ours(10_000.0) == pytest.approx(0.03)


def _q_changes(opt_kw, steps):
    torch.manual_seed(0)
    p = torch.randn(4, 3, requires_grad=True)
    opt = optimlab.Kron([p], lr=0.01, **opt_kw)
    changed, before = [], None
    for t in range(steps):
        p.grad = _grads([p], t)[0]
        opt.step()
        q = [x.clone() for x in opt.state[p]["Q"]]
        # (the first step is compared with nothing: True)
        changed.append(before is None or any(not torch.equal(a, b) for a, b in zip(q, before, strict=True)))
        before = q
    return changed


def test_update_probability_schedule():
    # kron-torch's counter: p = 1/4 updates on every 4th step, exactly
    assert _q_changes(dict(preconditioner_update_probability=0.25), 12)[1:] == ([False, False, False, True] * 3)[1:]
    # the default: every step for the first 500 steps
    assert all(_q_changes({}, 20))
    # psgd_torch's coin: about p of the steps, irregularly
    changed = _q_changes(dict(preconditioner_update_probability=0.25, precond_update_mode="random"), 400)
    assert 60 <= sum(changed) <= 140 and changed[3::4] != [True] * 100


@pytest.mark.parametrize("shape,kw,expected", [
    ((5, 6), {}, [(5, 5), (6, 6)]),
    ((5, 6), dict(memory_save_mode="one_diag"), [(5, 5), (6,)]),
    ((6, 6), dict(memory_save_mode="one_diag"), [(6, 6), (6,)]),
    ((6, 6), dict(memory_save_mode="smart_one_diag"), [(6, 6), (6, 6)]),
    ((5, 6), dict(memory_save_mode="smart_one_diag"), [(5, 5), (6,)]),
    ((5, 6), dict(memory_save_mode="all_diag"), [(5,), (6,)]),
    ((5, 6), dict(max_size_triangular=5), [(5, 5), (6,)]),
    ((5, 6), dict(min_ndim_triangular=3), [(5,), (6,)]),
    ((1, 6), {}, [(1,), (6, 6)]),
    ((7,), {}, [(7,)]),
    ((), {}, [(1,)]),
    ((8, 3, 3, 3), {}, [(72, 72), (3, 3)]),  # merged to (72, 3): cols - rows -69 beats (8, 27)'s 19
    ((8, 3, 3, 3), dict(merge_dims=False), [(8, 8), (3, 3), (3, 3), (3, 3)]),
])
def test_factor_shapes(shape, kw, expected):
    p = torch.zeros(shape, requires_grad=True)
    opt = optimlab.Kron([p], **kw)
    p.grad = torch.ones(shape)
    opt.step()
    assert [tuple(q.shape) for q in opt.state[p]["Q"]] == expected
    assert all(q.dtype == torch.float32 for q in opt.state[p]["Q"])


def test_shape_rules_equal_kron_torch(kron_torch):
    for shape in [(8, 3, 3, 3), (3, 8, 2, 2), (2, 2, 2), (16, 4, 1, 1), (5, 7, 3)]:
        q, exprs = kron_torch._init_Q_exprs(torch.zeros(merged_shape(shape)), 1.0, 8192, 2, None)
        ref = kron_torch.Kron([torch.zeros(shape, requires_grad=True)])
        p = ref.param_groups[0]["params"][0]
        p.grad = torch.ones(shape)
        ref.step()
        assert list(ref.state[p]["merged_shape"]) == merged_shape(shape)
    for mode in (None, "one_diag", "smart_one_diag", "all_diag"):
        for shape in [(5, 6), (6, 5), (6, 6), (3, 9, 9), (4, 2, 4)]:
            q, _ = kron_torch._init_Q_exprs(torch.zeros(shape), 1.0, 8, 2, mode)
            assert [x.dim() < 2 for x in q] == diagonal_dims(shape, 8, 2, mode), (mode, shape)


def test_whitens_the_gradient():
    """The fit: with gradients g ~ N(0, diag(s^2)) and no momentum, P = Q^T Q tends to diag(1/s)
    (E[(Pg)(Pg)^T] = P: the whitening criterion), in the diagonal factor of a vector."""
    s = torch.tensor([0.1, 1.0, 10.0, 3.0])
    p = torch.zeros(4, requires_grad=True)
    opt = optimlab.Kron([p], lr=0.0, b1=0.0, preconditioner_update_probability=1.0, precond_lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3000):
        p.grad = s * torch.randn(4, generator=gen)
        opt.step()
    (q,) = opt.state[p]["Q"]
    torch.testing.assert_close(q.square() * s, torch.ones(4), rtol=0.25, atol=0)


def test_update_is_clipped_to_rms_and_decay_is_coupled_for_matrices_only():
    torch.manual_seed(0)
    w, b = torch.randn(5, 6, requires_grad=True), torch.randn(6, requires_grad=True)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = optimlab.Kron([w, b], lr=1.0, weight_decay=0.5, precond_init_scale=100.0, precond_lr=0.0)
    w.grad, b.grad = torch.randn(5, 6), torch.randn(6)
    opt.step()
    uw = (w0 - w.detach()) - 0.5 * w0  # u + lambda W
    ub = b0 - b.detach()  # no decay for a vector
    assert uw.square().mean().sqrt().item() == pytest.approx(1.1, rel=1e-5)
    assert ub.square().mean().sqrt().item() == pytest.approx(1.1, rel=1e-5)


def test_init_scale_on_the_first_step():
    torch.manual_seed(0)
    p = torch.randn(4, 3, requires_grad=True)
    g = torch.randn(4, 3)
    opt = optimlab.Kron([p], precond_init_scale=None, precond_lr=0.0)
    p.grad = g.clone()
    opt.step()
    scale = float((g.abs().pow(4).mean() + 1e-36) ** (-1 / 8))
    for q in opt.state[p]["Q"]:
        torch.testing.assert_close(q, scale ** 0.5 * torch.eye(q.shape[0]))


@pytest.mark.parametrize("into", [True, False])
def test_gradient_is_not_written(into):
    torch.manual_seed(0)
    p = torch.randn(4, 3, requires_grad=True)
    opt = optimlab.Kron([p], momentum_into_precond_update=into, preconditioner_update_probability=1.0)
    for _ in range(3):
        p.grad = torch.randn(4, 3)
        g = p.grad.clone()
        opt.step()
        assert torch.equal(p.grad, g)


def _trajectory(seed, kw, steps, resume_at=None):
    torch.manual_seed(0)
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    opt = optimlab.Kron(params, lr=0.01, seed=seed, **kw)
    for t in range(steps):
        if t == resume_at:
            buf = io.BytesIO()
            torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=True)
            params = [p.clone().requires_grad_() for p in saved["params"]]
            opt = optimlab.Kron(params, lr=0.01, seed=seed, **kw)
            opt.load_state_dict(saved["opt"])
        for p, g in zip(params, _grads(params, t), strict=True):
            p.grad = g
        opt.step()
    return [p.detach() for p in params]


RESUME_KW = [dict(), dict(preconditioner_update_probability=0.3, precond_update_mode="random"),
             dict(preconditioner_update_probability=0.4, memory_save_mode="one_diag")]


@pytest.mark.parametrize("kw", RESUME_KW)
def test_resumed_run_equals_unbroken_one(kw):
    unbroken = _trajectory(3, kw, 14)
    resumed = _trajectory(3, kw, 14, resume_at=6)
    for a, b in zip(unbroken, resumed, strict=True):
        assert torch.equal(a, b)


def test_seed_reproduces_and_differs():
    kw = dict(preconditioner_update_probability=0.5, precond_update_mode="random")
    a, b, c = _trajectory(1, kw, 8), _trajectory(1, kw, 8), _trajectory(2, kw, 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))


def test_independent_of_global_rng():
    torch.manual_seed(5)
    a = _trajectory(1, {}, 4)
    torch.manual_seed(6)
    torch.rand(10)
    b = _trajectory(1, {}, 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
