"""The report of a study folder: the answer first, then the evidence (``summary.csv``, PNG figures, ``report.html``).

It leads with the answer: the best optimizer and those as good as it, with the protocol and budget
in one line. Then: the headline metric with 95 % intervals, learning curves with 95 % bands, steps and CPU
seconds to the validation target, lr sensitivity over the tuning trials, generalization (train against test,
so underfitting shows), and the tuning cost. Every optimizer has one colour in every figure
(:func:`optimlab.lab.present.style.color_for`). Nothing is plotted that carries no information (the schedule is a line
of text unless optimizers ran different ones).

This module assembles the page (:func:`build_report`); the text and the CSV are :mod:`~optimlab.lab.present.tables`,
the figures :mod:`~optimlab.lab.present.report_figures`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from optimlab.lab.catalog.space import SearchSpace
from optimlab.lab.catalog.tasks import task_slug
from optimlab.lab.present.pages import Markup, html_page, html_table
from optimlab.lab.present.report_figures import PLOTS
from optimlab.lab.present.style import color_for
from optimlab.lab.present.summary import TaskSummary, summarize_study
from optimlab.lab.present.tables import (
    format_summary,
    headline_sentence,
    margin_text,
    summary_notes,
    summary_table,
    target_text,
    write_csv,
)
from optimlab.lab.study.protocol import Protocol
from optimlab.lab.study.tuning import load_study
from optimlab.lab.training.results import check_writable, named

__all__ = [
    "build_report",
    "summary_table_html",
    "spaces_table",
    "spaces_note",
    "budget_text",
    "SUMMARY_FILE",
    "REPORT_FILE",
    # the text of the report, for commands/ (their home: present.tables)
    "format_summary",
    "headline_sentence",
]

SUMMARY_FILE = "summary.csv"
REPORT_FILE = "report.html"


def summary_table_html(ts: TaskSummary) -> str:
    """The summary table (:func:`~optimlab.lab.present.tables.summary_table`) as HTML: each optimizer's colour
    beside its name, the best set in bold."""
    header, rows = summary_table(ts)
    for r, cells in zip(ts.rows, rows, strict=True):
        name = f"<span style='color:{color_for(r.spec)}'>&#9632;</span> {html.escape(cells[0])}"
        cells[0] = Markup(f"<span class='in'>{name}</span>" if r.in_best_set else name)
    return html_table(header, rows)


def _task_section(ts: TaskSummary, out: Path, prefix: str = "") -> list[str]:
    task = ts.study.task
    p = ts.study.protocol
    parts = [
        f"<h2>{html.escape(task.name)}</h2>",
        f"<p class='answer'>{html.escape(headline_sentence(ts))}</p>",
        f"<p><b>Protocol</b>: {html.escape(p.describe())}. {html.escape(task.description)}. Validation target "
        f"{html.escape(target_text(ts))}"
        + (f" ({html.escape(task.target_note)})" if task.target_note else "")
        + ".</p>",
    ]
    cost = sum(r.tuning_cpu_seconds for r in ts.rows)
    total = cost + sum(r.final_cpu_seconds for r in ts.rows)
    if p.tuned and total > 0:
        parts.append(
            f"<p><b>Tuning cost</b>: {cost:.0f} training CPU seconds over {sum(r.tuning_trials for r in ts.rows)} "
            f"trials ({100 * cost / total:.0f}% of the study's training time); the same for every optimizer "
            "in trials and steps (the table's last column).</p>"
        )
    notes = summary_notes(ts)
    if notes:
        parts.append(
            "<div class='notes'><b>Notes</b><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>"
        )
    figures = {}
    for name, (plot, caption) in PLOTS.items():
        file = f"{prefix}{name}_{task_slug(task.name)}.png"
        if plot(ts, out / file):
            figures[name] = (file, caption)
        elif (out / file).exists():
            (out / file).unlink()  # a figure of an earlier build that no longer applies
    if "answer" in figures:
        file, caption = figures.pop("answer")
        parts.append(f"<img src='{file}' alt='{html.escape(caption)}' data-figure='answer'>")
    parts.append(summary_table_html(ts))
    parts.append(
        "<p style='font-size:12px'>95% CI: percentile bootstrap over the seeds that did not fail (inside the "
        + (f"metric's range; with {p.studies} tuning studies: median of the study means, two-level bootstrap over "
           "studies then seeds, so it includes the re-tuning spread; verdicts on the study means)" if p.studies > 1
           else "metric's range)")
        + "; seeds: those that diverged or ended at chance, counted, not averaged in (unstable: never "
        f"in the best set). vs best: as good = within the margin {html.escape(margin_text(ts))} by TOST "
        "(Holm-adjusted); worse = Welch t against the best, calibrated by simulating the choice of the best under "
        f"equal means, stepped down (max-t), at alpha {p.alpha:g}; inconclusive = neither, with the minimum "
        "detectable effect (MDE, 80 % power). opt ms/step: <code>optimizer.step()</code> CPU time (median over "
        "steps, mean over seeds) "
        "and its share of the model's forward+backward CPU time in the same runs; CPU time is what a busy machine "
        "inflates least. Times to target: training CPU seconds only, median over seeds.</p>"
    )
    if "time_to_target" not in figures and ts.target is not None:
        parts.append(
            f"<p>Time to target: no optimizer reached validation {html.escape(target_text(ts))} in most of its "
            "seeds, so there is no figure.</p>"
        )
    if "schedules" not in figures:
        parts.append(f"<p>Schedule: <code>{html.escape(p.schedule)}</code> for every optimizer.</p>")
    for name, (file, caption) in figures.items():
        parts.append(
            f"<h3>{html.escape(caption)}</h3><img src='{file}' alt='{html.escape(caption)}' data-figure='{name}'>"
        )
    header, rows = spaces_table(ts)
    parts.append(
        "<h3>What was tuned</h3><p>Every optimizer had the same budget: "
        f"{html.escape(budget_text(p))}. The search space of each (trial points spread over every dimension; "
        "the refining trials move the lr alone), the setting selected, and the settings it ran with:</p>"
        + html_table(header, rows)
    )
    return parts


def budget_text(p: Protocol) -> str:
    """The tuning budget of protocol ``p`` in a few words, the same for every optimizer."""
    if not p.tuned:
        return "none (the presets, untuned)"
    n = p.trials_per_optimizer()
    return f"{n} trial{'s' if n != 1 else ''} of {p.trial_steps} steps each, 1 seed" + (
        f" ({n - p.refine_trials} spread over the space + {p.refine_trials} refining the lr)" if p.refine_trials else ""
    )


def space_text(space: SearchSpace | None, p: Protocol) -> str:
    """One optimizer's search space in short: ``lr 1e-4..0.1 (log), weight_decay 0.005..1 (log)``."""
    if not p.tuned:
        return "not tuned"
    if space is None:
        return "lr grid " + ", ".join(f"{x:g}" for x in p.lrs)
    return ", ".join(f"{q.name} {q.low:.3g}..{q.high:.3g}{' (log)' if q.log else ''}" for q in space.params)


def spaces_table(ts: TaskSummary) -> tuple[list[str], list[list[Any]]]:
    """Each optimizer's search space, selected setting and the settings it ran with (header, rows)."""
    p = ts.study.protocol
    rows = []
    for r in ts.rows:
        res = ts.study.results[r.spec]
        settings = dict(r.records[0].optimizer_settings) if r.records else {}
        selected = "-" if r.selection is None else ", ".join(f"{k} {v:.3g}" for k, v in r.selection.settings.items())
        ran = ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("lr", "class"))
        rows.append([r.spec, space_text(res.space, p), selected, ran])
    return ["optimizer", "search space", "selected", "ran with"], rows


def spaces_note(ts: TaskSummary) -> str:
    """The terminal's line on what was tuned: the budget, and each optimizer's tuned hyperparameters."""
    p = ts.study.protocol
    if not p.tuned:
        return "tuned: nothing (the presets)."
    if p.lrs:
        return f"tuned: the lr alone, over the grid {', '.join(f'{x:g}' for x in p.lrs)}, for every optimizer."
    names = []
    for r in ts.rows:
        space = ts.study.results[r.spec].space
        names.append(f"{r.spec} ({'+'.join(q.name for q in space.params) if space else 'lr'})")
    return (
        f"tuned, with the same budget for every optimizer ({budget_text(p)}): {'; '.join(names)}. "
        "Ranges: the report's 'What was tuned' table, or optimlab list."
    )


def _diagnostics_section(ts: TaskSummary, out: Path) -> list[str]:
    """The panels of ``compare --diagnostics`` (issue 10's :func:`~optimlab.lab.present.diagnostic_plots.
    diagnostics_panels`) from the final runs that carry them; nothing when none does."""
    records = [rec for r in ts.rows for rec in r.records if "diagnostics" in rec.extras]
    if not records:
        return []
    from optimlab.lab.present.diagnostic_plots import diagnostics_panels

    _, fragment = diagnostics_panels(records, out)
    return ["<h2>Diagnostics</h2>" + fragment] if fragment else []


def build_report(out: str | os.PathLike) -> tuple[Path, TaskSummary]:
    """Write ``summary.csv``, the figures and ``report.html`` into the study folder ``out``; return the page's
    path and the summary. The folder is checked for writing before anything is computed."""
    out = Path(out)
    study = load_study(out)
    check_writable(out)
    try:
        return _write_report(out, study)
    except OSError as e:  # a full disk: the error names the folder (or the figure)
        raise named(e, out) from None


def _write_report(out: Path, study: Any) -> tuple[Path, TaskSummary]:
    ts = summarize_study(study)
    write_csv(ts, out / SUMMARY_FILE)
    parts = [
        "<h1>optimlab report</h1>",
        f"<p>{sum(len(r.records) + r.tuning_trials for r in ts.rows)} runs from <code>{html.escape(str(out))}"
        f"</code>. Table: <a href='{SUMMARY_FILE}'>{SUMMARY_FILE}</a>; every run: "
        "<a href='results.jsonl'>results.jsonl</a>; protocol: <a href='protocol.json'>protocol.json</a>.</p>",
    ]
    parts += _task_section(ts, out)
    parts += _diagnostics_section(ts, out)
    env = next((rec.environment for r in ts.rows for rec in r.records), None)
    if env:
        parts.append(
            "<h2>Environment</h2><pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in env.items())) + "</pre>"
        )
    path = out / REPORT_FILE
    path.write_text(html_page("optimlab report", parts))
    return path, ts
