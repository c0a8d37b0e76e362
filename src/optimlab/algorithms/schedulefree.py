"""Schedule-Free SGD and AdamW (Defazio et al. 2024): momentum replaced by interpolation and iterate averaging, so no
learning-rate schedule (and no stopping time) is needed; the parameters hold the gradient point in train mode and
the averaged point in eval mode."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..core import blocks, ops, validation
from ..core.base import Optimizer, ParamsT, _number
from ..core.ops import TensorOrList

__all__ = ["ScheduleFreeAdamW", "ScheduleFreeSGD", "schedule_free_bn_update"]


class _ScheduleFree(Optimizer):
    r"""The machinery shared by the Schedule-Free optimizers (see :class:`ScheduleFreeSGD`).

    Per group, as the ``schedulefree`` package keeps them (so they are in the ``state_dict``): ``k`` (steps taken),
    ``lr_max``, ``weight_sum``, ``scheduled_lr`` (the warmed-up lr of the last step) and ``train_mode``.
    """

    _elementwise = True
    _scalar_state = ()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        defaults.update(k=0, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, train_mode=True)
        super().__init__(params, defaults)

    # -- the interpolation constant -----------------------------------------------------------------------------
    def _beta(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    def _schedule(self, group: dict[str, Any]) -> dict[str, float]:
        """This step's warmed-up lr, the averaging weight :math:`c_{t+1}` and the updated group counters, from the
        group as it stands before the step (a pure function: used for the rule and to commit the counters)."""
        k = group["k"]
        sched = (k + 1) / group["warmup_steps"] if k < group["warmup_steps"] else 1.0
        lr = _number(group["lr"]) * sched * self._lr_factor(group)
        lr_max = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        return {"sf_lr": lr, "lr_max": lr_max, "weight_sum": weight_sum, "ckp1": ckp1}

    def _lr_factor(self, group: dict[str, Any]) -> float:
        return 1.0

    def _hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return {**super()._hyperparameters(group), **self._schedule(group)}

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        steps = group["warmup_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            validation.fail("warmup_steps", steps, "an int >= 0")
        validation.check_nonneg("r", group["r"])
        validation.check_nonneg("weight_lr_power", group["weight_lr_power"])

    # -- train / eval -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue  # idempotent: already there
            beta = self._beta(group)
            ps = [p for p in group["params"] if "z" in self.state.get(p, {})]
            if ps:
                zs = [self.state[p]["z"] for p in ps]
                reals = [torch.view_as_real(t) if t.is_complex() else t for t in ps]
                zreals = [torch.view_as_real(t) if t.is_complex() else t for t in zs]
                # y = (1 - beta) z + beta x  <=>  x = y + (1 - 1/beta)(z - y)
                torch._foreach_lerp_(reals, zreals, (1 - beta) if to_train else (1 - 1 / beta))
            group["train_mode"] = to_train

    def train(self) -> None:
        """Put the parameters at the gradient point :math:`y` (call with ``model.train()``, before training).
        Idempotent."""
        self._move(True)

    def eval(self) -> None:
        """Put the parameters at the averaged point :math:`x` (call with ``model.eval()``: before evaluating and
        before saving weights for use). Idempotent."""
        self._move(False)

    @property
    def train_mode(self) -> bool:
        """True while the parameters hold :math:`y` (after :meth:`train`; a new optimizer starts in train mode)."""
        return all(group["train_mode"] for group in self.param_groups)

    # -- the step -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not self.train_mode:
            raise RuntimeError(f"{type(self).__name__}.step() in eval mode: the parameters hold the averaged point "
                               "x; call optimizer.train() before training (and optimizer.eval() before evaluating)")
        return super().step(closure)

    def _step_group(self, group: dict[str, Any]) -> None:
        schedule = self._schedule(group)
        super()._step_group(group)
        group["scheduled_lr"] = schedule["sf_lr"]
        group["lr_max"] = schedule["lr_max"]
        group["weight_sum"] = schedule["weight_sum"]
        group["k"] = group["k"] + 1

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["z"] = torch.clone(p, memory_format=torch.preserve_format).detach()


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-Free SGD (Defazio et al. 2024, Algorithm 1): no momentum buffer, no lr schedule.

    Faithful to the ``schedulefree`` package (facebookresearch/schedule_free ``SGDScheduleFree``, release 1.4.1):

    .. math::
        y_t &= (1-\beta) z_t + \beta x_t, \qquad z_{t+1} = z_t - \gamma_t (\nabla f(y_t) + \lambda y_t) \\
        x_{t+1} &= (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \qquad
            c_{t+1} = \frac{w_{t+1}}{\sum_{i \le t+1} w_i}, \qquad
            w_t = t^r \,(\max_{i \le t} \gamma_i)^{p}

    with :math:`\gamma_t = \gamma \min(1, t/T_w)` (``warmup_steps`` :math:`T_w`), :math:`p` ``weight_lr_power``.
    With :math:`r = 0` and no warm-up, :math:`x_T` is the plain average of :math:`z_1 \ldots z_T`. The parameters
    hold :math:`y` in train mode and :math:`x` in eval mode; only :math:`z` is stored (``state["z"]``), :math:`x` is
    recovered from :math:`y` and :math:`z` (:func:`~optimlab.core.blocks.schedule_free_step_`).

    **Train and eval.** Call :meth:`train` where you call ``model.train()`` and :meth:`eval` where you call
    ``model.eval()``: evaluating, or saving weights for use, in train mode gives the wrong point (the classic
    mistake). Both are idempotent. Unlike the package, a new optimizer starts in train mode (before the first step
    :math:`x = y = z`, so nothing moves), and :meth:`step` in eval mode raises. The mode is part of each param group
    and so of the ``state_dict``, which is safe in either mode: save the model and the optimizer together and a
    resumed run continues bit for bit (the loaded flag says which point the saved weights are). With BatchNorm,
    recompute the statistics at :math:`x` before evaluating: :func:`schedule_free_bn_update`.

    The package's foreach path writes the normalised gradient into ``p.grad`` (its "memory efficiency"); here
    ``p.grad`` is never modified.

    Args:
        lr: :math:`\gamma` (1.0; the package suggests 10-50x a classical SGD lr). momentum: :math:`\beta` in (0, 1)
            (0.9). weight_decay: :math:`\lambda`, taken at :math:`y` (0). warmup_steps: :math:`T_w` (0). r: (0.0).
            weight_lr_power: :math:`p` (2.0). maximize, foreach: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).

    Reference: Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", NeurIPS 2024.
    """

    def __init__(self, params: ParamsT, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, *, maximize: bool = False,
                 foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                                      maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        validation.check_in_range("momentum", group["momentum"], 0.0, 1.0, lo_open=True)

    def _beta(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        g = blocks.l2_decay(g, p, h["weight_decay"])  # at y: the parameters hold y while training
        blocks.schedule_free_step_(p, s["z"], g, h["sf_lr"], h["momentum"], h["ckp1"])


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-Free AdamW (Defazio et al. 2024): Schedule-Free averaging around an Adam step without momentum.

    Faithful to the ``schedulefree`` package (``AdamWScheduleFree``, release 1.4.1): with :math:`k` the steps taken,
    :math:`v` Adam's second moment and :math:`\gamma_t, c_{t+1}` as in :class:`ScheduleFreeSGD`,

    .. math::
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
            u_t = \frac{g_t}{\sqrt{v_t/(1-\beta_2^{t})} + \epsilon} + \lambda y_t \\
        z_{t+1} &= z_t - \gamma_t u_t, \qquad x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1}, \qquad
            y_{t+1} = (1-\beta_1) z_{t+1} + \beta_1 x_{t+1}

    :math:`\beta_1` is the interpolation constant, not a momentum (there is no first moment unless
    ``inner_momentum > 0``: then :math:`u_t` uses :math:`m_t/(1-\mu^t)`, :math:`m_t = \mu m_{t-1} + (1-\mu) g_t`,
    an option of the package's repository after 1.4.1, state ``exp_avg``). Train/eval, the ``state_dict`` and
    BatchNorm as in :class:`ScheduleFreeSGD`.

    Where the references disagree: since release 1.3 the package bias-corrects :math:`v` in the denominator
    (``bias_correction="v"``, default); the paper's version (``AdamWScheduleFreePaper``, earlier releases) uses
    :math:`\sqrt{v_t} + \epsilon` and puts :math:`\sqrt{1-\beta_2^t}` into :math:`\gamma_t`, which then also warms up
    the weight decay and the averaging weights (``bias_correction="lr"``).

    Args:
        lr: :math:`\gamma` (0.0025). betas: :math:`(\beta_1, \beta_2)` ((0.9, 0.999)). eps: (1e-8). weight_decay:
            :math:`\lambda` at :math:`y` (0). warmup_steps, r, weight_lr_power: as :class:`ScheduleFreeSGD`.
        inner_momentum: :math:`\mu` (0: none). bias_correction: ``"v"`` or ``"lr"`` (see above).
        maximize, foreach: as :class:`optimlab.SGD`; fused, capturable,
        differentiable: torch's flags (``True`` raises, as a torch class without the feature does; README).
    """

    def __init__(self, params: ParamsT, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, *, inner_momentum: float = 0.0, bias_correction: str = "v",
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False, differentiable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                                      inner_momentum=inner_momentum, bias_correction=bias_correction,
                                      maximize=maximize, foreach=foreach,
                                      fused=fused, capturable=capturable, differentiable=differentiable))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if not group["betas"][0] > 0:
            validation.fail("betas[0]", group["betas"][0], "(0, 1): the interpolation constant of x and z")
        validation.check_beta("inner_momentum", group["inner_momentum"])
        validation.check_choice("bias_correction", group["bias_correction"], {"v", "lr"})

    def _beta(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _lr_factor(self, group: dict[str, Any]) -> float:
        if group["bias_correction"] != "lr":
            return 1.0
        return blocks.bias_correction(group["betas"][1], group["k"] + 1) ** 0.5

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        super()._init_state(p, state, group)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["inner_momentum"] != 0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, p: TensorOrList, g: TensorOrList, s: dict[str, Any], h: dict[str, Any]) -> None:
        _, beta2 = h["betas"]
        t = h["k"] + 1
        v = blocks.ema_sq_(s["exp_avg_sq"], g, beta2)
        if h["bias_correction"] == "v":
            denom = ops.add_scalar_(ops.sqrt(ops.div(v, blocks.bias_correction(beta2, t))), h["eps"])
        else:
            denom = ops.add_scalar_(ops.sqrt(v), h["eps"])
        mu = h["inner_momentum"]
        if mu != 0 and "exp_avg" in s:
            m = ops.add_(ops.mul_(s["exp_avg"], mu), g, alpha=1 - mu)
            u = ops.div_(ops.div(m, blocks.bias_correction(mu, t)), denom)
        else:
            u = ops.div(g, denom)
        if h["weight_decay"] != 0:
            ops.add_(u, p, alpha=h["weight_decay"])
        blocks.schedule_free_step_(p, s["z"], u, h["sf_lr"], h["betas"][0], h["ckp1"])


def schedule_free_bn_update(model: torch.nn.Module, optimizer: _ScheduleFree, batches: Iterable[Any],
                            num_batches: int = 50) -> None:
    """The ``schedulefree`` README's BatchNorm procedure, before evaluating a model trained with Schedule-Free.

    BatchNorm's running statistics were gathered at the gradient points :math:`y`; evaluation happens at
    :math:`x`. This puts the model in train mode and the optimizer in eval mode (parameters at :math:`x`), runs
    ``num_batches`` training batches forward without gradients so the running statistics are refreshed at
    :math:`x`, then puts the model in eval mode. The optimizer is left in eval mode: evaluate, then call
    ``model.train(); optimizer.train()`` to go on training. Each batch is a tensor or a tuple/list whose first
    element is the input (on the model's device already)::

        schedule_free_bn_update(model, opt, train_loader)
        evaluate(model)
        model.train(); opt.train()
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        validation.fail("num_batches", num_batches, "an int >= 1")
    model.train()
    optimizer.eval()
    with torch.no_grad():
        for batch in itertools.islice(batches, num_batches):
            model(batch[0] if isinstance(batch, tuple | list) else batch)
    model.eval()
