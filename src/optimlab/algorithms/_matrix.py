"""Linear algebra shared by the matrix optimizers (Muon, SOAP, Shampoo), batched over same-shape matrices.

* Newton–Schulz orthogonalization (Muon): the quintic iteration of KellerJordan/Muon and torch.optim.Muon, one
  ``baddbmm`` chain per stack of same-shape matrices, with the coefficient sets :data:`QUINTIC` and
  :data:`POLAR_EXPRESS`;
* eigenbases of Shampoo's Kronecker factors (SOAP): ``eigh`` at the start, then one step of power iteration
  followed by QR, as nikhilvyas/SOAP refreshes them;
* inverse p-th roots of symmetric factors by ``eigh`` with the regularisation of facebookresearch/optimizers
  (Shampoo);
* the reshaping rules both references use (SOAP's ``merge_dims``, Shampoo's ``merge_small_dims`` and blocking).

Every function takes a single matrix ``(m, n)`` or a stack ``(b, m, n)`` where that makes sense, so one code path
serves the per-parameter reference loop and the batched fast path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "NS_DTYPES",
    "POLAR_EXPRESS",
    "POLAR_EXPRESS_SAFETY",
    "QUINTIC",
    "adjust_lr",
    "eigenbasis",
    "eigenbasis_refresh",
    "inverse_root",
    "matrix_view_shape",
    "merge_dims_soap",
    "merge_small_dims",
    "newton_schulz",
    "ns_schedule",
    "row_second_moment_normalize",
    "split_slices",
]

#: Keller Jordan's quintic Newton–Schulz coefficients ``(a, b, c)``: ``X <- aX + b(XX^T)X + c(XX^T)^2 X``, chosen to
#: maximise the slope at zero; applied 5 times they map singular values in about [1e-3, 1] into a band around 1
#: rather than onto 1 (KellerJordan/Muon ``muon.py``; torch.optim.Muon's defaults).
QUINTIC: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

#: "Polar Express" (Amsel, Persson, Musco & Gower 2025, "The Polar Express: Optimal Matrix Sign Methods and Their
#: Application to the Muon Algorithm", arXiv:2505.16932): a different optimal quintic per iteration. These five are
#: the paper's ``optimal_composition(l=1e-3, num_iters=5, safety_factor_eps=2e-2, cushion=0.02)`` (the authors'
#: NoahAmsel/PolarExpress ``polar_express.py``; the same five ship in modded-nanogpt's speedrun record), each but the
#: last divided by the safety factor (a/1.02, b/1.02^3, c/1.02^5); steps beyond five repeat the last polynomial.
POLAR_EXPRESS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
#: With Polar Express the input is scaled by ``1 / (||G||_F (1 + safety))``, as the authors' code does.
POLAR_EXPRESS_SAFETY = 2e-2

#: dtypes Newton–Schulz may run in (``ns_dtype``); bfloat16 is the references' choice.
NS_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def ns_schedule(coefficients: Any, steps: int) -> tuple[list[tuple[float, float, float]], float]:
    """The ``(a, b, c)`` of each of ``steps`` iterations, and the scale applied to the Frobenius norm first.

    ``coefficients`` is one triple (used every step, the quintic default), a sequence of triples (one per step; the
    last repeats), or ``"quintic"`` / ``"polar_express"``.
    """
    if coefficients == "quintic":
        coefficients = QUINTIC
    if coefficients == "polar_express":
        seq = list(POLAR_EXPRESS)
        return seq[:steps] + [seq[-1]] * max(0, steps - len(seq)), 1.0 + POLAR_EXPRESS_SAFETY
    if len(coefficients) == 3 and all(isinstance(c, int | float) for c in coefficients):
        return [tuple(float(c) for c in coefficients)] * steps, 1.0  # type: ignore[misc]
    seq = [tuple(float(c) for c in triple) for triple in coefficients]
    return seq[:steps] + [seq[-1]] * max(0, steps - len(seq)), 1.0  # type: ignore[misc]


def newton_schulz(x: Tensor, schedule: Sequence[tuple[float, float, float]], eps: float,
                  dtype: torch.dtype | None = torch.bfloat16, norm_scale: float = 1.0) -> Tensor:
    r"""Orthogonalize a matrix ``(m, n)`` or each matrix of a stack ``(b, m, n)``: :math:`\approx U V^T` of its SVD.

    .. math::
        X_0 = G / \max(s\,\|G\|_F, \epsilon), \qquad
        A_k = X_k X_k^T, \quad X_{k+1} = a_k X_k + (b_k A_k + c_k A_k^2) X_k

    computed as torch.optim.Muon does (``addmm`` for one matrix, the same chain as ``baddbmm`` for a stack, in
    ``dtype``; wide orientation, so :math:`A_k` is the smaller Gram matrix). The input is never written to; the
    result is a new tensor in ``dtype`` (None: the input's dtype). Normalisation: torch divides by
    ``max(||G||, eps)``; KellerJordan/Muon by ``||G|| + 1e-7``: they differ only for a gradient of norm about eps.
    """
    batched = x.dim() == 3
    X = x.to(dtype if dtype is not None else x.dtype, copy=True)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    if batched:
        norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    else:
        norm = X.norm()  # torch.optim.Muon's exact reduction, so the plain loop equals torch bit for bit
    if norm_scale != 1.0:
        norm = norm * norm_scale
    X.div_(norm.clamp(min=eps))
    mm, addmm = (torch.bmm, torch.baddbmm) if batched else (torch.mm, torch.addmm)
    for a, b, c in schedule:
        gram = mm(X, X.mT)
        poly = addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        X = addmm(X, poly, X, beta=a)  # a X + (b A + c A^2) X
    return X.mT if tall else X


def adjust_lr(lr: float, adjust_lr_fn: str | None, rows: int, cols: int) -> float:
    """Muon's per-matrix learning rate, as torch.optim.Muon's ``_adjust_lr``.

    ``None``/``"original"`` (KellerJordan/Muon): ``lr * sqrt(max(1, rows/cols))``; ``"match_rms_adamw"`` (Moonlight,
    Liu et al. 2025, "Muon is Scalable for LLM Training"): ``lr * 0.2 * sqrt(max(rows, cols))``, which gives the
    update the RMS of a typical AdamW update so AdamW's lr and weight decay carry over.
    """
    if rows == 0 or cols == 0:
        return lr
    if adjust_lr_fn == "match_rms_adamw":
        return lr * (0.2 * math.sqrt(max(rows, cols)))  # torch's rounding: lr * ratio
    return lr * math.sqrt(max(1, rows / cols))


def matrix_view_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The 2-D shape Muon orthogonalizes: the matrix itself, or a conv filter ``(out, in, *k)`` as ``(out, in*k)``
    (KellerJordan/Muon's README and ``muon_update``: ``update.view(len(update), -1)``)."""
    return int(shape[0]), int(math.prod(shape[1:]))


# -- SOAP: eigenbases of the Kronecker factors -------------------------------------------------------------------------
def eigenbasis(factor: Tensor) -> Tensor:
    """Eigenvectors of a symmetric factor (or a stack), by decreasing eigenvalue: SOAP's ``get_orthogonal_matrix``.

    As the reference: ``eigh(M + 1e-30 I)``, retried in float64 if it fails, columns flipped to descending order.
    """
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    try:
        _, q = torch.linalg.eigh(factor + 1e-30 * eye)
    except RuntimeError:  # ill-conditioned in float32: the reference retries in float64
        _, q = torch.linalg.eigh(factor.double() + 1e-30 * eye.double())
        q = q.to(factor.dtype)
    return torch.flip(q, [-1])


def eigenbasis_refresh(factor: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    r"""One power-iteration step and a QR decomposition: SOAP's ``get_orthogonal_matrix_QR`` for one factor.

    The columns of ``basis`` are sorted by the estimated eigenvalues :math:`\mathrm{diag}(Q^T M Q)`, descending;
    then :math:`Q \leftarrow \mathrm{qr}(M Q)`. Returns the new basis and the sort order, which the caller applies to
    the second moment along that dimension (the reference permutes ``exp_avg_sq`` the same way). The estimate is read
    off the power-iteration product, ``sum(Q * (M Q), 0)``, instead of the reference's separate
    :math:`Q^T M Q` (one matrix product fewer; equal up to round-off). Works on stacks.
    """
    product = factor @ basis
    estimate = (basis * product).sum(dim=-2)
    order = torch.argsort(estimate, dim=-1, descending=True)
    power = torch.gather(product, -1, order.unsqueeze(-2).expand_as(product))
    q, _ = torch.linalg.qr(power)
    return q, order


def merge_dims_soap(shape: Sequence[int], max_dim: int) -> list[int]:
    """SOAP's ``merge_dims``: merge neighbouring dimensions while their product stays <= ``max_dim`` (left to right).
    A 0-d shape becomes ``[1]``."""
    new_shape: list[int] = []
    current = 1
    for size in shape:
        merged = current * size
        if merged > max_dim:
            if current > 1:
                new_shape.append(current)
                current = size
            else:
                new_shape.append(size)
                current = 1
        else:
            current = merged
    if current > 1 or not new_shape:
        new_shape.append(current)
    return new_shape


# -- Shampoo: blocking and inverse roots -------------------------------------------------------------------------------
def merge_small_dims(shape: Sequence[int], threshold: int | float) -> tuple[int, ...]:
    """facebookresearch/optimizers ``merge_small_dims`` with ``target_parameter_dimensionality=1`` (its default):
    drop size-1 dimensions, then merge neighbours from the last one backwards while the product stays <=
    ``threshold``. ``()`` becomes ``(1,)``; a shape with a 0 becomes ``(0,)``. As there, ``threshold=math.inf``
    merges everything into one dimension (a full-matrix preconditioner of the flattened parameter)."""
    if 0 in shape:
        return (0,)
    squeezed = [s for s in reversed(shape) if s != 1] or [1]
    merged = [squeezed[0]]
    for size in squeezed[1:]:
        if merged[-1] * size <= threshold:
            merged[-1] *= size
        else:
            merged.append(size)
    return tuple(reversed(merged))


def split_slices(shape: Sequence[int], block: int | float) -> list[tuple[slice, ...]]:
    """facebookresearch/optimizers ``multi_dim_split``: the blocks of a tensor of ``shape``, each dimension cut into
    pieces of ``block`` (the last one smaller), as index tuples in the reference's order (last dimension fastest)."""
    if block == math.inf:
        return [tuple(slice(0, s) for s in shape)]
    per_dim = [[slice(i, min(i + int(block), s)) for i in range(0, s, int(block))] or [slice(0, 0)] for s in shape]
    out: list[tuple[slice, ...]] = [()]
    for cuts in per_dim:
        out = [prefix + (cut,) for prefix in out for cut in cuts]
    return out


def inverse_root(factor: Tensor, root: float, epsilon: float) -> Tensor:
    r""":math:`(M + \epsilon I)^{-1/r}` of a symmetric factor (or a stack) by ``eigh``, as facebookresearch/optimizers'
    default (``EigenConfig`` with ``perturb_before_computation=True``):

    .. math::
        M + \epsilon I = Q \Lambda Q^T, \quad
        \Lambda \leftarrow \Lambda - \lambda_{\min} + \epsilon \text{ if } \lambda_{\min} < \epsilon, \quad
        M^{-1/r} = Q \Lambda^{-1/r} Q^T

    (the shift guards a factor that round-off made indefinite). Retries ``eigh`` in float64 if it fails.
    """
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    ridge = factor + epsilon * eye
    try:
        lam, q = torch.linalg.eigh(ridge)
    except RuntimeError:
        lam, q = torch.linalg.eigh(ridge.double())
        lam, q = lam.to(factor.dtype), q.to(factor.dtype)
    lam_min = lam.amin(dim=-1, keepdim=True)
    lam = torch.where(lam_min < epsilon, lam - lam_min + epsilon, lam)
    return (q * lam.pow(-1.0 / root).unsqueeze(-2)) @ q.mT


# -- NorMuon: a second moment per row (neuron) of the orthogonalized update --------------------------------------------
def row_second_moment_normalize(o: Tensor, v: Tensor, beta2: float, eps: float, dim: int = -1) -> Tensor:
    r"""NorMuon's normalization of an orthogonalized matrix ``(m, n)`` or stack ``(b, m, n)`` (Li et al. 2025):

    .. math::
        v \leftarrow \beta_2 v + (1-\beta_2)\,\mathrm{mean}_j(O_{ij}^2), \qquad
        \hat O = \frac{O}{\sqrt{v} + \epsilon}, \qquad
        \hat O \leftarrow \hat O\,\frac{\|O\|_F}{\max(\|\hat O\|_F, \epsilon)}

    per matrix, as microsoft/dion ``normuon.py`` (``_normuon_normalization_core``): ``v`` is the second moment,
    ``(..., m, 1)`` for ``dim=-1`` (one per row: the mean over a row's entries) or ``(..., 1, n)`` for ``dim=-2``
    (one per column), updated in place. ``o`` is cast to ``v``'s dtype first (dion: the parameter's); the result is a
    new tensor in that dtype with the Frobenius norm of ``o``. ``beta2 = 1`` leaves ``v`` at zero and returns ``o``
    up to rounding (Muon's direction).
    """
    o = o.to(v.dtype)
    norm = torch.linalg.vector_norm(o, dim=(-2, -1), keepdim=True)
    v.lerp_(o.square().mean(dim=dim, keepdim=True), 1 - beta2)
    out = o / (v.sqrt() + eps)
    return out.mul_(norm / torch.linalg.vector_norm(out, dim=(-2, -1), keepdim=True).clamp(min=eps))
