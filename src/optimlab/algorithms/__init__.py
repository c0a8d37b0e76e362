"""The algorithms, one module per family.

19 of the 28 classes are a few lines of composition over :mod:`optimlab.core.blocks` and :mod:`optimlab.core.ops`:
an ``_update`` rule, which the engine runs on every path (the plain loop, whole lists, cache-sized blocks, compiled C
and Triton kernels). The other nine carry more:

* LAMB, LARS, SWATS, MARS, Adafactor and Prodigy reduce over each tensor (trust ratios, norms, dot products,
  factored moments, a global step-size estimate), so each also writes its own list path, ``_run_lists`` (two passes,
  compiled or on blocks: see :mod:`optimlab.core.dispatch`);
* Muon, SOAP and Shampoo need whole matrices: they derive from :class:`._matrix_step.MatrixOptimizer`, step their
  matrix groups in ``_step_matrices`` (also under FSDP2) and share the linear algebra of :mod:`._matrix`.

Every class is re-exported at the top level (``optimlab.Adam``); import from there.
"""

from .adabound import AdaBound, AMSBound
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW, NAdam, RAdam
from .adam_variants import ADOPT, Adamax, AdEMAMix
from .asgd import ASGD
from .kron import Kron
from .layerwise import LAMB, LARS
from .mars import MARS
from .muon import Muon
from .prodigy import Prodigy
from .rmsprop import RMSprop
from .schedulefree import ScheduleFreeAdamW, ScheduleFreeSGD, schedule_free_bn_update
from .sgd import SGD, SGDW
from .shampoo import Shampoo
from .sign import Lion, Rprop
from .soap import SOAP
from .swats import SWATS

__all__ = [
    "ADOPT",
    "AMSBound",
    "ASGD",
    "AdEMAMix",
    "AdaBound",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Kron",
    "LAMB",
    "LARS",
    "Lion",
    "MARS",
    "Muon",
    "NAdam",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SGD",
    "SGDW",
    "SOAP",
    "SWATS",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "Shampoo",
    "schedule_free_bn_update",
]

# Issue 26: the methods the field trains with now (appended blocks, one per method).
from .normuon import NorMuon  # noqa: E402

__all__ += ["NorMuon"]
