"""Shared by the tuned claims of part C (``helps-optimization``, ``next-adam``): one tuned study through
:func:`optimlab.lab.study.tuning.tune_and_run` in the experiment's folder, and the numbers read from its final runs.

This is ``Context.tune`` plus one thing the claims need: an interrupted or incomplete study raises
KeyboardInterrupt, so the experiment stops there (instead of computing a verdict from half a study) and the same
command resumes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["study", "final_values", "steps_to_target"]


def study(ctx: Any, task: str, optimizers: Sequence[str], protocol: Any, subdir: str) -> Any:
    """:func:`~optimlab.lab.study.tuning.tune_and_run` in ``ctx.folder / subdir`` (resumable by config key); raises
    KeyboardInterrupt when it was interrupted, so the experiment stops and a rerun resumes."""
    result = ctx.tune(task, list(optimizers), protocol, subdir)
    if result.interrupted or not result.complete:
        raise KeyboardInterrupt
    return result


def final_values(result: Any, spec: str, key: str) -> list[float]:
    """``key`` of each final run of ``spec`` (seed order): ``"test_<metric>"`` reads the once-evaluated test
    split, anything else the last value of that history curve (NaN where diverged)."""
    out = []
    for r in sorted(result.results[spec].finals, key=lambda r: r["config"]["seed"]):
        if key.startswith("test_"):
            v = (r.get("test") or {}).get(key[5:])
        else:
            v = (r["history"].get(key) or [None])[-1]
        out.append(math.nan if v is None or r["status"] != "ok" and not key.startswith("test_") else float(v))
    return out


def steps_to_target(result: Any, spec: str, target: float) -> list[float]:
    """Per final run of ``spec``: the first evaluation step at which the validation metric reaches ``target``
    (:func:`optimlab.lab.present.stats.time_to_target`; ``inf`` if never)."""
    from optimlab.lab.present.stats import time_to_target

    out = []
    for r in sorted(result.results[spec].finals, key=lambda r: r["config"]["seed"]):
        h = r["history"]
        out.append(time_to_target(h["step"], h[f"val_{r['metric']}"], target,
                                  higher_is_better=r["higher_is_better"]))
    return out
