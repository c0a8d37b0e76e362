r"""A recorder of what an optimizer does to the weights, attached to any ``torch.optim.Optimizer`` by step hooks.

Every ``every`` steps (and at steps a callable chooses) it records, cheaply and without changing the
trajectory (it only reads parameters, gradients and state, between steps):

* the cosine between the update :math:`\Delta\theta_t = \theta_t - \theta_{t-1}` and the previous update
  :math:`\Delta\theta_{t-1}`, for the whole model and per layer (Xing, Arpit, Tsirigotis & Bengio, "A Walk with
  SGD", 2018: full-batch GD with a large lr settles at -1, oscillating across a valley; SGD wanders);
* the distance from the initialization :math:`\|\theta_t - \theta_0\|` and its square (ibid.: SGD travels much
  farther than GD), per layer too;
* the norms of the update, the gradient and the weights, and the effective lr per layer
  :math:`\|\Delta\theta\| / \|g\|`;
* the trust ratios of LAMB and LARS (:mod:`optimlab.diagnostics.trust`);
* histograms of :math:`|g|`, :math:`|\Delta\theta|` and of the effective per-parameter step size
  :math:`|\Delta\theta_i| / |g_i|` (Adam's spread of step sizes; counted as zero where :math:`g_i = 0`) on fixed
  log-spaced bins
  (:mod:`optimlab.diagnostics.histograms`; the RAdam paper's Figure 2);
* on request (:meth:`Recorder.record_noise_scale`), the gradient noise scale (McCandlish et al., 2018).

A "layer" is a parameter tensor, as for LAMB and LARS. The update is measured around the ``step()`` of the
optimizer the recorder is attached to, so for a wrapper it includes what the wrapper does (Lookahead's
synchronisation, SWA nothing, gradient noise's effect): attach it to the object you call ``step()`` on, before
the first step (the weights at attachment are :math:`\theta_0`). Recording step :math:`t` needs the weights
before steps :math:`t-1` and :math:`t` (for the cosine), so the recorder copies them just before those two steps
only; between records it costs a counter increment. Memory: three copies of the parameters (:math:`\theta_0`,
the previous update and the pre-step weights).

``recorder.history`` is plain Python (lists of floats, NaN where undefined); :meth:`Recorder.to_dict` is its
JSON-serialisable form (non-finite values as ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..core.validation import fail
from .histograms import LogBins, abs_histograms
from .noise_scale import NoiseScaleTracker, gradient_noise_scale
from .trust import has_trust_ratios, trust_ratios

__all__ = ["Recorder", "WHOLE_KEYS", "LAYER_KEYS", "HISTOGRAM_KEYS"]

WHOLE_KEYS = ("lr", "update_norm", "grad_norm", "weight_norm", "cos_prev", "dist_init", "dist_init_sq")
LAYER_KEYS = ("update_norm", "grad_norm", "weight_norm", "cos_prev", "dist_init", "effective_lr", "trust_ratio")
HISTOGRAM_KEYS = ("grad", "update", "step_size")


class Recorder:
    """Records update angles, distances, norms, trust ratios and histograms every ``every`` steps.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (optimlab wrappers included); hooks are registered on it.
        model: optional, for layer names and order (``model.named_parameters()``); else the param groups' order
            and names ``"group{g}.{i}"``.
        every: record steps ``every, 2*every, ...`` (steps count from 1), or a callable ``step -> bool``.
        histograms: record the three histograms at every recorded step (``True``), at none (``False``), or at the
            recorded steps a callable ``step -> bool`` chooses (the most expensive part of a record). The
            histogram lists hold one entry per record, ``None`` where none was taken.
        bins: the histogram bins (default :class:`~optimlab.diagnostics.histograms.LogBins`: 1e-12 to 1e2,
            4 per decade).

    Use ``with Recorder(opt) as rec: ...`` or call :meth:`close` to remove the hooks.
    """

    def __init__(self, optimizer: Optimizer, model: nn.Module | None = None, *, every: int | Callable[[int], bool]
                 = 20, histograms: bool | Callable[[int], bool] = True, bins: LogBins | None = None) -> None:
        if not isinstance(optimizer, Optimizer):
            fail("optimizer", type(optimizer).__name__, "a torch.optim.Optimizer", TypeError)
        if callable(every):
            self._should = every
        elif isinstance(every, bool) or not isinstance(every, int) or every < 1:
            fail("every", every, "a positive integer or a callable step -> bool")
        else:
            self._should = lambda t, n=every: t % n == 0
        self.every = every
        self.optimizer = optimizer
        seen: set[int] = set()
        self.params: list[Tensor] = []
        names: list[str] = []
        by_id = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
        in_groups = [(p, f"group{gi}.{i}") for gi, g in enumerate(optimizer.param_groups)
                     for i, p in enumerate(g["params"])]
        ids = {id(p) for p, _ in in_groups}
        ordered = [(p, n) for n, p in model.named_parameters() if id(p) in ids] if model is not None else []
        for p, name in ordered + in_groups:  # the model's order where a model is given, then the groups'
            if id(p) not in seen:
                seen.add(id(p))
                self.params.append(p)
                names.append(by_id.get(id(p), name))
        if not self.params:
            fail("optimizer", "an optimizer without parameters", "at least one parameter")
        self.layers = names
        self.histograms = histograms if callable(histograms) else (lambda t, on=bool(histograms): on)
        self.bins = LogBins() if bins is None else bins
        self.trust = has_trust_ratios(optimizer)
        self.steps = 0
        self._theta0 = [p.detach().clone() for p in self.params]
        self._before: list[Tensor] | None = None  # weights before the current step (when copied)
        self._prev: list[Tensor] | None = None  # minus the previous update, when it was measured
        self._prev_step = -1
        self._copied = False
        self.history: dict[str, Any] = {"step": [], **{k: [] for k in WHOLE_KEYS},
                                        "layer": {k: [] for k in LAYER_KEYS},
                                        "hist": {k: [] for k in HISTOGRAM_KEYS},
                                        "hist_outside": {k: [] for k in HISTOGRAM_KEYS},
                                        "noise": {"step": [], "b_simple": [], "b_simple_ema": [], "g2": [],
                                                  "trace": []}}
        self._noise = NoiseScaleTracker()
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    # -- hooks -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the hooks (the history stays)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _pre(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        t = self.steps + 1  # the step about to be taken
        self._copied = self._should(t) or self._should(t + 1)
        if self._copied:
            with torch.no_grad():
                if self._before is None:
                    self._before = [p.detach().clone() for p in self.params]
                else:
                    torch._foreach_copy_(self._before, self.params)

    @torch.no_grad()
    def _post(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self.steps += 1
        t = self.steps
        if not self._copied or self._before is None:
            return
        record = self._should(t)
        ratios = trust_ratios(self.optimizer, self.params, self._before) if (record and self.trust) else None
        # minus the update, in place of the pre-step copy: theta_{t-1} - theta_t (the sign cancels in every
        # quantity recorded: cosines of two such vectors, norms, magnitudes)
        back = self._before
        torch._foreach_sub_(back, self.params)
        if record:
            self._record(t, back, ratios)
        # keep this update for the cosine at step t + 1 (swap buffers: no copy)
        self._before, self._prev, self._prev_step = self._prev, back, t

    def _record(self, t: int, back: list[Tensor], ratios: list[float] | None) -> None:
        """One record from as few tensor operations as possible (a record of a small model costs a few dozen
        kernel launches whatever its number of layers: every per-layer number comes from list operations)."""
        params = self.params
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        n = len(params)
        norms = [torch._foreach_norm(back), torch._foreach_norm(grads), torch._foreach_norm(params),
                 torch._foreach_norm(torch._foreach_sub(params, self._theta0))]
        have_prev = self._prev is not None and self._prev_step == t - 1
        if have_prev:  # <a, b> from ||a + b||^2 = ||a||^2 + ||b||^2 + 2 <a, b>: two list operations per record
            norms += [torch._foreach_norm(self._prev), torch._foreach_norm(torch._foreach_add(back, self._prev))]
        # every per-layer norm in one tensor, then the small arithmetic in numpy (float64)
        table = torch.stack([v for x in norms for v in x]).to("cpu", torch.float64).numpy().reshape(len(norms), n)
        u2, g2, w2, d2 = table[0] ** 2, table[1] ** 2, table[2] ** 2, table[3] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            if have_prev:
                p2, s2 = table[4] ** 2, table[5] ** 2
                dots = (s2 - u2 - p2) / 2
                cos_layer = np.clip(np.where(u2 * p2 > 0, dots / np.sqrt(u2 * p2), np.nan), -1, 1)
                den = math.sqrt(u2.sum() * p2.sum())
                cos_whole = min(1.0, max(-1.0, dots.sum() / den)) if den > 0 else math.nan
            else:
                cos_layer = np.full(n, np.nan)
                cos_whole = math.nan
            eff = np.where(table[1] > 0, table[0] / table[1], np.nan)
        whole = [math.sqrt(u2.sum()), math.sqrt(g2.sum()), math.sqrt(w2.sum()), float(cos_whole),
                 math.sqrt(d2.sum()), float(d2.sum())]
        layer = np.stack([table[0], table[1], table[2], cos_layer, table[3], eff]).tolist()
        h = self.history
        h["step"].append(t)
        h["lr"].append(float(self.optimizer.param_groups[0]["lr"]))
        for key, value in zip(WHOLE_KEYS[1:], whole, strict=True):
            h[key].append(value)
        for key, value in zip(LAYER_KEYS[:-1], layer, strict=True):
            h["layer"][key].append(value)
        h["layer"]["trust_ratio"].append(ratios if ratios is not None else [math.nan] * n)
        if not self.histograms(t):
            for key in HISTOGRAM_KEYS:
                h["hist"][key].append(None)
                h["hist_outside"][key].append(None)
            return
        ag = torch.cat([g.reshape(-1) for g in grads]).abs()
        ad = torch.cat([d.reshape(-1) for d in back]).abs()
        ratio = torch.where(ag > 0, ad / torch.where(ag > 0, ag, torch.ones_like(ag)), torch.zeros_like(ad))
        for key, hist in zip(HISTOGRAM_KEYS, abs_histograms(torch.stack([ag, ad, ratio]), self.bins), strict=True):
            h["hist"][key].append(hist.counts.tolist())
            h["hist_outside"][key].append([hist.zero, hist.under, hist.over, hist.nonfinite])

    # -- gradient noise scale ----------------------------------------------------------------------------------
    def record_noise_scale(self, model: nn.Module, loss_fn: Callable[[Any, Any], Tensor], batch: tuple[Any, Any],
                           parts: int = 4) -> float:
        """Estimate the gradient noise scale on ``batch`` now (``parts`` backward passes; nothing of the run is
        touched, see :func:`~optimlab.diagnostics.noise_scale.gradient_noise_scale`), store it with the current
        step and return the smoothed :math:`B_\\text{simple}`."""
        est = gradient_noise_scale(model, loss_fn, batch, parts)
        smooth = self._noise.update(est)
        n = self.history["noise"]
        n["step"].append(self.steps)
        n["b_simple"].append(est.b_simple)
        n["b_simple_ema"].append(smooth)
        n["g2"].append(est.g2)
        n["trace"].append(est.trace)
        return smooth

    # -- results -----------------------------------------------------------------------------------------------
    def array(self, key: str) -> np.ndarray:
        """A recorded series as an array: whole-model keys (records,), ``"layer.<key>"`` (records, layers),
        ``"hist.<key>"`` (histograms taken, bins; see :meth:`histogram_steps`)."""
        if key.startswith("hist."):
            rows = [r for r in self.history["hist"][key[5:]] if r is not None]
            return np.asarray(rows, dtype=float).reshape(len(rows), self.bins.count)
        if key.startswith("layer."):
            return np.asarray(self.history["layer"][key[6:]], dtype=float)
        return np.asarray(self.history[key], dtype=float)

    def histogram_steps(self) -> list[int]:
        """The steps at which histograms were taken."""
        return [t for t, r in zip(self.history["step"], self.history["hist"]["grad"], strict=True) if r is not None]

    def to_dict(self) -> dict[str, Any]:
        """The history, the layer names and the bins, JSON-serialisable (non-finite values as ``None``)."""
        return {"layers": list(self.layers), "bins": self.bins.to_dict(), "every": self.every
                if isinstance(self.every, int) else None, **_jsonable(self.history)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
