"""Stochastic gradient descent: plain, heavy-ball, Nesterov (``SGD``) and with decoupled weight decay (``SGDW``)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..core import blocks, kernels, ops, tensors, tiling, validation
from ..core.base import Optimizer, ParamsT, fused_sgd_drops_updates, scaling
from ..core.ops import TensorOrList

__all__ = ["SGD", "SGDW"]

_warned_fused_sgd: list[bool] = []  # the fused-SGD fallback warns once per process


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay.

    A drop-in for :class:`torch.optim.SGD` (same arguments, defaults, state key ``momentum_buffer`` and trajectory):

    .. math::
        g_t &= \nabla f(\theta_{t-1}) + \lambda \theta_{t-1} \\
        b_t &= \mu b_{t-1} + (1 - \tau) g_t \quad (b_1 = g_1) \\
        d_t &= g_t + \mu b_t \text{ (Nesterov) or } b_t \\
        \theta_t &= \theta_{t-1} - \gamma d_t

    References: Robbins & Monro 1951; Polyak 1964 (heavy ball); Sutskever et al. 2013, "On the importance of
    initialization and momentum in deep learning" (the Nesterov form used here and by torch.optim.SGD).

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\gamma` (default 1e-3, torch's).
        momentum: :math:`\mu` (default 0: plain SGD).
        dampening: :math:`\tau`, damps the gradient's contribution to the buffer.
        weight_decay: :math:`\lambda`, L2 penalty added to the gradient (see :class:`SGDW` for decoupled decay).
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: maximize the objective instead of minimizing it.
        foreach: ``None``/``True`` run the rule on lists of tensors (compiled loops, torch's fused kernels or
            ``torch._foreach_*``, whichever is fastest); ``False`` the plain per-parameter loop.
        differentiable: record the step with autograd (the plain loop), as torch's ``differentiable=True``.
        fused: ``True`` always uses torch's fused kernel (``False`` never); ``None`` (default) lets the path choice
            take it where it is the fastest correct path. torch 2.13's CPU kernel drops updates of float16/bfloat16
            parameters, so there the list path runs instead (with a warning if ``fused=True`` was asked for).
        capturable: only ``False`` (CUDA-graph capture is not supported; see :mod:`optimlab.core.base`).
        cautious: cautious momentum (Liang et al. 2024, :func:`optimlab.core.blocks.cautious`): :math:`d_t` masked
            where its sign disagrees with :math:`g_t` (with the L2 term) and rescaled by the fraction kept, per
            tensor; the buffer keeps the unmasked :math:`b_t`. As timm's ``SGDW(caution=True)``
            (``timm/optim/sgdw.py``). Needs ``momentum > 0`` (timm ignores the flag without momentum). Such a step
            runs on whole lists, never on blocks, compiled loops or torch's fused kernel; not with sparse gradients.

    Sparse gradients (``nn.Embedding(sparse=True)``) are supported as in torch: the same rule on the sparse tensor.
    """

    _scalar_state = ()
    _lazy_param_state = ("momentum_buffer",)  # created from the first gradient, as in torch
    _elementwise = True
    _has_fused = True
    _supports_sparse = True
    _supports_differentiable = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 capturable: bool = False, cautious: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, cautious=cautious, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused, capturable=capturable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_nonneg("momentum", group["momentum"])
        validation.check_in_range("dampening", group["dampening"], 0.0, 1.0, hi_open=False)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            validation.fail("nesterov", True, "momentum > 0 and dampening == 0 (Nesterov momentum)")
        validation.check_bool("cautious", group["cautious"])
        if group["cautious"] and not group["momentum"] > 0:
            validation.fail("cautious", True, "momentum > 0 (the mask compares the momentum step with the gradient)")
        if group["cautious"] and group["fused"]:
            validation.fail("fused", True, "fused=None or False with cautious=True (torch's fused kernel has no mask)")

    def _sparse_update(self, p: Tensor, g: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if h["cautious"]:
            raise RuntimeError(f"{type(self).__name__}: cautious=True does not support sparse gradients")
        super()._sparse_update(p, g, state, h)

    def _init_state(self, p: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        pass  # the momentum buffer is created from the first gradient, as in torch

    def _creates_state(self, s: dict[str, Any], h: dict[str, Any]) -> bool:
        # (A cautious step reduces over each tensor, blocks.cautious: whole lists only, as a state-creating step.)
        return (h["momentum"] != 0 and "momentum_buffer" not in s) or h["cautious"]

    @staticmethod
    def _fused_kernel_is_correct(ps: list[Tensor], h: dict[str, Any]) -> bool:
        """The path rule for torch's fused SGD kernel: never where it drops updates (float16/bfloat16 on CPU, torch
        2.13), even with ``fused=True`` (then warn once: the list path runs instead)."""
        if not fused_sgd_drops_updates(ps):
            return True
        if h["fused"] and not _warned_fused_sgd:
            _warned_fused_sgd.append(True)
            warnings.warn("optimlab: torch's fused SGD kernel on CPU does not update every float16/bfloat16 element "
                          "(torch 2.13), so fused=True runs the list path for these parameters", RuntimeWarning,
                          stacklevel=5)
        return False

    def _fused(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        # torch's fused SGD kernel is this rule in one pass (it copies the gradient into a new buffer on step 1).
        if not tensors.fused_kernels_support(ps) or not self._fused_kernel_is_correct(ps, h) or h["cautious"]:
            return False
        first = h["momentum"] != 0 and "momentum_buffer" not in s
        if first and h.get("found_inf") is not None:
            # torch's fused step would keep the new buffers uninitialised (empty_like) where found_inf skips the
            # kernel, and use them as buffers on the next step: the list path reads the flag and creates none.
            return False
        if first:
            s["momentum_buffer"] = [torch.empty_like(p, memory_format=torch.preserve_format) for p in ps]
        self._fused_sgd(ps, gs, s.get("momentum_buffer", []), h, first, weight_decay=h["weight_decay"])
        return True

    @staticmethod
    def _fused_sgd(ps: list[Tensor], gs: list[Tensor], bufs: list[Tensor], h: dict[str, Any], first: bool,
                   weight_decay: float) -> None:
        torch._fused_sgd_(ps, gs, bufs, weight_decay=weight_decay, momentum=h["momentum"], lr=h["lr"],
                          dampening=h["dampening"], nesterov=h["nesterov"], maximize=h["maximize"],
                          is_first_step=first, **scaling(h, ps[0].device))

    def _direction(self, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> TensorOrList:
        """The momentum part shared by SGD and SGDW: returns :math:`d_t` (masked by ``cautious``)."""
        momentum = h["momentum"]
        if momentum == 0:
            return g
        if "momentum_buffer" not in s:
            buf = s["momentum_buffer"] = ops.clone(g)
        else:
            buf = blocks.momentum_(s["momentum_buffer"], g, momentum, h["dampening"])
        d = ops.add(g, buf, alpha=momentum) if h["nesterov"] else buf
        return blocks.cautious(d, g) if h["cautious"] else d

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        g = blocks.l2_decay(g, p, h["weight_decay"])
        ops.add_(p, self._direction(g, s, h), alpha=-h["lr"])


class SGDW(SGD):
    r"""SGD with momentum and decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 1).

    .. math::
        b_t &= \mu b_{t-1} + (1 - \tau) g_t \quad (b_1 = g_1),\qquad d_t = b_t \text{ or } g_t + \mu b_t \\
        \theta_t &= \theta_{t-1} - \gamma d_t - \eta_t \lambda \theta_{t-1}

    The decay uses the *pre-update* weights and never enters the momentum buffer. The paper's :math:`\eta_t` is
    the schedule multiplier; with ``decay_scale="lr"`` (default, torch.optim.AdamW's convention) the decay is
    :math:`\gamma_t\lambda`, with ``decay_scale="schedule"`` it is :math:`(\gamma_t/\gamma_0)\lambda` as in the
    paper, where :math:`\gamma_0` is the scheduler's base lr (the lr when it was created; without a scheduler the lr
    at construction, see :func:`optimlab.core.blocks.schedule_multiplier`). The buffer keeps torch's form (lr
    outside the buffer); the paper puts :math:`\eta_t\alpha` inside, which is the same trajectory at constant lr.
    ``fused=True`` runs, per cache-sized block, the decay and then torch's fused SGD kernel (without L2).

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019; code
    loshchil/AdamW-and-SGDW (``sgd.lua``). Arguments as :class:`SGD`, plus ``decay_scale``; ``cautious=True`` is
    timm's ``SGDW(caution=True)`` (the decay is not masked).
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, decay_scale: str = "lr",
                 maximize: bool = False, foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None, capturable: bool = False, cautious: bool = False) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                              weight_decay=weight_decay, nesterov=nesterov, cautious=cautious,
                                              decay_scale=decay_scale, maximize=maximize, foreach=foreach,
                                              differentiable=differentiable, fused=fused, capturable=capturable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_choice("decay_scale", group["decay_scale"], {"lr", "schedule"})

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        blocks.decoupled_decay_(p, h)
        ops.add_(p, self._direction(g, s, h), alpha=-h["lr"])

    def _fused(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        # One compiled loop where it can run (the base class tries it next); else, per cache-sized block, the decay
        # and then torch's fused SGD kernel (without L2) on the same block.
        if not tensors.fused_kernels_support(ps) or not self._fused_kernel_is_correct(ps, h) or h["cautious"]:
            return False
        if "found_inf" in h:  # GradScaler: the decay is outside the kernel, so the list path takes the bucket
            return False
        first = h["momentum"] != 0 and "momentum_buffer" not in s
        bufs = [s["momentum_buffer"]] if "momentum_buffer" in s else []
        if not h["fused"] and not first and kernels.usable([ps, gs, *bufs]):
            return False
        if first:
            s["momentum_buffer"] = [torch.empty_like(p, memory_format=torch.preserve_format) for p in ps]
        lists = [ps, gs, *([s["momentum_buffer"]] if "momentum_buffer" in s else [])]
        for block in tiling.block_plan(lists) if tiling.blockable(ps) else [lists]:
            blocks.decoupled_decay_(block[0], h)
            self._fused_sgd(block[0], block[1], block[2] if len(block) > 2 else [], h, first, weight_decay=0.0)
        return True
