"""Shampoo with Adam grafting and blocking, as facebookresearch/optimizers' Distributed Shampoo (single process)."""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from ..core import validation
from ..core.base import ParamsT, new_step
from . import _matrix
from ._matrix_step import MatrixOptimizer, WholeMatrices

__all__ = ["Shampoo"]

_GRAFTING = (None, "sgd", "adagrad", "rmsprop", "adam")


@lru_cache(maxsize=1024)
def _layout(shape: tuple[int, ...], max_dim: int | float) -> tuple[tuple[int, ...], tuple[tuple[slice, ...], ...]]:
    """The merged shape of a parameter and its blocks (facebookresearch/optimizers' ``merge_small_dims`` and
    ``multi_dim_split``)."""
    merged = _matrix.merge_small_dims(shape, max_dim)
    return merged, tuple(_matrix.split_slices(merged, max_dim))


class Shampoo(MatrixOptimizer):
    r"""Shampoo (Gupta, Koren & Singer 2018; Anil et al. 2020; Shi et al. 2023) with Adam grafting and blocking.

    This is facebookresearch/optimizers' ``DistributedShampoo`` (the AlgoPerf v0.5 external-tuning winner) in its
    default configuration, on one process: root-inverse Shampoo by ``eigh`` (``DefaultShampooConfig``), the
    recipe of its README for replacing Adam(W) (Adam grafting, ``epsilon=1e-12``, ``precondition_frequency=100``),
    decoupled weight decay. Each parameter is reshaped by merging small dimensions (``merge_small_dims``: size-1
    dimensions dropped, neighbours merged from the last while the product stays <= ``max_preconditioner_dim``) and
    cut into blocks of at most ``max_preconditioner_dim`` per dimension. For a block :math:`G_t` of order :math:`o`
    (a matrix: :math:`o = 2`), with :math:`p = 2o` unless ``inverse_exponent_override`` says otherwise:

    .. math::
        L_t &= \beta_2 L_{t-1} + (1-\beta_2) G_t G_t^T, \qquad R_t = \beta_2 R_{t-1} + (1-\beta_2) G_t^T G_t
            \quad (\beta_2 = 1\text{: plain sums, no factor } 1-\beta_2) \\
        \bar L^{-1/p} &= \left(\frac{L_t}{1-\beta_2^t} + \epsilon I\right)^{-1/p}
            \text{ by eigh, every } f \text{ steps from } t_0 \text{ on} \\
        \tilde G_t &= \beta_1 \tilde G_{t-1} + (1-\beta_1) G_t, \qquad \bar G_t = \tilde G_t / (1-\beta_1^t) \\
        P_t &= \bar L^{-1/p} \bar G_t \bar R^{-1/p}, \qquad
            A_t = \frac{\bar G_t}{\sqrt{V_t/(1-\beta_g^t)} + \epsilon_g}, \quad
            V_t = \beta_g V_{t-1} + (1-\beta_g)G_t^2 \\
        P_t &\leftarrow \frac{\|A_t\|_F}{\|P_t\|_F + 10^{-16}} P_t \text{ (grafting; } P_t = A_t \text{ before } t_0),
            \qquad W_t = W_{t-1} - \eta\,(P_t + \lambda W_{t-1})

    The factors accumulate the raw (L2-decayed) gradient, the search direction uses the filtered one; the
    eigenvalues of a factor that round-off made indefinite are shifted so the smallest is :math:`\epsilon`; before
    the first root the inverse factors are identities. Grafting ``"adagrad"`` (:math:`\beta_g = 1`, plain sum, no bias
    correction), ``"rmsprop"`` (no bias correction), ``"sgd"`` (:math:`A_t = \bar G_t`) and None (no grafting: the
    identity preconditioner, i.e. SGD on :math:`\bar G_t`, before :math:`t_0`) are the reference's other choices.

    **Where the references disagree.** :math:`\epsilon` is added to the factor *before* the root
    (``perturb_before_computation=True``, the reference's default), not to the eigenvalues after; the grafted Adam
    adds :math:`\epsilon_g` after the square root, as torch's Adam. Gupta et al. 2018 use :math:`p = 4` for matrices
    and no grafting; Anil et al. 2020 introduced grafting and the blocking; the reference's default
    :math:`\beta_2` is 1 (Adagrad-like sums) while its Adam(W) recipe, followed here, uses 0.999. The reference
    stores the factors packed (upper triangle) in float32; optimlab stores full matrices, in float32 for parameters
    up to float32 and float64 for float64 parameters (``factor_dtype``); it keeps one step counter per parameter
    (the reference one per group), and the filtered gradient and grafting state as one tensor in the parameter's
    shape (the reference one per block; the numbers are the same); it computes the bias corrections in float64 (the
    reference as 0-d tensors of torch's default dtype, float32 unless changed). The reference's ``beta3``, iterate
    averaging, Schedule-Free, SOAP/eigenvalue-corrected and spectral variants, quantization and its distributed
    implementations are not included (:class:`optimlab.SOAP` is SOAP); ``tests/test_shampoo.py`` checks this class
    against a single-tensor transcription of the reference's default path.

    **Speed.** 2-D blocks run with explicit matrix products (``L^{-1/p} G R^{-1/p}``, ``G G^T``, ``G^T G``), other
    blocks with ``tensordot`` as the reference, the element-wise state on whole tensors; ``foreach`` does not change
    the numbers (both paths are this loop). Under FSDP2
    each parameter's factors, roots and step live on one owner rank (see :mod:`optimlab.algorithms._matrix_step`).

    Args:
        lr: :math:`\eta` (1e-3: with Adam grafting, Adam's lr). betas: :math:`(\beta_1, \beta_2)` ((0.9, 0.999));
            :math:`\beta_2` may be 1. epsilon: :math:`\epsilon` (1e-12). weight_decay: :math:`\lambda` (0).
        weight_decay_type: ``"decoupled"`` (default, AdamW-style, the reference's default) or ``"l2"`` (added to
            the gradient before the factors).
        max_preconditioner_dim: block size (1024, the reference's default; its README examples use 8192), or
            ``math.inf`` for no blocking.
        precondition_frequency: :math:`f`, steps between root computations (100).
        start_preconditioning_step: :math:`t_0`; -1 means :math:`f` (-1). Must be >= :math:`f` otherwise.
        use_bias_correction: divide by :math:`1-\beta_1^t` and :math:`1-\beta_2^t` (True).
        grafting: ``"adam"`` (default), ``"rmsprop"``, ``"adagrad"``, ``"sgd"`` or None.
        grafting_beta2: :math:`\beta_g` (0.999). grafting_epsilon: :math:`\epsilon_g` (1e-8).
        inverse_exponent_override: ``{order: exponent}``, the exponent :math:`1/p` for blocks of that order (0: do not
            precondition); default :math:`1/(2o)`.
        factor_dtype: dtype of factors and roots (None: float32, or float64 for float64 parameters).
        maximize, foreach: as in :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    References: V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018;
    R. Anil et al., "Scalable Second Order Optimization for Deep Learning", arXiv:2002.09018; H.-J. M. Shi et al., "A
    Distributed Data-Parallel PyTorch Implementation of the Distributed Shampoo Optimizer for Training Neural
    Networks At-Scale", arXiv:2309.06497; facebookresearch/optimizers ``distributed_shampoo``.
    """

    _compile_unsupported = ("its root computations, cached per block shape, fail inside dynamo's guards "
                            "(torch 2.13)")
    _lazy_param_state = ("filtered_grad", "adagrad")  # created by the first step, in the parameter's shape

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 epsilon: float = 1e-12, weight_decay: float = 0.0, *, weight_decay_type: str = "decoupled",
                 max_preconditioner_dim: int | float = 1024, precondition_frequency: int = 100,
                 start_preconditioning_step: int = -1, use_bias_correction: bool = True,
                 grafting: str | None = "adam", grafting_beta2: float = 0.999, grafting_epsilon: float = 1e-8,
                 inverse_exponent_override: dict[int, float] | None = None, factor_dtype: torch.dtype | None = None,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, epsilon=epsilon, weight_decay=weight_decay,
                                      weight_decay_type=weight_decay_type,
                                      max_preconditioner_dim=max_preconditioner_dim,
                                      precondition_frequency=precondition_frequency,
                                      start_preconditioning_step=start_preconditioning_step,
                                      use_bias_correction=use_bias_correction, grafting=grafting,
                                      grafting_beta2=grafting_beta2, grafting_epsilon=grafting_epsilon,
                                      inverse_exponent_override=inverse_exponent_override,
                                      factor_dtype=factor_dtype, maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate({k: v for k, v in group.items() if k != "betas"})  # beta2 = 1 is allowed here
        betas = group["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            validation.fail("betas", betas, "a pair (beta1, beta2)", TypeError)
        validation.check_in_range("betas[0]", betas[0], 0.0, 1.0)
        validation.check_in_range("betas[1]", betas[1], 0.0, 1.0, hi_open=False)
        validation.check_positive("epsilon", group["epsilon"])
        validation.check_choice("weight_decay_type", group["weight_decay_type"], {"decoupled", "l2"})
        dim = group["max_preconditioner_dim"]
        if not (dim == math.inf or (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1)):
            validation.fail("max_preconditioner_dim", dim, "an int >= 1 or math.inf")
        freq = group["precondition_frequency"]
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            validation.fail("precondition_frequency", freq, "an int >= 1")
        start = group["start_preconditioning_step"]
        if isinstance(start, bool) or not isinstance(start, int) or (start != -1 and start < freq):
            validation.fail("start_preconditioning_step", start, f"-1 or an int >= precondition_frequency ({freq})")
        if not isinstance(group["use_bias_correction"], bool):
            validation.fail("use_bias_correction", group["use_bias_correction"], "a bool", TypeError)
        if group["grafting"] not in _GRAFTING:
            validation.fail("grafting", group["grafting"], "None, 'sgd', 'adagrad', 'rmsprop' or 'adam'")
        validation.check_beta("grafting_beta2", group["grafting_beta2"])
        validation.check_positive("grafting_epsilon", group["grafting_epsilon"])
        override = group["inverse_exponent_override"]
        if override is not None and (not isinstance(override, dict) or
                                     any(not isinstance(k, int) or not isinstance(v, int | float) or v < 0
                                         for k, v in override.items())):
            validation.fail("inverse_exponent_override", override, "None or {order: exponent >= 0}", TypeError)
        if group["factor_dtype"] not in (None, torch.float32, torch.float64):
            validation.fail("factor_dtype", group["factor_dtype"], "None, torch.float32 or torch.float64", TypeError)
        for i, p in enumerate(group.get("params", ())):  # the defaults are validated before params are read
            if p.is_complex():
                validation.fail(f"params[{i}]", p.dtype, "a real parameter (Shampoo's factors are real)")

    # -- pieces ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _exponent(h: dict[str, Any], order: int) -> float:
        override = h["inverse_exponent_override"] or {}
        return float(override.get(order, 1 / (2 * max(order, 1))))

    @staticmethod
    def _factor_dtype(p: Tensor, h: dict[str, Any]) -> torch.dtype:
        if h["factor_dtype"] is not None:
            return h["factor_dtype"]
        return torch.float64 if p.dtype == torch.float64 else torch.float32

    @staticmethod
    def _compute_dtype(p: Tensor) -> torch.dtype:
        return p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32

    def _init(self, p: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        merged, blocks = _layout(tuple(p.shape), h["max_preconditioner_dim"])
        fd = self._factor_dtype(p, h)
        factors, roots = [], []
        for cut in blocks:
            dims = [s.stop - s.start for s in cut]
            for n in dims:
                if self._exponent(h, len(dims)) != 0:
                    factors.append(torch.zeros(n, n, dtype=fd, device=p.device))
                    roots.append(torch.eye(n, dtype=fd, device=p.device))
        if h["betas"][0] != 0:
            state["filtered_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if h["grafting"] in ("adagrad", "rmsprop", "adam"):
            state["adagrad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["factor_matrices"] = factors
        state["inv_factor_matrices"] = roots

    @staticmethod
    def _outer(g: Tensor, k: int) -> Tensor:
        other = [*chain(range(k), range(k + 1, g.dim()))]
        return torch.tensordot(g, g, dims=[other, other])

    @staticmethod
    def _precondition(g: Tensor, roots: list[Tensor]) -> Tensor:
        """``_precondition_grad``: contract each dimension with its inverse root in turn (all are preconditioned)."""
        for r in roots:
            g = torch.tensordot(g, r, dims=([0], [0]))
        return g

    def _direction(self, p: Tensor, g: Tensor, w: Tensor | None, state: dict[str, Any],
                   h: dict[str, Any]) -> Tensor:
        """The search direction :math:`P_t` of one parameter (grafted, before weight decay and lr), in the merged
        shape, having updated factors, roots (when due), grafting state and filtered gradient."""
        t = int(state["step"])
        beta1, beta2 = h["betas"]
        merged, blocks = _layout(tuple(p.shape), h["max_preconditioner_dim"])
        cd = self._compute_dtype(p)
        fd = self._factor_dtype(p, h)
        G = g.to(cd).reshape(merged)
        if h["weight_decay"] != 0 and h["weight_decay_type"] == "l2":
            G = torch.add(G, w.to(cd).reshape(merged), alpha=h["weight_decay"])  # G + lambda W, as the reference
        # factors, then (when due) their inverse roots
        start = h["start_preconditioning_step"]
        start = h["precondition_frequency"] if start == -1 else start
        amortized = (t % h["precondition_frequency"] == 0 and t > start) or t == start
        weight = 1.0 if beta2 == 1.0 else 1 - beta2
        bc2 = 1.0 - beta2**t if h["use_bias_correction"] and beta2 < 1.0 else 1.0
        factors, roots = state["factor_matrices"], state["inv_factor_matrices"]
        plan = []  # (block slices, indices of its factors)
        i = 0
        for cut in blocks:
            order = len(cut)
            n_f = order if self._exponent(h, order) != 0 else 0
            plan.append((cut, list(range(i, i + n_f))))
            i += n_f
        for cut, idx in plan:
            if not idx:
                continue
            Gb = G[cut].to(fd)
            two_d = Gb.dim() == 2
            outers = [Gb @ Gb.mT, Gb.mT @ Gb] if two_d else [self._outer(Gb, k) for k in range(Gb.dim())]
            for j, outer in zip(idx, outers, strict=True):
                if beta2 != 1.0:
                    factors[j].mul_(beta2)
                factors[j].add_(outer, alpha=weight)
            if amortized:
                root = 1.0 / self._exponent(h, len(cut))
                for j in idx:
                    roots[j].copy_(_matrix.inverse_root(factors[j] / bc2, root, h["epsilon"]))
        # grafting state, then the filtered gradient
        graft = h["grafting"]
        if graft in ("adagrad", "rmsprop", "adam"):
            gb2 = 1.0 if graft == "adagrad" else h["grafting_beta2"]
            v = state["adagrad"]
            v_work = v.to(cd).reshape(merged) if v.dtype != cd else v.reshape(merged)
            if gb2 != 1.0:
                v_work.mul_(gb2)
            v_work.addcmul_(G, G, value=1.0 if graft == "adagrad" else 1 - gb2)
            if v_work.data_ptr() != v.data_ptr():
                v.copy_(v_work.reshape(v.shape))
        if beta1 != 0:
            fg = state["filtered_grad"]
            f_work = fg.to(cd).reshape(merged) if fg.dtype != cd else fg.reshape(merged)
            f_work.lerp_(G, 1 - beta1)
            if f_work.data_ptr() != fg.data_ptr():
                fg.copy_(f_work.reshape(fg.shape))
            Gbar = f_work / (1.0 - beta1 * beta1 ** (t - 1)) if h["use_bias_correction"] else f_work.clone()
        else:
            Gbar = G
        # the grafted direction, block by block
        A = None
        if graft == "sgd":
            A = Gbar
        elif graft is not None:
            gbc2 = 1.0 - h["grafting_beta2"] ** t if graft == "adam" else 1.0
            denom = (v_work / gbc2).sqrt_().add_(h["grafting_epsilon"])
            A = Gbar / denom
        if graft is not None and t < start:
            return A
        P = torch.empty_like(Gbar)
        for cut, idx in plan:
            Gb = Gbar[cut]
            if not idx:
                Pb = Gb.clone()
            elif Gb.dim() == 2:
                Pb = (roots[idx[0]] @ Gb.to(fd) @ roots[idx[1]]).to(cd)
            else:
                Pb = self._precondition(Gb.to(fd), [roots[j] for j in idx]).to(cd)
            if A is not None:
                Pb = Pb * (torch.linalg.vector_norm(A[cut]) / (torch.linalg.vector_norm(Pb) + 1e-16))
            P[cut] = Pb
        return P

    # -- the step ------------------------------------------------------------------------------------------------------
    def _step_matrices(self, group: dict[str, Any]) -> None:
        h = self._hyperparameters(group)
        whole = WholeMatrices(group["params"])
        l2 = h["weight_decay"] != 0 and h["weight_decay_type"] == "l2"
        for p, g, state in self._with_grads(group):
            if g.numel() == 0:
                continue  # the reference filters empty gradients out
            if "step" not in state:
                state["step"] = new_step()
            state["step"] += 1
            full_g = whole.full(g)
            full_w = whole.full(p.detach()) if l2 and whole.is_sharded(p) else p.detach()
            P = None
            if whole.owns(p):
                if "factor_matrices" not in state:
                    self._init(full_g if whole.is_sharded(p) else p, state, h)
                P = self._direction(p, full_g, full_w, state, h).reshape(p.shape)
            local = WholeMatrices.local(p)
            update = whole.share(p, P, self._compute_dtype(p))
            if h["weight_decay"] != 0 and h["weight_decay_type"] == "decoupled":
                update = torch.add(update, local.to(update.dtype), alpha=h["weight_decay"])  # P + lambda W
            local.add_((update * -h["lr"]).to(local.dtype))  # the reference's P *= -lr; W += P
