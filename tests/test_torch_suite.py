"""torch's own optimizer test ground, run on optimlab's drop-in classes.

torch ships ``torch.testing._internal.common_optimizers.optim_db``: for each torch optimizer the sample configurations
(``optim_inputs_func``), the inputs that must raise (``optim_error_inputs_func``) and flags (``supported_impls``,
``supports_sparse``, ``not_og_supported_flags``, ...). Its ``test/test_optim.py::TestOptimRenewed`` drives them; this
file drives the same entries, for SGD, Adagrad, RMSprop, Adam, AdamW, NAdam and RAdam, through optimlab's classes the
way ``TestOptimRenewed`` does on CPU (written for this project, not a copy of torch's file): the for-loop goes the
right way (with torch's schedulers), the list and fused paths equal the for-loop, errors, tensor learning rates,
sparse and complex parameters, param groups, steps without gradients, ``p.grad`` untouched, ``state_dict``
determinism and older checkpoints, ``weights_only`` loading, every hook, deepcopy, and ``differentiable=True``
against torch's own differentiable step.

The documented differences (README, "Drop-in behaviour") are checked as what optimlab does instead: its own error
messages (same exception types in the same situations), and tensor ``lr``/``betas`` with ``foreach=True``, which
torch refuses and optimlab runs.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import pytest
import torch
from torch.nn import Parameter

import optimlab

common = pytest.importorskip("torch.testing._internal.common_optimizers")  # needs expecttest (the test extra)

SEVEN = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam")
#: issue 12's element-wise drop-ins; Muon (2-D parameters only) runs the tests below that take its shapes.
NEW = ("Adamax", "Adadelta", "ASGD", "Rprop", "Adafactor")
INFOS = [info for info in common.optim_db if info.optim_cls.__name__ in SEVEN + NEW]
MUON = next(info for info in common.optim_db if info.optim_cls.__name__ == "Muon")
WITH_MUON = [*INFOS, MUON]
BY_INFO = pytest.mark.parametrize("info", INFOS, ids=[i.optim_cls.__name__ for i in INFOS])
BY_INFO_AND_MUON = pytest.mark.parametrize("info", WITH_MUON, ids=[i.optim_cls.__name__ for i in WITH_MUON])
COMPLEX = [i for i in INFOS if i.supports_complex]
BY_COMPLEX = pytest.mark.parametrize("info", COMPLEX, ids=[i.optim_cls.__name__ for i in COMPLEX])
DEVICE = "cpu"


def cls_of(info) -> type:
    return getattr(optimlab, info.optim_cls.__name__)


def all_inputs(info, dtype=torch.float32, skip=()) -> list[Any]:
    """The sample configurations with each of foreach/fused/differentiable switched on in turn (torch's helper)."""
    return common._get_optim_inputs_including_global_cliquey_kwargs(DEVICE, dtype, info, skip=skip)


def _linear_closure(opt, w, b, x, sparse=False):
    def closure():
        opt.zero_grad()
        loss = (w.mv(x) + b).pow(2).sum()
        loss.backward()
        return loss
    return closure


# -- errors -----------------------------------------------------------------------------------------------------------
@BY_INFO_AND_MUON
def test_errors(info):
    """Every error input raises (or warns) the exception type torch's class raises, in the same situation (the
    messages are optimlab's: ``Invalid <name>: <value>; expected <range>``). torch refuses a tensor lr or tensor
    betas with ``foreach=True`` (a limit of its foreach kernels); optimlab runs them."""
    cls = cls_of(info)
    for error in info.optim_error_inputs_func(device=DEVICE, dtype=torch.float32):
        inp = error.optimizer_error_input
        params, kwargs = inp.params, inp.kwargs
        if kwargs.get("foreach") and any(isinstance(v, torch.Tensor) or (isinstance(v, tuple) and
                                         any(isinstance(t, torch.Tensor) for t in v)) for v in kwargs.values()):
            p = Parameter(torch.randn(3))
            opt = cls([p], **kwargs)
            p.grad = torch.randn(3)
            before = p.detach().clone()
            opt.step()
            assert not torch.equal(p.detach(), before), inp.desc
            continue
        if info.optim_cls.__name__ == "Muon" and inp.desc == "only support 2D parameters":
            # documented difference: optimlab's Muon takes conv filters (3-D/4-D), orthogonalized as (out, in*k)
            p = Parameter(torch.randn(2, 3, 4))
            opt = cls([p], **kwargs)
            p.grad = torch.randn_like(p)
            before = p.detach().clone()
            opt.step()
            assert (p.detach() != before).all(), inp.desc
            continue
        def attempt(params=params, kwargs=kwargs, error=error):
            opt = cls(params, **kwargs)
            if error.error_on == common.OptimizerErrorEnum.STEP_ERROR:
                opt.step()

        if issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type):
                attempt()
            continue
        with pytest.raises(error.error_type) as caught:
            attempt()
        message = str(caught.value)
        if error.error_type in (ValueError,) and message.startswith("Invalid"):
            assert "expected" in message, message  # optimlab's format names the allowed range


# -- direction, schedulers, param groups -----------------------------------------------------------------------------
def _scheduled_run(opt, closure, schedulers, steps=20):
    for _ in range(steps):
        loss = opt.step(closure)
        for s in schedulers:
            s.step(loss) if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) else s.step()


@BY_INFO
@pytest.mark.parametrize("contiguous", [True, False])
def test_forloop_goes_right_direction(info, contiguous):
    cls = cls_of(info)
    for schedulers in [None, *info.scheduler_inputs]:
        for inp in info.optim_inputs_func(device=DEVICE):
            kwargs = {**inp.kwargs, "foreach": False}
            torch.manual_seed(0)
            if contiguous:
                w, b = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
            else:
                w, b = Parameter(torch.randn(10, 5, 2)[..., 0]), Parameter(torch.randn(10, 2)[..., 0])
            x = torch.randn(5)
            opt = cls([w, b], **kwargs)
            closure = _linear_closure(opt, w, b, x)
            initial = closure().item()
            _scheduled_run(opt, closure, [s(opt) for s in schedulers or []])
            final = closure().item()
            assert (final > initial) if kwargs.get("maximize") else (final < initial), (inp.desc, schedulers)


@BY_INFO
def test_param_group_with_lrscheduler_goes_right_direction(info):
    cls = cls_of(info)
    for schedulers in info.scheduler_inputs:
        torch.manual_seed(1)
        w, w2, x = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10, 5)), torch.randn(5)
        opt = cls([{"params": [w]}, {"params": [w2], "lr": 0.01}])

        def closure(opt=opt, w=w, w2=w2, x=x):
            opt.zero_grad()
            loss = (w.mv(x) + w2.mv(x)).pow(2).sum()
            loss.backward()
            return loss

        initial = closure().item()
        _scheduled_run(opt, closure, [s(opt) for s in schedulers])
        assert closure().item() < initial


@BY_INFO
def test_param_groups_weight_decay_and_lr(info):
    cls = cls_of(info)
    for inp in all_inputs(info, skip=("differentiable",)):
        torch.manual_seed(2)
        w, w2, x = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10, 5)), torch.randn(5)
        opt = cls([dict(params=[w], **inp.kwargs), dict(params=[w2], **{**inp.kwargs, "weight_decay": 0.0})])
        initial = (w.mv(x) + w2.mv(x)).pow(2).sum().item()
        for _ in range(20):
            opt.zero_grad()
            loss = (w.mv(x) + w2.mv(x)).pow(2).sum()
            loss.backward()
            opt.step()
        assert (loss.item() > initial) if inp.kwargs.get("maximize") else (loss.item() < initial), inp.desc
        # a group with lr 1e-28 does not move (outer lr), the other one does
        kwargs = {**inp.kwargs, "lr": inp.kwargs.get("lr") or 1e-3}
        irrelevant = Parameter(torch.randn(2, 2))
        kept = irrelevant.detach().clone()
        # Rprop's step sizes are clamped to step_sizes[0] (1e-6) however small lr is: torch's test sets (0, 50)
        outer = {"lr": 1e-28, **({"step_sizes": (0, 50)} if info.optim_cls.__name__ == "Rprop" else {})}
        opt = cls([dict(params=[w], **kwargs), dict(params=[irrelevant])], **outer)
        for _ in range(5):
            opt.zero_grad()
            w.mv(x).pow(2).sum().backward()
            irrelevant.grad = torch.rand_like(irrelevant)
            opt.step()
        assert torch.equal(irrelevant.detach(), kept), inp.desc


# -- implementations agree -------------------------------------------------------------------------------------------
def _compare_in_lockstep(cls, kwargs_a, kwargs_b, dtype, **tol):
    """torch's harness (``_compare_between``): the same small MLP plus a 0-d parameter for each optimizer, 7 steps
    (no gradient on step 2, one layer frozen on steps 3-4); after every step parameters and state must agree, and then
    the second run's values are set to the first's (as torch's ``TensorTracker.pop_check_set``), so each step is
    compared from the same point and round-off does not accumulate."""
    runs = []
    for kwargs in (kwargs_a, kwargs_b):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1),
                                    torch.nn.Sigmoid()).to(dtype)
        scalar = torch.zeros((), dtype=dtype, requires_grad=True)  # a 0-d parameter last, as torch's harness
        scalar.grad = torch.rand_like(scalar)
        runs.append((model, [*model.parameters(), scalar], cls([*model.parameters(), scalar], **kwargs)))
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=dtype).reshape(3, 2)
    for i in range(7):
        for model, _, opt in runs:
            opt.zero_grad()
            if i == 3:
                model[2].requires_grad_(False)
            if i == 5:
                model[2].requires_grad_(True)
            if i != 2:
                model(x).sum().backward()
            opt.step()
        (_, pa, oa), (_, pb, ob) = runs
        for a, b in zip(pa, pb, strict=True):
            torch.testing.assert_close(b, a, **tol, msg=lambda m, i=i: f"step {i}: {m}")
            sa, sb = oa.state.get(a, {}), ob.state.get(b, {})
            assert sa.keys() == sb.keys()
            with torch.no_grad():
                b.copy_(a)
                for k in sa:
                    torch.testing.assert_close(sb[k], sa[k], **tol, msg=lambda m, k=k, i=i: f"step {i} {k}: {m}")
                    if torch.is_tensor(sb[k]):
                        sb[k].copy_(sa[k])


@BY_INFO
def test_foreach_matches_forloop(info):
    cls = cls_of(info)
    for inp in info.optim_inputs_func(device=DEVICE, dtype=torch.float64):
        _compare_in_lockstep(cls, {**inp.kwargs, "foreach": False}, {**inp.kwargs, "foreach": True}, torch.float64,
                             rtol=1e-10, atol=1e-12)


FUSED = [i for i in INFOS if "fused" in i.supported_impls]


@pytest.mark.parametrize("info", FUSED, ids=[i.optim_cls.__name__ for i in FUSED])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_fused_matches_forloop(info, dtype):
    """torch's tolerances: exact (float32/float64 defaults), 5e-3 for bfloat16/float16 (more casts in the loop)."""
    cls = cls_of(info)
    tol = dict(rtol=5e-3, atol=5e-3) if dtype in (torch.bfloat16, torch.float16) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fused SGD in float16/bfloat16 on CPU: the list path runs
        for inp in info.optim_inputs_func(device=DEVICE, dtype=dtype):
            _compare_in_lockstep(cls, {**inp.kwargs, "fused": False}, {**inp.kwargs, "fused": True}, dtype, **tol)


@pytest.mark.parametrize("info", FUSED, ids=[i.optim_cls.__name__ for i in FUSED])
def test_fused_takes_torchs_kernel_and_errors_on_meta_params(info, monkeypatch):
    cls = cls_of(info)
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1))
    opt = cls(model.parameters(), fused=True)
    with torch.device("meta"):
        for p in model.parameters():
            p.grad = torch.rand_like(p)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point Tensors"):
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.to_empty(device=DEVICE)  # new parameters: the optimizer's (on meta) have no gradient, its step does nothing
    for p in model.parameters():
        p.grad = torch.rand_like(p)
    opt.step()
    # and on CPU parameters, fused=True runs torch's fused kernel
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1))
    opt = cls(model.parameters(), fused=True)
    calls = []
    kernel = {"SGD": "_fused_sgd_", "Adagrad": "_fused_adagrad_", "Adam": "_fused_adam_",
              "AdamW": "_fused_adamw_"}[info.optim_cls.__name__]
    real = getattr(torch, kernel)
    monkeypatch.setattr(torch, kernel, lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    for p in model.parameters():
        p.grad = torch.rand_like(p)
    opt.step()
    assert calls, "fused=True did not run torch's fused kernel"
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        cls(model.parameters(), fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        cls(model.parameters(), fused=True, differentiable=True)


@pytest.mark.parametrize("info", [i for i in WITH_MUON if "fused" not in i.supported_impls],
                         ids=[i.optim_cls.__name__ for i in WITH_MUON if "fused" not in i.supported_impls])
def test_fused_true_without_a_fused_kernel_raises_and_capturable_is_refused(info):
    cls = cls_of(info)
    p = Parameter(torch.randn(3, 2))  # 2-D: Muon's shape too
    with pytest.raises(RuntimeError, match="no fused implementation"):
        cls([p], fused=True)
    cls([p], fused=False).step()  # the defaults and False are always accepted
    with pytest.raises(NotImplementedError, match="capturable"):
        cls([p], capturable=True)


@BY_INFO
@pytest.mark.parametrize("num_dim", [0, 1, 2])
def test_tensor_lr(info, num_dim):
    cls = cls_of(info)
    for inp in all_inputs(info, skip=("differentiable",)):
        torch.manual_seed(3)
        w, b, x = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10)), torch.randn(5)
        wc, bc = (Parameter(t.detach().clone()) for t in (w, b))
        kwargs = {k: v for k, v in inp.kwargs.items() if k != "lr"}
        opt = cls([w, b], lr=1e-3, **kwargs)
        opt_c = cls([wc, bc], lr=torch.tensor(1e-3).reshape([1] * num_dim), **kwargs)
        for _ in range(5):
            _linear_closure(opt, w, b, x)()
            opt.step()
            _linear_closure(opt_c, wc, bc, x)()
            opt_c.step()
            torch.testing.assert_close(w, wc)
            torch.testing.assert_close(b, bc)


# -- sparse and complex ----------------------------------------------------------------------------------------------
def _rosenbrock(t):
    x, y = t
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _drosenbrock(t):
    x, y = t
    return torch.stack((-400 * x * (y - x**2) - 2 * (1 - x), 200 * (y - x**2)))


SPARSE = [i for i in INFOS if i.supports_sparse]


@pytest.mark.parametrize("info", SPARSE, ids=[i.optim_cls.__name__ for i in SPARSE])
@pytest.mark.parametrize("with_lrsched", [False, True])
def test_rosenbrock_sparse(info, with_lrsched):
    """Cyclic coordinate descent with uncoalesced sparse gradients equals the same run with dense ones (torch's
    tolerance) and gets closer to the optimum over torch's 1800 steps (300 steps, equality only, for the list path
    and with schedulers)."""
    cls = cls_of(info)
    updates, schedulers = info.metadata_for_sparse
    seen, inputs = set(), []
    for inp in all_inputs(info, torch.float64, skip=("differentiable", "fused")):
        kwargs = {k: v for k, v in inp.kwargs.items() if k not in updates}
        key = tuple(sorted(kwargs.items()))
        if kwargs and key not in seen:
            seen.add(key)
            inputs.append({**kwargs, **({"lr": updates["lr"]} if "lr" in updates else {})})
    for kwargs in inputs:
        p, pc = Parameter(torch.tensor([1.5, 1.5])), Parameter(torch.tensor([1.5, 1.5]))
        opt, opt_c = cls([p], **kwargs), cls([pc], **kwargs)
        scheds = [[s(o) for s in (schedulers if with_lrsched else [])] for o in (opt, opt_c)]
        start = p.detach().dist(torch.tensor([1.0, 1.0]))
        long = not with_lrsched and not kwargs.get("foreach")  # the list path: compared over 300 steps
        for i in range(1800 if long else 300):
            for param, o, sparse in ((p, opt, True), (pc, opt_c, False)):
                g = _drosenbrock(param.detach())
                w = i % 2
                idx = torch.tensor([[0, 0]] if w else [[1, 1]])
                v = torch.tensor([g[0] / 4, g[0] - g[0] / 4]) if w else torch.tensor([g[1] - g[1] / 4, g[1] / 4])
                grad = torch.sparse_coo_tensor(idx, v, (2,))
                param.grad = grad if sparse else grad.to_dense()
                o.step()
            for group in scheds:
                for s in group:
                    s.step(_rosenbrock(p.detach())) if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) \
                        else s.step()
            if not torch.allclose(p, pc, atol=5e-6, rtol=5e-6):
                torch.testing.assert_close(p, pc, atol=5e-6, rtol=5e-6, msg=f"step {i}, {kwargs}")
        if not long:
            continue
        if kwargs.get("maximize"):
            assert _rosenbrock(p.detach()) >= _rosenbrock(torch.tensor([1.5, 1.5])), kwargs
        else:
            assert p.detach().dist(torch.tensor([1.0, 1.0])) <= start, kwargs


@BY_COMPLEX
def test_complex(info):
    cls = cls_of(info)
    for inp in all_inputs(info, torch.complex64, skip=("differentiable", "fused")):
        torch.manual_seed(4)
        cparams = [torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
                   torch.randn(10, dtype=torch.complex64, requires_grad=True),
                   torch.randn(10, 5, requires_grad=True)]
        rparams = [(torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
                   for p in cparams]
        copt, ropt = cls(cparams, **inp.kwargs), cls(rparams, **inp.kwargs)
        for _ in range(3):
            for c, r in zip(cparams, rparams, strict=True):
                r.grad = torch.randn_like(r)
                c.grad = torch.view_as_complex(r.grad) if c.is_complex() else r.grad.clone()
            ropt.step()
            copt.step()
            for c, r in zip(cparams, rparams, strict=True):
                assert torch.equal(torch.view_as_real(c) if c.is_complex() else c, r), inp.desc


@BY_COMPLEX
def test_complex_2d(info):
    cls = cls_of(info)
    for inp in all_inputs(info, torch.complex64, skip=("differentiable", "fused")):
        torch.manual_seed(5)
        a = torch.randn(2, dtype=torch.complex64, requires_grad=True)
        re, im = a.real.detach().clone().requires_grad_(), a.imag.detach().clone().requires_grad_()
        o1, o2 = cls([a], **inp.kwargs), cls([re, im], **inp.kwargs)
        for _ in range(3):
            o1.zero_grad()
            o2.zero_grad()
            _rosenbrock(a).abs().backward()
            _rosenbrock(torch.complex(re, im)).abs().backward()
            o1.step()
            o2.step()
            torch.testing.assert_close(a.real, re)
            torch.testing.assert_close(a.imag, im)


# -- steps without gradients, gradients untouched, printing ----------------------------------------------------------
@BY_INFO
def test_steps_without_gradients_and_with_zero_gradients(info):
    cls = cls_of(info)
    for inp in all_inputs(info):
        no_grad = [torch.randn(2, 3) for _ in range(2)]
        cls(no_grad, **inp.kwargs).step(lambda: torch.tensor([1.0]))
        kwargs = dict(inp.kwargs)
        if kwargs.get("weight_decay", 0) != 0:
            continue
        if info.optim_cls.__name__ == "AdamW":
            kwargs["lr"] = torch.tensor(1e-5) if isinstance(kwargs.get("lr"), torch.Tensor) else 1e-5
        param = torch.randn(5, 1, requires_grad=True)
        p = param.detach() if kwargs.get("differentiable") else param
        before = p.detach().clone()
        opt = cls([p], **kwargs)
        p.grad = torch.zeros_like(p)
        opt.step()
        if info.optim_cls.__name__ == "ASGD":  # its lambd decay moves p without a gradient (optim_db skips ASGD)
            before = before * (1 - kwargs.get("lambd", 1e-4) * float(kwargs.get("lr", 1e-2)))
        torch.testing.assert_close(p.detach(), before, msg=inp.desc)  # AdamW's default decay at lr 1e-5: round-off


@BY_INFO
def test_grads_are_never_inplaced_into_and_the_optimizer_prints(info):
    cls = cls_of(info)
    for inp in all_inputs(info):
        param = torch.randn(5, 1, requires_grad=True)
        p = param.detach() if inp.kwargs.get("differentiable") else param
        opt = cls([p], **inp.kwargs)
        p.grad = torch.rand_like(p)
        version = p.grad._version
        for _ in range(5):
            opt.step()
            assert p.grad._version == version, inp.desc
        assert type(opt).__name__ in repr(opt)


@BY_INFO
def test_non_empty_state(info):
    """No per-parameter entry without state (torch's SGD without momentum keeps ``state == {}``)."""
    cls = cls_of(info)
    model = torch.nn.Linear(5, 5, bias=False)
    for inp in info.optim_inputs_func(device=DEVICE):
        opt = cls(model.parameters(), **inp.kwargs)
        opt.zero_grad()
        model(torch.rand(2, 5)).sum().backward()
        opt.step()
        assert all(len(s) > 0 for s in opt.state.values()), inp.desc


# -- state_dict ------------------------------------------------------------------------------------------------------
def _named(params, named):
    return [(f"name{i}", p) for i, p in enumerate(params)] if named else params


def _without_names(sd):
    sd = copy.deepcopy(sd)
    for g in sd["param_groups"]:
        g.pop("param_names", None)
    return sd


@BY_INFO
@pytest.mark.parametrize("named", [(False, False), (True, False), (False, True), (True, True)], ids=str)
def test_state_dict_deterministic(info, named):
    cls = cls_of(info)
    for inp in all_inputs(info, skip=("differentiable",)):
        torch.manual_seed(6)
        w, b, x = Parameter(torch.randn(2, 3)), Parameter(torch.randn(2)), torch.randn(3)
        opt = cls(_named([w, b], named[0]), **inp.kwargs)
        closure = _linear_closure(opt, w, b, x)
        for _ in range(10):
            opt.step(closure)
        with torch.no_grad():
            wc, bc = Parameter(w.clone()), Parameter(b.clone())
        opt_c = cls(_named([wc, bc], named[1]), **inp.kwargs)
        closure_c = _linear_closure(opt_c, wc, bc, x)
        opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
        for _ in range(10):
            opt.step(closure)
            opt_c.step(closure_c)
            torch.testing.assert_close(w, wc)
            torch.testing.assert_close(b, bc)
        assert _equal(_without_names(opt.state_dict()), _without_names(opt_c.state_dict())), inp.desc
        opt_c.param_groups.extend(opt_c.param_groups)
        assert _equal(_without_names(opt.state_dict())["param_groups"][-1],
                      _without_names(opt_c.state_dict())["param_groups"][-1])


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _conv_bn():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.BatchNorm2d(2))
    return model, torch.rand(1, 4, 16, 16)


def _fwd_bwd(opt, model, x):
    opt.zero_grad()
    model(x).sum().backward()


@BY_INFO
def test_load_state_dict_keeps_the_state_dict_and_loads_older_ones(info):
    """Loading a state_dict and saving it again gives the same state_dict (no key added); a checkpoint without the
    flags added after the optimizer's first release, or with a Python-number ``step`` (older torch), loads and
    steps; named and unnamed parameters load into each other."""
    cls = cls_of(info)
    for inp in all_inputs(info, skip=("differentiable",)):
        model, x = _conv_bn()
        opt = cls(model.parameters(), **inp.kwargs)
        for _ in range(3):
            _fwd_bwd(opt, model, x)
            opt.step()
        sd = copy.deepcopy(opt.state_dict())
        opt.load_state_dict(copy.deepcopy(sd))
        assert _equal(opt.state_dict(), sd), "load_state_dict changed the state_dict"
        old = copy.deepcopy(sd)
        for group in old["param_groups"]:
            for flag in info.not_og_supported_flags:
                group.pop(flag, None)
        for state in old["state"].values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].item()
        opt.load_state_dict(old)
        _fwd_bwd(opt, model, x)
        opt.step()
        assert all(torch.is_tensor(s["step"]) for s in opt.state.values() if "step" in s)
        for named0, named1 in ((True, False), (False, True), (True, True)):
            model, x = _conv_bn()
            first = cls(model.named_parameters() if named0 else model.parameters(), **inp.kwargs)
            _fwd_bwd(first, model, x)
            first.step()
            second = cls(model.named_parameters() if named1 else model.parameters(), **inp.kwargs)
            second.load_state_dict(copy.deepcopy(first.state_dict()))
            _fwd_bwd(second, model, x)
            second.step()
            assert second.state_dict()["param_groups"][0]["param_names"] == [n for n, _ in model.named_parameters()]


@BY_INFO
def test_save_load_equality_with_weights_only(info):
    cls = cls_of(info)
    for inp in all_inputs(info, skip=("differentiable",)):
        torch.manual_seed(7)
        w, b, x = Parameter(torch.randn(2, 3)), Parameter(torch.randn(2)), torch.randn(3)
        opt = cls([w, b], **inp.kwargs)
        for _ in range(3):
            opt.step(_linear_closure(opt, w, b, x))
        sd = opt.state_dict()
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        assert _equal(torch.load(buf, weights_only=True), sd)


# -- hooks and copies ------------------------------------------------------------------------------------------------
@BY_INFO
def test_state_dict_and_load_state_dict_hooks(info):
    cls = cls_of(info)
    for inp in all_inputs(info):
        opt = cls([torch.rand(2, 3, requires_grad=True)], **inp.kwargs)
        opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("test", 1))

        def post(o, sd):
            sd["ran_pre"] = sd["state"].pop("test", None) == 1
            return sd

        opt.register_state_dict_post_hook(post)
        sd = opt.state_dict()
        assert sd["ran_pre"] and "test" not in sd["state"]
        opt = cls([torch.rand(2, 3, requires_grad=True)], **inp.kwargs)
        sd = opt.state_dict()
        opt.register_load_state_dict_pre_hook(lambda o, s: s["param_groups"][0].__setitem__("lr", 0.002))

        def replace(o, s):
            s = copy.deepcopy(s)
            s["param_groups"][0]["lr"] = 0.003
            return s

        opt.register_load_state_dict_pre_hook(replace, prepend=True)
        ran: list[float] = []
        opt.register_load_state_dict_post_hook(lambda o, ran=ran: ran.append(o.param_groups[0]["lr"]))
        opt.load_state_dict(sd)
        assert opt.param_groups[0]["lr"] == 0.002 and ran == [0.002]


@BY_INFO
def test_step_hooks_local_and_global(info):
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    cls = cls_of(info)
    for inp in all_inputs(info):
        params = [torch.tensor([[1.0, 1.0]])]
        opt, other = cls(params, **inp.kwargs), torch.optim.SGD(params)
        data: list[int] = []

        def mark(value, data=data):
            return lambda o, a, k: data.append(value)

        handles = [register_optimizer_step_pre_hook(mark(0)), register_optimizer_step_post_hook(mark(5)),
                   opt.register_step_pre_hook(mark(1)), opt.register_step_post_hook(mark(2)),
                   other.register_step_pre_hook(mark(1)), other.register_step_post_hook(mark(2))]
        opt.step()
        other.step()
        opt.step()
        for h in handles:
            h.remove()
        opt.step()
        assert data == [0, 1, 2, 5] * 3


@BY_INFO
def test_deepcopy_copies_all_public_attrs(info):
    cls = cls_of(info)
    params = [Parameter(torch.randn(2, 3)) for _ in range(2)]
    for p in params:
        p.grad = torch.rand_like(p)
    for inp in all_inputs(info, skip=("differentiable",)):
        opt = cls(params, **inp.kwargs)
        for _ in range(3):
            opt.step()
        public = {k for k in opt.__dict__ if not k.startswith("_")}
        assert public == {k for k in copy.deepcopy(opt).__dict__ if not k.startswith("_")}


# -- differentiable=True: gradients through the step equal torch's --------------------------------------------------
DIFFERENTIABLE = {
    "SGD": [dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True), dict(lr=0.1, momentum=0.9, dampening=0.3,
                                                                            maximize=True)],
    "Adagrad": [dict(lr=0.1, weight_decay=0.1, lr_decay=0.1)],
    "RMSprop": [dict(lr=0.1, weight_decay=0.1, momentum=0.5, centered=True)],
    "Adam": [dict(lr=0.1, weight_decay=0.1, amsgrad=True), dict(lr=0.1, weight_decay=0.1, maximize=True)],
    "AdamW": [dict(lr=0.1, weight_decay=0.1)],
    "NAdam": [dict(lr=0.1, weight_decay=0.1), dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)],
    "RAdam": [dict(lr=0.1, weight_decay=0.1), dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)],
    "Adamax": [dict(lr=0.1, weight_decay=0.1), dict(lr=0.1, maximize=True)],
    "Adadelta": [dict(lr=0.5, rho=0.8, weight_decay=0.1), dict(lr=0.5, maximize=True)],
    "Rprop": [dict(lr=0.1), dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(0.01, 0.5), maximize=True)],
}
STATE_KEYS = {"SGD": ["momentum_buffer"], "Adagrad": ["sum"], "RMSprop": ["square_avg", "momentum_buffer", "grad_avg"],
              "Adam": ["exp_avg", "exp_avg_sq"], "AdamW": ["exp_avg", "exp_avg_sq"], "NAdam": ["exp_avg", "exp_avg_sq"],
              "RAdam": ["exp_avg", "exp_avg_sq"], "Adamax": ["exp_avg", "exp_inf"],
              "Adadelta": ["square_avg", "acc_delta"], "ASGD": ["ax"], "Rprop": ["prev", "step_size"]}


def _differentiable_step(cls, kwargs, inputs, keys, steps):
    p0, g0, *state = inputs
    p = p0.clone()
    p.grad = g0
    opt = cls([p], differentiable=True, **kwargs)
    opt.state[p].update({k: v.clone() for k, v in zip(keys, state, strict=True)})
    opt.state[p]["step"] = torch.tensor(10.0, dtype=torch.float64)
    if cls.__name__ == "NAdam":
        opt.state[p]["mu_product"] = torch.tensor(0.5, dtype=torch.float64)
    if cls.__name__ == "ASGD":  # torch keeps eta and mu as tensors; a step count past t0 makes mu < 1
        opt.state[p]["eta"] = torch.tensor(0.05, dtype=torch.float64)
        opt.state[p]["mu"] = torch.tensor(0.25, dtype=torch.float64)
    for _ in range(steps):
        opt.step()
    weights = torch.arange(1, p0.numel() + 1, dtype=torch.float64)
    return (p * weights).sum() + sum((opt.state[p][k] * weights).sum() for k in keys)


@pytest.mark.parametrize("name", list(DIFFERENTIABLE))
def test_differentiable_step_has_torchs_gradients(name):
    """``differentiable=True``: the gradients of the parameter and the state after one step with respect to the
    parameter, its gradient and the state equal torch's differentiable step (gradcheck-grade, float64)."""
    keys = STATE_KEYS[name] + (["max_exp_avg_sq"] if name == "Adam" else [])
    for kwargs in DIFFERENTIABLE[name]:
        use = keys if kwargs.get("amsgrad") else [k for k in keys if k != "max_exp_avg_sq"]
        gen = torch.Generator().manual_seed(8)
        inputs = [torch.rand(10, generator=gen, dtype=torch.float64) + (1.0 if k == "square_avg" else 0.0)
                  for k in ["p", "g", *use]]
        inputs = [t.requires_grad_() for t in inputs]
        grads = []
        for cls in (getattr(torch.optim, name), getattr(optimlab, name)):
            grads.append(torch.autograd.grad(_differentiable_step(cls, kwargs, inputs, use, 1), inputs,
                                             allow_unused=True))
        for a, b in zip(*grads, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", [("SGDW", dict(lr=0.1, momentum=0.9, weight_decay=0.1,
                                                           decay_scale="schedule")),
                                          ("Adam", dict(lr=0.1, amsgrad=True, amsgrad_max="v_hat")),
                                          ("RMSprop", dict(lr=0.1, centered=True, momentum=0.5)),
                                          ("ASGD", dict(lr=0.1, weight_decay=0.1, t0=1.0))])
def test_differentiable_steps_pass_gradcheck(name, kwargs):
    """Three steps of options torch has not (or where torch's own backward fails: RMSprop centered over several
    steps; ASGD, whose differentiable step writes its ``eta``/``mu`` tensors in place after using them, so torch's
    backward raises), against finite differences."""
    cls = getattr(optimlab, name)
    keys = {"SGDW": ["momentum_buffer"], "Adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
            "RMSprop": ["square_avg", "momentum_buffer", "grad_avg"], "ASGD": ["ax"]}[name]
    gen = torch.Generator().manual_seed(9)
    inputs = [(torch.rand(6, generator=gen, dtype=torch.float64) + (1.0 if k == "square_avg" else 0.0))
              .requires_grad_() for k in ["p", "g", *keys]]
    assert torch.autograd.gradcheck(lambda *xs: _differentiable_step(cls, kwargs, xs, keys, 3), inputs)


def test_differentiable_refuses_what_it_cannot_differentiate():
    p = Parameter(torch.randn(3))
    with pytest.raises(NotImplementedError, match="differentiable"):
        optimlab.LAMB([p], differentiable=True)
    with pytest.raises(NotImplementedError, match="requires grad"):
        optimlab.Adam([p], lr=torch.tensor(0.1, requires_grad=True), differentiable=True)
    with pytest.raises(RuntimeError, match="foreach"):
        optimlab.Adam([p], differentiable=True, foreach=True)


# -- drop-in signatures and torch's flags everywhere -----------------------------------------------------------------
@pytest.mark.parametrize("name", SEVEN + NEW + ("Muon",))
def test_signature_is_torchs(name):
    """Each of torch's arguments, with torch's default, in torch's order and kind (positional or keyword-only), so a
    call written for ``torch.optim.<name>`` means the same on optimlab's class. optimlab's own options and the
    flags torch's class lacks (``fused``, ``capturable``, ...) may follow, keyword-only."""
    import inspect

    ours = inspect.signature(getattr(optimlab, name).__init__).parameters
    theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
    for arg, param in theirs.items():
        assert arg in ours, f"{name} lacks torch's argument {arg}"
        assert ours[arg].default == param.default, (arg, ours[arg].default, param.default)
    positional = [a for a, p in theirs.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [a for a in ours if ours[a].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD][:len(positional)] == positional
    for arg in ours:
        if arg not in theirs:
            assert ours[arg].kind is inspect.Parameter.KEYWORD_ONLY or arg in ("capturable", "fused", "foreach",
                                                                             "maximize", "differentiable"), arg


CLASSES = sorted({spec.cls.__name__ for spec in optimlab.OPTIMIZERS.values()})


@pytest.mark.parametrize("name", CLASSES)
def test_every_optimizer_takes_torchs_flags(name):
    """torch's four implementation flags on every registered optimizer, with torch's defaults and meaning:
    ``fused=True`` raises RuntimeError without a fused kernel, ``capturable=True`` NotImplementedError,
    ``differentiable=True`` records the step or raises NotImplementedError, ``False``/``None`` always run."""
    import inspect

    cls = getattr(optimlab, name)
    params = inspect.signature(cls.__init__).parameters
    for flag, default in (("foreach", None), ("fused", None), ("capturable", False), ("differentiable", False),
                          ("maximize", False)):
        assert flag in params and params[flag].default is default, (name, flag)
    p = Parameter(torch.randn(4, 3))  # a matrix: Muon's shape too
    lr = {"lr": 0.1} if params["lr"].default is inspect.Parameter.empty else {}  # LARS: lr is required, as torch SGD's
    opt = cls([p], fused=False, capturable=False, differentiable=False, **lr)
    p.grad = torch.randn(4, 3)
    opt.step()
    assert opt.param_groups[0]["fused"] is False and opt.param_groups[0]["capturable"] is False
    if not getattr(cls, "_has_fused", False):
        with pytest.raises(RuntimeError, match="fused"):
            cls([p], fused=True, **lr)
    with pytest.raises(NotImplementedError, match="capturable"):
        cls([p], capturable=True, **lr)
    if not getattr(cls, "_supports_differentiable", False):
        with pytest.raises(NotImplementedError, match="differentiable"):
            cls([p], differentiable=True, **lr)
