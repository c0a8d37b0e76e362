"""Adafactor: a factored second moment (row and column averages for matrices), relative step sizes and update
clipping; sublinear memory."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..core import tensors, validation
from ..core.base import Optimizer, ParamsT, new_step
from ..core.ops import TensorOrList

__all__ = ["Adafactor"]

#: Rows per chunk of the chunked path: about this many elements, so a chunk's temporaries stay in cache.
_CHUNK_ELEMS = 1 << 18


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern 2018, Algorithms 4 and 5), as torch implements it.

    A drop-in for :class:`torch.optim.Adafactor` (arguments, defaults, state keys ``step``, ``row_var``,
    ``col_var``, ``variance`` and the trajectory). For a parameter with two or more dimensions the second moment is
    factored over the last two, :math:`G_t \in \mathbb{R}^{n\times m}`:

    .. math::
        \hat\beta_{2,t} &= 1 - t^{\tau}, \qquad \rho_t = \min(\gamma, 1/\sqrt t), \qquad
            \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta_{t-1}))\,\rho_t \\
        R_t &= \hat\beta_{2,t} R_{t-1} + (1-\hat\beta_{2,t})\, \tfrac1m (G_t\odot G_t) 1_m, \qquad
            C_t = \hat\beta_{2,t} C_{t-1} + (1-\hat\beta_{2,t})\, \tfrac1n 1_n^\top (G_t\odot G_t) \\
        \hat V_t &= \frac{R_t C_t}{\max(\tfrac1n 1_n^\top R_t,\ \epsilon_1)}
            \quad(\text{a vector: } \hat V_t = \hat\beta_{2,t}\hat V_{t-1} + (1-\hat\beta_{2,t}) G_t^2) \\
        U_t &= G_t / \sqrt{\max(\hat V_t, \epsilon_1^2)}, \qquad
            \theta_t = \theta_{t-1}(1 - \gamma\lambda) - \frac{\alpha_t}{\max(1, \operatorname{RMS}(U_t)/d)} U_t

    State is :math:`n + m` numbers per matrix (per slice of the leading dimensions) instead of :math:`nm`.
    Where the references disagree (torch's notes, followed here): torch uses the lr as the cap of the relative step
    :math:`\rho_t` (the paper: 0.01) and for decoupled weight decay (the paper has none), means instead of sums,
    and :math:`\epsilon_1` applied to :math:`\hat V_t` and its row mean rather than added to :math:`G_t^2`; there is
    no first moment (the paper's :math:`\beta_1 = 0` setting). ``eps=(None, ...)`` takes :math:`\epsilon_1` as the
    machine epsilon of the parameters' dtype.

    **Fast path.** Three reductions per tensor (:math:`\|\theta\|`, the row and column means, :math:`\|U\|`) make
    a step several passes over memory. On the list path the parameters' norms are one ``_foreach_norm``, and each
    contiguous matrix is processed in chunks of rows whose temporaries stay in cache: one pass for the factors, one
    for :math:`\|U\|`, one for the update (24 bytes of traffic per fp32 parameter with the norm; torch
    materialises :math:`\hat V` and :math:`U` at full size). Where nothing is clamped the estimate is separable,
    :math:`\hat V_{ij}^{-1/2} = a_i b_j`, so :math:`\|U\|` is a matrix-vector product per chunk and no
    :math:`\hat V` is formed (see :meth:`_chunked`). Other tensors take the plain rule. Under FSDP2 a DTensor shard
    all-reduces only its norms and column sums (:meth:`_update_sharded`). Complex parameters are refused, as in
    torch; empty tensors only count the step (torch divides by their zero size).

    Args:
        lr: :math:`\gamma` (1e-2). beta2_decay: :math:`\tau \le 0` (-0.8). eps: :math:`(\epsilon_1, \epsilon_2)`
            ((None, 1e-3)). d: the clipping threshold :math:`d \ge 1` (1.0). weight_decay: :math:`\lambda` (0).
        foreach, maximize: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    References: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018;
    torch.optim.Adafactor.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0, *,
                 foreach: bool | None = None, maximize: bool = False,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                                      maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate({k: v for k, v in group.items() if k != "eps"})
        eps = group["eps"]
        if not isinstance(eps, tuple | list) or len(eps) != 2:
            validation.fail("eps", eps, "a pair (eps1 or None, eps2)", TypeError)
        if eps[0] is not None:
            validation.check_nonneg("eps[0]", eps[0])
        validation.check_nonneg("eps[1]", eps[1])
        validation.check_in_range("beta2_decay", group["beta2_decay"], float("-inf"), 0.0, hi_open=False)
        validation.check_in_range("d", group["d"], 1.0, float("inf"), hi_open=False)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if p.is_complex():
            raise RuntimeError("Adafactor does not support complex parameters")
        state["step"] = new_step()
        local = p if tensors.is_plain([p]) else _sharded(p)[0].to_local()  # DTensor shard: state of the shard
        if p.dim() > 1:
            row_shape, col_shape = list(local.shape), list(local.shape)
            row_shape[-1], col_shape[-2] = 1, 1
            state["row_var"] = local.new_zeros(row_shape)
            state["col_var"] = local.new_zeros(col_shape)
        else:
            state["variance"] = torch.zeros_like(local, memory_format=torch.preserve_format)

    # -- the rule, one tensor at a time ------------------------------------------------------------------------
    @staticmethod
    def _scalars(p: Tensor, h: dict[str, Any], p_norm: float | None = None) -> tuple[float, float, float]:
        """:math:`1-\\hat\\beta_{2,t}`, :math:`\\epsilon_1` and :math:`\\alpha_t` (from :math:`\\|\\theta\\|`, read here
        unless given)."""
        t = h["step"]
        eps1, eps2 = h["eps"]
        eps1 = torch.finfo(p.dtype).eps if eps1 is None else eps1
        rho = min(h["lr"], 1 / (t**0.5))
        p_norm = p.norm(2).item() if p_norm is None else p_norm
        alpha = max(eps2, p_norm / (p.numel() ** 0.5)) * rho
        return t ** h["beta2_decay"], eps1, alpha

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        if isinstance(p, list):
            for i, (p_i, g_i) in enumerate(zip(p, g, strict=True)):
                self._update(p_i, g_i, {k: v[i] for k, v in s.items()}, h)
            return
        if not tensors.is_plain([p]):
            self._update_sharded(p, g, s, h)
            return
        if p.numel() == 0:
            return
        beta2_t, eps1, alpha = self._scalars(p, h)
        if h["weight_decay"] != 0:
            p.mul_(1 - h["lr"] * h["weight_decay"])
        if "row_var" in s:
            row_var, col_var = s["row_var"], s["col_var"]
            row_var.lerp_(torch.norm(g, dim=-1, keepdim=True).square_().div_(g.size(-1)), beta2_t)
            col_var.lerp_(torch.norm(g, dim=-2, keepdim=True).square_().div_(g.size(-2)), beta2_t)
            var = row_var @ col_var
            var.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        else:
            var = s["variance"].lerp_(g * g, beta2_t).clone()
        update = var.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)
        denom = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * h["d"]))
        p.add_(update, alpha=-alpha / denom)

    def _run_lists(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any],
                   tensor_keys: list[str]) -> None:
        chunked = ["row_var" in s and p.dim() == 2 and p.numel() > 0 and tensors.is_plain([p, g])
                   and p.is_contiguous() and g.is_contiguous() for p, g in zip(ps, gs, strict=True)]
        todo = [p for p, c in zip(ps, chunked, strict=True) if c]
        norms = iter(torch.stack(torch._foreach_norm(todo)).tolist() if todo else [])  # one pass, one sync
        for i, (p, g) in enumerate(zip(ps, gs, strict=True)):
            st = {k: v[i] for k, v in s.items()}
            g = -g if h["maximize"] else g
            if chunked[i]:
                self._chunked(p, g, st, h, next(norms))
            else:
                self._update(p, g, st, h)

    def _chunked(self, p: Tensor, g: Tensor, s: dict[str, Any], h: dict[str, Any], p_norm: float) -> None:
        r"""The rule for a matrix on the list path, by chunks of rows whose temporaries stay in cache: one pass for the
        factors (and one over :math:`\theta` for its norm), one for :math:`\|U\|`, one for the update.

        Where no element of :math:`\hat V` is clamped (checked from the factors' minima), the estimate is separable,
        :math:`1/\sqrt{\hat V_{ij}} = a_i b_j` with :math:`a = 1/\sqrt{R/\bar R}`, :math:`b = 1/\sqrt{C}`:
        :math:`\|U\|^2 = \sum_i a_i^2 \sum_j G_{ij}^2 b_j^2` (a matrix-vector product per chunk) and
        :math:`U = a \odot G \odot b` are computed without a full-size :math:`\hat V`; equal to torch's rule to
        round-off. Otherwise (rows or columns of zero gradients) the clamped estimate is formed per chunk."""
        n, m = p.shape
        rows = max(1, _CHUNK_ELEMS // max(m, 1))
        chunks = [(i, min(n, i + rows)) for i in range(0, n, rows)]
        beta2_t, eps1, alpha = self._scalars(p, h, p_norm)
        row_var, col_var = s["row_var"], s["col_var"]
        row_sq = torch.empty_like(row_var)
        col_sq = torch.zeros_like(col_var)
        for a, b in chunks:
            sq = g[a:b].square()
            torch.sum(sq, dim=-1, keepdim=True, out=row_sq[a:b])
            col_sq.add_(sq.sum(dim=-2, keepdim=True))
        row_var.lerp_(row_sq.div_(m), beta2_t)
        col_var.lerp_(col_sq.div_(n), beta2_t)
        mean = row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1)
        keep = 1 - h["lr"] * h["weight_decay"]
        r = row_var / mean
        if float(r.min()) * float(col_var.min()) >= eps1 * eps1:  # no clamping anywhere: separable
            ra, cb = r.rsqrt(), col_var.rsqrt()
            cb2 = cb.square().reshape(m)
            ra2 = ra.reshape(-1).square()
            sq_norm = sum(torch.dot(torch.mv(g[a:b].square(), cb2), ra2[a:b]) for a, b in chunks)
            denom = max(1.0, (float(sq_norm) ** 0.5) / ((p.numel() ** 0.5) * h["d"]))
            ra.mul_(-alpha / denom)
            for a, b in chunks:
                piece = p[a:b]
                if h["weight_decay"] != 0:
                    piece.mul_(keep)
                piece.addcmul_(g[a:b] * cb, ra[a:b])
            return

        def chunk_update(a: int, b: int) -> Tensor:
            var = (row_var[a:b] * col_var).div_(mean)
            return var.clamp_(min=eps1 * eps1).rsqrt_().mul_(g[a:b])

        sq_norm = 0.0
        for a, b in chunks:
            sq_norm += float(torch.linalg.vector_norm(chunk_update(a, b))) ** 2
        denom = max(1.0, (sq_norm**0.5) / ((p.numel() ** 0.5) * h["d"]))
        for a, b in chunks:
            piece = p[a:b]
            if h["weight_decay"] != 0:
                piece.mul_(keep)
            piece.add_(chunk_update(a, b), alpha=-alpha / denom)

    def _update_sharded(self, p: Tensor, g: Tensor, s: dict[str, Any], h: dict[str, Any]) -> None:
        """The rule for a DTensor shard (FSDP2: rows of a matrix, or slices of the leading dimension, on each rank),
        on the local tensors: the norms, the column means of a sharded matrix and the mean of its row factor are
        all-reduced (a few numbers per tensor, never the tensor itself); the factors are those of the shard's rows
        and of all columns, and the result equals the unsharded rule to round-off."""
        _, group = _sharded(p)
        pl, gl = p.to_local(), g.to_local()
        n_global = p.shape[-2] if p.dim() > 1 else 1
        rows_sharded = group is not None and p.dim() == 2  # Shard(0) of a matrix splits the factored rows

        def total(t: Tensor) -> Tensor:
            if group is not None:
                dist.all_reduce(t, group=group)
            return t

        t = h["step"]
        eps1, eps2 = h["eps"]
        eps1 = torch.finfo(p.dtype).eps if eps1 is None else eps1
        beta2_t = t ** h["beta2_decay"]
        rho = min(h["lr"], 1 / (t**0.5))
        p_sq = total(torch.linalg.vector_norm(pl, dtype=torch.float64).square().reshape(1))
        alpha = max(eps2, float(p_sq.sqrt()) / (p.numel() ** 0.5)) * rho
        if h["weight_decay"] != 0:
            pl.mul_(1 - h["lr"] * h["weight_decay"])
        if "row_var" in s:
            row_var, col_var = s["row_var"], s["col_var"]
            row_var.lerp_(torch.norm(gl, dim=-1, keepdim=True).square_().div_(gl.size(-1)), beta2_t)
            col_sq = gl.square().sum(dim=-2, keepdim=True)
            col_var.lerp_((total(col_sq) if rows_sharded else col_sq).div_(n_global), beta2_t)
            row_sum = row_var.sum(dim=-2, keepdim=True)
            mean = (total(row_sum) if rows_sharded else row_sum).div_(n_global).clamp_(min=eps1)
            var = (row_var @ col_var).div_(mean)
        else:
            var = s["variance"].lerp_(gl * gl, beta2_t).clone()
        update = var.clamp_(min=eps1 * eps1).rsqrt_().mul_(gl)
        u_sq = total(torch.linalg.vector_norm(update, dtype=torch.float64).square().reshape(1))
        denom = max(1.0, float(u_sq.sqrt()) / ((p.numel() ** 0.5) * h["d"]))
        pl.add_(update, alpha=-alpha / denom)


def _sharded(p: Tensor) -> tuple[Any, Any]:
    """A DTensor parameter and the process group its shards are spread over (None when replicated). Only what FSDP2
    makes: a 1-D mesh, sharded on dimension 0 or replicated."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    if not isinstance(p, DTensor) or p.device_mesh.ndim != 1 or \
            not isinstance(p.placements[0], Shard | Replicate) or \
            (isinstance(p.placements[0], Shard) and p.placements[0].dim != 0):
        raise NotImplementedError(f"Adafactor: parameters of type {type(p).__name__} with placements "
                                  f"{getattr(p, 'placements', None)}; supported are plain tensors and DTensors "
                                  "sharded on dimension 0 of a 1-D mesh (FSDP2) or replicated")
    group = p.device_mesh.get_group() if isinstance(p.placements[0], Shard) else None
    return p, group
