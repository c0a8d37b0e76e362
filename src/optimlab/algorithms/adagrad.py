"""Adagrad: per-coordinate step sizes from the sum of squared gradients."""

from __future__ import annotations

from typing import Any

import torch

from ..core import blocks, ops, tensors, validation
from ..core.base import Optimizer, ParamsT, new_step, scaling
from ..core.ops import TensorOrList

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer 2011, "Adaptive Subgradient Methods for Online Learning").

    A drop-in for :class:`torch.optim.Adagrad` (arguments, defaults, state keys ``step`` and ``sum``):

    .. math::
        g_t &= \nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \qquad
        \tilde\gamma_t = \gamma / (1 + (t - 1)\,\eta) \\
        s_t &= s_{t-1} + g_t^2 \quad (s_0 = \text{initial\_accumulator\_value}) \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t\, g_t / (\sqrt{s_t} + \epsilon)

    Args:
        lr: :math:`\gamma` (default 1e-2). lr_decay: :math:`\eta`. weight_decay: L2 :math:`\lambda`.
        initial_accumulator_value: :math:`s_0`. eps: :math:`\epsilon` (default 1e-10, added outside the sqrt).
        foreach, maximize, differentiable, fused, capturable: as in :class:`optimlab.SGD` (torch's fused Adagrad
        kernel is used with ``fused=True``, and by default where it applies).

    State is created at construction, as torch does, so ``share_memory()`` works before the first step. Sparse
    gradients take torch's sparse update (only the rows present are touched; ``weight_decay`` must be 0).
    """

    _has_fused = True
    _supports_sparse = True
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None,
                 capturable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value,
                                      maximize=maximize, foreach=foreach, differentiable=differentiable,
                                      fused=fused, capturable=capturable))
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p], group)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_nonneg("lr_decay", group["lr_decay"])
        validation.check_nonneg("initial_accumulator_value", group["initial_accumulator_value"])

    def share_memory(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        init = complex(group["initial_accumulator_value"], group["initial_accumulator_value"]) \
            if torch.is_complex(p) else group["initial_accumulator_value"]
        state["sum"] = torch.full_like(p, init, memory_format=torch.preserve_format)

    _elementwise = True

    def _fused(self, ps: list[torch.Tensor], gs: list[torch.Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        if not tensors.fused_kernels_support(ps):
            return False
        torch._fused_adagrad_(ps, gs, s["sum"], s["step"], lr=h["lr"], lr_decay=h["lr_decay"],
                              weight_decay=h["weight_decay"], eps=h["eps"], maximize=h["maximize"],
                              **scaling(h, ps[0].device))
        return True

    def _sparse_update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        """torch's sparse Adagrad: the accumulator and the parameter change only at the gradient's indices."""
        if h["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        g = (-g if h["maximize"] else g).coalesce()  # the update is non-linear: indices must be unique
        indices, values = g._indices(), g._values()
        state["sum"].add_(torch.sparse_coo_tensor(indices, values.pow(2), g.size(), check_invariants=False))
        std = state["sum"].sparse_mask(g)._values().sqrt_().add_(h["eps"])
        clr = h["lr"] / (1 + (h["step"] - 1) * h["lr_decay"])
        p.add_(torch.sparse_coo_tensor(indices, values / std, g.size(), check_invariants=False), alpha=-clr)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        g = blocks.l2_decay(g, p, h["weight_decay"])
        clr = h["lr"] / (1 + (h["step"] - 1) * h["lr_decay"])
        ops.addcmul_(s["sum"], g, g)
        std = ops.add_scalar_(ops.sqrt(s["sum"]), h["eps"])
        ops.addcdiv_(p, g, std, value=-clr)
