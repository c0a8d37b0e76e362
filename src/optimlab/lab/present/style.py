"""One colour and one line style per optimizer, the same in every figure of every report.

A colour is a function of the optimizer's *name* (its lab spec), never of its position in a plot, so "adam" is the
same blue in the learning curves, the lr-sensitivity plot, the diagnostics and the reproductions. Families share a
hue range (SGD family greens, the Adam family blues, ...), so related methods look related; names not listed take a
colour from a fixed extra palette chosen by a stable hash of the name (the same in every process).

Related colours are hard to tell apart on a line (three greens, four blues), so every optimizer also has a line
style (:data:`LINE_STYLES`, :func:`line_style_for`): any two of the listed optimizers that share a line style are
at least :data:`MIN_DISTANCE` apart in CIELAB (CIE76 Delta E, :func:`color_distance`; about 2.3 is the smallest
difference a person sees side by side, and 30 separates a green from a teal), so two lines differ in a clearly
different colour or in their dashes. A name not listed takes the first line style whose listed colours are all that
far from its own (solid if none is).
"""

from __future__ import annotations

import hashlib

__all__ = [
    "FAMILY_COLORS",
    "LINE_STYLES",
    "STYLES",
    "MIN_DISTANCE",
    "color_for",
    "colors_for",
    "color_of_label",
    "line_style_for",
    "line_style_of_label",
    "cielab",
    "color_distance",
]

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


# the line styles matplotlib draws, clearest first
STYLES = ("-", "--", ":", "-.")
MIN_DISTANCE = 30.0

# fmt: off
# chosen so that the names sharing a style are >= MIN_DISTANCE apart (tests/lab/test_figures.py checks it), with
# as many of the default comparison's optimizers solid as that allows
LINE_STYLES: dict[str, str] = {
    "nesterov": "-", "schedulefree-sgd": "-", "adagrad": "-", "rmsprop": "-", "rprop": "-", "adam": "-",
    "adamw": "-", "nadam": "-", "radam": "-", "amsbound": "-", "lamb": "-", "lion": "-", "schedulefree-adamw": "-",
    "soap": "-", "shampoo": "-", "prodigy": "-",
    "sgdm": "--", "asgd": "--", "adadelta": "--", "adamax": "--", "swats": "--", "lookahead+adam": "--",
    "lars": "--", "muon": "--", "ademamix": "--", "adopt": "--",
    "sgd": ":", "adabound": ":", "lookahead+sgdm": ":", "adafactor": ":",
    "sgdw": "-.", "amsgrad": "-.", "lookahead+radam": "-.", "mars": "-.",
}
# fmt: on


def _base(name: str) -> str:
    return "+".join(part.split("@", 1)[0] for part in name.lower().split("+"))


def color_for(name: str) -> str:
    """The colour of optimizer ``name`` (a lab spec such as ``"adam"`` or ``"lookahead+radam"``; settings after
    ``@`` are ignored, so ``"adam@lr=3e-4"`` is Adam's colour)."""
    base = _base(name)
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


def line_style_for(name: str) -> str:
    """The line style of optimizer ``name`` (one of :data:`STYLES`; settings after ``@`` are ignored)."""
    base = _base(name)
    if base in LINE_STYLES:
        return LINE_STYLES[base]
    own = color_for(base)
    for style in STYLES:
        if all(color_distance(own, FAMILY_COLORS[n]) >= MIN_DISTANCE for n, s in LINE_STYLES.items() if s == style):
            return style
    return STYLES[0]


def line_style_of_label(label: str) -> str:
    """The optimizer's line style for a run label ``"spec"`` or ``"spec | variant"`` (the spec decides)."""
    return line_style_for(label.split(" | ", 1)[0])


def cielab(color: str) -> tuple[float, float, float]:
    """CIELAB ``(L*, a*, b*)`` of a ``"#rrggbb"`` sRGB colour (D65 white)."""
    rgb = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
    xyz = (
        (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047,
        0.2126729 * r + 0.7151522 * g + 0.0721750 * b,
        (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883,
    )
    fx, fy, fz = (t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def color_distance(a: str, b: str) -> float:
    """CIE76 Delta E between two ``"#rrggbb"`` colours: the Euclidean distance in CIELAB."""
    return sum((x - y) ** 2 for x, y in zip(cielab(a), cielab(b), strict=True)) ** 0.5
