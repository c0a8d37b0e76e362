r"""Sharpness: the top Hessian eigenvalue by power iteration, and the Hessian trace by Hutchinson's method.

Both use Hessian-vector products :math:`Hv = \nabla_\theta (\nabla_\theta L \cdot v)` (Pearlmutter 1994) by
double back-propagation, as PyHessian does (Yao, Gholami, Keutzer & Mahoney, "PyHessian: Neural Networks Through
the Lens of the Hessian", 2020, arXiv 1912.07145; reference code amirgholami/PyHessian ``pyhessian/hessian.py``):

* ``eigenvalues``: :math:`v \leftarrow Hv / \|Hv\|` from a random Gaussian :math:`v`, the estimate is the Rayleigh
  quotient :math:`v^\top H v`, stopped when it changes by less than ``tol`` relative
  (:math:`|\lambda_k - \lambda_{k-1}| / (|\lambda_{k-1}| + 10^{-6})`), at most ``iters`` products; the next
  eigenvalues by deflation (orthogonal to the ones found). Power iteration converges to the eigenvalue of largest
  *magnitude*, which at a minimum is the top (positive) one; away from one it can be a negative eigenvalue.
* ``trace``: :math:`\operatorname{tr} H = \mathbb E[v^\top H v]` for Rademacher :math:`v` (Hutchinson 1990),
  averaged until the mean changes by less than ``tol`` relative, at most ``iters`` samples.

Unlike the reference, ``p.grad`` is never touched (gradients come from :func:`torch.autograd.grad`), and the
model's mode, parameters and buffers are restored afterwards. The default ``bn="eval"`` evaluates BatchNorm with
its running statistics and dropout off, as the reference does (``model.eval()``); ``bn="batch"`` uses the batch's
statistics. Over several batches the products are averaged, weighted by batch size (the full-data Hessian of the
mean loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..core.validation import check_choice, fail
from .evaluation import Batch, LossFn, _check_batches, _weight, evaluation_mode
from .weights import check_model

__all__ = ["HessianEigen", "HessianTrace", "HessianVectorProduct", "top_hessian_eigenvalue",
           "top_hessian_eigenvalues", "hessian_trace"]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b, strict=True)),
               torch.zeros((), dtype=a[0].dtype, device=a[0].device))


def _normalize(v: list[Tensor]) -> tuple[list[Tensor], float]:
    n = float(_dot(v, v).sqrt())
    return ([t / n for t in v] if n > 0 else v), n


class HessianVectorProduct:
    """``hvp(v)`` -> :math:`Hv` for the mean loss over ``batches`` at the model's current weights.

    Use inside :func:`~optimlab.diagnostics.evaluation.evaluation_mode`. With one batch the gradient graph is
    built once and reused by every product (``retain_graph``); with several it is rebuilt per batch and product.
    ``loss`` is the mean loss (non-finite: the products are not computed).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch]) -> None:
        self.params = [p for _, p in check_model(model)]
        self.model, self.loss_fn, self.batches = model, loss_fn, list(batches)
        self.weights = [_weight(y) for _, y in self.batches]
        self.products = 0
        self._grads: tuple[Tensor, ...] | None = None
        if len(self.batches) == 1:
            self.loss, self._grads = self._grad_graph(self.batches[0])
        else:
            with torch.no_grad():
                total = sum(float(loss_fn(model(x), y)) * w for (x, y), w in zip(self.batches, self.weights,
                                                                                  strict=True))
            self.loss = total / sum(self.weights)

    def _grad_graph(self, batch: Batch) -> tuple[float, tuple[Tensor, ...]]:
        x, y = batch
        with torch.enable_grad():
            loss = self.loss_fn(self.model(x), y)
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True,
                                        materialize_grads=True)
        return float(loss.detach()), grads

    def __call__(self, v: Sequence[Tensor]) -> list[Tensor]:
        self.products += 1
        if self._grads is not None:
            return self._hv(self._grads, v, retain=True)
        total = sum(self.weights)
        out = [torch.zeros_like(p) for p in self.params]
        for batch, w in zip(self.batches, self.weights, strict=True):
            _, grads = self._grad_graph(batch)
            for acc, hv in zip(out, self._hv(grads, v, retain=False), strict=True):
                acc.add_(hv, alpha=w / total)
        return out

    def _hv(self, grads: Sequence[Tensor], v: Sequence[Tensor], retain: bool) -> list[Tensor]:
        needs = [g.requires_grad for g in grads]
        if not any(needs):  # the loss is linear in every parameter: H = 0
            return [torch.zeros_like(p) for p in self.params]
        used = [(g, t) for g, t, n in zip(grads, v, needs, strict=True) if n]
        hv = torch.autograd.grad([g for g, _ in used], self.params, grad_outputs=[t for _, t in used],
                                 retain_graph=retain, allow_unused=True, materialize_grads=True)
        return [h.detach() for h in hv]


@dataclass
class HessianEigen:
    """An eigenvalue estimate: the Rayleigh quotient after ``iterations`` products, ``converged`` within tol."""

    value: float
    iterations: int
    converged: bool
    vector: list[Tensor] = field(default_factory=list, repr=False)
    history: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"value": _finite(self.value), "iterations": self.iterations, "converged": self.converged}


@dataclass
class HessianTrace:
    """Hutchinson's estimate: the mean of ``samples`` and its standard error."""

    value: float
    std_error: float
    samples: list[float]
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return {"value": _finite(self.value), "std_error": _finite(self.std_error), "samples": len(self.samples),
                "converged": self.converged}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _check_iters(iters: Any, tol: Any) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        fail("iters", iters, "a positive integer")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (tol >= 0 and math.isfinite(tol)):
        fail("tol", tol, "a finite number >= 0")


def top_hessian_eigenvalues(model: nn.Module, loss_fn: LossFn, batch: Batch | Sequence[Batch], k: int = 1,
                            iters: int = 100, tol: float = 1e-3, *, bn: str = "eval", seed: int = 0
                            ) -> list[HessianEigen]:
    """The ``k`` eigenvalues of largest magnitude, in the order found, by power iteration with deflation.

    ``batch`` is one ``(x, y)`` batch or a list of them. The starting vectors come from a CPU generator seeded
    with ``seed``. A non-finite loss gives NaN values (``converged=False``), never an exception.
    """
    check_model(model)
    check_choice("bn", bn, ("eval", "batch"))
    _check_iters(iters, tol)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        fail("k", k, "a positive integer")
    batches = _check_batches(batch, "batch")
    g = torch.Generator().manual_seed(int(seed))
    found: list[HessianEigen] = []
    with evaluation_mode(model, bn):
        hvp = HessianVectorProduct(model, loss_fn, batches)
        if not math.isfinite(hvp.loss):
            return [HessianEigen(math.nan, 0, False) for _ in range(k)]
        for _ in range(k):
            v = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) for p in hvp.params]
            v, _ = _normalize(v)
            value, history, converged, used = math.nan, [], False, 0
            for _ in range(iters):
                for e in found:  # deflation: stay orthogonal to the eigenvectors already found
                    c = _dot(v, e.vector)
                    v = [a - c * b for a, b in zip(v, e.vector, strict=True)]
                v, _ = _normalize(v)
                hv = hvp(v)
                used += 1
                estimate = float(_dot(v, hv))
                history.append(estimate)
                v, norm = _normalize(hv)
                if not math.isfinite(estimate):
                    value = estimate
                    break
                if norm == 0:  # H v = 0: the eigenvalue is 0 (a linear loss along every direction tried)
                    value, converged = 0.0, True
                    break
                if used > 1 and abs(estimate - value) / (abs(value) + 1e-6) < tol:
                    value, converged = estimate, True
                    break
                value = estimate
            found.append(HessianEigen(value, used, converged, v, history))
    return found


def top_hessian_eigenvalue(model: nn.Module, loss_fn: LossFn, batch: Batch | Sequence[Batch], iters: int = 100,
                           tol: float = 1e-3, *, bn: str = "eval", seed: int = 0) -> HessianEigen:
    """The Hessian eigenvalue of largest magnitude (the sharpness at a minimum); see :func:`top_hessian_eigenvalues`."""
    return top_hessian_eigenvalues(model, loss_fn, batch, 1, iters, tol, bn=bn, seed=seed)[0]


def hessian_trace(model: nn.Module, loss_fn: LossFn, batch: Batch | Sequence[Batch], iters: int = 100,
                  tol: float = 1e-3, *, bn: str = "eval", seed: int = 0) -> HessianTrace:
    """Hutchinson's estimate of the Hessian trace with Rademacher vectors (PyHessian's ``trace``): stops when the
    running mean changes by less than ``tol`` relative (``tol=0``: always ``iters`` samples)."""
    check_model(model)
    check_choice("bn", bn, ("eval", "batch"))
    _check_iters(iters, tol)
    batches = _check_batches(batch, "batch")
    g = torch.Generator().manual_seed(int(seed))
    samples: list[float] = []
    converged = False
    with evaluation_mode(model, bn):
        hvp = HessianVectorProduct(model, loss_fn, batches)
        if not math.isfinite(hvp.loss):
            return HessianTrace(math.nan, math.nan, [], False)
        mean = 0.0
        for _ in range(iters):
            v = [(torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p) for p in hvp.params]
            samples.append(float(_dot(v, hvp(v))))
            new_mean = sum(samples) / len(samples)
            if abs(new_mean - mean) / (abs(mean) + 1e-6) < tol:
                mean, converged = new_mean, True
                break
            mean = new_mean
    n = len(samples)
    std = math.sqrt(sum((s - mean) ** 2 for s in samples) / (n - 1)) if n > 1 else math.nan
    return HessianTrace(mean, std / math.sqrt(n) if n > 1 else math.nan, samples, converged)
