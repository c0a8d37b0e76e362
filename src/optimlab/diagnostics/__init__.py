"""Diagnostics: what an optimizer does to the weights, and what the loss landscape looks like around them.

Torch and numpy only, no plotting (the lab draws the figures: ``optimlab walk``, ``interpolate``, ``landscape``,
``histograms``, ``sharpness``)::

    from optimlab import diagnostics

    rec = diagnostics.Recorder(opt, model, every=20)     # step hooks: update angles, distance from init, norms,
    ...train...                                          # per-layer effective lr, trust ratios, |g| histograms
    rec.history["cos_prev"], rec.history["dist_init_sq"]

    diagnostics.interpolate(model, theta_init, model.state_dict(), loss_fn, batches)    # Goodfellow et al. 2015
    dirs = diagnostics.random_directions(model, 2)                                      # filter-normalized (Li et al.)
    diagnostics.landscape(model, loss_fn, batches, dirs, grid=np.linspace(-1, 1, 21))
    diagnostics.trajectory_pca(checkpoints, model=model)                                # the path on its PCA plane
    diagnostics.top_hessian_eigenvalue(model, loss_fn, batch)                           # PyHessian
    diagnostics.hessian_trace(model, loss_fn, batch)

Modules: :mod:`.recorder`, :mod:`.interpolation`, :mod:`.landscape`, :mod:`.hessian`, :mod:`.histograms`,
:mod:`.noise_scale`, :mod:`.trust`, :mod:`.evaluation` (fixed batches, BatchNorm and dropout handling),
:mod:`.weights` (checked weight lists, moving a model and restoring it).
"""

from .evaluation import BN_MODES, EvalCost, Evaluator, evaluation_mode, fixed_batches, recompute_batchnorm
from .hessian import (
    HessianEigen,
    HessianTrace,
    HessianVectorProduct,
    hessian_trace,
    top_hessian_eigenvalue,
    top_hessian_eigenvalues,
)
from .histograms import Histogram, LogBins, abs_histogram
from .interpolation import Interpolation, default_alphas, interpolate
from .landscape import (
    Landscape,
    TrajectoryPCA,
    landscape,
    normalize_direction,
    project,
    random_directions,
    trajectory_pca,
)
from .noise_scale import NoiseScaleEstimate, NoiseScaleTracker, gradient_noise_scale, noise_scale_from_gradients
from .recorder import Recorder
from .trust import has_trust_ratios, trust_ratios, unwrap
from .weights import as_weights, current_weights, restored, set_point

__all__ = [
    "BN_MODES",
    "EvalCost",
    "Evaluator",
    "HessianEigen",
    "HessianTrace",
    "HessianVectorProduct",
    "Histogram",
    "Interpolation",
    "Landscape",
    "LogBins",
    "NoiseScaleEstimate",
    "NoiseScaleTracker",
    "Recorder",
    "TrajectoryPCA",
    "abs_histogram",
    "as_weights",
    "current_weights",
    "default_alphas",
    "evaluation_mode",
    "fixed_batches",
    "gradient_noise_scale",
    "has_trust_ratios",
    "hessian_trace",
    "interpolate",
    "landscape",
    "noise_scale_from_gradients",
    "normalize_direction",
    "project",
    "random_directions",
    "recompute_batchnorm",
    "restored",
    "set_point",
    "top_hessian_eigenvalue",
    "top_hessian_eigenvalues",
    "trajectory_pca",
    "trust_ratios",
    "unwrap",
]
