"""The engine every optimlab optimizer runs on; no algorithm lives here.

* :mod:`~optimlab.core.base`: :class:`Optimizer`, the ``torch.optim.Optimizer`` subclass that owns validation,
  state, ``maximize``, complex parameters, tensor learning rates, bucketing and the choice of path;
* :mod:`~optimlab.core.ops`: element-wise operations on a tensor *or* a list of tensors, so one rule serves the
  plain loop and the list path;
* :mod:`~optimlab.core.blocks`: the building blocks the algorithms are composed of (momentum, second moment,
  bias correction, decoupled decay, AMSGrad's max, trust ratio);
* :mod:`~optimlab.core.validation`: argument checks with one message format;
* :mod:`~optimlab.core.blocked`: cache-blocked eager execution of a list rule (needs only torch);
* :mod:`~optimlab.core.kernels`: rules traced into one compiled C loop per step (CPU);
* :mod:`~optimlab.core.triton_kernels`: the same traces as one Triton kernel per step (CUDA);
* :mod:`~optimlab.core.dispatch`: the one table that decides how a bucket is stepped.
"""

from .base import Optimizer, ParamsT, new_step

__all__ = ["Optimizer", "ParamsT", "new_step"]
