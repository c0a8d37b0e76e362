"""NorMuon: Muon with a second moment per neuron (row) of the orthogonalized update."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core import validation
from ..core.base import ParamsT
from . import _matrix
from ._matrix_step import MatrixOptimizer
from .muon import Muon

__all__ = ["NorMuon"]


class NorMuon(Muon):
    r"""NorMuon (Li et al. 2025): Muon's orthogonalized momentum, normalized row by row by an EMA of its row means.

    Follows microsoft/dion ``dion/normuon.py`` (the distributed implementation the paper's authors contributed), on
    optimlab's Muon (same momentum, Newton–Schulz, stacking of same-shape matrices, FSDP2 owner-computes path and
    AdamW groups for non-matrix parameters; ``create_optimizer("normuon", model)`` routes them as
    :meth:`Muon.from_model`). For a matrix :math:`W \in \mathbb{R}^{m \times n}` (a conv filter as
    :math:`(out, in \cdot k)`) with gradient :math:`G_t`:

    .. math::
        M_t &= \mu M_{t-1} + G_t, \qquad \tilde M_t = G_t + \mu M_t \text{ (Nesterov) or } M_t \\
        O_t &= \mathrm{NS}_k(\tilde M_t) \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\,\tfrac{1}{n}\textstyle\sum_j (O_t)_{:,j}^2 \quad (v_t \in
               \mathbb{R}^{m}, v_0 = 0) \\
        \hat O_t &= \frac{O_t}{\sqrt{v_t} + \epsilon}\ \text{(row-wise)}, \qquad
        \hat O_t \leftarrow \hat O_t \frac{\|O_t\|_F}{\max(\|\hat O_t\|_F, \epsilon)} \\
        W_t &= (1 - \gamma\lambda) W_{t-1} - \gamma\, s(m, n)\, \hat O_t

    so the update keeps Muon's Frobenius norm and only its distribution over the rows (output neurons) changes.
    :math:`s(m, n)` is ``adjust_lr_fn``'s: ``"spectral_norm"`` :math:`\sqrt{m/n}` (dion's default), ``None``/
    ``"original"`` :math:`\sqrt{\max(1, m/n)}` (the authors' ``normuon.py``, KellerJordan's Muon), ``"match_rms_adamw"``
    :math:`0.2\sqrt{\max(m, n)}` (dion's ``"rms_norm"``). Weight decay is decoupled and uses the unscaled lr, as in
    both. The second moment is the state ``second_momentum_buffer`` of shape ``(m, 1)`` (the 2-D view's rows), in
    the parameter's dtype (dion's ``variance_neuron``); :math:`O_t` is cast to that dtype before the normalization.
    ``beta2=1`` keeps :math:`v = 0`, and the rescaling then returns :math:`O_t` itself: Muon with the same options.

    **Where the references disagree** (default first):

    * momentum: ``momentum_form="sum"`` (dion: :math:`M_t = \mu M_{t-1} + G_t`); ``"ema"`` (the authors' and the
      speedrun's ``lerp``). The normalized update is the same up to ``eps``; the buffers differ by :math:`1-\mu`.
    * defaults: dion's (lr 0.01, weight decay 0.01, ``nesterov=False``, Polar Express coefficients, ``eps`` 1e-8,
      ``"spectral_norm"``); the authors' ``normuon.py`` uses lr 0.02, weight decay 0, Nesterov, the quintic
      coefficients and :math:`\sqrt{\max(1, m/n)}`: pass those to get it.
    * which axis: ``stat_axis="rows"`` (the paper's neuron-wise statistic, dion and the authors' code: one per row,
      averaged over the columns); ``"longer"`` (the modded-nanogpt speedrun records since NorMuon, #41, and nanochat:
      one statistic per entry of the longer side, i.e. per row of a tall or square matrix, per column of a wide one,
      state ``(1, n)``). For wide matrices the two are different optimizers.
    * the guards: dion divides by :math:`\sqrt{v} + 10^{-8}` and clamps the new norm at :math:`10^{-8}` (here both
      ``eps``); the authors add :math:`10^{-10}`; the speedrun uses :math:`\max(v, 10^{-10})^{-1/2}`. They differ only
      for a row whose second moment is about :math:`\epsilon^2`.
    * conv filters: here a row is an output channel of the :math:`(out, in \cdot k)` view (the paper's neuron);
      dion's ``flatten=True`` orthogonalizes that view but normalizes the 4-D result over its last axis (the kernel
      width), and the authors' ``normuon.py`` allocates its buffer as ``p[..., 0:1]`` of the 4-D filter, which does
      not broadcast against the 2-D update.

    Args:
        lr: :math:`\gamma` (0.01, dion's). weight_decay: :math:`\lambda` (0.01). momentum: :math:`\mu` (0.95).
        beta2: :math:`\beta_2` of the row second moment (0.95; dion's ``muon_beta2``), in [0, 1].
        nesterov: the Nesterov blend (False, dion's). ns_coefficients, ns_steps, ns_dtype: as :class:`Muon`
            (``"polar_express"``, dion's default). eps: :math:`\epsilon` of the Newton–Schulz normalisation and of
            the row normalization (1e-8, dion's ``epsilon``).
        adjust_lr_fn: ``"spectral_norm"`` (default), ``None``/``"original"`` or ``"match_rms_adamw"`` (above).
        stat_axis: ``"rows"`` or ``"longer"`` (above).
        momentum_form, use_muon, adam_betas, adam_eps, maximize, foreach, fused, capturable, differentiable: as
            :class:`Muon` (AdamW's eps 1e-8 and betas (0.9, 0.95): dion's ``epsilon`` and ``betas``).

    References: Z. Li, L. Liu, C. Liang, W. Chen, T. Zhao, "NorMuon: Making Muon more efficient and scalable",
    arXiv:2510.05491 (code: zichongli5/NorMuon ``normuon.py``; microsoft/dion ``dion/normuon.py``); the
    modded-nanogpt speedrun (KellerJordan/modded-nanogpt ``train_gpt.py``, records #41, #42).
    """

    _lazy_param_state = ("momentum_buffer",)  # second_momentum_buffer: (m, 1) or (1, n), see _state_spec
    _adjust_lr_fns = (None, "original", "match_rms_adamw", "spectral_norm")

    def __init__(self, params: ParamsT, lr: float = 0.01, weight_decay: float = 0.01, momentum: float = 0.95,
                 beta2: float = 0.95, nesterov: bool = False, ns_coefficients: Any = "polar_express",
                 eps: float = 1e-8, ns_steps: int = 5, adjust_lr_fn: str | None = "spectral_norm", *,
                 stat_axis: str = "rows", ns_dtype: torch.dtype | None = torch.bfloat16, momentum_form: str = "sum",
                 use_muon: bool = True, adam_betas: tuple[float, float] = (0.9, 0.95), adam_eps: float = 1e-8,
                 maximize: bool = False, foreach: bool | None = None, fused: bool | None = None,
                 capturable: bool = False, differentiable: bool = False) -> None:
        # Muon's __init__ only builds its defaults: these are the same plus NorMuon's two
        MatrixOptimizer.__init__(self, params, dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, beta2=beta2, nesterov=nesterov,
            ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
            stat_axis=stat_axis, ns_dtype=ns_dtype, momentum_form=momentum_form, use_muon=use_muon,
            adam_betas=adam_betas, adam_eps=adam_eps, maximize=maximize, foreach=foreach, fused=fused,
            capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_in_range("beta2", group["beta2"], 0.0, 1.0, hi_open=False)
        validation.check_choice("stat_axis", group["stat_axis"], {"rows", "longer"})

    @staticmethod
    def _scaled_lr(lr: float, adjust_lr_fn: str | None, rows: int, cols: int) -> float:
        if adjust_lr_fn == "spectral_norm":  # dion's adjust_lr_spectral_norm
            return lr * (rows / cols) ** 0.5 if rows and cols else lr
        return _matrix.adjust_lr(lr, adjust_lr_fn, rows, cols)

    @staticmethod
    def _stat_dim(stat_axis: str, rows: int, cols: int) -> int:
        """The axis the second moment averages over: -1 (one statistic per row) or -2 (one per column)."""
        return -1 if stat_axis == "rows" or rows >= cols else -2

    def _direction(self, ortho: Tensor, states: list[dict[str, Any]], h: dict[str, Any]) -> Tensor:
        rows, cols = ortho.shape[-2:]
        dim = self._stat_dim(h["stat_axis"], rows, cols)
        for state in states:
            if "second_momentum_buffer" not in state:
                state["second_momentum_buffer"] = torch.zeros((rows, 1) if dim == -1 else (1, cols),
                                                              dtype=state["momentum_buffer"].dtype,
                                                              device=ortho.device)
        if ortho.dim() == 2:
            return _matrix.row_second_moment_normalize(ortho, states[0]["second_momentum_buffer"], h["beta2"],
                                                       h["eps"], dim)
        buffers = [state["second_momentum_buffer"] for state in states]
        stacked = torch.stack(buffers)
        out = _matrix.row_second_moment_normalize(ortho, stacked, h["beta2"], h["eps"], dim)
        torch._foreach_copy_(buffers, list(stacked.unbind(0)))
        return out

    @staticmethod
    def _out_dtype(h: dict[str, Any], u: Tensor) -> torch.dtype:
        return u.dtype  # the second moment's dtype (the parameter's), which the direction is computed in

    def _state_spec(self, p: Tensor, group: dict[str, Any]) -> tuple[dict[str, torch.Size], set[str]]:
        shapes, required = super()._state_spec(p, group)
        if self._is_matrix_group(group) and p.dim() >= 2:
            rows, cols = _matrix.matrix_view_shape(p.shape)
            dim = self._stat_dim(group["stat_axis"], rows, cols)
            shapes["second_momentum_buffer"] = torch.Size((rows, 1) if dim == -1 else (1, cols))
        return shapes, required
