"""The answer of ``optimlab compare --lengths``: one study per training length, each tuned on its own, and whether
the ranking changes with the length (Wen et al., 2025, find that the winner depends on the budget).

:func:`rank_table` ranks the optimizers of each length by their headline mean (the summary's
:class:`~optimlab.lab.present.summary.Row` ``headline``; an optimizer with no complete final runs is unranked) and
marks the best set of each; :func:`format_lengths` is the terminal's text and :func:`write_lengths_report` the
page that links each length's own report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path

from optimlab.lab.present.pages import html_page, html_table
from optimlab.lab.present.summary import TaskSummary
from optimlab.lab.present.tables import headline_sentence

__all__ = ["ranks", "rank_table", "kendall_tau", "ranking_sentence", "format_lengths", "write_lengths_report"]


def ranks(ts: TaskSummary) -> dict[str, int]:
    """Each optimizer's rank (1 = best headline mean) among those with a headline; ties share the better rank."""
    sign = -1.0 if ts.higher_is_better else 1.0
    values = {r.spec: r.headline.mean for r in ts.rows if r.headline is not None and math.isfinite(r.headline.mean)}
    order = sorted(values.values(), key=lambda v: sign * v)
    return {spec: 1 + order.index(v) for spec, v in values.items()}


def kendall_tau(a: Mapping[str, int], b: Mapping[str, int]) -> float | None:
    """Kendall's tau-a between two rankings over the optimizers ranked in both (``None`` below 2 of them): 1 the
    same order, -1 reversed."""
    common = [k for k in a if k in b]
    n = len(common)
    if n < 2:
        return None
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = a[common[i]] - a[common[j]], b[common[i]] - b[common[j]]
            s += (x * y > 0) - (x * y < 0)
    return s / (n * (n - 1) / 2)


def rank_table(summaries: Mapping[int, TaskSummary]) -> tuple[list[str], list[list[str]]]:
    """Optimizers x lengths: the rank at each length, ``*`` for a member of that length's best set, ``-`` where
    unranked; rows in the order of the longest length's ranking."""
    lengths = sorted(summaries)
    by_length = {n: ranks(summaries[n]) for n in lengths}
    best = {n: set(summaries[n].members) for n in lengths}
    specs = list(dict.fromkeys(r.spec for n in lengths for r in summaries[n].rows))
    last = by_length[lengths[-1]]
    specs.sort(key=lambda s: (last.get(s, math.inf), s))
    rows = []
    for spec in specs:
        cells = [spec]
        for n in lengths:
            rank = by_length[n].get(spec)
            cells.append("-" if rank is None else f"{rank}{' *' if spec in best[n] else ''}")
        rows.append(cells)
    return ["optimizer", *(f"{n} steps" for n in lengths)], rows


def ranking_sentence(summaries: Mapping[int, TaskSummary]) -> str:
    """Whether the answer changes with the length: the best at each, and Kendall's tau of the shortest's and the
    longest's rankings."""
    lengths = sorted(summaries)
    winners = {n: (summaries[n].best.best if summaries[n].best else None) for n in lengths}
    parts = [f"{w or 'none yet'} at {n}" for n, w in winners.items()]
    known = {w for w in winners.values() if w}
    if len(lengths) == 1:
        verdict = "one length only"
    elif None in winners.values():
        verdict = "not every length is complete yet"
    elif len(known) == 1:
        verdict = "the same best optimizer at every length"
    else:
        outside = [
            (w, n, m) for n, w in winners.items() for m in lengths if w not in set(summaries[m].members)
        ]
        if outside:
            w, n, m = outside[0]
            verdict = (
                f"the answer changes with the length: {w}, the best at {n} steps, is outside the best set at {m} steps"
            )
        else:
            verdict = "the best by mean changes, but each is in every length's best set (no clear change)"
    text = f"best: {', '.join(parts)} steps ({verdict})"
    if len(lengths) > 1:
        tau = kendall_tau(ranks(summaries[lengths[0]]), ranks(summaries[lengths[-1]]))
        if tau is not None:
            text += f"; Kendall's tau of the rankings at {lengths[0]} and {lengths[-1]} steps: {tau:.2f}"
    return text + "."


def format_lengths(summaries: Mapping[int, TaskSummary]) -> str:
    """The terminal's answer across lengths: each length's headline, the rank table, the sentence."""
    lengths = sorted(summaries)
    header, rows = rank_table(summaries)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{n} steps: {headline_sentence(summaries[n])}" for n in lengths]
    lines += ["", "rank by headline mean at each training length (* = in that length's best set):"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += ["", ranking_sentence(summaries)]
    return "\n".join(lines)


def write_lengths_report(out: Path, summaries: Mapping[int, TaskSummary], pages: Mapping[int, Path]) -> Path:
    """``out/report.html``: the rank table across lengths and a link to each length's own report (``pages``)."""
    lengths = sorted(summaries)
    header, rows = rank_table(summaries)
    any_ts = summaries[lengths[0]]
    parts = [
        "<h1>optimlab report: several training lengths</h1>",
        f"<p>{html.escape(any_ts.study.task.name)}: one study per training length, each tuned on its own with the "
        "same protocol apart from its steps (the tuning trials are the same fraction of each length).</p>",
        f"<p class='answer'>{html.escape(ranking_sentence(summaries))}</p>",
        "<p>Rank by headline mean at each length; <b>*</b>: in that length's best set.</p>",
        html_table(header, rows),
        "<ul>"
        + "".join(
            f"<li>{n} steps: {html.escape(headline_sentence(summaries[n]))} "
            f"<a href='{html.escape(pages[n].relative_to(out).as_posix())}'>its report</a></li>"
            for n in lengths
        )
        + "</ul>",
    ]
    path = out / "report.html"
    path.write_text(html_page("optimlab report: training lengths", parts))
    return path
