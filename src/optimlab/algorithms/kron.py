"""PSGD Kron: preconditioned SGD with a Kronecker-factored preconditioner (Xi-Lin Li), as PyPI ``kron-torch`` 0.3.3."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core import validation
from ..core.base import ParamsT, new_step
from ._matrix_step import MatrixOptimizer, WholeMatrices

__all__ = ["Kron", "ProbSchedule", "precond_update_prob_schedule"]

#: ``memory_save_mode`` values: which dimensions get a diagonal factor instead of a triangular one.
MEMORY_SAVE_MODES = (None, "smart_one_diag", "one_diag", "all_diag")
#: ``precond_update_mode`` values.
UPDATE_MODES = ("deterministic", "random")
#: ``precond_dtype`` values.
PRECOND_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class ProbSchedule:
    r"""kron_torch's preconditioner update probability: flat, then an exponential anneal to a floor.

    .. math:: p(n) = \mathrm{clip}\big(p_{\max} e^{-d\,(n - n_0)},\; p_{\min},\; p_{\max}\big)

    evaluated in float32 as the reference (``ProbScheduler``) does; ``n`` counts steps from 0. The defaults keep
    :math:`p = 1` for 500 steps and reach the floor 0.03 after about 4000. Picklable (it is stored in the param
    groups, hence in ``state_dict()``).
    """

    max_prob: float = 1.0
    min_prob: float = 0.03
    decay: float = 0.001
    flat_start: float = 500

    def __call__(self, n: Tensor | float) -> Tensor:
        n = torch.as_tensor(n, dtype=torch.float32)
        f32 = dict(dtype=torch.float32)
        prob = torch.tensor(self.max_prob, **f32) * torch.exp(-torch.tensor(self.decay, **f32)
                                                              * (n - torch.tensor(self.flat_start, **f32)))
        return prob.clamp(min=torch.tensor(self.min_prob, **f32), max=torch.tensor(self.max_prob, **f32))


def precond_update_prob_schedule(max_prob: float = 1.0, min_prob: float = 0.03, decay: float = 0.001,
                                 flat_start: float = 500) -> ProbSchedule:
    """kron_torch's ``precond_update_prob_schedule`` (same arguments and defaults): a :class:`ProbSchedule`."""
    return ProbSchedule(max_prob, min_prob, decay, flat_start)


#: The schedule ``preconditioner_update_probability=None`` means (kept as None in the param groups, so that a
#: ``state_dict()`` loads with ``torch.load(weights_only=True)``; a callable of one's own does not).
DEFAULT_SCHEDULE = ProbSchedule()


# -- the preconditioner, one tensor ------------------------------------------------------------------------------------
def merged_shape(shape: Sequence[int]) -> list[int]:
    """kron_torch's ``merge_dims``: a tensor of 3 or more dimensions as a matrix, ``(prod(shape[:-1]), shape[-1])``
    or ``(shape[0], prod(shape[1:]))``, whichever has the smaller ``cols - rows`` (the first on a tie)."""
    shape1 = [math.prod(shape[:-1]), shape[-1]]
    shape2 = [shape[0], math.prod(shape[1:])]
    return shape1 if shape1[1] - shape1[0] <= shape2[1] - shape2[0] else shape2


def diagonal_dims(shape: Sequence[int], max_size: int, min_ndim_triangular: int, memory_save_mode: str | None
                  ) -> list[bool]:
    """Which dimensions get a diagonal factor (kron_torch ``_init_Q_exprs``): size 1, larger than ``max_size``,
    fewer than ``min_ndim_triangular`` dimensions, or chosen by ``memory_save_mode`` (``"one_diag"``: the largest
    dimension, the last of equals; ``"smart_one_diag"``: the largest only if strictly larger than the next;
    ``"all_diag"``: all)."""
    n = len(shape)
    by_size = sorted(range(n), key=lambda i: (shape[i], i))  # np.argsort's stable order; [-1] is numpy's [::-1][0]
    chosen = [False] * n
    if memory_save_mode == "all_diag":
        chosen = [True] * n
    elif memory_save_mode == "one_diag" and n:
        chosen[by_size[-1]] = True
    elif memory_save_mode == "smart_one_diag" and n > 1 and shape[by_size[-1]] > shape[by_size[-2]]:
        chosen[by_size[-1]] = True
    return [size == 1 or size > max_size or n < min_ndim_triangular or chosen[i] for i, size in enumerate(shape)]


def _along(x: Tensor, i: int, q: Tensor, transpose: bool = False) -> Tensor:
    """The factor ``q`` applied along dimension ``i`` of ``x``: ``q x`` (``q^T x`` with ``transpose``) on the
    mode-``i`` fibres, or an element-wise scaling for a diagonal factor."""
    if q.dim() < 2:
        return x * q.view([-1 if j == i else 1 for j in range(x.dim())])
    return torch.movedim(torch.tensordot(q.mT if transpose else q, x, dims=([1], [i])), 0, i)


def _gram(x: Tensor, i: int, diagonal: bool) -> Tensor:
    """The mode-``i`` Gram matrix of ``x`` (all other dimensions contracted), or its diagonal."""
    other = [j for j in range(x.dim()) if j != i]
    if diagonal:
        return x.square().sum(dim=other) if other else x.square()
    return torch.tensordot(x, x, dims=(other, other))


def norm_lower_bound(a: Tensor, max_abs: Tensor) -> Tensor:
    """kron_torch ``_lb``: a cheap lower bound of the spectral norm of a symmetric matrix ``a`` (one step of power
    iteration from its largest column), computed on ``a / max_abs`` and scaled back."""
    a = a / max_abs
    col = torch.argmax((a * a).sum(dim=0))
    x = a[:, col] @ a
    x = x / x.norm()
    return (a @ x).norm() * max_abs


def precondition(Q: list[Tensor], g: Tensor) -> Tensor:
    r""":math:`P g` with :math:`P = Q^T Q`, :math:`Q = Q_1 \otimes \dots \otimes Q_k`: each factor's
    :math:`Q_i^T Q_i` applied along its dimension (kron_torch ``_precond_grad``)."""
    x = g
    for i, q in enumerate(Q):
        x = _along(_along(x, i, q), i, q, transpose=True)
    return x


def update_preconditioner(Q: list[Tensor], g: Tensor, v: Tensor, precond_lr: float, tiny: float) -> None:
    r"""One step of the Kronecker-factored whitening fit of ``Q`` on the pair ``(v, g)`` (kron_torch
    ``_update_precond``, the rule of Li's ``update_precond_kron_math_``), in place.

    .. math::
        A = Q\,g, \quad B^{*} = Q^{-T} v, \quad
        Q_i \leftarrow Q_i - \frac{\eta_p}{\lVert A_{(i)} A_{(i)}^T + B_{(i)} B_{(i)}^T\rVert}
            \,\mathrm{triu}\big(A_{(i)} A_{(i)}^T - B_{(i)} B_{(i)}^T\big)\, Q_i

    with :math:`X_{(i)}` the mode-:math:`i` unfolding, the norm a lower bound of the spectral norm
    (:func:`norm_lower_bound`) for a triangular factor, and for a diagonal factor the max-norm and the diagonals
    instead of the Gram matrices: :math:`q_i \leftarrow q_i - \eta_p\,(a - b)\odot q_i / \lVert a + b\rVert_\infty`.
    ``g`` must already carry the reference's perturbation (see :class:`Kron`).
    """
    A = g
    for i, q in enumerate(Q):
        A = _along(A, i, q)
    conj_b = v
    for i, q in enumerate(Q):  # v with Q_i^{-T} along each dimension: x Q_i^{-1} on the mode-i rows
        if q.dim() < 2:
            conj_b = conj_b / q.view([-1 if j == i else 1 for j in range(conj_b.dim())])
        else:
            moved = torch.movedim(conj_b, i, -1)
            flat = torch.linalg.solve_triangular(q.float(), moved.reshape(-1, moved.size(-1)).float(), upper=True,
                                                 left=False).to(q.dtype)
            conj_b = torch.movedim(flat.reshape(moved.shape), -1, i)
    for i, q in enumerate(Q):
        diagonal = q.dim() < 2
        term_a, term_b = _gram(A, i, diagonal), _gram(conj_b, i, diagonal)
        diff, total = (term_a - term_b) * precond_lr, term_a + term_b
        norm = total.abs().amax()
        if diagonal:
            q.sub_(diff * q / norm.clamp(min=tiny))
        else:
            bound = torch.where(norm > 0, norm_lower_bound(total, norm), norm).clamp(min=tiny)
            q.sub_(torch.triu(diff) / bound @ q)


def balance(Q: list[Tensor]) -> None:
    """kron_torch ``_balance_Q``: rescale the factors to equal max-norms (their geometric mean), which leaves
    :math:`Q` itself unchanged and keeps the factors' ranges from drifting apart."""
    norms = torch.stack([q.abs().amax() for q in Q])
    geometric_mean = norms.log().mean().exp()
    for q, factor in zip(Q, geometric_mean / norms, strict=True):
        q.mul_(factor)


class Kron(MatrixOptimizer):
    r"""PSGD Kron (Xi-Lin Li): SGD with momentum, preconditioned by :math:`P = Q^T Q`, where
    :math:`Q = Q_1 \otimes \dots \otimes Q_k` has one factor per dimension of the parameter (upper triangular, or
    diagonal for large dimensions) and is fitted online so that :math:`P` whitens the momentum.

    Per parameter, at step :math:`t` (PyPI ``kron-torch`` 0.3.3, ``kron_torch/kron.py``, which timm and HeavyBall
    follow):

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad \hat m_t = m_t / (1-\beta_1^t) \\
        \text{if update}_t:&\quad \hat m_t \leftarrow \hat m_t + \sqrt{\epsilon_{32}}\,
            \overline{|\hat m_t|}\, v, \;\; v \sim \mathcal N(0, I), \qquad
            Q \leftarrow \mathrm{fit}(Q; v, \hat m_t) \\
        u_t &= P \hat m_t \cdot \min\big(1,\; 1.1 / (\mathrm{RMS}(P \hat m_t) + 10^{-12})\big) \\
        W_t &= W_{t-1} - \eta\,(u_t + \lambda W_{t-1}) \quad (\lambda \text{ only for parameters of 2 or more
            dimensions})

    with the fit of :func:`update_preconditioner` (learning rate ``precond_lr``). Details that decide the numbers,
    all as kron_torch 0.3.3:

    * **when the preconditioner is updated**: a counter per parameter; the update happens when
      ``counter >= 1/p(n)`` (then the counter restarts), so with ``p = 1/k`` every ``k``-th step, deterministically.
      ``p(n)`` is ``preconditioner_update_probability``: a float, a callable of the 0-based step ``n`` (a float32
      tensor), or None for :func:`precond_update_prob_schedule`'s default (1 for 500 steps, then annealed to 0.03;
      stored as None, so a checkpoint loads with ``torch.load(weights_only=True)``, which a callable does not).
      ``precond_update_mode="random"`` is psgd_torch's rule instead: a coin flip with probability ``p(n)`` each step,
      drawn from the seeded generator;
    * the preconditioner fit uses the **debiased momentum** (``momentum_into_precond_update=False``: the gradient);
      the reference adds the small perturbation :math:`\sqrt{\epsilon_{32}}\,\mathrm{mean}|\hat m|\,v` to it *in
      place*, so on update steps the preconditioned direction is that of the perturbed momentum too. optimlab does
      the same (never writing ``p.grad``, which the reference does with ``momentum_into_precond_update=False``);
    * the **update is clipped to RMS 1.1** after preconditioning; weight decay is then added *coupled*
      (``u + lambda W``) and only to parameters of 2 or more dimensions;
    * **factors**: one per dimension after ``merge_dims`` (a tensor of 3 or more dimensions viewed as the matrix of
      :func:`merged_shape`); diagonal for a dimension of size 1, a dimension larger than ``max_size_triangular``, a
      tensor of fewer than ``min_ndim_triangular`` dimensions, or as ``memory_save_mode`` says (None: all
      triangular; ``"one_diag"``: the largest dimension; ``"smart_one_diag"``: the largest if strictly larger than
      the next; ``"all_diag"``: all). Each factor starts as :math:`s^{1/k} I` (``precond_init_scale`` :math:`s`);
      ``precond_init_scale=None`` sets :math:`s` on the first step from the first preconditioner input :math:`G`,
      :math:`s = (\mathrm{mean}|G|^4 + 10^{-36})^{-1/8}`, psgd_torch's rule (which takes the largest over all
      parameters; optimlab per parameter);
    * **balancing**: on an update step, with probability 0.01, the factors of a tensor of 2 or more (merged)
      dimensions are rescaled to equal max-norms (:func:`balance`; :math:`Q` is unchanged);
    * factors in ``precond_dtype`` (float32 by default, whatever the parameter's dtype), the triangular solves in
      float32 at least; the momentum in ``mu_dtype`` (default: the parameter's dtype).

    **Randomness** (the probe :math:`v`, the balancing coin, the ``"random"`` mode's coin) comes from a generator
    seeded, at each step of each parameter, from ``seed`` and that parameter's step count; the step count and the
    update counter are in the parameter's state, so runs are reproducible under a seed, ``state_dict()`` round-trips
    and a resumed run equals an unbroken one; and a parameter's steps do not depend on its place among the others or
    on its group. The reference draws :math:`v` from torch's global generator and the balancing coin from
    ``random.Random(42)``, and keeps its counters outside the state dict (a resumed run restarts its schedule); so
    trajectories equal kron-torch's when both are given the same :math:`v` (``tests/test_kron.py`` injects it).

    Where psgd_torch (Li's current ``psgd.py``, ``KronWhiten``) differs: it fits :math:`Q` in other geometries by
    default (``dQ="Q0.5EQ1.5"``, with a running Lipschitz estimate ``betaL``), clips the update by amplitude
    (``grad_clip_max_amps``) rather than to RMS 1.1, flips a coin for the update, and may set the initial scale on
    the fly; kron-torch's ``dQ = EQ`` rule (the triangular Lie-group update above) is the one the PyPI package, timm
    and HeavyBall ship. The update coin and the on-the-fly scale are offered here as options.

    Args:
        lr: :math:`\eta` (3e-4). b1: :math:`\beta_1` (0.9). weight_decay: :math:`\lambda` (0).
        preconditioner_update_probability: float in (0, 1], callable, or None (the schedule) (None).
        max_size_triangular (8192), min_ndim_triangular (2), memory_save_mode (None), merge_dims (True):
            the factors' shapes, as above.
        momentum_into_precond_update: fit on the momentum (True) or the gradient.
        precond_lr: the fit's step size (0.1). precond_init_scale: :math:`s` (1.0; None: on the first step).
        mu_dtype: momentum dtype (None: the parameter's). precond_dtype: factors' dtype (None: float32).
        precond_update_mode: ``"deterministic"`` (kron-torch) or ``"random"`` (psgd_torch). seed: the generators'
            seed (42).
        maximize, foreach: as in :class:`optimlab.SGD`; fused, capturable, differentiable: torch's flags
            (``True`` raises, as a torch class without the feature does).

    References: X.-L. Li, "Preconditioned Stochastic Gradient Descent", IEEE TNNLS 2018 (arXiv:1512.04202);
    X.-L. Li, "Stochastic Hessian Fittings with Lie Groups", arXiv:2402.11858; ``evanatyourservice/kron_torch``
    ``kron_torch/kron.py`` (PyPI kron-torch 0.3.3); ``lixilinx/psgd_torch`` ``psgd.py``.
    """

    _lazy_param_state = ("momentum_buffer",)
    _scalar_state = ("step", "update_counter")

    def __init__(self, params: ParamsT, lr: float = 3e-4, b1: float = 0.9, weight_decay: float = 0.0,
                 preconditioner_update_probability: float | Callable[[Tensor], Any] | None = None,
                 max_size_triangular: int = 8192, min_ndim_triangular: int = 2, memory_save_mode: str | None = None,
                 momentum_into_precond_update: bool = True, precond_lr: float = 0.1,
                 precond_init_scale: float | None = 1.0, merge_dims: bool = True,
                 mu_dtype: torch.dtype | None = None, precond_dtype: torch.dtype | None = None,
                 precond_update_mode: str = "deterministic", seed: int = 42, *, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False) -> None:
        super().__init__(params, dict(
            lr=lr, b1=b1, weight_decay=weight_decay,
            preconditioner_update_probability=preconditioner_update_probability,
            max_size_triangular=max_size_triangular, min_ndim_triangular=min_ndim_triangular,
            memory_save_mode=memory_save_mode, momentum_into_precond_update=momentum_into_precond_update,
            precond_lr=precond_lr, precond_init_scale=precond_init_scale, merge_dims=merge_dims,
            mu_dtype=mu_dtype, precond_dtype=precond_dtype, precond_update_mode=precond_update_mode, seed=seed,
            maximize=maximize, foreach=foreach, fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_beta("b1", group["b1"])
        prob = group["preconditioner_update_probability"]
        if prob is not None and not callable(prob):
            if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 < prob <= 1.0:
                validation.fail("preconditioner_update_probability", prob, "a number in (0, 1], a callable of the "
                                "step, or None (kron-torch's schedule)", TypeError if not isinstance(
                                    prob, int | float) or isinstance(prob, bool) else ValueError)
        for name, lowest in (("max_size_triangular", 1), ("min_ndim_triangular", 0), ("seed", 0)):
            value = group[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                validation.fail(name, value, f"an int >= {lowest}", TypeError if not isinstance(value, int) or
                                isinstance(value, bool) else ValueError)
        if group["memory_save_mode"] not in MEMORY_SAVE_MODES:
            validation.fail("memory_save_mode", group["memory_save_mode"], f"one of {list(MEMORY_SAVE_MODES)}")
        if group["precond_update_mode"] not in UPDATE_MODES:
            validation.fail("precond_update_mode", group["precond_update_mode"], f"one of {list(UPDATE_MODES)}")
        for flag in ("momentum_into_precond_update", "merge_dims"):
            if not isinstance(group[flag], bool):
                validation.fail(flag, group[flag], "a bool", TypeError)
        validation.check_nonneg("precond_lr", group["precond_lr"])
        if group["precond_init_scale"] is not None:
            validation.check_positive("precond_init_scale", group["precond_init_scale"])
        if group["precond_dtype"] is not None and group["precond_dtype"] not in PRECOND_DTYPES:
            validation.fail("precond_dtype", group["precond_dtype"], "None or a floating dtype", TypeError)
        mu = group["mu_dtype"]
        if mu is not None and not (isinstance(mu, torch.dtype) and mu.is_floating_point):
            validation.fail("mu_dtype", mu, "None or a floating dtype", TypeError)
        for i, p in enumerate(group.get("params", ())):  # the defaults are validated before params are read
            if p.is_complex():
                validation.fail(f"params[{i}]", p.dtype, "a real parameter (optimlab's Kron is real)")

    # -- state -------------------------------------------------------------------------------------------------------
    def _work_shape(self, shape: torch.Size, h: dict[str, Any]) -> list[int]:
        if len(shape) == 0:
            return [1]  # a scalar as a vector of one (a diagonal factor of size 1: the reference's scalar case)
        return merged_shape(shape) if len(shape) > 2 and h["merge_dims"] else list(shape)

    def _init(self, p: Tensor, g_work: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        state["momentum_buffer"] = torch.zeros(p.shape, dtype=h["mu_dtype"] or p.dtype, device=g_work.device)
        state["update_counter"] = new_step()

    def _make_q(self, shape: list[int], scale: float, h: dict[str, Any], device: torch.device) -> list[Tensor]:
        dtype = h["precond_dtype"] or torch.float32
        scale = scale ** (1 / len(shape))
        diag = diagonal_dims(shape, h["max_size_triangular"], h["min_ndim_triangular"], h["memory_save_mode"])
        return [scale * (torch.ones(n, dtype=dtype, device=device) if d else torch.eye(n, dtype=dtype, device=device))
                for n, d in zip(shape, diag, strict=True)]

    @staticmethod
    def _generator(seed: int, step: int, device: torch.device) -> torch.Generator:
        """The generator of one parameter's step: seeded from ``seed`` and the step, so it needs no state of its
        own (the step is in the state) and a resumed run draws what an unbroken one does."""
        gen = torch.Generator(device=device)
        gen.manual_seed((seed * 0x9E3779B97F4A7C15 + step) % (1 << 63))
        return gen

    def _draw_v(self, gen: torch.Generator, like: Tensor) -> Tensor:
        """The probe :math:`v` (a hook the reference test overrides to inject kron-torch's)."""
        return torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)

    # -- the rule, one tensor ----------------------------------------------------------------------------------------
    def _do_update(self, state: dict[str, Any], h: dict[str, Any], gen: torch.Generator, device: torch.device) -> bool:
        prob = h["preconditioner_update_probability"]
        if prob is None:
            prob = DEFAULT_SCHEDULE
        n = int(state["step"]) - 1  # the reference evaluates the schedule at the 0-based step
        if callable(prob):
            prob = prob(torch.tensor(float(n), dtype=torch.float32))
        if h["precond_update_mode"] == "random":
            return bool(torch.rand((), generator=gen, device=device) < float(prob))
        state["update_counter"] += 1
        due = bool(int(state["update_counter"]) >= 1 / prob)
        if due:
            state["update_counter"].zero_()
        return due

    def _direction(self, p: Tensor, g: Tensor, state: dict[str, Any], h: dict[str, Any]) -> Tensor:
        """One Kron step of one tensor but the parameter update: the clipped, preconditioned direction (in the
        parameter's shape, ``precond_dtype``), having updated the momentum and, when due, the preconditioner."""
        precond_dtype = h["precond_dtype"] or torch.float32
        shape = self._work_shape(p.shape, h)
        gen = self._generator(h["seed"], int(state["step"]), g.device)
        beta = h["b1"]
        m = state["momentum_buffer"]
        m.mul_(beta).add_(g, alpha=1 - beta)
        debiased = (m / (1 - beta ** int(state["step"]))).to(precond_dtype).reshape(shape)
        if "Q" not in state:
            scale = h["precond_init_scale"]
            if scale is None:
                first = debiased if h["momentum_into_precond_update"] else g.to(precond_dtype)
                scale = float((first.abs().pow(4).mean() + 1e-36) ** (-1 / 8))
            state["Q"] = self._make_q(shape, scale, h, g.device)
        Q = state["Q"]
        do_update = self._do_update(state, h, gen, g.device)
        if do_update:
            if len(shape) > 1 and bool(torch.rand((), generator=gen, device=g.device) < 0.01):
                balance(Q)
            target = debiased if h["momentum_into_precond_update"] else g.to(precond_dtype, copy=True).reshape(shape)
            v = self._draw_v(gen, target)
            eps = torch.tensor(torch.finfo(torch.float32).eps, dtype=target.dtype, device=target.device)
            target.add_(eps.sqrt() * target.abs().mean() * v)  # in place, as the reference (see the docstring)
            update_preconditioner(Q, target, v, h["precond_lr"], torch.finfo(precond_dtype).tiny)
        pre = precondition(Q, debiased)
        pre.mul_(torch.clamp(1.1 / (pre.square().mean().sqrt() + 1e-12), max=1.0))
        return pre.reshape(p.shape)

    # -- the step ------------------------------------------------------------------------------------------------------
    def _step_matrices(self, group: dict[str, Any]) -> None:
        h = self._hyperparameters(group)
        h["preconditioner_update_probability"] = group["preconditioner_update_probability"]  # keep a callable
        whole = WholeMatrices(group["params"])
        precond_dtype = h["precond_dtype"] or torch.float32
        for p, g, state in self._with_grads(group):
            if g.numel() == 0:
                continue
            if "step" not in state:
                state["step"] = new_step()
            state["step"] += 1
            full_g = whole.full(g)  # a collective for a sharded parameter, on every rank
            u = None
            if whole.owns(p):
                if "momentum_buffer" not in state:
                    self._init(p, full_g, state, h)
                u = self._direction(p, full_g, state, h)
            local = WholeMatrices.local(p)
            u = whole.share(p, u, precond_dtype)
            if h["weight_decay"] != 0 and p.dim() >= 2:
                u = torch.add(u, local.to(u.dtype), alpha=h["weight_decay"])  # coupled, after the clip
            local.add_(u.to(local.dtype), alpha=-h["lr"])
