"""optimlab: deep-learning optimizers after Adam, faithful to their papers, and a lab to compare them.

Every optimizer is a drop-in :class:`torch.optim.Optimizer`. The package is laid out as the design:
``optimlab.algorithms`` (the update rules, by family), ``optimlab.core`` (the engine they run on: base class,
building blocks, ops, fast paths and kernels), ``optimlab.wrappers``, ``optimlab.schedules``, ``optimlab.lr_finder``
and, on top, the lab (``optimlab.lab``), which imports the library and never the reverse::

    import optimlab
    opt = optimlab.LAMB(model.parameters(), lr=1e-3, weight_decay=0.01)
    opt = optimlab.create_optimizer("lamb", model, lr=1e-3, weight_decay=0.01, exclude_from_decay=True)
"""

from . import schedules
from .algorithms import (
    ADOPT,
    ASGD,
    LAMB,
    LARS,
    MARS,
    SGD,
    SGDW,
    SOAP,
    SWATS,
    AdaBound,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    AdEMAMix,
    AMSBound,
    Lion,
    Muon,
    NAdam,
    Prodigy,
    RAdam,
    RMSprop,
    Rprop,
    ScheduleFreeAdamW,
    ScheduleFreeSGD,
    Shampoo,
    schedule_free_bn_update,
)
from .core import Optimizer
from .lr_finder import LRFinderResult, lr_find
from .registry import OPTIMIZERS, create_optimizer, no_decay_param_groups, register_optimizer
from .wrappers import EMA, SWA, GradientNoise, Lookahead, OptimizerWrapper, update_bn

__version__ = "0.1.0"

__all__ = [
    "AMSBound",
    "AdaBound",
    "Adagrad",
    "Adam",
    "AdamW",
    "EMA",
    "GradientNoise",
    "LAMB",
    "LARS",
    "LRFinderResult",
    "Lookahead",
    "NAdam",
    "OPTIMIZERS",
    "Optimizer",
    "OptimizerWrapper",
    "RAdam",
    "RMSprop",
    "SGD",
    "SGDW",
    "SWA",
    "SWATS",
    "create_optimizer",
    "lr_find",
    "no_decay_param_groups",
    "register_optimizer",
    "schedules",
    "update_bn",
]
__all__ += ["ADOPT", "ASGD", "AdEMAMix", "Adadelta", "Adafactor", "Adamax", "Lion", "MARS", "Prodigy", "Rprop",
            "ScheduleFreeAdamW", "ScheduleFreeSGD", "schedule_free_bn_update"]
__all__ += ["Muon", "SOAP", "Shampoo"]
