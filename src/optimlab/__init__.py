"""optimlab: deep-learning optimizers after Adam, faithful to their papers, and a lab to compare them.

Every optimizer is a drop-in :class:`torch.optim.Optimizer`. The package is laid out as the design:
``optimlab.algorithms`` (the update rules, by family), ``optimlab.core`` (the engine they run on: base class,
building blocks, ops, fast paths and kernels), ``optimlab.wrappers``, ``optimlab.schedules``, ``optimlab.lr_finder``
and, on top, the lab (``optimlab.lab``), which imports the library and never the reverse::

    import optimlab
    opt = optimlab.LAMB(model.parameters(), lr=1e-3, weight_decay=0.01)
    opt = optimlab.create_optimizer("lamb", model, lr=1e-3, weight_decay=0.01, exclude_from_decay=True)
"""

from . import algorithms, schedules
from .algorithms import *  # noqa: F403 - every algorithm, as algorithms.__all__ lists them
from .core import Optimizer
from .lr_finder import LRFinderResult, lr_find
from .registry import OPTIMIZERS, create_optimizer, no_decay_param_groups, register_optimizer
from .wrappers import EMA, SWA, GradientNoise, Lookahead, OptimizerWrapper, update_bn

__version__ = "0.1.0"

__all__ = [
    "EMA",
    "GradientNoise",
    "LRFinderResult",
    "Lookahead",
    "OPTIMIZERS",
    "Optimizer",
    "OptimizerWrapper",
    "SWA",
    "create_optimizer",
    "lr_find",
    "no_decay_param_groups",
    "register_optimizer",
    "schedules",
    "update_bn",
]
__all__ += algorithms.__all__  # the algorithms' one list is optimlab/algorithms/__init__.py
