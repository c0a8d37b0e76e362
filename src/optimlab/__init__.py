"""optimlab: deep-learning optimizers after Adam, faithful to their papers, and a lab to compare them.

Every optimizer is a drop-in :class:`torch.optim.Optimizer`::

    import optimlab
    opt = optimlab.LAMB(model.parameters(), lr=1e-3, weight_decay=0.01)
    opt = optimlab.create_optimizer("lamb", model, lr=1e-3, weight_decay=0.01, exclude_from_decay=True)
"""

from . import schedules
from .adabound import AdaBound, AMSBound
from .adagrad import Adagrad
from .adam import Adam, AdamW, NAdam, RAdam
from .base import Optimizer
from .layerwise import LAMB, LARS
from .lr_finder import LRFinderResult, lr_find
from .registry import OPTIMIZERS, create_optimizer, no_decay_param_groups, register_optimizer
from .rmsprop import RMSprop
from .sgd import SGD, SGDW
from .swats import SWATS
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
