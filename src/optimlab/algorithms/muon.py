"""Muon: momentum orthogonalized by Newton–Schulz, for the hidden matrices; AdamW for everything else."""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..core import blocks, ops, tensors, validation
from ..core.base import FP16_TINY, ParamsT, new_step, scaling
from ..core.ops import TensorOrList
from ..param_groups import muon_param_groups
from . import _matrix
from ._matrix_step import MatrixOptimizer, WholeMatrices

__all__ = ["Muon"]


class Muon(MatrixOptimizer):
    r"""Muon (Jordan et al. 2024): SGD momentum whose update is replaced by the nearest semi-orthogonal matrix.

    A drop-in for :class:`torch.optim.Muon` (arguments, defaults, state key ``momentum_buffer``, trajectories: see
    ``tests/test_muon.py``), following KellerJordan/Muon ``muon.py``. For a matrix :math:`W` with gradient
    :math:`G_t`:

    .. math::
        B_t &= \mu B_{t-1} + (1-\mu) G_t, \qquad
        \tilde B_t = (1-\mu) G_t + \mu B_t \text{ (Nesterov) or } B_t \\
        O_t &= \mathrm{NS}^{(a,b,c)}_k(\tilde B_t) \approx U V^T \quad (\tilde B_t = U \Sigma V^T) \\
        W_t &= (1 - \gamma\lambda) W_{t-1} - \gamma\, s(A, B)\, O_t

    :math:`\mathrm{NS}_k` is ``ns_steps`` Newton–Schulz iterations
    :math:`X \leftarrow aX + (bXX^T + c(XX^T)^2)X` after :math:`X_0 = \tilde B_t / \max(\|\tilde B_t\|_F, \epsilon)`,
    run in ``ns_dtype`` (bfloat16, as both references). With the default quintic coefficients it does not converge to
    :math:`UV^T` but maps the singular values into a band around 1 (``tests/test_muon.py`` measures it). The scale
    :math:`s(A, B)` of an :math:`A \times B` update is ``adjust_lr_fn``'s: ``None``/``"original"``
    :math:`\sqrt{\max(1, A/B)}` (Keller Jordan), ``"match_rms_adamw"`` :math:`0.2\sqrt{\max(A, B)}` (Moonlight, Liu
    et al. 2025, so AdamW's lr and weight decay carry over). Weight decay is decoupled and uses the unscaled lr.

    **Parameters.** A group with ``use_muon=True`` (the default) takes matrices only; conv filters ``(out, in, *k)``
    are orthogonalized as ``(out, in*k)``, as KellerJordan/Muon's README says. Anything else raises a ``ValueError``
    naming the parameter. Embeddings, the output head, gains and biases belong in groups with ``use_muon=False``:
    they get AdamW (torch.optim.AdamW's update, with ``adam_betas``, ``adam_eps`` and the group's ``lr`` and
    ``weight_decay``; state ``step``, ``exp_avg``, ``exp_avg_sq``), which is KellerJordan's ``MuonWithAuxAdam``
    design in one optimizer. ``optimlab.create_optimizer("muon", model)`` builds these groups from a model
    (:meth:`from_model`).

    **Where the references disagree** (default first):

    * momentum: ``momentum_form="ema"``, :math:`B_t = \mu B_{t-1} + (1-\mu)G_t` and Nesterov
      :math:`(1-\mu)G_t + \mu B_t` (torch's code, KellerJordan/Muon today); ``"sum"``, :math:`B_t = \mu B_{t-1} + G_t`
      and :math:`G_t + \mu B_t` (torch's docstring, the 2024 Muon code, Moonlight). The two updates differ by the
      factor :math:`1-\mu` before the normalisation, so they give the same step up to ``eps``; the buffers differ.
    * normalisation: torch divides by :math:`\max(\|X\|_F, \epsilon)`, KellerJordan by :math:`\|X\|_F + 10^{-7}`
      (only a zero gradient tells them apart);
    * conv filters: the scale uses the flattened :math:`(out, in \cdot k)` shape; KellerJordan's ``muon_update``
      reads ``grad.size(-2) / grad.size(-1)`` of the 4-D gradient (the kernel's height over width);
    * KellerJordan's ``muon_update`` writes the Nesterov blend into ``p.grad``, and torch.optim.Muon with bfloat16
      parameters and ``nesterov=False`` orthogonalizes its momentum buffer in place (``grad.bfloat16()`` is then no
      copy). optimlab never writes to ``p.grad`` or the buffer outside the momentum update.

    **Speed.** On the list path (``foreach=None``/``True``) same-shape matrices are stacked and orthogonalized
    together, one ``bmm``/``baddbmm`` chain per shape; ``foreach=False`` is the per-matrix reference loop with
    torch.optim.Muon's exact operations. Under FSDP2 each matrix is orthogonalized by one owner rank (see
    :mod:`optimlab.algorithms._matrix_step`).

    Args:
        lr: :math:`\gamma` (1e-3, torch's; KellerJordan uses 0.02). weight_decay: :math:`\lambda` (0.1, torch's).
        momentum: :math:`\mu` (0.95). nesterov: Nesterov blend (True).
        ns_coefficients: ``(a, b, c)`` for every step (default :data:`~optimlab.algorithms._matrix.QUINTIC`
            (3.4445, -4.7750, 2.0315)), a sequence of triples (one per step, the last repeated), or
            ``"polar_express"`` (Amsel et al. 2025's per-step coefficients, :data:`~._matrix.POLAR_EXPRESS`, with
            their 2 % safety scaling of the norm).
        eps: :math:`\epsilon` of the normalisation (1e-7). ns_steps: :math:`k` (5).
        adjust_lr_fn: ``None`` (= ``"original"``), ``"original"`` or ``"match_rms_adamw"``.
        ns_dtype: dtype of the iteration: ``torch.bfloat16`` (default, the references'), ``torch.float16``,
            ``torch.float32``, ``torch.float64``, or None (the parameter's).
        momentum_form: ``"ema"`` or ``"sum"`` (see above).
        use_muon: the default for groups that do not say (True).
        adam_betas, adam_eps: AdamW's for ``use_muon=False`` groups ((0.9, 0.95) and 1e-10, KellerJordan's
            ``MuonWithAuxAdam``).
        maximize, foreach: as in :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    References: K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
    https://kellerjordan.github.io/posts/muon/ (code: KellerJordan/Muon ``muon.py``); J. Liu et al., "Muon is
    Scalable for LLM Training", arXiv:2502.16982 (MoonshotAI/Moonlight); N. Amsel et al., "The Polar Express",
    arXiv:2505.16932; torch.optim.Muon.
    """

    _lazy_param_state = ("momentum_buffer",)  # a matrix's, created by its first step
    #: the ``adjust_lr_fn`` values this class accepts (NorMuon adds dion's ``"spectral_norm"``)
    _adjust_lr_fns: tuple[str | None, ...] = (None, "original", "match_rms_adamw")

    def __init__(self, params: ParamsT, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: Any = _matrix.QUINTIC, eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: str | None = None, *, ns_dtype: torch.dtype | None = torch.bfloat16,
                 momentum_form: str = "ema", use_muon: bool = True, adam_betas: tuple[float, float] = (0.9, 0.95),
                 adam_eps: float = 1e-10, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype, momentum_form=momentum_form,
                                      use_muon=use_muon, adam_betas=adam_betas, adam_eps=adam_eps,
                                      maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    # -- validation ------------------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # the base class's eps warning is about Adam's eps; see below
            warnings.filterwarnings("ignore", message=".*rounds to zero in float16")
            super().add_param_group(param_group)
        group = self.param_groups[-1]
        if not group["use_muon"] and group["adam_eps"] < FP16_TINY and \
                any(p.dtype == torch.float16 for p in group["params"]):
            warnings.warn(f"Muon: adam_eps={group['adam_eps']:g} rounds to zero in float16, so an AdamW step "
                          "divides by zero where the second moment underflows; use adam_eps >= 1e-4 or float32 "
                          "master weights", UserWarning, stacklevel=2)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if "betas" in group:
            validation.fail("betas", group["betas"], "adam_betas (Muon's AdamW groups take adam_betas and adam_eps)",
                            TypeError)
        validation.check_in_range("momentum", group["momentum"], 0.0, 1.0)
        for flag in ("nesterov", "use_muon"):
            if not isinstance(group[flag], bool):
                validation.fail(flag, group[flag], "a bool", TypeError)
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < 100:
            validation.fail("ns_steps", steps, "an int in [1, 100)")
        try:
            schedule, _ = _matrix.ns_schedule(group["ns_coefficients"], steps)
        except (TypeError, ValueError):
            schedule = []
        if not schedule or any(len(abc) != 3 for abc in schedule):
            validation.fail("ns_coefficients", group["ns_coefficients"],
                            "(a, b, c), a sequence of such triples, 'quintic' or 'polar_express'", TypeError)
        if group["adjust_lr_fn"] not in self._adjust_lr_fns:
            validation.fail("adjust_lr_fn", group["adjust_lr_fn"],
                            ", ".join(repr(f) for f in self._adjust_lr_fns[:-1]) + f" or {self._adjust_lr_fns[-1]!r}")
        if group["ns_dtype"] is not None and group["ns_dtype"] not in _matrix.NS_DTYPES:
            validation.fail("ns_dtype", group["ns_dtype"], "torch.bfloat16, float16, float32, float64 or None",
                            TypeError)
        validation.check_choice("momentum_form", group["momentum_form"], {"ema", "sum"})
        validation.check_betas(group["adam_betas"], "adam_betas")
        validation.check_positive("adam_eps", group["adam_eps"])
        if group["use_muon"] and "params" in group:  # the defaults are validated before params are read
            names = group.get("param_names") or [None] * len(group["params"])
            for i, (p, name) in enumerate(zip(group["params"], names, strict=True)):
                label = repr(name) if name is not None else f"params[{i}]"
                if p.dim() < 2:
                    raise ValueError(f"Invalid param {label}: shape {tuple(p.shape)}; expected a matrix (2-D) or a "
                                     "conv filter (3-D/4-D, orthogonalized as (out, in*k)) in a Muon group; put "
                                     "embeddings, heads, gains and biases in a group with use_muon=False (AdamW), "
                                     "or build the groups with optimlab.create_optimizer('muon', model)")
                if p.is_complex():  # RuntimeError: torch.optim.Muon's type for this case
                    raise RuntimeError(f"Invalid param {label}: dtype {p.dtype}; expected a real matrix (Muon does "
                                       "not support complex parameters)")

    # -- AdamW for the use_muon=False groups (the base class's element-wise path) --------------------------------------
    _elementwise = True

    def _is_matrix_group(self, group: dict[str, Any]) -> bool:
        return bool(group["use_muon"])

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _fused(self, ps: list[Tensor], gs: list[Tensor], s: dict[str, Any], h: dict[str, Any]) -> bool:
        # torch.optim.AdamW's own fused kernel is exactly this rule
        if not tensors.fused_kernels_support(ps) or h["lr"] <= 0:
            return False
        beta1, beta2 = h["adam_betas"]
        torch._fused_adamw_(ps, gs, s["exp_avg"], s["exp_avg_sq"], [], s["step"], lr=h["lr"], beta1=beta1,
                            beta2=beta2, weight_decay=h["weight_decay"], eps=h["adam_eps"], amsgrad=False,
                            maximize=h["maximize"], **scaling(h, ps[0].device))
        return True

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        """AdamW (torch.optim.AdamW's update) with ``adam_betas`` and ``adam_eps``."""
        beta1, beta2 = h["adam_betas"]
        if h["weight_decay"] != 0:
            ops.mul_(p, 1 - h["lr"] * h["weight_decay"])
        m = blocks.ema_(s["exp_avg"], g, beta1)
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        bc1, bc2 = blocks.bias_correction(beta1, h["step"]), blocks.bias_correction(beta2, h["step"])
        ops.addcdiv_(p, m, blocks.adam_denominator(v, bc2, h["adam_eps"]), value=-(h["lr"] / bc1))

    # -- Muon for the use_muon=True groups ---------------------------------------------------------------------------
    @staticmethod
    def _momentum(buf: Tensor, g: Tensor, h: dict[str, Any]) -> Tensor:
        """Update the buffer in place and return the matrix to orthogonalize (a new tensor, or the buffer)."""
        mu = h["momentum"]
        if h["momentum_form"] == "ema":
            buf.lerp_(g, 1 - mu)
            return g.lerp(buf, mu) if h["nesterov"] else buf
        buf.mul_(mu).add_(g)
        return g.add(buf, alpha=mu) if h["nesterov"] else buf

    def _step_matrices(self, group: dict[str, Any]) -> None:
        """One Muon step of a ``use_muon`` group: momentum, Newton–Schulz (per matrix, or stacked by shape), update."""
        h = self._hyperparameters(group)
        entries = self._with_grads(group)
        if not entries:
            return
        for p, _, state in entries:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        schedule, norm_scale = _matrix.ns_schedule(h["ns_coefficients"], h["ns_steps"])
        lr, wd = h["lr"], h["weight_decay"]
        whole = WholeMatrices(group["params"])
        if h["foreach"] is False:  # the reference loop: torch.optim.Muon's operations, one matrix at a time
            for p, g, state in entries:
                u = self._momentum(state["momentum_buffer"], g, h)
                rows, cols = _matrix.matrix_view_shape(p.shape)
                full = whole.full(u)
                o = self._direction(_matrix.newton_schulz(full.reshape(rows, cols), schedule, h["eps"], h["ns_dtype"],
                                                          norm_scale), [state], h) if whole.owns(p) else None
                self._apply_update(p, whole.share(p, None if o is None else o.reshape(p.shape), self._out_dtype(h, u)),
                                   lr, wd, self._scaled_lr(lr, h["adjust_lr_fn"], rows, cols))
            return
        updates = self._momenta(entries, h)
        by_shape: dict[Any, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        states = {id(p): state for p, _, state in entries}
        for (p, _, _), u in zip(entries, updates, strict=True):
            by_shape[(_matrix.matrix_view_shape(p.shape), u.device, u.dtype)].append((p, u))
        for ((rows, cols), _, _), members in by_shape.items():
            fulls = [whole.full(u) for _, u in members]  # a collective for each sharded matrix, on every rank
            mine = [i for i, (p, _) in enumerate(members) if whole.owns(p)]
            out: dict[int, Tensor] = {}
            if mine:
                stack = torch.stack([fulls[i].reshape(rows, cols) for i in mine])
                ortho = self._direction(_matrix.newton_schulz(stack, schedule, h["eps"], h["ns_dtype"], norm_scale),
                                        [states[id(members[i][0])] for i in mine], h)
                out = {i: ortho[j] for j, i in enumerate(mine)}
            scaled_lr = self._scaled_lr(lr, h["adjust_lr_fn"], rows, cols)
            out_dtype = self._out_dtype(h, members[0][1])
            for i, (p, _) in enumerate(members):
                o = out[i].reshape(p.shape) if i in out else None
                self._apply_update(p, whole.share(p, o, out_dtype), lr, wd, scaled_lr)

    def _momenta(self, entries: list[tuple[Tensor, Tensor, dict[str, Any]]], h: dict[str, Any]) -> list[Tensor]:
        """The momentum step for all matrices of the group at once (torch's ``_foreach`` kernels on plain tensors)."""
        bufs = [state["momentum_buffer"] for _, _, state in entries]
        grads = [g for _, g, _ in entries]
        if not tensors.is_plain(bufs + grads) or h["momentum_form"] != "ema":
            return [self._momentum(b, g, h) for b, g in zip(bufs, grads, strict=True)]
        mu = h["momentum"]
        torch._foreach_lerp_(bufs, grads, 1 - mu)
        return list(torch._foreach_lerp(grads, bufs, mu)) if h["nesterov"] else bufs

    def _direction(self, ortho: Tensor, states: list[dict[str, Any]], h: dict[str, Any]) -> Tensor:
        """The update direction from the orthogonalized ``(rows, cols)`` matrix or stack ``(b, rows, cols)`` (the
        state of each matrix in ``states``): Muon's is the orthogonalized matrix itself. Runs on the owner rank."""
        return ortho

    @staticmethod
    def _scaled_lr(lr: float, adjust_lr_fn: str | None, rows: int, cols: int) -> float:
        return _matrix.adjust_lr(lr, adjust_lr_fn, rows, cols)

    @staticmethod
    def _out_dtype(h: dict[str, Any], u: Tensor) -> torch.dtype:
        """The dtype of the direction :meth:`_direction` returns (what non-owner ranks receive under FSDP2)."""
        return h["ns_dtype"] or u.dtype

    @staticmethod
    def _apply_update(p: Tensor, o: Tensor, lr: float, weight_decay: float, scaled_lr: float) -> None:
        """``p <- (1 - lr*wd) p - scaled_lr * o`` on this rank's part of ``p`` (torch.optim.Muon's two operations)."""
        local = WholeMatrices.local(p)
        if weight_decay != 0:
            local.mul_(1 - lr * weight_decay)
        local.add_(o, alpha=-scaled_lr)

    # -- building the groups from a model ----------------------------------------------------------------------------
    @classmethod
    def from_model(cls, params_or_model: nn.Module | Iterable[Any], *,
                   muon_params: Callable[[str, Tensor], bool] | Iterable[Any] | None = None,
                   exclude_from_decay: bool | Callable[[str, Tensor], bool] = False,
                   adamw_lr: float | None = None, adamw_betas: tuple[float, float] = (0.9, 0.95),
                   adamw_eps: float | None = None, adamw_weight_decay: float | None = None, **kwargs: Any) -> Muon:
        """What users build by hand: Muon for the hidden matrices, AdamW for everything else, in one optimizer.

        The rule, for an ``nn.Module``: a parameter goes to Muon when it has 2 or more dimensions and is not

        * a parameter of an ``nn.Embedding``/``nn.EmbeddingBag`` (the input embedding),
        * the weight of the model's last ``nn.Linear`` in ``model.modules()`` order (the output head),
        * the weight of its first convolution (KellerJordan's README: "use Muon to optimize all the convolutional
          filters except the first one");

        everything else (those, and every gain and bias) goes to AdamW. For a list of parameters or of groups (no
        module to inspect) the rule is torch's: matrices (2-D and more) to Muon, the rest to AdamW; each group is
        split in two and keeps its own options. Shared (tied) parameters are listed once.

        Args:
            muon_params: the override: ``(name, param) -> bool`` deciding who goes to Muon, or the names or
                parameters that go to Muon (everything else: AdamW).
            exclude_from_decay: as :func:`optimlab.create_optimizer`: biases and normalisation weights (or those
                the callable picks) get no weight decay in their AdamW group.
            adamw_lr: AdamW's lr (default 3e-4, KellerJordan's ``MuonWithAuxAdam``; with
                ``adjust_lr_fn="match_rms_adamw"`` the Muon lr, as Moonlight shares one lr).
            adamw_betas, adamw_eps: AdamW's betas and eps ((0.9, 0.95); eps: the class's ``adam_eps``, 1e-10).
            adamw_weight_decay: AdamW's weight decay (default: Muon's ``weight_decay``, as KellerJordan's README
                and Moonlight use one value).
            **kwargs: Muon's arguments (lr, weight_decay, momentum, ...).
        """
        defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}  # the class's own
        if adamw_lr is None:
            adamw_lr = kwargs.get("lr", defaults["lr"]) if kwargs.get("adjust_lr_fn", defaults["adjust_lr_fn"]) == \
                "match_rms_adamw" else 3e-4
        if adamw_eps is None:
            adamw_eps = defaults["adam_eps"]
        adam_options = dict(use_muon=False, lr=adamw_lr, adam_betas=adamw_betas, adam_eps=adamw_eps)
        wd = kwargs.get("weight_decay", defaults["weight_decay"])
        adam_wd = wd if adamw_weight_decay is None else adamw_weight_decay
        return cls(muon_param_groups(params_or_model, muon_params, exclude_from_decay, adam_options, adam_wd), **kwargs)

