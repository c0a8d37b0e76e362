"""One colour per optimizer, the same in every figure of every report.

A colour is a function of the optimizer's *name* (its lab spec), never of its position in a plot, so "adam" is the
same blue in the learning curves, the lr-sensitivity plot, the diagnostics and the reproductions. Families share a
hue range (SGD family greens, the Adam family blues, ...), so related methods look related; names not listed take a
colour from a fixed extra palette chosen by a stable hash of the name (the same in every process).
"""

from __future__ import annotations

import hashlib

__all__ = ["FAMILY_COLORS", "color_for", "colors_for", "color_of_label"]

# fmt: off
FAMILY_COLORS: dict[str, str] = {
    # SGD family: greens and teal
    "sgd": "#74c476", "sgdm": "#238b45", "nesterov": "#00441b", "sgdw": "#41ab5d", "asgd": "#a1d99b",
    "schedulefree-sgd": "#1b9e77",
    # Adagrad / RMSProp / Adadelta / Rprop: browns and oranges
    "adagrad": "#8c510a", "rmsprop": "#d95f02", "adadelta": "#bf812d", "rprop": "#fdae6b",
    # the Adam family: blues and purples
    "adam": "#1f77b4", "amsgrad": "#6baed6", "adamw": "#08306b", "nadam": "#9467bd", "radam": "#17becf",
    "adamax": "#4292c6", "adabound": "#807dba", "amsbound": "#bcbddc", "swats": "#e377c2",
    "lookahead+adam": "#7f7f7f", "lookahead+radam": "#525252", "lookahead+sgdm": "#969696",
    # large-batch layer-wise methods: reds
    "lars": "#d62728", "lamb": "#a50f15",
    # after Adam
    "muon": "#ff7f0e", "lion": "#bcbd22", "schedulefree-adamw": "#2ca02c", "soap": "#8c564b", "shampoo": "#e7298a",
    "ademamix": "#9edae5", "mars": "#c49c94", "prodigy": "#dbdb8d", "adafactor": "#f7b6d2", "adopt": "#c5b0d5",
}
# fmt: on

_EXTRA = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
          "#636363", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b", "#ce6dbd", "#9c9ede", "#cedb9c", "#e7969c")


def color_for(name: str) -> str:
    """The colour of optimizer ``name`` (a lab spec such as ``"adam"`` or ``"lookahead+radam"``; settings after
    ``@`` are ignored, so ``"adam@lr=3e-4"`` is Adam's colour)."""
    base = "+".join(part.split("@", 1)[0] for part in name.lower().split("+"))
    if base in FAMILY_COLORS:
        return FAMILY_COLORS[base]
    digest = int(hashlib.sha1(base.encode()).hexdigest()[:8], 16)
    return _EXTRA[digest % len(_EXTRA)]


def colors_for(names: list[str]) -> list[str]:
    """:func:`color_for` of each name."""
    return [color_for(n) for n in names]


def color_of_label(label: str) -> str:
    """The optimizer's colour for a run label ``"spec"`` or ``"spec | variant"`` (the spec decides)."""
    return color_for(label.split(" | ", 1)[0])
