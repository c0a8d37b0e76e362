"""Optimizer wrappers: Lookahead, gradient noise, weight averaging (SWA, EMA).

Each wrapper is a ``torch.optim.Optimizer`` around any other optimizer (torch's or optimlab's, or another
wrapper); torch's LR schedulers and ``torch.amp.GradScaler`` work on it, and its ``state_dict`` holds
everything needed to resume bit-for-bit (layout in :mod:`optimlab.wrappers._base`).
"""

from ._base import OptimizerWrapper
from .averaging import EMA, SWA, update_bn
from .lookahead import Lookahead
from .noise import GradientNoise

__all__ = ["EMA", "SWA", "GradientNoise", "Lookahead", "OptimizerWrapper", "update_bn"]
