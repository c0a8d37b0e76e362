"""The engine every optimlab optimizer runs on; no algorithm lives here.

* :mod:`~optimlab.core.base`: :class:`Optimizer`, the ``torch.optim.Optimizer`` subclass that owns validation,
  state, ``maximize``, complex parameters, tensor learning rates, bucketing and the choice of path;
* :mod:`~optimlab.core.ops`: element-wise operations on a tensor *or* a list of tensors, so one rule serves the
  plain loop and the list path;
* :mod:`~optimlab.core.blocks`: the building blocks the algorithms are composed of (momentum, second moment,
  bias correction, decoupled decay, AMSGrad's max, trust ratio);
* :mod:`~optimlab.core.validation`: argument checks with one message format;
* :mod:`~optimlab.core.snapshot`: tensors' values (and modules' modes) copied and written back bit for bit (the
  wrappers' swapped-in weights, the diagnostics, the LR finder);
* :mod:`~optimlab.core.tensors`: what the fast paths ask of a bucket's tensors (plain types, torch's fused kernels,
  every state tensor shaped and laid out as its parameter);
* :mod:`~optimlab.core.tiling`: a list rule run eagerly on cache-sized blocks of views, and per-tensor sums
  (norms, dot products) over those blocks for rules with two passes (needs only torch);
* :mod:`~optimlab.core.kernels`: rules traced into one compiled C loop per step (CPU);
* :mod:`~optimlab.core.triton_kernels`: the same traces as one Triton kernel per step (CUDA);
* :mod:`~optimlab.core.dispatch`: the tables that decide how a bucket is stepped (and which classes choose part
  of it themselves).
"""

from .base import Optimizer, ParamsT, new_step

__all__ = ["Optimizer", "ParamsT", "new_step"]
