"""Values made strict JSON, the one conversion the lab uses for what it writes beside its run records (the
diagnostics commands' ``diagnostics.json``, a reproduce experiment's cached pieces and ``evidence.json``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` for ``json.dumps(..., allow_nan=False)``, recursively: mappings become dicts with string keys,
    tuples and NumPy arrays lists, NumPy scalars Python numbers, and a non-finite float ``None``. A finite
    float (a ``np.float64`` too, a float already) and anything else are returned as they are."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return jsonable(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
