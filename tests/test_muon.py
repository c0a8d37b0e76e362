"""Muon: parity with torch.optim.Muon, Newton–Schulz's closed-form behaviour, a hand-derived step, the AdamW
groups, conv filters, the batched path, and the groups ``create_optimizer("muon", model)`` builds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import optimlab
from optimlab.algorithms import _matrix

SHAPES = [(6, 5), (5, 6), (6, 5), (8, 8), (3, 9), (1, 4)]


def _params(dtype, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def _run(opt, params, steps=10, scale=1.0):
    for k in range(steps):
        g = torch.Generator().manual_seed(100 + k)
        for p in params:
            p.grad = (scale * torch.randn(p.shape, generator=g, dtype=torch.float64)).to(p.dtype)
        opt.step()


OPTIONS = [dict(nesterov=n, adjust_lr_fn=f, weight_decay=w, momentum=0.95)
           for n, f, w in itertools.product([True, False], [None, "original", "match_rms_adamw"], [0.0, 0.1])]
OPTIONS += [dict(nesterov=True, adjust_lr_fn=None, weight_decay=0.1, momentum=0.5), dict(momentum=0.0)]


@pytest.fixture(autouse=True)
def one_thread():
    """oneDNN's bfloat16 matmul spends about a millisecond per call synchronising two threads on a busy machine,
    even for a 6x5 matrix (3 us on one thread): these tests use tiny matrices, so run them on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_plain_loop_equals_torch_muon_bit_for_bit(dtype, options):
    """foreach=False runs torch.optim.Muon's operations (bfloat16 Newton–Schulz): the same bits, every option."""
    if dtype == torch.bfloat16 and not options.get("nesterov", True):
        pytest.skip("torch.optim.Muon orthogonalizes its own bfloat16 buffer in place (test_torch_bf16_buffer_bug)")
    a, b = _params(dtype), _params(dtype)
    _run(torch.optim.Muon(a, lr=0.02, **options), a)
    _run(optimlab.Muon(b, lr=0.02, foreach=False, **options), b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("options", OPTIONS[::3], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_float64_trajectory_equals_torch_without_its_bfloat16_cast(foreach, options, monkeypatch):
    """torch.optim.Muon always runs Newton–Schulz in bfloat16; with that one cast disabled (``Tensor.bfloat16`` made
    a float64 copy), its float64 trajectory is optimlab's with ``ns_dtype=torch.float64``, to 1e-12, on the per-matrix
    loop and on the stacked path."""
    a, b = _params(torch.float64), _params(torch.float64)
    ours = optimlab.Muon(b, lr=0.02, foreach=foreach, ns_dtype=torch.float64, **options)
    _run(ours, b)
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
    _run(torch.optim.Muon(a, lr=0.02, **options), a)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-14)


def test_torch_bf16_buffer_bug():
    """Documents the difference above: torch.optim.Muon with bfloat16 parameters and nesterov=False divides its
    momentum buffer by its norm in place (``grad.bfloat16()`` is no copy there); optimlab's buffer is the average."""
    for cls in (torch.optim.Muon, optimlab.Muon):
        p = torch.zeros(4, 3, dtype=torch.bfloat16, requires_grad=True)
        opt = cls([p], lr=0.1, nesterov=False, momentum=0.9)
        p.grad = torch.ones_like(p)
        opt.step()
        buf = opt.state[p]["momentum_buffer"]
        if cls is optimlab.Muon:
            assert torch.equal(buf, torch.full_like(buf, 0.1))
        else:
            assert not torch.equal(buf, torch.full_like(buf, 0.1))


def test_state_dict_moves_between_torch_and_optimlab():
    a, b = _params(torch.float32), _params(torch.float32)
    ta = torch.optim.Muon(a, lr=0.02)
    _run(ta, a, steps=3)
    ob = optimlab.Muon(b, lr=0.02, foreach=False)
    with torch.no_grad():
        for x, y in zip(a, b, strict=True):
            y.copy_(x)
    ob.load_state_dict(ta.state_dict())
    _run(ta, a, steps=4)
    _run(ob, b, steps=4)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    torch.optim.Muon(_params(torch.float32), lr=0.02).load_state_dict(ob.state_dict())  # and back


def test_stacked_bfloat16_path_is_close_to_the_per_matrix_loop():
    """Stacking same-shape matrices changes nothing but the kernel (bmm vs mm): in bfloat16 the two agree to within
    the bfloat16 rounding of the update (an occasional last-bit difference), in float64 to round-off."""
    a, b = _params(torch.float32), _params(torch.float32)
    _run(optimlab.Muon(a, lr=0.02, foreach=False), a)
    _run(optimlab.Muon(b, lr=0.02, foreach=True), b)
    for x, y in zip(a, b, strict=True):
        # 10 steps of 0.02 * (<= 1.2) per element: a bfloat16 last bit (2^-8 relative) of each step is <= 1e-3
        torch.testing.assert_close(y, x, rtol=0, atol=1e-3)


# -- Newton–Schulz: closed form --------------------------------------------------------------------------------------
def _with_singular_values(shape, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))
    return (u * s) @ v.T, u, v


def _scalar_map(schedule, scale, s):
    y = np.asarray(s, dtype=np.float64) / scale
    for a, b, c in schedule:
        y = a * y + b * y**3 + c * y**5
    return y


@pytest.mark.parametrize("coefficients,band", [("quintic", (0.68, 1.21)), ("polar_express", (0.85, 1.15))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(48, 48), (64, 24), (24, 64)])
def test_newton_schulz_singular_values_lie_in_the_band(coefficients, band, dtype, shape):
    """Newton–Schulz acts on each singular value s of G/||G||_F by the scalar polynomial composition. Measured on
    that map: for s in [3e-3, 1] the quintic coefficients x 5 give [0.682, 1.202] (Keller Jordan's docstring says
    "~Uniform(0.5, 1.5)", facebookresearch/optimizers "[0.7, 1.3]"), Polar Express x 5 [0.859, 1.141]. The
    matrix iteration lands there in float64/float32, and within 0.01 of it in bfloat16; the singular vectors are
    G's."""
    schedule, scale = _matrix.ns_schedule(coefficients, 5)
    k = min(shape)
    sigma = torch.logspace(-1.2, 0, k, dtype=torch.float64)  # normalized s from about 9e-3 to 0.14
    G, u, v = _with_singular_values(shape, sigma)
    s = (sigma / sigma.norm()).numpy()
    assert s.min() >= 3e-3
    expected = _scalar_map(schedule, scale, s)
    assert band[0] <= expected.min() and expected.max() <= band[1]
    O = _matrix.newton_schulz(G, schedule, 1e-7, dtype, scale).double()
    sv = torch.linalg.svdvals(O)
    slack = 0.01 if dtype == torch.bfloat16 else 1e-6
    assert band[0] - slack <= sv.min() and sv.max() <= band[1] + slack
    if dtype == torch.float64:  # exactly the scalar map, on G's singular vectors
        torch.testing.assert_close(O, (u * torch.from_numpy(expected)) @ v.T, rtol=0, atol=1e-10)


def test_polar_express_is_closer_to_orthogonal_than_the_quintic():
    """The paper's claim, on the scalar map over [1e-3, 1]: max |p(s) - 1| is smaller for Polar Express at 5 steps."""
    s = np.logspace(-3, 0, 20001)
    err = {c: np.abs(_scalar_map(*_matrix.ns_schedule(c, 5), s) - 1).max() for c in ("quintic", "polar_express")}
    assert err["polar_express"] < 0.16 < 0.5 < err["quintic"]


def test_polar_express_repeats_its_last_polynomial_and_custom_sequences_are_accepted():
    sched, scale = _matrix.ns_schedule("polar_express", 7)
    assert sched[:5] == list(_matrix.POLAR_EXPRESS) and sched[5] == sched[6] == _matrix.POLAR_EXPRESS[-1]
    assert scale == 1.02
    assert _matrix.ns_schedule([(2.0, -1.5, 0.5), (1.5, -0.5, 0.0)], 3)[0] == \
        [(2.0, -1.5, 0.5), (1.5, -0.5, 0.0)] * 1 + [(1.5, -0.5, 0.0)]


def test_hand_derived_first_step():
    """A gradient c U V^T with all singular values equal: B_1 = (1-mu) G, Nesterov (1-mu)(1+mu) G, normalized to
    U V^T / sqrt(r), then each singular value follows s <- a s + b s^3 + c s^5 five times. So the first step is
    W_1 = (1 - lr wd) W_0 - lr sqrt(max(1, A/B)) phi(1/sqrt(r)) U V^T, computed here by hand in Python floats."""
    A, Bdim, r = 8, 4, 4
    G, _, _ = _with_singular_values((A, Bdim), torch.full((r,), 3.0, dtype=torch.float64))
    W0 = torch.randn(A, Bdim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = 1 / math.sqrt(r)
    for _ in range(5):
        s = 3.4445 * s - 4.7750 * s**3 + 2.0315 * s**5
    lr, wd = 0.05, 0.1
    expected = (1 - lr * wd) * W0 - lr * math.sqrt(A / Bdim) * s * (G / 3.0)
    W = W0.clone().requires_grad_()
    opt = optimlab.Muon([W], lr=lr, weight_decay=wd, ns_dtype=torch.float64)
    W.grad = G.clone()
    opt.step()
    torch.testing.assert_close(W.detach(), expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(opt.state[W]["momentum_buffer"], 0.05 * G, rtol=0, atol=1e-15)


def test_momentum_forms_give_the_same_step_and_different_buffers():
    """'sum' (B = mu B + G) and 'ema' (B = mu B + (1-mu) G) differ by the factor 1-mu before the normalisation."""
    a, b = _params(torch.float64), _params(torch.float64)
    oa = optimlab.Muon(a, lr=0.02, ns_dtype=torch.float64, momentum_form="ema")
    ob = optimlab.Muon(b, lr=0.02, ns_dtype=torch.float64, momentum_form="sum")
    _run(oa, a, steps=6)
    _run(ob, b, steps=6)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
        assert not torch.allclose(oa.state[x]["momentum_buffer"], ob.state[y]["momentum_buffer"])


def test_conv_filters_are_orthogonalized_flattened():
    """A (out, in, kh, kw) filter takes exactly the step of the (out, in*kh*kw) matrix."""
    conv = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = conv.clone().requires_grad_(), conv.reshape(6, 18).clone().requires_grad_()
    oa = optimlab.Muon([a], lr=0.02, ns_dtype=torch.float64)
    ob = optimlab.Muon([b], lr=0.02, ns_dtype=torch.float64)
    for k in range(4):
        grad = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + k))
        a.grad, b.grad = grad, grad.reshape(6, 18).clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(a.detach().reshape(6, 18), b.detach(), rtol=0, atol=1e-15)


def test_adamw_groups_equal_torch_adamw():
    """use_muon=False groups are torch.optim.AdamW with adam_betas and adam_eps (both paths)."""
    for foreach in (False, True):
        a, b = _params(torch.float64, [(5,), (3, 4), ()]), _params(torch.float64, [(5,), (3, 4), ()])
        _run(torch.optim.AdamW(a, lr=0.01, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.1), a)
        _run(optimlab.Muon([{"params": b, "use_muon": False}], lr=0.01, weight_decay=0.1, foreach=foreach), b)
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-14)


def test_converges_on_matrix_least_squares():
    """Muon solves min ||X W - Y||^2 for a square hidden matrix (with the lr decayed to zero, as Muon needs)."""
    g = torch.Generator().manual_seed(0)
    X, Wt = torch.randn(64, 16, generator=g, dtype=torch.float64), torch.randn(16, 16, generator=g, dtype=torch.float64)
    W = torch.zeros(16, 16, dtype=torch.float64, requires_grad=True)
    opt = optimlab.Muon([W], lr=0.1, weight_decay=0.0, ns_dtype=torch.float32)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / 400)
    for _ in range(400):
        opt.zero_grad()
        ((X @ W - X @ Wt) ** 2).mean().backward()
        opt.step()
        sched.step()
    assert (W - Wt).norm() / Wt.norm() < 0.02


# -- errors ----------------------------------------------------------------------------------------------------------
def test_a_parameter_muon_cannot_take_is_named():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"Invalid param params\[1\]: shape \(8,\); expected a matrix"):
        optimlab.Muon(model.parameters())
    with pytest.raises(ValueError, match=r"Invalid param '0.bias': shape \(8,\)"):
        optimlab.Muon(model.named_parameters())
    with pytest.raises(RuntimeError, match="complex"):
        optimlab.Muon([torch.zeros(3, 3, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(TypeError, match="Invalid betas.*adam_betas"):
        optimlab.Muon([{"params": [torch.zeros(3, requires_grad=True)], "use_muon": False, "betas": (0.9, 0.9)}])
    optimlab.Muon([{"params": [torch.zeros(3, requires_grad=True)], "use_muon": False}])  # AdamW takes vectors


# -- create_optimizer("muon", model) ---------------------------------------------------------------------------------
class _TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)  # the first convolution: AdamW
        self.conv2 = nn.Conv1d(16, 16, 3, padding=1)  # a hidden filter: Muon, flattened
        self.block = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16), nn.LayerNorm(16))
        self.head = nn.Linear(16, 50, bias=False)

    def forward(self, x):
        h = self.embed(x).transpose(1, 2)
        h = self.conv2(self.conv(h)).transpose(1, 2)
        return self.head(self.block(h))


def _names(opt, use_muon):
    return [n for g in opt.param_groups if g["use_muon"] == use_muon for n in g["param_names"]]


def test_create_optimizer_splits_hidden_matrices_from_the_rest():
    model = _TinyLM()
    opt = optimlab.create_optimizer("muon", model, lr=0.02, weight_decay=0.01)
    assert _names(opt, True) == ["conv2.weight", "block.0.weight", "block.2.weight"]
    assert set(_names(opt, False)) == {"embed.weight", "conv.weight", "conv.bias", "conv2.bias", "block.0.bias",
                                       "block.2.bias", "block.3.weight", "block.3.bias", "head.weight"}
    muon, adamw = opt.param_groups
    assert muon["lr"] == 0.02 and adamw["lr"] == 3e-4 and adamw["weight_decay"] == 0.01
    assert adamw["adam_betas"] == (0.9, 0.95) and adamw["adam_eps"] == 1e-10
    x = torch.randint(0, 50, (2, 7))
    before = [p.detach().clone() for p in model.parameters()]
    model(x).sum().backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # Moonlight's recipe: one lr for both; exclusion of biases and norms from decay
    moon = optimlab.create_optimizer("muon", model, lr=2e-3, adjust_lr_fn="match_rms_adamw", exclude_from_decay=True)
    assert [g["lr"] for g in moon.param_groups] == [2e-3, 2e-3, 2e-3]
    assert [g["weight_decay"] for g in moon.param_groups] == [0.1, 0.1, 0.0]
    assert set(moon.param_groups[2]["param_names"]) == {"conv.bias", "conv2.bias", "block.0.bias", "block.2.bias",
                                                         "block.3.weight", "block.3.bias"}


def test_create_optimizer_override_and_plain_parameter_lists():
    model = _TinyLM()
    only = optimlab.create_optimizer("muon", model, muon_params=["block.0.weight"])
    assert _names(only, True) == ["block.0.weight"]
    pick = optimlab.create_optimizer("muon", model, muon_params=lambda name, p: p.dim() >= 2 and "embed" not in name)
    assert "head.weight" in _names(pick, True) and "embed.weight" in _names(pick, False)
    ps = [torch.zeros(3, 4, requires_grad=True), torch.zeros(4, requires_grad=True)]
    opt = optimlab.create_optimizer("muon", ps, lr=0.02, adamw_lr=1e-3)
    assert [(g["use_muon"], len(g["params"]), g["lr"]) for g in opt.param_groups] == [(True, 1, 0.02),
                                                                                      (False, 1, 1e-3)]
    with pytest.raises(TypeError, match="nn.Module"):
        optimlab.create_optimizer("muon", ps, exclude_from_decay=True)
