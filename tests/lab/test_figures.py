"""The report's figures a reader must be able to read (issue 22): the answer's axis on the competitive range with
outliers marked at the edge, no overprinted labels, and 16+ optimizers told apart by colour or line style.

The figures are drawn from hand-made summaries (no training), captured before they are saved, and measured.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS, PRESETS
from optimlab.lab.present import figures, report_figures, stats, style
from optimlab.lab.present.summary import Row, TaskSummary


def _record(test: float, train_loss: float, steps: int = 20) -> Any:
    """What the figures read of a final run: its status, test metric, final training loss and curve."""
    curve = {"step": [0, steps // 2, steps], "train_loss": [2.0, 1.0 + train_loss, train_loss]}
    return SimpleNamespace(
        ok=True,
        metric="accuracy",
        test_values={"accuracy": test},
        test=lambda m: test,
        final=lambda key: train_loss if key == "train_loss" else None,
        history=curve,
    )


def _row(spec: str, tests: list[float], losses: list[float] | None = None, best: bool = False) -> Row:
    losses = losses or [0.01] * len(tests)
    return Row(
        spec=spec,
        selection=None,
        n=len(tests),
        expected=len(tests),
        diverged=0,
        headline=stats.mean_ci(tests),
        val=None,
        train_loss=stats.mean_ci(losses),
        gap=None,
        steps_to_target=math.inf,
        cpu_to_target=math.inf,
        reached=0,
        step_ms=None,
        fwd_bwd_ms=None,
        overhead_pct=None,
        tuning_trials=0,
        tuning_cpu_seconds=0.0,
        final_cpu_seconds=0.0,
        in_best_set=best,
        records=[_record(t, v) for t, v in zip(tests, losses, strict=True)],
    )


def _summary(rows: list[Row], metric: str = "accuracy", higher: bool = True) -> TaskSummary:
    task = SimpleNamespace(name="toy", selection_split="train")
    best = SimpleNamespace(best=rows[0].spec, tested=True, members=(rows[0].spec,))
    return TaskSummary(SimpleNamespace(task=task), rows, best, "test", metric, higher, None)  # type: ignore[arg-type]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the report's plot functions finish, kept open instead of saved."""
    kept: list[Any] = []
    monkeypatch.setattr(report_figures, "save_figure", lambda fig, path, **kw: kept.append(fig))
    return kept


def _lars_like() -> list[Row]:
    """11 optimizers between 90 and 96 %, two weaker ones, and a LARS whose seeds run from chance to 89.7 %."""
    rng = np.random.default_rng(0)
    rows = []
    for i, centre in enumerate(np.linspace(0.96, 0.905, 11)):
        rows.append(_row(f"opt{i}", list(centre + 0.004 * rng.standard_normal(5)), best=i == 0))
    rows.append(_row("weak1", list(0.87 + 0.005 * rng.standard_normal(5))))
    rows.append(_row("weak2", list(0.84 + 0.01 * rng.standard_normal(5))))
    rows.append(_row("lars", [0.096, 0.10, 0.85, 0.897, 0.88]))
    return rows


def test_the_answer_axis_follows_the_competitive_range_and_marks_the_outlier_at_the_edge(drawn) -> None:
    rows = _lars_like()
    lars = rows[-1].headline
    assert lars.low < 0.1 and lars.high > 1.0  # the t interval leaves [0, 100] %: the case of issue 22
    assert report_figures._plot_answer(_summary(rows), Path("unused.png"))
    (fig,) = drawn
    ax = fig.axes[0]
    a, b = ax.get_xlim()
    competitive = rows[:11]
    assert a <= min(100 * r.headline.low for r in competitive) and b >= max(100 * r.headline.high for r in competitive)
    assert a > 80 and b <= 100.0, (a, b)  # not stretched to LARS's 5..110 %
    for line in ax.get_lines():  # nothing is drawn off the axis, nor outside [0, 100] %
        xs = np.asarray(line.get_xdata(), dtype=float)
        assert np.all((xs >= a - 1e-9) & (xs <= b + 1e-9)), (line, xs)
    texts = [t.get_text() for t in ax.texts]
    lars_text = f"{100 * lars.mean:.1f} [{100 * lars.low:.1f}, 100.0]; 2 seeds off the axis"  # the high end clipped
    assert lars_text in texts, texts
    assert not any("opt" in t for t in texts)  # the competitive ones carry no edge note
    assert "intervals clipped to [0, 100] %" in ax.get_title()
    lars_marks = [ln for ln in ax.get_lines() if ln.get_marker() == "<" and list(ln.get_ydata()) == [13]]
    assert lars_marks and all(x == a for ln in lars_marks for x in ln.get_xdata())


def test_an_optimizer_with_diverged_seeds_is_listed_and_keeps_the_axis_competitive(drawn) -> None:
    """Forced divergence: two of five seeds diverged, so the row has no mean; it is listed and counted, and its
    surviving seeds (one at chance) do not move the axis."""
    rows = _lars_like()[:11]
    unstable = _row("unstable", [0.94, 0.10, 0.93, 0.5, 0.5])
    unstable.records[3].ok = unstable.records[4].ok = False
    unstable.headline, unstable.diverged = None, 2
    assert report_figures._plot_answer(_summary([*rows, unstable]), Path("unused.png"))
    ax = drawn[0].axes[0]
    a, b = ax.get_xlim()
    assert a > 80 and [t.get_text() for t in ax.get_yticklabels()][-1] == "unstable (2 div.)"
    assert "no mean: 2 of 5 seeds diverged; 1 seed off the axis" in [t.get_text() for t in ax.texts]


def test_the_answer_axis_keeps_every_optimizer_when_none_is_an_outlier(drawn) -> None:
    rows = [_row(f"opt{i}", [0.95 - 0.01 * i + d for d in (-0.004, 0.0, 0.004)], best=i == 0) for i in range(5)]
    assert report_figures._plot_answer(_summary(rows), Path("unused.png"))
    ax = drawn[0].axes[0]
    a, b = ax.get_xlim()
    assert a <= 100 * rows[-1].headline.low and b >= 100 * rows[0].headline.high
    assert list(ax.texts) == [] and "clipped" not in ax.get_title()


def test_the_answer_axis_stays_inside_the_metric_range(drawn) -> None:
    """Accuracies near 100 %: the t intervals pass 100 %; neither they nor the axis do in the figure."""
    rows = [_row(f"opt{i}", [0.999 - 0.002 * i, 0.995 - 0.002 * i, 0.9995 - 0.002 * i], best=i == 0) for i in range(4)]
    assert rows[0].headline.high > 1.0
    assert report_figures._plot_answer(_summary(rows), Path("unused.png"))
    ax = drawn[0].axes[0]
    assert ax.get_xlim()[1] <= 100.0 and "intervals clipped to [0, 100] %" in ax.get_title()
    assert max(x for line in ax.get_lines() for x in line.get_xdata()) <= 100.0


def test_a_competitive_optimizer_with_a_wide_interval_does_not_stretch_the_axis() -> None:
    means = [95.0, 94.6, 94.2, 93.8, 93.4, 94.0]
    lows = [94.6, 94.2, 93.8, 93.4, 93.0, 60.0]
    highs = [95.4, 95.0, 94.6, 94.2, 93.8, 128.0]
    a, b = report_figures.competitive_range(means, lows, highs, higher_is_better=True)
    assert 80 < a <= 93.0 and 95.4 <= b < 110, (a, b)


def test_competitive_range_for_a_loss_on_a_log_axis() -> None:
    means = [0.10, 0.11, 0.12, 0.13, 5.0]  # lower is better; the last one is far off
    lows = [0.09, 0.10, 0.11, 0.12, 0.5]
    highs = [0.11, 0.12, 0.13, 0.14, 50.0]
    a, b = report_figures.competitive_range(means, lows, highs, higher_is_better=False, log=True)
    assert a < 0.09 and 0.14 < b < 0.3, (a, b)
    a, b = report_figures.competitive_range(means[:4], lows[:4], highs[:4], higher_is_better=False, log=True)
    assert a < 0.09 and 0.14 < b < 0.3


def _overlaps(fig: Any, artists: list[Any]) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in artists]
    return [(p, q) for (p, a), (q, b) in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_the_generalization_labels_do_not_overlap(drawn) -> None:
    """15 optimizers whose points crowd together (within 1 point of accuracy and 20 % of training loss)."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(15):
        acc = 0.935 + 0.01 * rng.random()
        loss = 0.01 * (1 + 0.2 * rng.random())
        rows.append(_row(f"optimizer{i}", [acc - 0.002, acc, acc + 0.002], [loss * 0.9, loss, loss * 1.1]))
    assert report_figures._plot_generalization(_summary(rows), Path("unused.png"))
    fig = drawn[0]
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text().startswith("optimizer")]
    assert sorted(t.get_text() for t in labels) == sorted(r.spec for r in rows)
    assert _overlaps(fig, labels) == []


def test_place_labels_moves_labels_apart_on_one_point() -> None:
    """Thirty labels of the same point on small axes: none overlaps another; those with no room inside the axes go
    to the column beside them."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], "o")
    texts = figures.place_labels(ax, [(0.5, 0.5)] * 30, [f"label number {i}" for i in range(30)], ["k"] * 30)
    try:
        assert len(texts) == 30 and _overlaps(fig, texts) == []
        frame = ax.get_window_extent()
        assert any(t.get_window_extent().x0 > frame.x1 for t in texts)  # the column was needed
    finally:
        plt.close(fig)


def _names() -> list[str]:
    return sorted(set(style.FAMILY_COLORS) | set(PRESETS))


def test_cielab_of_known_colours() -> None:
    """Against the published sRGB (D65) values."""
    for color, lab in (("#ffffff", (100.0, 0.0, 0.0)), ("#ff0000", (53.24, 80.09, 67.20)),
                       ("#00ff00", (87.73, -86.18, 83.18)), ("#0000ff", (32.30, 79.19, -107.86)),
                       ("#808080", (53.59, 0.0, 0.0))):
        assert style.cielab(color) == pytest.approx(lab, abs=0.02)
    assert style.color_distance("#000000", "#ffffff") == pytest.approx(100.0, abs=1e-4)  # the matrix has 7 digits


def test_every_two_optimizers_differ_in_a_clear_colour_or_in_line_style() -> None:
    names = _names()
    assert len(names) >= 16 and set(DEFAULT_OPTIMIZERS) <= set(names)
    assert set(style.LINE_STYLES) <= set(style.FAMILY_COLORS) and set(style.LINE_STYLES.values()) <= set(style.STYLES)
    looks = {n: (style.color_for(n), style.line_style_for(n)) for n in names}
    assert len(set(looks.values())) == len(names)
    close = [
        (p, q, round(style.color_distance(looks[p][0], looks[q][0]), 1))
        for p, q in itertools.combinations(names, 2)
        if looks[p][1] == looks[q][1] and style.color_distance(looks[p][0], looks[q][0]) < style.MIN_DISTANCE
    ]
    assert close == [], (
        f"same line style and colours closer than {style.MIN_DISTANCE} Delta E: {close}; give each optimizer a "
        "colour and a line style in src/optimlab/lab/present/style.py (FAMILY_COLORS, LINE_STYLES)"
    )


def test_a_name_not_listed_takes_a_line_style_its_colour_is_clear_in() -> None:
    """The first style whose listed colours are all far enough from the name's own; solid if there is none."""
    for name in ("kron", "sophia", "b", "g", "c-adamw", "cautious-adamw"):
        own, dash = style.color_for(name), style.line_style_for(name)
        assert style.line_style_for(name + "@lr=0.1") == dash == style.line_style_of_label(f"{name} | variant")
        clear = [
            st
            for st in style.STYLES
            if all(style.color_distance(own, style.FAMILY_COLORS[n]) >= style.MIN_DISTANCE
                   for n, s in style.LINE_STYLES.items() if s == st)
        ]
        assert dash == (clear[0] if clear else style.STYLES[0]), (name, own, dash, clear)


def test_the_learning_curves_use_each_optimizers_colour_and_line_style(drawn) -> None:
    specs = [*DEFAULT_OPTIMIZERS, "lookahead+radam"]  # 16
    rows = [_row(spec, [0.9, 0.91], [0.01 * (i + 1), 0.011 * (i + 1)]) for i, spec in enumerate(specs)]
    assert report_figures._plot_curves(_summary(rows), Path("unused.png"))
    ax = drawn[0].axes[0]
    drawn_as = {ln.get_label(): (ln.get_color(), ln.get_linestyle()) for ln in ax.get_lines()}
    from matplotlib.lines import Line2D

    for spec in specs:
        expected = Line2D([], [], color=style.color_for(spec), ls=style.line_style_for(spec))
        assert drawn_as[spec] == (expected.get_color(), expected.get_linestyle()), spec
    assert len({drawn_as[s] for s in specs}) == 16
