"""NorMuon against its reference (microsoft/dion ``dion/normuon.py``), against Muon where they must agree, and the
properties its per-row normalization promises.

The reference is transcribed below (dion does not install without its CUDA/Triton requirements, and its functions are
``torch.compile``'d with ``fullgraph=True``; the transcription keeps their operations and order). Source:
microsoft/dion at commit 0a059a4542e5aa74b40dcd1dce363836c7afcd48 (2026-08-07): ``dion/normuon.py``
(``normuon_update_megabatch_async``, ``_normuon_normalization_core``), ``dion/muon.py``
(``muon_update_pre_orthogonalize``, ``muon_update_post_orthogonalize``), ``dion/polar_express.py``
(``polar_express``), ``dion/megabatch_base.py`` (``adjust_lr_spectral_norm``, ``adjust_lr_rms_norm``). The one change:
dion casts the momentum to bfloat16 before Newton–Schulz; the transcription casts it to the test's dtype, as
optimlab's ``ns_dtype`` does, so the comparison is not drowned in bfloat16 rounding.

Tolerance. Two differences remain, both documented in :class:`optimlab.NorMuon`: dion normalizes the Newton–Schulz
input by ``1.02 ||X|| + eps`` where optimlab (as torch.optim.Muon) takes ``max(1.02 ||X||, eps)``, a relative change
of ``eps / (1.02 ||X||)`` (about 1e-9 here), which the five polynomials amplify by their slope at the smallest
singular values; and rounding. So float64 is held to rtol 1e-7, float32 to 2e-4 (measured: about 1e-8 and 2e-5).
"""

from __future__ import annotations

import math

import pytest
import torch

import optimlab
from optimlab.algorithms import _matrix

DION_COMMIT = "0a059a4542e5aa74b40dcd1dce363836c7afcd48"
_POLAR_EXPRESS_COEFFS = [  # dion/polar_express.py
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


# -- the transcription of dion's NorMuon step (single process: no communication) ---------------------------------------
def dion_polar_express(G, epsilon, dtype):
    X = G.to(dtype)  # dion: G.bfloat16()
    is_tall = G.size(-2) > G.size(-1)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + epsilon)
    if is_tall:
        for a, b, c in _POLAR_EXPRESS_COEFFS:
            A = X.mT @ X
            B = b * A + c * (A @ A)
            X = a * X + X @ B
    else:
        for a, b, c in _POLAR_EXPRESS_COEFFS:
            A = X @ X.mT
            B = b * A + c * (A @ A)
            X = a * X + B @ X
    return X


def dion_normalization_core(U, V, muon_beta2):
    V_dtype = V.dtype
    U = U.to(dtype=V_dtype)
    norm_U = U.norm(p=2, dim=(-2, -1), keepdim=True)
    neuron_norms = (U * U).mean(dim=-1, keepdim=True)
    V = torch.lerp(V, neuron_norms, 1 - muon_beta2)
    denom = V.sqrt() + 1e-8
    normalized_U = U / denom
    norm_U_new = normalized_U.norm(p=2, dim=(-2, -1), keepdim=True).clamp(min=1e-8)
    normalized_U = normalized_U * (norm_U / norm_U_new)
    return normalized_U, V


def dion_adjusted_lr(lr, shape, adjust_lr):
    fan_out, fan_in = shape[-2:]
    if adjust_lr == "spectral_norm":
        return lr * math.sqrt(fan_out / fan_in)
    if adjust_lr == "rms_norm":
        return lr * 0.2 * math.sqrt(max(fan_out, fan_in))
    return lr


def dion_normuon_step(X, G, M, V, *, lr, mu, muon_beta2, weight_decay, epsilon, nesterov, adjust_lr, dtype):
    """``normuon_update_megabatch_async`` for one shape group of plain tensors (all the same shape), in place."""
    G = [g.to(dtype=M[0].dtype) for g in G]  # muon_update_pre_orthogonalize
    torch._foreach_mul_(M, mu)
    torch._foreach_add_(M, G)
    if nesterov:
        U = torch._foreach_mul(M, mu)
        torch._foreach_add_(U, G)
    else:
        U = M
    U = [u.to(dtype=dtype) for u in U]  # dion: bfloat16
    U_stacked = dion_polar_express(torch.stack(U), epsilon, dtype)
    V_stacked = torch.stack(V)
    U_stacked, V_stacked = dion_normalization_core(U_stacked, V_stacked, muon_beta2)
    torch._foreach_copy_(V, V_stacked.unbind(0))
    U = list(U_stacked.unbind(0))
    adjusted_lr = dion_adjusted_lr(lr, X[0].shape, adjust_lr)
    torch._foreach_mul_(X, 1 - lr * weight_decay)  # muon_update_post_orthogonalize, cautious_wd=False
    U = torch._foreach_mul(U, adjusted_lr)
    torch._foreach_sub_(X, U)


# -- the comparisons ---------------------------------------------------------------------------------------------------
#: tall, wide, square (two of them: the stacked path), a conv filter (as its (out, in*k) view, see below)
SHAPES = [(8, 5), (5, 8), (6, 6), (6, 6), (4, 3, 3, 3)]
TOL = {torch.float64: dict(rtol=1e-7, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-6)}
OPTIONS = [
    dict(),  # dion's defaults
    dict(nesterov=True, weight_decay=0.1, muon_beta2=0.9),
    dict(adjust_lr="rms_norm", mu=0.9, muon_beta2=0.5),
]


def _problem(dtype, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _dion_run(params, grads, *, lr, **options):
    """dion's step on each parameter as its 2-D view ``(out, in*k)``: same-shape views in one group, as dion's
    megabatch groups them."""
    X = [p.clone().reshape(p.shape[0], -1) for p in params]
    M = [torch.zeros_like(x) for x in X]
    V = [torch.zeros_like(x[..., 0:1]) for x in X]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(X):
        groups.setdefault(tuple(x.shape), []).append(i)
    for step_grads in grads:
        for idx in groups.values():
            dion_normuon_step([X[i] for i in idx], [step_grads[i].reshape(X[i].shape) for i in idx],
                              [M[i] for i in idx], [V[i] for i in idx], lr=lr, **options)
    return [x.reshape(p.shape) for x, p in zip(X, params, strict=True)], V


def _ours(options):
    """optimlab's arguments for the dion options above."""
    names = dict(mu="momentum", muon_beta2="beta2")
    out = {names.get(k, k): v for k, v in options.items() if k != "adjust_lr"}
    out["adjust_lr_fn"] = {"rms_norm": "match_rms_adamw"}.get(options.get("adjust_lr"), "spectral_norm")
    return out


@pytest.mark.parametrize("foreach", [None, False], ids=["stacked", "plain-loop"])
@pytest.mark.parametrize("options", OPTIONS, ids=["dion-defaults", "nesterov-wd", "rms-norm"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_trajectory_equals_dion(dtype, options, foreach):
    """Six steps on tall, wide, square and conv matrices equal dion's NorMuon (dion's defaults: lr 0.01, weight decay
    0.01, momentum 0.95 summed, beta2 0.95, Polar Express, spectral_norm, eps 1e-8), parameters and second moments."""
    steps = 6
    params, grads = _problem(dtype, steps)
    dion_options = dict(lr=0.01, mu=0.95, muon_beta2=0.95, weight_decay=0.01, epsilon=1e-8, nesterov=False,
                        adjust_lr="spectral_norm", dtype=dtype) | options
    want, want_v = _dion_run(params, grads, **dion_options)
    ours = [torch.nn.Parameter(p.clone()) for p in params]
    opt = optimlab.NorMuon(ours, ns_dtype=dtype, foreach=foreach,
                           **_ours({k: v for k, v in dion_options.items() if k not in ("epsilon", "dtype")}))
    for step_grads in grads:
        for p, g in zip(ours, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    for p, w, v in zip(ours, want, want_v, strict=True):
        torch.testing.assert_close(p.detach(), w, **TOL[dtype])
        torch.testing.assert_close(opt.state[p]["second_momentum_buffer"], v, **TOL[dtype])


def test_defaults_are_dions():
    """The defaults are dion's NorMuon's (``NorMuon.__init__``), so the test above runs them as they ship."""
    opt = optimlab.NorMuon([torch.nn.Parameter(torch.zeros(2, 2))])
    h = opt.param_groups[0]
    assert (h["lr"], h["momentum"], h["beta2"], h["weight_decay"], h["eps"], h["nesterov"]) == \
        (0.01, 0.95, 0.95, 0.01, 1e-8, False)
    assert (h["adjust_lr_fn"], h["ns_coefficients"], h["momentum_form"]) == ("spectral_norm", "polar_express", "sum")
    assert h["adam_betas"] == (0.9, 0.95) and h["adam_eps"] == 1e-8


def _muon_pair(beta2, foreach, **common):
    params, grads = _problem(torch.float64, 5, seed=1)
    runs = []
    for cls, extra in ((optimlab.NorMuon, dict(beta2=beta2)), (optimlab.Muon, {})):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        opt = cls(ps, ns_dtype=torch.float64, foreach=foreach, **common, **extra)
        for step_grads in grads:
            for p, g in zip(ps, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
        runs.append(ps)
    return runs


@pytest.mark.parametrize("foreach", [None, False], ids=["stacked", "plain-loop"])
def test_beta2_one_is_muon(foreach):
    """``beta2=1`` keeps the second moment at zero, so the normalization divides every row by ``eps`` and the
    rescaling restores the norm: the step is Muon's with the same options (to rounding)."""
    common = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=True, ns_coefficients="quintic", eps=1e-7,
                  adjust_lr_fn="original", momentum_form="ema")
    ours, muon = _muon_pair(1.0, foreach, **common)
    for a, b in zip(ours, muon, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_beta2_below_one_is_not_muon():
    """The control of the test above: with the second moment on, the trajectories part."""
    common = dict(lr=0.02, ns_coefficients="quintic", eps=1e-7, adjust_lr_fn="original", momentum_form="ema")
    ours, muon = _muon_pair(0.95, None, **common)
    assert max((a - b).abs().max().item() for a, b in zip(ours, muon, strict=True)) > 1e-3


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (4, 3, 3)], ids=["tall", "wide", "conv1d"])
def test_beta2_zero_gives_rows_of_equal_norm(shape):
    """With ``beta2=0`` the second moment is this step's mean square of each row, so every row of the update has the
    same norm, and the update keeps the Frobenius norm of the orthogonalized momentum (one step from zero momentum:
    ``O = NS(G)``)."""
    gen = torch.Generator().manual_seed(2)
    p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    start = p.detach().clone()
    opt = optimlab.NorMuon([p], lr=0.1, beta2=0.0, weight_decay=0.0, ns_dtype=torch.float64, adjust_lr_fn="original",
                           eps=1e-15)  # the guard eps / rms(row) would part the rows by about 1e-8
    p.grad = g
    opt.step()
    rows, cols = shape[0], math.prod(shape[1:])
    step = (start - p.detach()).reshape(rows, cols) / (0.1 * math.sqrt(max(1, rows / cols)))
    row_norms = step.norm(dim=1)
    torch.testing.assert_close(row_norms, row_norms.mean().expand(rows), rtol=1e-10, atol=0)
    o = _matrix.newton_schulz(g.reshape(rows, cols), list(_matrix.POLAR_EXPRESS), 1e-15, torch.float64, 1.02)
    torch.testing.assert_close(step.norm(), o.norm(), rtol=1e-10, atol=0)


def test_longer_axis_takes_column_statistics_of_a_wide_matrix():
    """``stat_axis="longer"`` (the speedrun's): a wide matrix gets one statistic per column, state ``(1, n)``, and
    with ``beta2=0`` its update has columns of equal norm; a tall one keeps the row statistics of ``"rows"``."""
    gen = torch.Generator().manual_seed(3)
    wide = torch.nn.Parameter(torch.randn(4, 9, generator=gen, dtype=torch.float64))
    tall = torch.nn.Parameter(torch.randn(9, 4, generator=gen, dtype=torch.float64))
    start = wide.detach().clone()
    opt = optimlab.NorMuon([wide, tall], beta2=0.0, weight_decay=0.0, stat_axis="longer", ns_dtype=torch.float64,
                           eps=1e-15)
    wide.grad = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    tall.grad = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    opt.step()
    assert opt.state[wide]["second_momentum_buffer"].shape == (1, 9)
    assert opt.state[tall]["second_momentum_buffer"].shape == (9, 1)
    col_norms = (start - wide.detach()).norm(dim=0)
    torch.testing.assert_close(col_norms, col_norms.mean().expand(9), rtol=1e-10, atol=0)


def test_state_dict_round_trip_continues_bit_for_bit():
    """Save after 3 steps, load into a fresh optimizer, 3 more steps: equal to 6 unbroken steps (both paths' state,
    the second moment included); a second moment of the wrong shape is refused."""
    params, grads = _problem(torch.float64, 6, seed=4)

    def run(ps, opt, gs):
        for step_grads in gs:
            for p, g in zip(ps, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()

    whole = [torch.nn.Parameter(p.clone()) for p in params]
    run(whole, optimlab.NorMuon(whole, ns_dtype=torch.float64), grads)
    first = [torch.nn.Parameter(p.clone()) for p in params]
    opt = optimlab.NorMuon(first, ns_dtype=torch.float64)
    run(first, opt, grads[:3])
    saved = opt.state_dict()
    second = [torch.nn.Parameter(p.detach().clone()) for p in first]
    resumed = optimlab.NorMuon(second, ns_dtype=torch.float64)
    resumed.load_state_dict(saved)
    run(second, resumed, grads[3:])
    for a, b in zip(whole, second, strict=True):
        assert torch.equal(a, b)
    bad = optimlab.NorMuon([torch.nn.Parameter(p.detach().clone()) for p in first], ns_dtype=torch.float64)
    saved["state"][0]["second_momentum_buffer"] = torch.zeros(1, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="second_momentum_buffer"):
        bad.load_state_dict(saved)


def test_from_model_routes_like_muon():
    """``create_optimizer("normuon", model)``: hidden matrices to NorMuon, the embedding, the head, gains and biases
    to AdamW (Muon's ``from_model``), with NorMuon's own defaults for the AdamW groups' weight decay and eps."""
    model = torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Linear(6, 6), torch.nn.LayerNorm(6),
                                torch.nn.Linear(6, 10))
    opt = optimlab.create_optimizer("normuon", model)
    assert isinstance(opt, optimlab.NorMuon)
    muon = [g for g in opt.param_groups if g["use_muon"]]
    adam = [g for g in opt.param_groups if not g["use_muon"]]
    assert [p is model[1].weight for g in muon for p in g["params"]] == [True]
    assert sum(len(g["params"]) for g in adam) == 6
    assert all(g["weight_decay"] == 0.01 and g["adam_eps"] == 1e-8 for g in adam)


def test_grad_is_not_written():
    p = torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    g = torch.randn(5, 3, dtype=torch.float64)
    p.grad = g.clone()
    opt = optimlab.NorMuon([p], nesterov=True, momentum_form="ema")
    opt.step()
    opt.step()
    assert torch.equal(p.grad, g)
