"""The path table (:mod:`optimlab.core.dispatch`) and the step plans (``optimlab.core.base._Plan``).

Every forced path is compared with the plain loop (``foreach=False``, the reference); the Triton row runs under
Triton's interpreter for a few optimizers (CI has no GPU). The step-plan tests change what a cached plan depends on
between steps (hyperparameters by a scheduler, ``load_state_dict``, ``add_param_group``, gradients that appear and
disappear, ``zero_grad``) and compare with the plain loop, and check that a plan was in fact reused.
"""

from __future__ import annotations

import copy

import pytest
import torch
from optim_db import BY_NAME
from problems import loss_at, make_params

import optimlab
from optimlab.core import base, dispatch, kernels
from optimlab.core import triton_kernels as tk


def _run(info, cfg, foreach, steps=8, dtype=torch.float64, skip_every=3):
    params = make_params(dtype)
    opt = info.make(params, **cfg, foreach=foreach)
    for k in range(steps):
        opt.zero_grad()
        loss_at(params, k).backward()
        if skip_every and k % skip_every == 1:
            params[1].grad = None
        opt.step()
    return params, opt


def _assert_same(pa, oa, pb, ob):
    for a, b in zip(pa, pb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert oa.state[a].keys() == ob.state[b].keys()
        for key in oa.state[a]:
            torch.testing.assert_close(oa.state[a][key], ob.state[b][key], rtol=1e-12, atol=1e-14, msg=key)


def test_tables_read_in_order():
    assert dispatch.ENTRY_PATHS == ("sparse", "differentiable", "loop", "lists")
    assert dispatch.BUCKET_PATHS == ("custom", "traced", "fused", "triton", "compiled", "mixed", "blocked", "foreach")
    with pytest.raises(ValueError, match="Invalid paths"):
        with dispatch.only("warp"):
            pass


@pytest.mark.parametrize("path, name", [("fused", "adam"), ("fused", "sgd"), ("compiled", "nadam"),
                                        ("foreach", "radam"), ("custom", "lamb")])
def test_the_path_is_taken(path, name):
    if path == "compiled" and not kernels.enabled():
        pytest.skip("no C compiler")
    info = BY_NAME[name]
    cfg = dict(info.configs[0])
    if name == "sgd":
        cfg["momentum"] = 0.9
    before = dispatch.taken[path]
    with dispatch.only(path):
        _run(info, cfg, foreach=None, steps=3, dtype=torch.float32)
    assert dispatch.taken[path] > before


def test_loop_and_differentiable_rows():
    before = dict(dispatch.taken)
    _run(BY_NAME["adam"], {}, foreach=False, steps=2)
    x = torch.randn(3, dtype=torch.float64)  # not a leaf that requires grad: the step may write it under autograd
    opt = optimlab.SGD([x], lr=0.1, momentum=0.9, differentiable=True)
    x.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert dispatch.taken["loop"] > before.get("loop", 0)
    assert dispatch.taken["differentiable"] > before.get("differentiable", 0)


TRITON_NAMES = ("adam", "nadam", "rmsprop", "lion", "adabound")


@pytest.mark.parametrize("name", TRITON_NAMES)
def test_triton_row_equals_plain_loop(name, monkeypatch):
    """The Triton row, under Triton's interpreter (CPU tensors), gives the plain loop's trajectory."""
    if not tk.available():
        pytest.skip("Triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    info = BY_NAME[name]
    cfg = dict(info.configs[0])
    pa, oa = _run(info, cfg, foreach=False, steps=4)
    runs, before = tk.stats()["runs"], dispatch.taken["triton"]
    with dispatch.only("triton"):
        pb, ob = _run(info, cfg, foreach=True, steps=4)
    assert dispatch.taken["triton"] > before and tk.stats()["runs"] > runs
    _assert_same(pa, oa, pb, ob)


# -- step plans -------------------------------------------------------------------------------------------------
PLAN_NAMES = ("adam", "sgd", "nadam", "adabound", "lamb")


def _cfg(name):
    cfg = dict(BY_NAME[name].configs[0])
    if name == "sgd":
        cfg.update(momentum=0.9, weight_decay=1e-2)
    return cfg


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_plan_sees_scheduled_hyperparameters(name):
    """lr, betas/momentum and weight_decay changed between steps are read every step, never from the plan."""
    def run(foreach):
        params = make_params()
        opt = BY_NAME[name].make(params, **_cfg(name), foreach=foreach)
        for k in range(8):
            opt.zero_grad()
            loss_at(params, k).backward()
            opt.step()
            g = opt.param_groups[0]
            g["lr"] = g["lr"] * (0.5 if k % 2 else 1.7)
            if "weight_decay" in g:
                g["weight_decay"] = 0.01 * (k + 1)
            if "betas" in g:
                g["betas"] = (0.8 + 0.01 * k, g["betas"][1])
            if "momentum" in g and g["momentum"]:
                g["momentum"] = 0.5 + 0.05 * k
        return params, opt

    pa, oa = run(False)
    hits = base.plan_stats["hits"]
    pb, ob = run(None)
    assert base.plan_stats["hits"] > hits  # the plan was used
    _assert_same(pa, oa, pb, ob)


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_plan_follows_gradients_that_come_and_go(name):
    """zero_grad(set_to_none=True), a parameter without a gradient on some steps, then with one again."""
    pa, oa = _run(BY_NAME[name], _cfg(name), foreach=False, steps=10, skip_every=3)
    pb, ob = _run(BY_NAME[name], _cfg(name), foreach=None, steps=10, skip_every=3)
    _assert_same(pa, oa, pb, ob)
    if "step" in ob.state[pb[0]]:
        assert int(ob.state[pb[1]]["step"]) == 7


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_plan_after_load_state_dict(name):
    """A checkpoint loaded into an optimizer that has a plan continues as the run the checkpoint came from."""
    params = make_params()
    opt = BY_NAME[name].make(params, **_cfg(name))
    for k in range(3):
        opt.zero_grad()
        loss_at(params, k).backward()
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    for k in range(3, 6):  # the plan is in use, then the state goes back to step 3
        opt.zero_grad()
        loss_at(params, k).backward()
        opt.step()
    opt.load_state_dict(saved)
    with torch.no_grad():
        for p, q in zip(params, saved_params, strict=True):
            p.copy_(q)
    ref_params = [q.clone().requires_grad_() for q in saved_params]
    ref = BY_NAME[name].make(ref_params, **_cfg(name), foreach=False)
    ref.load_state_dict(copy.deepcopy(saved))
    for k in range(3, 7):
        for o, ps in ((opt, params), (ref, ref_params)):
            o.zero_grad()
            loss_at(ps, k).backward()
            o.step()
    _assert_same(ref_params, ref, params, opt)


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_plan_after_add_param_group(name):
    def run(foreach):
        params = make_params()
        opt = BY_NAME[name].make(params[:2], **_cfg(name), foreach=foreach)
        for k in range(6):
            if k == 3:
                opt.add_param_group({"params": params[2:], "lr": opt.param_groups[0]["lr"] * 0.5})
            opt.zero_grad()
            loss_at(params, k).backward()
            opt.step()
        return params, opt

    pa, oa = run(False)
    pb, ob = run(None)
    _assert_same(pa[:2], oa, pb[:2], ob)
    _assert_same(pa[2:], oa, pb[2:], ob)


def test_plan_notices_a_reset_state():
    """State removed by hand (``opt.state.clear()``, a fresh start) is created again, as without a plan."""
    def run(foreach):
        params = make_params()
        opt = optimlab.Adam(params, lr=0.01, foreach=foreach)
        for k in range(6):
            if k == 3:
                opt.state.clear()
            opt.zero_grad()
            loss_at(params, k).backward()
            opt.step()
        return params, opt

    pa, oa = run(False)
    pb, ob = run(None)
    _assert_same(pa, oa, pb, ob)
