"""The optimizers after Adam against their references: the authors' packages where they install without another
torch (``schedulefree``, ``prodigyopt``, ``lion-pytorch``, ``torch-adopt``: the ``test`` extra), single-tensor
references written here from the authors' code where there is no package, or for a second check (Lion: google/automl
``lion_pytorch.py``; AdEMAMix: apple/ml-ademamix ``pytorch/ademamix.py`` and its optax variant; MARS: AGI-Arena/MARS
``mars.py``; ADOPT: iShohei220/adopt ``adopt.py``; Schedule-Free's ``inner_momentum`` of the repository's HEAD),
closed forms (Lion's +-lr per element,
Schedule-Free's eval point is the average of the z iterates, ASGD's average, AdEMAMix with alpha = 0 is AdamW), and
hand-derived first steps.

Trajectories run in float64 on a matrix, a vector and a 0-d scalar (MARS: also a 4-d "conv filter"), with a fresh
mini-batch each step, on both of optimlab's paths (``foreach=False`` and ``foreach=True``: compiled kernels where a
C compiler exists), and compare parameters (and state where the reference keeps the same) at rtol 1e-10.
"""

from __future__ import annotations

import copy
import importlib
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

import optimlab
from optimlab.core import kernels

DT = torch.float64
RTOL = 1e-10
STEPS = 30


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def needs(module: Any, package: str) -> pytest.MarkDecorator:
    """Skip a test (only that test) when the reference package is not installed (the ``test`` extra installs it)."""
    return pytest.mark.skipif(module is None, reason=f"the test extra installs {package} (pure Python)")


# The authors' packages (the ``test`` extra; each is pure Python and declares at most an unpinned torch).
schedulefree = _optional("schedulefree")
prodigyopt = _optional("prodigyopt")
lion_pytorch = _optional("lion_pytorch")
adopt_package = _optional("adopt")  # torch-adopt, iShohei220/adopt


def close(actual: Tensor, expected: Tensor, rtol: float = RTOL) -> None:
    """Relative error, where an element that cancelled to near zero is measured against its tensor's scale."""
    expected = expected.detach().to(DT)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.detach().to(DT), expected, rtol=rtol, atol=rtol * scale)


# -- the problem: parameters of mixed shapes, a fresh mini-batch each step ---------------------------------------------
def initial_params(seed: int = 0, conv: bool = False) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(3, 4, generator=gen, dtype=DT), torch.randn(4, generator=gen, dtype=DT),
              torch.randn((), generator=gen, dtype=DT)]
    if conv:
        params.append(torch.randn(2, 2, 3, 3, generator=gen, dtype=DT) * 0.3)
    return params


def loss_fn(params: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
    w, b, s = params[:3]
    out = torch.tanh(x @ w) * torch.sigmoid(s) + b
    loss = torch.log(torch.cosh(out - y)).mean() + 0.05 * torch.sin(3 * w).sum()
    if len(params) > 3:
        loss = loss + (torch.tanh(params[3]) * x[:2, :1, None, None]).sum() * 0.1
    return loss


def make_data(steps: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(steps, 6, 3, generator=gen, dtype=DT), torch.randn(steps, 6, 4, generator=gen, dtype=DT)


def gradients(params: Sequence[Tensor], data: tuple[Tensor, Tensor], t: int) -> list[Tensor]:
    leaves = [p.detach().clone().requires_grad_() for p in params]
    return list(torch.autograd.grad(loss_fn(leaves, data[0][t], data[1][t]), leaves))


def lockstep(runs: Sequence[tuple[list[Tensor], Any]], steps: int, data: tuple[Tensor, Tensor] | None = None,
             after_step: Callable[[int], None] | None = None) -> None:
    """Step every optimizer on the gradients at the first run's parameters (each gets its own copy: some references
    write into ``p.grad``), so a difference is the update rule's own."""
    data = data or make_data(steps)
    for t in range(steps):
        grads = gradients(runs[0][0], data, t)
        for params, opt in runs:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
        if after_step is not None:
            after_step(t)


def leaves(init: Sequence[Tensor]) -> list[Tensor]:
    return [t.clone().requires_grad_() for t in init]


def ours_and_reference(make_ours: Callable[[list[Tensor]], Any], make_ref: Callable[[list[Tensor]], Any],
                       steps: int = STEPS, conv: bool = False) -> tuple[list[tuple[list[Tensor], Any]], Any]:
    """The reference run first (its parameters give the gradients), then optimlab's plain loop and list path."""
    init = initial_params(conv=conv)
    runs = [(leaves(init), None), (leaves(init), None), (leaves(init), None)]
    runs[0] = (runs[0][0], make_ref(runs[0][0]))
    runs[1] = (runs[1][0], make_ours(runs[1][0], foreach=False))
    runs[2] = (runs[2][0], make_ours(runs[2][0], foreach=True))
    lockstep(runs, steps)
    moved = [not torch.equal(p.detach(), q) for p, q in zip(runs[0][0], init, strict=True)]
    assert all(moved), "the reference did not move every parameter: the comparison would be vacuous"
    return runs, init


def assert_params_match(runs: Sequence[tuple[list[Tensor], Any]], rtol: float = RTOL) -> None:
    (ref, _), *ours = runs
    for params, _ in ours:
        for a, b in zip(params, ref, strict=True):
            close(a, b, rtol)


# -- Schedule-Free against the schedulefree package --------------------------------------------------------------------
SF_SGD = [dict(lr=0.5), dict(lr=0.5, momentum=0.7, weight_decay=0.05, warmup_steps=5),
          dict(lr=0.3, r=1.0, weight_lr_power=1.0, warmup_steps=3), dict(lr=0.3, r=0.5, weight_lr_power=0.0)]
SF_ADAMW = [dict(lr=0.02), dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.05, warmup_steps=5),
            dict(lr=0.02, r=1.0, weight_lr_power=1.0, eps=1e-4), dict(lr=0.01, warmup_steps=4, weight_decay=0.1)]


def _sf_runs(ours_cls: type, ref_cls: type, kw: dict[str, Any], ref_kw: dict[str, Any] | None = None,
             ref_foreach: bool = False) -> list[tuple[list[Tensor], Any]]:
    def make_ref(ps: list[Tensor]) -> Any:
        opt = ref_cls(ps, foreach=ref_foreach, **(ref_kw or kw))
        opt.train()
        return opt

    runs, _ = ours_and_reference(lambda ps, foreach: ours_cls(ps, foreach=foreach, **kw), make_ref)
    return runs


@needs(schedulefree, "schedulefree")
@pytest.mark.parametrize("ref_foreach", [False, True], ids=["ref-loop", "ref-foreach"])
@pytest.mark.parametrize("kw", SF_SGD, ids=[str(k) for k in SF_SGD])
def test_schedule_free_sgd_matches_the_package(kw: dict[str, Any], ref_foreach: bool) -> None:
    runs = _sf_runs(optimlab.ScheduleFreeSGD, schedulefree.SGDScheduleFree, kw, ref_foreach=ref_foreach)
    assert_params_match(runs)  # y, in train mode
    (ref_params, ref), *ours = runs
    for params, opt in ours:
        for p, q in zip(params, ref_params, strict=True):
            close(opt.state[p]["z"], ref.state[q]["z"])
        assert opt.param_groups[0]["k"] == ref.param_groups[0]["k"] == STEPS
        assert opt.param_groups[0]["weight_sum"] == pytest.approx(ref.param_groups[0]["weight_sum"], rel=1e-14)
        opt.eval()
    ref.eval()
    assert_params_match(runs)  # x, in eval mode


@needs(schedulefree, "schedulefree")
@pytest.mark.parametrize("kw", SF_ADAMW, ids=[str(k) for k in SF_ADAMW])
def test_schedule_free_adamw_matches_the_package(kw: dict[str, Any]) -> None:
    runs = _sf_runs(optimlab.ScheduleFreeAdamW, schedulefree.AdamWScheduleFree, kw)
    assert_params_match(runs)
    (ref_params, ref), *ours = runs
    for params, opt in ours:
        for p, q in zip(params, ref_params, strict=True):
            close(opt.state[p]["z"], ref.state[q]["z"])
            close(opt.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])
        opt.eval()
    ref.eval()
    assert_params_match(runs)


@needs(schedulefree, "schedulefree")
@pytest.mark.parametrize("kw", SF_ADAMW[:3], ids=[str(k) for k in SF_ADAMW[:3]])
def test_schedule_free_adamw_paper_variant_matches_the_package(kw: dict[str, Any]) -> None:
    """``bias_correction="lr"`` is the package's ``AdamWScheduleFreePaper`` (sqrt(1 - beta2^t) in the lr)."""
    runs = _sf_runs(optimlab.ScheduleFreeAdamW, schedulefree.AdamWScheduleFreePaper, {**kw, "bias_correction": "lr"},
                    ref_kw=kw)
    assert_params_match(runs)


def _sf_adamw_inner_momentum_reference(p: Tensor, g: Tensor, st: dict[str, Any], h: dict[str, Any]) -> None:
    """schedule_free HEAD ``AdamWScheduleFreeReference`` with ``inner_momentum`` (x, y, z kept explicitly)."""
    beta1, beta2 = h["betas"]
    k, mu = st.setdefault("k", 0), h["inner_momentum"]
    if not st.get("init"):
        st.update(init=True, z=p.clone(), x=p.clone(), v=torch.zeros_like(p), m=torch.zeros_like(p), lr_max=-1.0,
                  weight_sum=0.0)
    lr = h["lr"]
    st["lr_max"] = max(lr, st["lr_max"])
    weight = ((k + 1) ** 0.0) * (st["lr_max"] ** 2.0)
    st["weight_sum"] += weight
    c = weight / st["weight_sum"]
    st["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = st["v"].div(1 - beta2 ** (k + 1)).sqrt_().add_(h["eps"])
    st["m"].mul_(mu).add_(g, alpha=1 - mu)
    st["z"].addcdiv_(st["m"].div(1 - mu ** (k + 1)), denom, value=-lr)
    st["x"].mul_(1 - c).add_(st["z"], alpha=c)
    p.copy_(st["x"].mul(beta1).add_(st["z"], alpha=1 - beta1))
    st["k"] = k + 1


def test_schedule_free_adamw_inner_momentum_matches_the_reference_code() -> None:
    h = dict(lr=0.02, betas=(0.9, 0.999), eps=1e-8, inner_momentum=0.9)
    init, data = initial_params(), make_data(STEPS)
    ref = [t.clone() for t in init]
    states: list[dict[str, Any]] = [{} for _ in ref]
    for foreach in (False, True):
        params = leaves(init)
        opt = optimlab.ScheduleFreeAdamW(params, lr=0.02, inner_momentum=0.9, foreach=foreach)
        for t in range(STEPS):
            grads = gradients(params, data, t)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            if foreach is False:
                for w, g, st in zip(ref, grads, states, strict=True):
                    _sf_adamw_inner_momentum_reference(w, g, st, h)
        for p, w, st in zip(params, ref, states, strict=True):
            close(p, w)
            close(opt.state[p]["exp_avg"], st["m"])


def test_schedule_free_eval_point_is_the_average_of_the_z_iterates() -> None:
    """With r = 0, no warm-up and a constant lr, c_{t+1} = 1/(t+1): x_T is the plain mean of z_1 (the start) ... z_T.
    With a warm-up the weights are lr_max(t)^2 (weight_lr_power 2): a weighted mean."""
    for warmup in (0, 4):
        init = initial_params()
        params = leaves(init)
        opt = optimlab.ScheduleFreeSGD(params, lr=0.2, momentum=0.8, warmup_steps=warmup)
        zs: list[list[Tensor]] = [[t.clone() for t in init]]  # z_1 = x_1 = the initial point
        weights = []

        def record(t: int, opt: Any = opt, params: list[Tensor] = params, zs: list[list[Tensor]] = zs,
                   weights: list[float] = weights, warmup: int = warmup) -> None:
            zs.append([opt.state[p]["z"].clone() for p in params])
            weights.append(min(1.0, (t + 1) / warmup) ** 2 if warmup else 1.0)

        lockstep([(params, opt)], 12, after_step=record)
        opt.eval()
        # x_{t+1} = (1 - c) x_t + c z_{t+1} with c = w_{t+1}/sum(w): x_T = sum_t w_t z_{t+1} / sum_t w_t (x_1 = z_1
        # carries the first weight's share through c_1 = 1)
        for i, p in enumerate(params):
            expected = sum(w * z[i] for w, z in zip(weights, zs[1:], strict=True)) / sum(weights)
            close(p, expected, rtol=1e-12)
        assert not opt.train_mode


def test_schedule_free_train_and_eval_are_idempotent_and_step_needs_train_mode() -> None:
    params = leaves(initial_params())
    opt = optimlab.ScheduleFreeAdamW(params, lr=0.02)
    assert opt.train_mode
    lockstep([(params, opt)], 5)
    y = [p.detach().clone() for p in params]
    opt.eval()
    x = [p.detach().clone() for p in params]
    assert all(not torch.equal(a, b) for a, b in zip(x, y, strict=True))
    opt.eval()  # a second eval does nothing
    assert all(torch.equal(p, a) for p, a in zip(params, x, strict=True))
    with pytest.raises(RuntimeError, match=r"eval mode.*call optimizer\.train\(\)"):
        opt.step()
    opt.train()
    opt.train()
    for p, a in zip(params, y, strict=True):
        close(p, a, rtol=1e-13)  # back at y, to round-off


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_schedule_free_state_dict_is_safe_in_either_mode(mode: str) -> None:
    """Model and optimizer saved together (in train or in eval mode), loaded by a fresh optimizer in a fresh
    "process" (a serialised checkpoint): the mode comes back with it, and the resumed run equals the unbroken one."""
    init, data = initial_params(), make_data(20)
    params = leaves(init)
    opt = optimlab.ScheduleFreeAdamW(params, lr=0.02, warmup_steps=3, weight_decay=0.01)
    lockstep([(params, opt)], 8, data)
    if mode == "eval":
        opt.eval()
    buf = io.BytesIO()
    torch.save({"model": [p.detach().clone() for p in params], "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = [t.clone().requires_grad_() for t in ckpt["model"]]
    opt2 = optimlab.ScheduleFreeAdamW(resumed, lr=0.02, warmup_steps=3, weight_decay=0.01)
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.train_mode == (mode == "train")
    for o in (opt, opt2):
        o.train()
    for o, ps in ((opt, params), (opt2, resumed)):
        for t in range(8, 20):
            for p, g in zip(ps, gradients(ps, data, t), strict=True):
                p.grad = g
            o.step()
    for a, b in zip(params, resumed, strict=True):
        assert torch.equal(a, b)


def test_schedule_free_bn_update_recomputes_batchnorm_statistics_at_x() -> None:
    """The README's procedure: the running statistics afterwards are those of 50 training batches at x, not the ones
    gathered at y during training."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    opt = optimlab.ScheduleFreeSGD(model.parameters(), lr=0.5)
    batches = [torch.randn(8, 3) for _ in range(6)]
    for xb in batches:
        opt.zero_grad()
        model(xb).pow(2).mean().backward()
        opt.step()
    at_y = model[1].running_mean.clone()
    by_hand = copy.deepcopy(model)
    by_hand_opt = optimlab.ScheduleFreeSGD(by_hand.parameters(), lr=0.5)
    by_hand_opt.load_state_dict(opt.state_dict())
    optimlab.schedule_free_bn_update(model, opt, iter(batches * 10), num_batches=50)
    assert not model.training and not opt.train_mode
    by_hand_opt.eval()  # parameters at x
    by_hand.train()
    with torch.no_grad():
        for xb in (batches * 10)[:50]:
            by_hand(xb)
    for name in ("running_mean", "running_var"):
        assert torch.equal(getattr(model[1], name), getattr(by_hand[1], name))
    assert not torch.allclose(model[1].running_mean, at_y)
    with pytest.raises(ValueError, match="Invalid num_batches: 0"):
        optimlab.schedule_free_bn_update(model, opt, batches, num_batches=0)


# -- Prodigy against the prodigyopt package ------------------------------------------------------------------------
PRODIGY = [dict(), dict(weight_decay=0.05), dict(weight_decay=0.05, decouple=False),
           dict(use_bias_correction=True, safeguard_warmup=True), dict(betas=(0.0, 0.99), weight_decay=0.05),
           dict(betas=(0.0, 0.99), weight_decay=0.05, decouple=False), dict(growth_rate=1.05, d_coef=2.0, beta3=0.9),
           dict(d0=1e-3, eps=1e-6, lr=0.5)]


@needs(prodigyopt, "prodigyopt")
@pytest.mark.parametrize("kw", PRODIGY, ids=[str(k) for k in PRODIGY])
def test_prodigy_matches_the_package(kw: dict[str, Any]) -> None:
    runs, _ = ours_and_reference(lambda ps, foreach: optimlab.Prodigy(ps, foreach=foreach, **kw),
                                 lambda ps: prodigyopt.Prodigy(ps, **kw), steps=40)
    assert_params_match(runs, rtol=1e-9)
    (_, ref), *ours = runs
    for _, opt in ours:
        for key in ("d", "d_max", "d_numerator", "k"):
            assert opt.param_groups[0][key] == pytest.approx(ref.param_groups[0][key], rel=1e-9), key
    assert ref.param_groups[0]["d"] > 10 * ref.param_groups[0]["d0"]  # the estimate did grow


@needs(prodigyopt, "prodigyopt")
def test_prodigy_groups_share_one_estimate() -> None:
    """Two groups (different weight decay) equal the package with the same groups; a group with another lr, or with
    another option of the estimate, is refused."""
    def groups(ps: list[Tensor]) -> list[dict[str, Any]]:
        return [dict(params=ps[:1], weight_decay=0.1), dict(params=ps[1:], weight_decay=0.0)]

    runs, _ = ours_and_reference(lambda ps, foreach: optimlab.Prodigy(groups(ps), foreach=foreach),
                                 lambda ps: prodigyopt.Prodigy(groups(ps)), steps=25)
    assert_params_match(runs, rtol=1e-9)
    params = leaves(initial_params())
    opt = optimlab.Prodigy([dict(params=params[:1]), dict(params=params[1:], lr=0.5)])
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="same lr"):
        opt.step()
    with pytest.raises(ValueError, match=r"Invalid d_coef: 2\.0; expected 1\.0, the first group's"):
        optimlab.Prodigy([dict(params=params[:1]), dict(params=params[1:], d_coef=2.0)])


def test_prodigy_first_step_by_hand_and_float16_refused() -> None:
    """Step 1: <g, x0 - x0> = 0, so d stays d0 and x1 = x0 - d0 (1 - b1) g / (sqrt(1 - b2)|g| + eps)."""
    g = torch.tensor([0.5, -2.0, 0.0], dtype=DT)
    p = torch.tensor([1.0, 2.0, 3.0], dtype=DT, requires_grad=True)
    opt = optimlab.Prodigy([p], d0=1e-3)
    p.grad = g.clone()
    opt.step()
    expected = torch.tensor([1.0, 2.0, 3.0], dtype=DT) - 1e-3 * 0.1 * g / (0.001**0.5 * g.abs() + 1e-8)
    close(p, expected, rtol=1e-14)
    assert opt.param_groups[0]["d"] == 1e-3 and opt.param_groups[0]["d_numerator"] == 0.0
    half = torch.zeros(2, dtype=torch.float16, requires_grad=True)
    half.grad = torch.ones_like(half)
    with pytest.warns(UserWarning, match="rounds to zero in float16"):
        opt = optimlab.Prodigy([half])
    with pytest.raises(TypeError, match="float16"):
        opt.step()


# -- Lion against lion-pytorch and the authors' code -------------------------------------------------------------------

def _lion_reference(p: Tensor, g: Tensor, st: dict[str, Any], h: dict[str, Any]) -> None:
    """google/automl ``lion/lion_pytorch.py``, one tensor."""
    p.mul_(1 - h["lr"] * h["weight_decay"])
    m = st.setdefault("exp_avg", torch.zeros_like(p))
    beta1, beta2 = h["betas"]
    update = m * beta1 + g * (1 - beta1)
    p.add_(update.sign_(), alpha=-h["lr"])
    m.mul_(beta2).add_(g, alpha=1 - beta2)


LION = [dict(lr=0.01), dict(lr=0.01, weight_decay=0.5, betas=(0.95, 0.98)), dict(lr=3e-3, betas=(0.5, 0.9))]


@needs(lion_pytorch, "lion-pytorch")
@pytest.mark.parametrize("kw", LION, ids=[str(k) for k in LION])
def test_lion_matches_lion_pytorch_and_the_authors_code(kw: dict[str, Any]) -> None:
    runs, init = ours_and_reference(lambda ps, foreach: optimlab.Lion(ps, foreach=foreach, **kw),
                                    lambda ps: lion_pytorch.Lion(ps, **kw))
    assert_params_match(runs)
    h = dict(dict(betas=(0.9, 0.99), weight_decay=0.0), **kw)
    ref = [t.clone() for t in init]
    states: list[dict[str, Any]] = [{} for _ in ref]
    data = make_data(STEPS)
    for t in range(STEPS):
        for w, g, st in zip(ref, gradients(ref, data, t), states, strict=True):
            _lion_reference(w, g, st, h)
    for a, b in zip(runs[1][0], ref, strict=True):
        close(a, b)


@needs(lion_pytorch, "lion-pytorch")
def test_lion_decay_scale_schedule_is_lion_pytorchs_decoupled_weight_decay() -> None:
    def with_schedule(opt: Any) -> Any:
        return torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)

    init, data = initial_params(), make_data(20)
    runs = []
    for make in (lambda ps: lion_pytorch.Lion(ps, lr=0.01, weight_decay=0.3, decoupled_weight_decay=True),
                 lambda ps: optimlab.Lion(ps, lr=0.01, weight_decay=0.3, decay_scale="schedule")):
        ps = leaves(init)
        opt = make(ps)
        sched = with_schedule(opt)
        for t in range(20):
            for p, g in zip(ps, gradients(ps, data, t), strict=True):
                p.grad = g
            opt.step()
            sched.step()
        runs.append(ps)
    for a, b in zip(*runs, strict=True):
        close(a, b)


def test_lion_moves_every_element_by_exactly_lr_before_decay() -> None:
    """|Delta theta| = lr element by element (the sign step), on every step, on every path; decay shrinks first."""
    for foreach in (False, True):
        params = leaves(initial_params())
        lr, wd = 0.01, 0.2
        opt = optimlab.Lion(params, lr=lr, weight_decay=wd, foreach=foreach)
        data = make_data(5)
        for t in range(5):
            before = [p.detach().clone() for p in params]
            for p, g in zip(params, gradients(params, data, t), strict=True):
                p.grad = g
            opt.step()
            for p, b in zip(params, before, strict=True):
                step = p.detach() - b * (1 - lr * wd)
                close(step.abs(), torch.full_like(step, lr), rtol=1e-12)


# -- AdEMAMix: the authors' PyTorch code (and its optax variant) -------------------------------------------------------
def _ademamix_reference(p: Tensor, g: Tensor, st: dict[str, Any], h: dict[str, Any]) -> None:
    """apple/ml-ademamix ``pytorch/ademamix.py``, one tensor; ``h["optax"]`` evaluates the schedules at t - 1."""
    beta1, beta2, beta3_final = h["betas"]
    if not st:
        st.update(step=0, fast=torch.zeros_like(p) if beta1 != 0 else None, slow=torch.zeros_like(p),
                  sq=torch.zeros_like(p))
    st["step"] += 1
    at = st["step"] - 1 if h.get("optax") else st["step"]
    bc1, bc2 = 1 - beta1 ** st["step"], 1 - beta2 ** st["step"]
    alpha, beta3 = h["alpha"], beta3_final
    if h.get("alpha_warmup") is not None and at < h["alpha_warmup"]:
        a = at / float(h["alpha_warmup"])
        alpha = (1.0 - a) * 0 + a * h["alpha"]
    if h.get("beta3_warmup") is not None and at < h["beta3_warmup"]:
        def f(beta: float, eps: float = 1e-8) -> float:
            return math.log(0.5) / math.log(beta + eps) - 1

        a = at / float(h["beta3_warmup"])
        beta3 = math.pow(0.5, 1 / ((1.0 - a) * f(beta1) + a * f(beta3_final) + 1))
    if beta1 != 0:
        st["fast"].mul_(beta1).add_(g, alpha=1 - beta1)
        fast = st["fast"]
    else:
        fast = g
    st["slow"].mul_(beta3).add_(g, alpha=1 - beta3)
    st["sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (st["sq"].sqrt() / math.sqrt(bc2)).add_(h["eps"])
    update = (fast.div(bc1) + alpha * st["slow"]) / denom
    update.add_(p, alpha=h["weight_decay"])
    p.add_(-h["lr"] * update)


ADEMAMIX = [dict(lr=0.01, alpha=5.0), dict(lr=0.01, alpha=8.0, beta3_warmup=20, alpha_warmup=20, weight_decay=0.1),
            dict(lr=0.01, betas=(0.0, 0.999, 0.99), alpha=3.0, alpha_warmup=10),
            dict(lr=0.01, betas=(0.9, 0.99, 0.999), alpha=4.0, beta3_warmup=10, alpha_warmup=15, optax=True)]


@pytest.mark.parametrize("kw", ADEMAMIX, ids=[str(k) for k in ADEMAMIX])
def test_ademamix_matches_the_authors_code(kw: dict[str, Any]) -> None:
    h = dict(dict(betas=(0.9, 0.999, 0.9999), eps=1e-8, weight_decay=0.0), **kw)
    ours_kw = {k: v for k, v in kw.items() if k != "optax"}
    if kw.get("optax"):
        ours_kw["warmup_from_zero"] = True
    init, data = initial_params(), make_data(STEPS)
    ref = [t.clone() for t in init]
    states: list[dict[str, Any]] = [{} for _ in ref]
    for t in range(STEPS):
        for w, g, st in zip(ref, gradients(ref, data, t), states, strict=True):
            _ademamix_reference(w, g, st, h)
    for foreach in (False, True):
        params = leaves(init)
        opt = optimlab.AdEMAMix(params, foreach=foreach, **ours_kw)
        lockstep([(params, opt)], STEPS, data)
        for p, w, st in zip(params, ref, states, strict=True):
            close(p, w)
            close(opt.state[p]["exp_avg_slow"], st["slow"])
        assert ("exp_avg_fast" in opt.state[params[0]]) == (h["betas"][0] != 0)


def test_ademamix_with_alpha_zero_is_adamw() -> None:
    """alpha = 0 removes the slow EMA: AdEMAMix is then torch.optim.AdamW (decoupled decay lr * lambda)."""
    runs, _ = ours_and_reference(
        lambda ps, foreach: optimlab.AdEMAMix(ps, lr=0.01, alpha=0.0, weight_decay=0.1, foreach=foreach),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, foreach=False))
    assert_params_match(runs)


# -- MARS: the authors' update_fn --------------------------------------------------------------------------------------
def _mars_reference(p: Tensor, g: Tensor, st: dict[str, Any], h: dict[str, Any]) -> None:
    """AGI-Arena/MARS ``update_fn`` (is_approx=True), one tensor, with the class's state handling."""
    beta1, beta2 = h["betas"]
    if not st:
        st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), last_grad=torch.zeros_like(p),
                  max_sq=torch.zeros_like(p))
    st["step"] += 1
    step, lr, eps = st["step"], h["lr"], h["eps"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    if h["optimize_1d"] or g.dim() == 2:
        c = (g - st["last_grad"]).mul(h["gamma"] * (beta1 / (1.0 - beta1))).add(g)
        norm = torch.norm(c)
        if norm > 1.0:
            c = c / norm
        m.mul_(beta1).add_(c, alpha=1.0 - beta1)
        if h["mars_type"] == "mars-adamw":
            v.mul_(beta2).addcmul_(c, c, value=1.0 - beta2)
            bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
            vv = torch.max(st["max_sq"], v, out=st["max_sq"]) if h["amsgrad"] else v
            denom = vv.sqrt().mul(1 / math.sqrt(bc2)).add(eps).mul(bc1)
            upd = -lr * torch.mul(p, h["weight_decay"]).add(m.div(denom))
        else:
            upd = -lr * torch.mul(p, h["weight_decay"]).add(m.sign())
        p.add_(upd)
    else:
        b1, b2 = h["betas_1d"]
        m.mul_(b1).add_(g, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
        vv = torch.max(st["max_sq"], v, out=st["max_sq"]) if h["amsgrad"] else v
        denom = vv.sqrt().mul(1 / math.sqrt(bc2)).add(eps).mul(bc1)
        p.add_(-lr * (h["lr_1d"] / h["lr0"]) * torch.mul(p, h["weight_decay_1d"]).add(m.div(denom)))
    st["last_grad"] = g


MARS = [dict(), dict(weight_decay=0.1, amsgrad=True), dict(mars_type="mars-lion", weight_decay=0.1),
        dict(optimize_1d=True, gamma=0.1), dict(lr_1d=0.01, betas_1d=(0.8, 0.9), weight_decay_1d=0.0, gamma=0.5)]


@pytest.mark.parametrize("kw", MARS, ids=[str(k) for k in MARS])
def test_mars_matches_the_authors_code(kw: dict[str, Any]) -> None:
    """Gradients large enough that c_t is clipped on some steps (loss x 30), a 4-d conv filter taking AdamW, and an
    lr schedule acting on lr_1d through lr / initial_lr (the reference's lr_1d_factor)."""
    h = dict(dict(lr=3e-3, betas=(0.95, 0.99), eps=1e-8, weight_decay=0.0, amsgrad=False, gamma=0.025,
                  mars_type="mars-adamw", optimize_1d=False, lr_1d=3e-3, betas_1d=(0.9, 0.95), weight_decay_1d=0.1,
                  lr0=3e-3), **kw)
    init, data = initial_params(conv=True), make_data(STEPS)

    def grads(ps: list[Tensor], t: int) -> list[Tensor]:
        return [30 * g for g in gradients(ps, data, t)]

    lr_at = [h["lr"] * (0.5 if t >= 15 else 1.0) for t in range(STEPS)]
    ref = [t.clone() for t in init]
    states: list[dict[str, Any]] = [{} for _ in ref]
    clipped = 0
    for t in range(STEPS):
        for w, g, st in zip(ref, grads(ref, t), states, strict=True):
            if w.dim() == 2 and st:
                c = (g - st["last_grad"]) * (h["gamma"] * h["betas"][0] / (1 - h["betas"][0])) + g
                clipped += int(torch.norm(c) > 1)
            _mars_reference(w, g, st, {**h, "lr": lr_at[t]})
    assert clipped > 0
    for foreach in (False, True):
        params = leaves(init)
        opt = optimlab.MARS(params, foreach=foreach, **kw)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=15, gamma=0.5)
        for t in range(STEPS):
            for p, g in zip(params, grads(params, t), strict=True):
                p.grad = g
            opt.step()
            sched.step()
        for p, w in zip(params, ref, strict=True):
            close(p, w)
        mars_tensors = [("last_grad" in opt.state[p]) for p in params]
        assert mars_tensors == [True, h["optimize_1d"], h["optimize_1d"], h["optimize_1d"]]


def test_mars_first_step_by_hand() -> None:
    """Step 1 (last_grad = 0): c = g (1 + gamma b1/(1-b1)), clipped to norm 1; then Adam's first step is
    m/(sqrt(v)+eps) with bias corrections: sign(c) * |c| / (|c| + eps')."""
    g = torch.tensor([[0.3, -0.4], [0.0, 1.2]], dtype=DT)
    p = torch.zeros(2, 2, dtype=DT, requires_grad=True)
    opt = optimlab.MARS([p], lr=0.1, betas=(0.9, 0.99), gamma=0.1, eps=1e-12)
    p.grad = g.clone()
    opt.step()
    c = g * (1 + 0.1 * 9.0)
    c = c / c.norm()
    # m = 0.1 c, v = 0.01 c^2; denom = (sqrt(v)/sqrt(0.01) + eps) * 0.1 = (|c| + eps) * 0.1
    close(p, -0.1 * (0.1 * c) / ((c.abs() + 1e-12) * 0.1), rtol=1e-12)
    close(opt.state[p]["last_grad"], g)


# -- ADOPT: the authors' code ------------------------------------------------------------------------------------------
def _adopt_reference(p: Tensor, g: Tensor, st: dict[str, Any], h: dict[str, Any]) -> None:
    """iShohei220/adopt ``_single_tensor_adopt``, one tensor."""
    beta1, beta2 = h["betas"]
    if not st:
        st.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
    step, lr, wd = st["step"], h["lr"], h["weight_decay"]
    if wd != 0 and not h["decouple"]:
        g = g.add(p, alpha=wd)
    if step == 0:
        st["v"].addcmul_(g, g.conj())
        st["step"] += 1
        return
    if wd != 0 and h["decouple"]:
        p.add_(p, alpha=-lr * wd)
    normed = g.div(torch.clamp(st["v"].sqrt(), h["eps"]))
    if h["clip"]:
        clip = step**0.25
        normed.clamp_(-clip, clip)
    st["m"].lerp_(normed, 1 - beta1)
    p.add_(st["m"], alpha=-lr)
    st["v"].mul_(beta2).addcmul_(g, g.conj(), value=1 - beta2)
    st["step"] += 1


ADOPT = [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decouple=True), dict(clip=False, betas=(0.5, 0.9))]


@pytest.mark.parametrize("kw", ADOPT, ids=[str(k) for k in ADOPT])
def test_adopt_matches_the_authors_code(kw: dict[str, Any]) -> None:
    h = dict(dict(lr=0.01, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0, decouple=False, clip=True), **kw)
    init, data = initial_params(), make_data(STEPS)
    ref = [t.clone() for t in init]
    states: list[dict[str, Any]] = [{} for _ in ref]
    for t in range(STEPS):
        for w, g, st in zip(ref, gradients(ref, data, t), states, strict=True):
            _adopt_reference(w, g, st, h)
    ours_kw = {k: v for k, v in kw.items() if k != "clip"}
    if not h["clip"]:
        ours_kw["clip_lambda"] = None
    for foreach in (False, True):
        params = leaves(init)
        opt = optimlab.ADOPT(params, lr=0.01, foreach=foreach, **ours_kw)
        lockstep([(params, opt)], STEPS, data)
        for p, w, st in zip(params, ref, states, strict=True):
            close(p, w)
            close(opt.state[p]["exp_avg_sq"], st["v"])


def test_adopt_first_two_steps_by_hand() -> None:
    """Step 1 only sets v = g1^2; step 2: theta -= lr (1 - b1) clip(g2 / max(|g1|, eps), 1)."""
    g1 = torch.tensor([2.0, -0.5, 0.0], dtype=DT)
    g2 = torch.tensor([1.0, 1.0, 3.0], dtype=DT)
    p = torch.ones(3, dtype=DT, requires_grad=True)
    opt = optimlab.ADOPT([p], lr=0.1, eps=1e-6)
    p.grad = g1.clone()
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=DT))
    p.grad = g2.clone()
    opt.step()
    normed = (g2 / torch.clamp(g1.abs(), min=1e-6)).clamp(-1.0, 1.0)  # clip(1) = 1 ** 0.25
    close(p, 1 - 0.1 * 0.1 * normed, rtol=1e-14)


# -- ADOPT against the torch-adopt package (the authors' code, v2 with clipping) ---------------------------------------
ADOPT_PACKAGE = [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decouple=True),
                 dict(clip_lambda=None, betas=(0.5, 0.9)), dict(eps=1e-3, maximize=True)]


@needs(adopt_package, "torch-adopt")
@pytest.mark.parametrize("kw", ADOPT_PACKAGE, ids=[str(k) for k in ADOPT_PACKAGE])
def test_adopt_matches_the_package(kw: dict[str, Any]) -> None:
    """Against the package's single-tensor path. (Its foreach path calls ``clip_lambda`` on the 0-d float32 step
    tensor, so its clipping bound is ``step ** 0.25`` in float32: it differs from its own loop by ~1e-7 relative
    wherever clipping acts; optimlab computes the bound in Python float64, as the loop does.)"""
    runs, _ = ours_and_reference(lambda ps, foreach: optimlab.ADOPT(ps, lr=0.01, foreach=foreach, **kw),
                                 lambda ps: adopt_package.ADOPT(ps, lr=0.01, foreach=False, **kw))
    assert_params_match(runs)
    (ref_params, ref), *ours = runs
    for params, opt in ours:
        for p, q in zip(params, ref_params, strict=True):
            assert set(opt.state[p]) == set(ref.state[q])
            for key in ("exp_avg", "exp_avg_sq"):
                close(opt.state[p][key], ref.state[q][key])
            assert int(opt.state[p]["step"]) == int(ref.state[q]["step"]) == STEPS


# -- ASGD's average and the torch classes' first steps ----------------------------------------------------------------
def test_asgd_average_is_the_mean_of_the_iterates_after_t0() -> None:
    """t0 = 0: mu = 1/max(1, t), so ax_k = mean(theta_2 ... theta_k) (ax_1 = theta_1). mu is kept in torch's scalar
    dtype (float32 by default: 1/3 then holds to 1e-8 only), so the check runs with float64 as the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        params = leaves(initial_params())
        opt = optimlab.ASGD(params, lr=0.05, t0=0.0)
        iterates: list[list[Tensor]] = []
        lockstep([(params, opt)], 10, after_step=lambda t: iterates.append([p.detach().clone() for p in params]))
    finally:
        torch.set_default_dtype(previous)
    assert opt.state[params[0]]["mu"].dtype == torch.float64
    for i, p in enumerate(params):
        expected = sum(it[i] for it in iterates[1:]) / 9
        close(opt.state[p]["ax"], expected, rtol=1e-12)


def test_adamax_first_step_by_hand() -> None:
    """m1 = (1-b1) g, u1 = |g| + eps: theta1 = theta0 - lr g / (|g| + eps)."""
    g = torch.tensor([0.5, -2.0, 0.0], dtype=DT)
    p = torch.zeros(3, dtype=DT, requires_grad=True)
    opt = optimlab.Adamax([p], lr=0.1, eps=1e-3)
    p.grad = g.clone()
    opt.step()
    close(p, -0.1 * g / (g.abs() + 1e-3), rtol=1e-14)


def test_adadelta_first_step_by_hand() -> None:
    """v1 = (1-rho) g^2, Delta = sqrt(eps)/sqrt(v1 + eps) g."""
    g = torch.tensor([0.5, -2.0, 0.0], dtype=DT)
    p = torch.zeros(3, dtype=DT, requires_grad=True)
    opt = optimlab.Adadelta([p], lr=1.0, rho=0.9, eps=1e-6)
    p.grad = g.clone()
    opt.step()
    close(p, -(1e-6**0.5) / torch.sqrt(0.1 * g * g + 1e-6) * g, rtol=1e-14)


def test_rprop_grows_shrinks_and_forgets() -> None:
    """Same sign twice: the step grows by eta+; a flip: it shrinks by eta- and the element does not move."""
    p = torch.zeros(2, dtype=DT, requires_grad=True)
    opt = optimlab.Rprop([p], lr=0.1, etas=(0.5, 1.2))
    moves = []
    for g in ([1.0, 1.0], [1.0, -1.0], [1.0, -1.0]):
        before = p.detach().clone()
        p.grad = torch.tensor(g, dtype=DT)
        opt.step()
        moves.append((p.detach() - before).tolist())
    assert moves[0] == pytest.approx([-0.1, -0.1])
    assert moves[1] == pytest.approx([-0.12, 0.0])  # element 1 flipped: no move, step 0.05, gradient forgotten
    assert moves[2] == pytest.approx([-0.144, 0.05])  # after a forgotten gradient, the step is kept (0.05)


@pytest.mark.parametrize("zero_row", [False, True], ids=["separable", "clamped"])
def test_adafactor_chunked_path_equals_the_plain_rule(monkeypatch: pytest.MonkeyPatch, zero_row: bool) -> None:
    """The list path's matrices by chunks of rows: separable where nothing is clamped, and with a row of zero
    gradients (its factor 0, so V is clamped there) the per-element estimate."""
    from optimlab.algorithms import adafactor

    monkeypatch.setattr(adafactor, "_CHUNK_ELEMS", 8)
    calls = []
    real = adafactor.Adafactor._chunked
    monkeypatch.setattr(adafactor.Adafactor, "_chunked", lambda self, *a: (calls.append(1), real(self, *a))[1])
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(13, 5, generator=gen, dtype=DT), torch.randn(7, generator=gen, dtype=DT)]
    results = []
    for foreach in (False, True):
        params = leaves(init)
        opt = optimlab.Adafactor(params, lr=0.05, weight_decay=0.1, d=1.5)
        for group in opt.param_groups:
            group["foreach"] = foreach
        g2 = torch.Generator().manual_seed(1)
        for _ in range(6):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g2, dtype=DT) * (0.01 if _ % 2 else 3.0)
                if zero_row and p.dim() == 2:
                    p.grad[4] = 0.0
            opt.step()
        results.append((params, opt))
    assert calls, "the chunked path was not taken"
    (pa, oa), (pb, ob) = results
    for a, b in zip(pa, pb, strict=True):
        close(b, a, rtol=1e-12)
        for key in oa.state[a]:
            close(ob.state[b][key], oa.state[a][key], rtol=1e-12)


# -- the fast path: element-wise rules run as compiled loops --------------------------------------------------------
#: Compiled loops per step on the problem below (a 40x3 matrix and a 7-vector, float32, one bucket): MARS runs its
#: matrix in two (the norm of c_t, then the update) and its vector, which takes AdamW, in one; Prodigy's step is two
#: passes over its single bucket.
KERNELS_PER_STEP = {"mars": 3, "prodigy": 2}


@pytest.mark.parametrize("name", ["adamax", "adadelta", "asgd", "rprop", "lion", "schedulefree-sgd",
                                  "schedulefree-adamw", "ademamix", "mars", "prodigy", "adopt"])
def test_compiled_kernel_is_used(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step of every bucket is one compiled loop per pass: the rule is only ever called with symbols (while
    tracing), never on real tensors (an eager fallback), and the kernels ran as many times as the rule has passes;
    the result equals the plain loop."""
    if not kernels.enabled():
        pytest.skip("no C compiler: compiled kernels are off")
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in ((40, 3), (7,))]
    grads = [[torch.randn(t.shape, generator=gen) for t in init] for _ in range(3)]
    results = []
    for foreach in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = optimlab.create_optimizer(name, params, lr=1.0 if name == "prodigy" else 1e-3, foreach=foreach)
        eager: list[str] = []
        update = opt._update

        def spy(p: Any, *rest: Any, update: Any = update, eager: list[str] = eager) -> Any:
            if not isinstance(p, kernels.Sym):
                eager.append(type(p).__name__)
            return update(p, *rest)

        monkeypatch.setattr(opt, "_update", spy)
        runs = kernels.stats()["runs"]
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        if foreach:
            assert eager == [], f"the rule ran eagerly on {eager}"
            assert kernels.stats()["runs"] - runs == 3 * KERNELS_PER_STEP.get(name, 1)
        else:
            assert eager and kernels.stats()["runs"] == runs  # foreach=False: the plain loop, no kernel
        results.append(params)
    for a, b in zip(*results, strict=True):
        assert not torch.equal(a.detach(), init[0] if a.dim() == 2 else init[1])
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
