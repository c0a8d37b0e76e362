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
from .adagrad import Adagrad
from .adam import Adam, AdamW, NAdam, RAdam
from .layerwise import LAMB, LARS
from .rmsprop import RMSprop
from .sgd import SGD, SGDW
from .swats import SWATS

__all__ = ["AMSBound", "AdaBound", "Adagrad", "Adam", "AdamW", "LAMB", "LARS", "NAdam", "RAdam", "RMSprop", "SGD",
           "SGDW", "SWATS"]

# After Adam: the remaining torch.optim classes and the element-wise optimizers of 2023-2025.
from .adadelta import Adadelta  # noqa: E402
from .adafactor import Adafactor  # noqa: E402
from .adam_variants import ADOPT, Adamax, AdEMAMix  # noqa: E402
from .asgd import ASGD  # noqa: E402
from .mars import MARS  # noqa: E402
from .prodigy import Prodigy  # noqa: E402
from .schedulefree import ScheduleFreeAdamW, ScheduleFreeSGD, schedule_free_bn_update  # noqa: E402
from .sign import Lion, Rprop  # noqa: E402

__all__ += ["ADOPT", "ASGD", "AdEMAMix", "Adadelta", "Adafactor", "Adamax", "Lion", "MARS", "Prodigy", "Rprop",
            "ScheduleFreeAdamW", "ScheduleFreeSGD", "schedule_free_bn_update"]

# The matrix optimizers (issue 12): their step needs whole matrices (see ._matrix_step).
from .muon import Muon  # noqa: E402
from .shampoo import Shampoo  # noqa: E402
from .soap import SOAP  # noqa: E402

__all__ += ["Muon", "SOAP", "Shampoo"]
