r"""Loss landscapes around a point: filter-normalized random directions, 1-D and 2-D grids, PCA of a trajectory.

Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018 (arXiv
1712.09913); reference code tomgoldstein/loss-landscape (``net_plotter.py``, ``projection.py``). A plot shows
:math:`f(\alpha, \beta) = L(\theta^* + \alpha\delta + \beta\eta)` for random Gaussian directions
:math:`\delta, \eta` that are *filter-normalized*: each filter :math:`d_{i,j}` (slice along the first dimension
of a weight of 2 or more dimensions: an output channel of a convolution, a row of a linear layer) is rescaled to
the norm of the same filter of the weights, :math:`d_{i,j} \leftarrow d_{i,j}\,\|\theta_{i,j}\| /
(\|d_{i,j}\| + 10^{-10})`, so that the picture does not depend on the scale invariance of the network. As in the
reference, 1-dimensional parameters (biases, normalisation gains) get a zero direction with
``ignore="biasbn"`` (default) and, with ``ignore=None``, the weights themselves (``d = \theta``).

Section 7 of the paper draws the trajectory on the plane of the first two principal components of the matrix
:math:`[\theta_0 - \theta_n; \dots; \theta_{n-1} - \theta_n]` (:func:`trajectory_pca`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.validation import fail
from .evaluation import Batch, EvalCost, Evaluator, LossFn, MetricFn, Progress, evaluation_mode
from .interpolation import _json, check_grid
from .weights import as_weights, check_model, set_point

__all__ = [
    "NORMS",
    "IGNORE",
    "Direction",
    "Landscape",
    "TrajectoryPCA",
    "normalize_direction",
    "random_directions",
    "landscape",
    "trajectory_pca",
    "project",
]

NORMS = ("filter", "layer", "weight", None)
IGNORE = ("biasbn", None)

Direction = list[Tensor]


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        fail(name, value, f"one of {list(choices)}")


@torch.no_grad()
def normalize_direction(direction: Sequence[Tensor], weights: Sequence[Tensor], norm: str | None = "filter",
                        ignore: str | None = "biasbn") -> Direction:
    r"""Rescale ``direction`` (a list of tensors shaped like ``weights``) in place and return it.

    ``norm``: ``"filter"`` (Li et al.'s default: each filter to the norm of the weights' filter), ``"layer"``
    (each tensor to the norm of the weight tensor), ``"weight"`` (element-wise times the weights) or ``None``
    (unchanged). Tensors of at most one dimension follow ``ignore``: ``"biasbn"`` zeroes them, ``None`` sets them
    to the weights (as the reference, ``normalize_directions_for_weights``).
    """
    _check_choice("norm", norm, NORMS)
    _check_choice("ignore", ignore, IGNORE)
    direction = list(direction)
    weights = list(weights)
    if len(direction) != len(weights):
        fail("direction", f"{len(direction)} tensors", f"one per weight tensor ({len(weights)})")
    for d, w in zip(direction, weights, strict=True):
        if d.shape != w.shape:
            fail("direction", f"a tensor of shape {tuple(d.shape)}", f"shape {tuple(w.shape)}")
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.zero_()
            else:
                d.copy_(w)
        elif norm == "filter":
            dims = tuple(range(1, d.dim()))
            d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
            w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
            d.mul_(w_norm / (d_norm + 1e-10))
        elif norm == "layer":
            d.mul_(torch.linalg.vector_norm(w) / (torch.linalg.vector_norm(d) + 1e-10))
        elif norm == "weight":
            d.mul_(w)
    return direction


def random_directions(model: nn.Module, count: int = 2, *, filter_normalize: bool = True,
                      norm: str | None = "filter", ignore: str | None = "biasbn", seed: int = 0,
                      center: Any = None) -> list[Direction]:
    """``count`` random Gaussian directions shaped like ``model``'s trainable parameters, normalized around
    ``center`` (default: the model's current weights) with :func:`normalize_direction`.

    ``filter_normalize=False`` keeps the raw Gaussian directions (biases included). Directions are drawn in
    float64 from a CPU generator seeded with ``seed``, one after the other, so they depend neither on the device
    nor on torch's global RNG.
    """
    named = check_model(model)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        fail("count", count, "a positive integer")
    _check_choice("norm", norm, NORMS)
    _check_choice("ignore", ignore, IGNORE)
    weights = [p.detach() for _, p in named] if center is None else as_weights(model, center, "center")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(count):
        d = [torch.randn(w.shape, generator=g, dtype=torch.float64).to(device=w.device, dtype=w.dtype)
             for w in weights]
        if filter_normalize:
            normalize_direction(d, weights, norm, ignore)
        out.append(d)
    return out


@dataclass
class Landscape:
    """``loss[i]`` at ``coords[0][i]`` (1-D) or ``loss[i, j]`` at ``(coords[0][i], coords[1][j])`` (2-D)."""

    coords: tuple[np.ndarray, ...]
    loss: np.ndarray
    metric: np.ndarray
    cost: EvalCost

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.loss)

    @property
    def dims(self) -> int:
        return len(self.coords)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (non-finite values as ``None``); 2-D arrays as nested lists."""
        shape = self.loss.shape
        def nested(a: np.ndarray) -> Any:
            flat = _json(a)
            return flat if len(shape) == 1 else [flat[i * shape[1]:(i + 1) * shape[1]] for i in range(shape[0])]
        return {"coords": [_json(c) for c in self.coords], "loss": nested(self.loss), "metric": nested(self.metric)}


def _check_directions(model: nn.Module, directions: Any) -> list[list[Tensor]]:
    if isinstance(directions, Tensor) or not isinstance(directions, Sequence) or not directions:
        fail("directions", type(directions).__name__, "a list of 1 or 2 directions (each a list of tensors)",
             TypeError)
    if isinstance(directions[0], Tensor):
        fail("directions", "a list of tensors", "a list of directions: wrap a single direction as [direction]",
             TypeError)
    if len(directions) not in (1, 2):
        fail("directions", f"{len(directions)} directions", "1 (a curve) or 2 (a surface)")
    return [as_weights(model, d, f"directions[{i}]") for i, d in enumerate(directions)]


def landscape(model: nn.Module, loss_fn: LossFn, batches: Iterable[Batch], directions: Sequence[Any],
              grid: Any = None, *, center: Any = None, metric_fn: MetricFn | None = None, bn: str = "recompute",
              bn_batches: Iterable[Batch] | None = None, progress: Progress | None = None) -> Landscape:
    r"""Loss (and metric) at :math:`\theta^* + \sum_k a_k d_k` for every point of ``grid``.

    Args:
        model: the architecture; weights, buffers and modes are restored afterwards, bit for bit.
        loss_fn, batches, metric_fn, bn, bn_batches, progress: as :func:`~optimlab.diagnostics.interpolate`.
        directions: one or two directions (lists of tensors or state_dicts shaped like the parameters), e.g.
            from :func:`random_directions` or :attr:`TrajectoryPCA.directions`.
        grid: the coordinates along each direction: a sequence of numbers (the same for every direction), or
            one sequence per direction. Default: 21 points from -1 to 1.
        center: :math:`\theta^*` (default: the model's current weights).

    The cost (points x batches) is ``landscape(...).cost``; compute it beforehand with
    ``Evaluator(model, loss_fn, batches, bn=bn).cost(points)``.
    """
    named = check_model(model)
    dirs = _check_directions(model, directions)
    if grid is None:
        grid = np.linspace(-1.0, 1.0, 21)
    if isinstance(grid, (list, tuple)) and grid and all(isinstance(g, (list, tuple, np.ndarray)) for g in grid):
        if len(grid) != len(dirs):
            fail("grid", f"{len(grid)} coordinate lists", f"one per direction ({len(dirs)})")
        coords = tuple(check_grid(g, f"grid[{i}]") for i, g in enumerate(grid))
    else:
        coords = tuple(check_grid(grid, "grid") for _ in dirs)
    theta = [p.detach().clone() for _, p in named] if center is None else as_weights(model, center, "center")
    evaluator = Evaluator(model, loss_fn, batches, metric_fn=metric_fn, bn=bn, bn_batches=bn_batches)
    shape = tuple(c.size for c in coords)
    total = math.prod(shape)
    loss = np.full(shape, np.nan)
    metric = np.full(shape, np.nan)
    params = [p for _, p in named]
    with evaluation_mode(model, bn):
        for done, index in enumerate(np.ndindex(*shape), start=1):
            set_point(params, theta, dirs, [c[i] for c, i in zip(coords, index, strict=True)])
            loss[index], metric[index] = evaluator()
            if progress is not None:
                progress(done, total)
    return Landscape(coords, loss, metric, evaluator.cost(total))


@dataclass
class TrajectoryPCA:
    """Principal directions of a trajectory and the checkpoints' coordinates on them."""

    directions: list[Direction]  # unit vectors (as lists of tensors shaped like the parameters)
    coords: np.ndarray  # (checkpoints, components): projection of checkpoint - center on each direction
    explained_variance_ratio: np.ndarray
    center: list[Tensor]


def _as_list(checkpoint: Any, model: nn.Module | None, index: int, like: list[Tensor] | None) -> list[Tensor]:
    name = f"checkpoints[{index}]"
    if model is not None:
        return [t.to(torch.float64) for t in as_weights(model, checkpoint, name)]
    if isinstance(checkpoint, Mapping):
        checkpoint = [v for v in checkpoint.values() if isinstance(v, Tensor) and v.is_floating_point()]
    if not isinstance(checkpoint, Sequence) or not all(isinstance(t, Tensor) for t in checkpoint):
        fail(name, type(checkpoint).__name__, "a list of tensors or a state_dict", TypeError)
    out = [t.detach().to(torch.float64) for t in checkpoint]
    if like is not None:
        if len(out) != len(like) or any(a.shape != b.shape for a, b in zip(out, like, strict=False)):
            fail(name, f"{len(out)} tensors of shapes {[tuple(t.shape) for t in out][:4]}",
                 f"the shapes of checkpoints[0]: {[tuple(t.shape) for t in like][:4]}")
    return out


def trajectory_pca(checkpoints: Sequence[Any], center: Any = None, *, model: nn.Module | None = None,
                   ignore: str | None = "biasbn", components: int = 2) -> TrajectoryPCA:
    r"""PCA of a trajectory, as Li et al. (2018, Section 7; ``projection.py:setup_PCA_directions``).

    The rows :math:`\theta_i - \theta^*` (``center`` :math:`\theta^*`, default: the last checkpoint; with
    ``ignore="biasbn"`` the 1-dimensional tensors are zeroed) are centred and decomposed (what the reference's
    ``sklearn.decomposition.PCA`` does); the directions are the principal axes, unit vectors. The coordinates are
    the projections :math:`\langle\theta_i - \theta^*, d_k\rangle` (the reference's ``project_1D`` with a unit
    direction), so :math:`\theta^*` sits at the origin. Signs are fixed so that the first checkpoint has
    non-positive coordinates (the path runs from the lower left towards the centre).

    ``checkpoints``: state_dicts or tensor lists (with ``model`` they are checked against its parameters).
    """
    _check_choice("ignore", ignore, IGNORE)
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        fail("components", components, "a positive integer")
    if not isinstance(checkpoints, Sequence) or len(checkpoints) < 2:
        fail("checkpoints", f"{len(checkpoints) if isinstance(checkpoints, Sequence) else checkpoints!r}",
             "a sequence of at least 2 checkpoints")
    first = _as_list(checkpoints[0], model, 0, None)
    points = [first] + [_as_list(c, model, i, first) for i, c in enumerate(checkpoints[1:], start=1)]
    theta = points[-1] if center is None else _as_list(center, model, -1, first)
    keep = [ignore != "biasbn" or t.dim() > 1 for t in first]
    rows = torch.stack([torch.cat([(w - c).reshape(-1) for w, c, k in zip(p, theta, keep, strict=True) if k])
                        for p in points]) if any(keep) else None
    if rows is None or rows.shape[1] == 0:
        fail("checkpoints", "only 1-dimensional tensors", "some weights of 2 or more dimensions "
             "(or ignore=None)")
    centred = rows - rows.mean(dim=0, keepdim=True)
    # PCA through the small Gram matrix (checkpoints x checkpoints): X^T u / s are the principal axes.
    gram = centred @ centred.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp(min=0), evecs[:, order]
    k = min(components, int((evals > evals[0] * 1e-12).sum()) if evals[0] > 0 else 0)
    if k < components:
        fail("checkpoints", f"a trajectory spanning {k} dimension(s)", f"at least {components} (components)")
    axes = (centred.T @ evecs[:, :k]) / evals[:k].sqrt()
    axes = axes / torch.linalg.vector_norm(axes, dim=0, keepdim=True)
    coords = rows @ axes
    signs = torch.where(coords[0] > 0, -1.0, 1.0).to(axes.dtype)
    axes, coords = axes * signs, coords * signs
    ratio = (evals[:k] / evals.sum()).numpy()
    directions = []
    for j in range(k):
        flat, offset, d = axes[:, j], 0, []
        for w, keep_w in zip(theta, keep, strict=True):
            if keep_w:
                d.append(flat[offset:offset + w.numel()].reshape(w.shape).clone())
                offset += w.numel()
            else:
                d.append(torch.zeros_like(w))
        directions.append(d)
    if model is not None:  # back to the parameters' dtype and device
        like = [p for _, p in check_model(model)]
        directions = [[t.to(p.dtype).to(p.device) for t, p in zip(d, like, strict=True)] for d in directions]
        theta = [t.to(p.dtype).to(p.device) for t, p in zip(theta, like, strict=True)]
    return TrajectoryPCA(directions, coords.numpy(), ratio, theta)


def project(point: Any, center: Sequence[Tensor], directions: Sequence[Sequence[Tensor]]) -> np.ndarray:
    r"""Coordinates :math:`\langle \theta - \theta^*, d_k\rangle / \|d_k\|` of ``point`` (a tensor list)."""
    diff = [a.detach().to(torch.float64) - c.detach().to(torch.float64) for a, c in zip(point, center, strict=True)]
    out = []
    for d in directions:
        d64 = [t.to(torch.float64) for t in d]
        num = sum(float(torch.dot(x.reshape(-1), y.reshape(-1))) for x, y in zip(diff, d64, strict=True))
        den = math.sqrt(sum(float(torch.dot(y.reshape(-1), y.reshape(-1))) for y in d64))
        out.append(num / den if den > 0 else math.nan)
    return np.array(out)
