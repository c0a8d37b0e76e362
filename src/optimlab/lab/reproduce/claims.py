"""The claims ``optimlab reproduce`` knows: :data:`EXPERIMENTS`, in issue 13's order, and where each one's
experiment lives (:func:`module_name`; :func:`available` gives those whose file exists)."""

from __future__ import annotations

import importlib.util

__all__ = ["EXPERIMENTS", "available", "module_name"]

# The source documents' claims, in the order they were built (one experiment file each; see the package docstring).
EXPERIMENTS: tuple[str, ...] = (
    "adam-step-bound",
    "amsgrad-counterexample",
    "adam-vs-sgdm",
    "swats",
    "radam-warmup",
    "lookahead",
    "large-batch",
    "schedules",
    "walk-with-sgd",
    "gradient-noise",
    "landscape",
    "helps-optimization",
    "next-adam",
)


def module_name(name: str) -> str:
    """The module of claim ``name`` in :mod:`optimlab.lab.reproduce.experiments` (``-`` -> ``_``)."""
    return name.replace("-", "_")


def available() -> tuple[str, ...]:
    """The claims of :data:`EXPERIMENTS` whose experiment file exists, in order."""
    return tuple(
        n for n in EXPERIMENTS
        if importlib.util.find_spec(f"optimlab.lab.reproduce.experiments.{module_name(n)}") is not None
    )
