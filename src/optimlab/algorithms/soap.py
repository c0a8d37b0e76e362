"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024), as nikhilvyas/SOAP ``soap.py``."""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import Tensor

from ..core import validation
from ..core.base import ParamsT, new_step
from . import _matrix
from ._matrix_step import MatrixOptimizer, WholeMatrices

__all__ = ["SOAP"]


class SOAP(MatrixOptimizer):
    r"""SOAP (Vyas et al. 2024): Adam run in the slowly refreshed eigenbasis of Shampoo's Kronecker factors.

    For a matrix gradient :math:`G_t` (each dimension of a tensor has its own factor and basis):

    .. math::
        G'_t &= Q_L^T G_t Q_R, \qquad M_t = \beta_1 M_{t-1} + (1-\beta_1) G'_t, \qquad
            V_t = \beta_2 V_{t-1} + (1-\beta_2) G'^{\,2}_t \\
        N_t &= Q_L \frac{M_t}{\sqrt{V_t} + \epsilon} Q_R^T, \qquad
            W_t = W_{t-1} - \eta\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} N_t, \qquad
            W_t \leftarrow W_t - \eta\lambda W_t \\
        L_t &= \beta_s L_{t-1} + (1-\beta_s) G_t G_t^T, \qquad R_t = \beta_s R_{t-1} + (1-\beta_s) G_t^T G_t

    with :math:`Q_L, Q_R` the eigenvectors of :math:`L, R`: from ``eigh`` after the first gradient, then refreshed
    every ``precondition_frequency`` steps by one power-iteration step and a QR decomposition,
    :math:`Q \leftarrow \mathrm{qr}(L Q)`, with the columns (and :math:`V`'s entries) first sorted by the estimated
    eigenvalues :math:`\mathrm{diag}(Q^T L Q)`. :math:`M` is kept in the current basis and rotated when the basis
    changes. This is nikhilvyas/SOAP ``soap.py`` (the authors' code, a1e5535), followed in every detail that decides
    the numbers; ``tests/test_soap.py`` checks it against a single-tensor transcription of that file:

    * the first step only accumulates :math:`L, R` and computes the bases; no parameter moves (so :math:`t`, the
      Adam step, is ``state["step"] - 1``; ``state["step"]`` counts steps as everywhere in optimlab);
    * ``eps`` is added to :math:`\sqrt{V_t}` and the bias correction goes into the step size,
      :math:`\eta\sqrt{1-\beta_2^t}/(1-\beta_1^t)`: Adam's :math:`\epsilon` placement differs (torch adds it to
      :math:`\sqrt{V_t/(1-\beta_2^t)}`);
    * weight decay is applied *after* the update, to the updated weights, with the plain lr;
    * :math:`L, R` accumulate the raw gradient, after the update (so the step's own gradient never enters its
      basis);
    * dimensions larger than ``max_precond_dim`` are not rotated; 1-D parameters only with ``precondition_1d``;
      ``merge_dims`` first merges neighbouring dimensions while the product stays within ``max_precond_dim``
      (``data_format="channels_last"`` moves a 4-D filter's channels first before merging);
    * ``normalize_grads`` divides :math:`N_t` by its RMS (plus 1e-30).

    Where optimlab differs from the code, it is only in operations that are identities in exact arithmetic: the
    reference rotates :math:`M` back and forth every step, optimlab only when the basis changes (4 matrix products
    fewer per 2-D parameter and step); it reads the eigenvalue estimate off the power-iteration product
    (:math:`\sum Q \odot LQ` rather than a separate :math:`Q^T L Q`; the two differ by round-off, which matters only
    where eigenvalues tie, in a rank-deficient factor early in training: tied columns may then be sorted, and so
    orthonormalized, in another order); Kronecker factors and bases are float32 for
    bfloat16/float16 parameters and in the parameter's dtype otherwise (the reference creates them in torch's
    default dtype). Peer implementations differ more: pytorch_optimizer's SOAP keeps :math:`M` in the original basis
    (the paper's form), HeavyBall's ForeachSOAP did not match the official code (HeavyBall#40).

    **Speed.** The list path (``foreach=None``/``True``) runs 2-D parameters with explicit matrix products (6 per
    step instead of the reference's 10, no ``tensordot`` copies) and the element-wise part on whole tensors;
    ``foreach=False`` is the general per-tensor loop. Under FSDP2 each parameter's SOAP state and step live on one
    owner rank (see :mod:`optimlab.algorithms._matrix_step`).

    Args:
        lr: :math:`\eta` (3e-3). betas: :math:`(\beta_1, \beta_2)` ((0.95, 0.95)). shampoo_beta: :math:`\beta_s`
            for :math:`L, R`; negative means :math:`\beta_2` (-1). eps: :math:`\epsilon` (1e-8).
        weight_decay: :math:`\lambda` (0.01). precondition_frequency: steps between basis refreshes (10).
        max_precond_dim: largest dimension that gets a factor (10000). merge_dims (False), precondition_1d (False),
        normalize_grads (False), data_format (``"channels_first"``), correct_bias (True): as above.
        maximize, foreach: as in :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    References: N. Vyas, D. Morwani, R. Zhao, I. Shapira, D. Brandfonbrener, L. Janson, S. Kakade, "SOAP: Improving
    and Stabilizing Shampoo using Adam", arXiv:2409.11321 (ICLR 2025); nikhilvyas/SOAP ``soap.py``.
    """

    _lazy_param_state = ("exp_avg", "exp_avg_sq")  # created by the first step, in the parameter's shape

    def __init__(self, params: ParamsT, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95),
                 shampoo_beta: float = -1, eps: float = 1e-8, weight_decay: float = 0.01,
                 precondition_frequency: int = 10, max_precond_dim: int = 10000, merge_dims: bool = False,
                 precondition_1d: bool = False, normalize_grads: bool = False, data_format: str = "channels_first",
                 correct_bias: bool = True, *, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                                      weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                                      max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                                      precondition_1d=precondition_1d, normalize_grads=normalize_grads,
                                      data_format=data_format, correct_bias=correct_bias, maximize=maximize,
                                      foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if group["shampoo_beta"] >= 0:
            validation.check_beta("shampoo_beta", group["shampoo_beta"])
        for name in ("precondition_frequency", "max_precond_dim"):
            value = group[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                validation.fail(name, value, "an int >= 1")
        for flag in ("merge_dims", "precondition_1d", "normalize_grads", "correct_bias"):
            if not isinstance(group[flag], bool):
                validation.fail(flag, group[flag], "a bool", TypeError)
        validation.check_choice("data_format", group["data_format"], {"channels_first", "channels_last"})
        for i, p in enumerate(group.get("params", ())):  # the defaults are validated before params are read
            if p.is_complex():
                validation.fail(f"params[{i}]", p.dtype, "a real parameter (SOAP's eigenbases are real)")

    # -- shapes ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _permuted(shape: torch.Size, h: dict[str, Any]) -> bool:
        return h["merge_dims"] and h["data_format"] == "channels_last" and len(shape) == 4

    def _work(self, x: Tensor, h: dict[str, Any]) -> Tensor:
        """The view the factors act on: the tensor, or (``merge_dims``) its merged dimensions."""
        if not h["merge_dims"]:
            return x
        if self._permuted(x.shape, h):
            x = x.permute(0, 3, 1, 2)
        return x.reshape(_matrix.merge_dims_soap(x.shape, h["max_precond_dim"]))

    def _unwork(self, x: Tensor, shape: torch.Size, h: dict[str, Any]) -> Tensor:
        if not h["merge_dims"]:
            return x
        if self._permuted(shape, h):
            n, hh, w, c = shape
            return x.reshape(n, c, hh, w).permute(0, 2, 3, 1)
        return x.reshape(shape)

    def _factor_shapes(self, shape: torch.Size, h: dict[str, Any]) -> list[int]:
        """The size of each working dimension's factor, 0 for a dimension that is not rotated."""
        if len(shape) == 1:
            n = shape[0]
            return [n if h["precondition_1d"] and n <= h["max_precond_dim"] else 0]
        work = _matrix.merge_dims_soap(self._permute_shape(shape, h), h["max_precond_dim"]) if h["merge_dims"] \
            else list(shape)
        return [n if n <= h["max_precond_dim"] else 0 for n in work]

    def _permute_shape(self, shape: torch.Size, h: dict[str, Any]) -> list[int]:
        return [shape[0], shape[3], shape[1], shape[2]] if self._permuted(shape, h) else list(shape)

    # -- the rule, one tensor ------------------------------------------------------------------------------------------
    @staticmethod
    def _compute_dtype(p: Tensor) -> torch.dtype:
        return p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32

    @staticmethod
    def _rotate(x: Tensor, bases: list[Tensor], back: bool = False) -> Tensor:
        """``x`` in the bases (each dimension contracted with its basis, in turn), or back; an empty basis leaves
        its dimension as it is (``project``/``project_back`` of the reference)."""
        for q in bases:
            if q.numel():
                x = torch.tensordot(x, q, dims=[[0], [1 if back else 0]])
            else:
                x = x.permute(*range(1, x.dim()), 0)
        return x

    @staticmethod
    def _outer(g: Tensor, k: int) -> Tensor:
        """:math:`G G^T` along dimension ``k``: all other dimensions contracted."""
        other = [*chain(range(k), range(k + 1, g.dim()))]
        return torch.tensordot(g, g, dims=[other, other])

    def _init(self, p: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        cd = self._compute_dtype(p)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["GG"] = [torch.zeros(n, n, dtype=cd, device=p.device) if n else torch.zeros(0, dtype=cd, device=p.device)
                       for n in self._factor_shapes(p.shape, h)]

    def _accumulate(self, state: dict[str, Any], gw: Tensor, h: dict[str, Any]) -> None:
        """:math:`L \\leftarrow \\beta_s L + (1-\\beta_s) G G^T`, for every factor (``update_preconditioner``)."""
        beta = h["shampoo_beta"] if h["shampoo_beta"] >= 0 else h["betas"][1]
        for k, gg in enumerate(state["GG"]):
            if gg.numel():
                gg.lerp_(self._outer(gw, k), 1 - beta)

    def _refresh(self, state: dict[str, Any], v_work: Tensor) -> Tensor:
        """New bases by power iteration + QR; ``v_work`` (the second moment's working view) permuted to match."""
        bases = []
        for k, (gg, q) in enumerate(zip(state["GG"], state["Q"], strict=True)):
            if not gg.numel():
                bases.append(q)
                continue
            q_new, order = _matrix.eigenbasis_refresh(gg, q)
            v_work = v_work.index_select(k, order)
            bases.append(q_new)
        state["Q"] = bases
        return v_work

    def _direction(self, p: Tensor, g: Tensor, state: dict[str, Any], h: dict[str, Any],
                   fast: bool) -> Tensor | None:
        """One SOAP step of one tensor, but the parameter update: returns :math:`N_t` (or None on the first step),
        having updated the moments, the factors and, when due, the bases."""
        cd = self._compute_dtype(p)
        shape = p.shape
        gw = self._work(g.to(cd), h)
        if "Q" not in state:  # the first gradient only builds the preconditioner (reference: `continue`)
            self._accumulate(state, gw, h)
            state["Q"] = [_matrix.eigenbasis(gg) if gg.numel() else gg.clone() for gg in state["GG"]]
            return None
        beta1, beta2 = h["betas"]
        two_d = fast and gw.dim() == 2 and all(q.numel() for q in state["Q"])
        if two_d:
            ql, qr = state["Q"]
            g_rot = ql.mT @ gw @ qr
        else:
            g_rot = self._rotate(gw, state["Q"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g_rot = self._unwork(g_rot, shape, h).to(m.dtype)
        m.mul_(beta1).add_(g_rot, alpha=1.0 - beta1)
        v.mul_(beta2).add_(g_rot.square(), alpha=1.0 - beta2)
        ratio = self._work((m / v.sqrt().add_(h["eps"])).to(cd), h)
        if two_d:
            n = ql @ ratio @ qr.mT
        else:
            n = self._rotate(ratio, state["Q"], back=True)
        n = self._unwork(n, shape, h)
        if h["normalize_grads"]:
            n = n / (1e-30 + torch.mean(n**2) ** 0.5)
        self._accumulate(state, gw, h)
        if (int(state["step"]) - 1) % h["precondition_frequency"] == 0:  # Adam's t is step - 1
            m_work = self._work(m.to(cd), h)
            m_orig = ql @ m_work @ qr.mT if two_d else self._rotate(m_work, state["Q"], back=True)
            state["exp_avg_sq"] = self._unwork(self._refresh(state, self._work(v, h)), shape, h)
            if two_d:
                ql, qr = state["Q"]
                m.copy_(self._unwork(ql.mT @ m_orig @ qr, shape, h))
            else:
                m.copy_(self._unwork(self._rotate(m_orig, state["Q"]), shape, h))
        return n

    # -- the step ------------------------------------------------------------------------------------------------------
    def _step_matrices(self, group: dict[str, Any]) -> None:
        h = self._hyperparameters(group)
        entries = self._with_grads(group)
        whole = WholeMatrices(group["params"])
        fast = h["foreach"] is not False
        beta1, beta2 = h["betas"]
        for p, g, state in entries:
            if "step" not in state:
                state["step"] = new_step()
            state["step"] += 1
            full_g = whole.full(g)  # a collective for a sharded parameter, on every rank
            n = None
            if whole.owns(p):
                if "exp_avg" not in state:
                    self._init(p if not whole.is_sharded(p) else full_g, state, h)
                n = self._direction(p, full_g, state, h, fast)
            if int(state["step"]) == 1:
                continue  # nothing moves on the first step (every rank knows: the counter is everywhere)
            t = int(state["step"]) - 1
            step_size = h["lr"]
            if h["correct_bias"]:
                step_size = step_size * (1.0 - beta2**t) ** 0.5 / (1.0 - beta1**t)
            local = WholeMatrices.local(p)
            update = whole.share(p, n, self._compute_dtype(p))
            local.add_(update.to(local.dtype) if update.dtype != local.dtype else update, alpha=-step_size)
            if h["weight_decay"] > 0.0:
                local.add_(local, alpha=-h["lr"] * h["weight_decay"])
