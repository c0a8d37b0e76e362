"""The reproduction report: one section per claim (verdict beside its rule, evidence tables, the figure with the
paper's citation), and for several claims one page whose first table is the source documents' claims with our verdicts.

:func:`write_report` writes ``report.md`` and ``report.html`` into the output folder; the figures stay in each
claim's folder and are linked relatively.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimlab.lab.present.pages import html_page, html_table
from optimlab.lab.reproduce.base import Outcome

__all__ = ["section_markdown", "claims_table", "write_report", "REPORT_MD", "REPORT_HTML"]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"

_BADGE = {"reproduced": "#2ca02c", "not reproduced": "#d62728", "mixed": "#e6a100"}


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "–" if x is None else str(x)


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    esc = [str(c).replace("|", "\\|") for c in columns]
    lines = ["| " + " | ".join(esc) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return lines


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return html_table(columns, [[_cell(v) for v in r] for r in rows], text=True)


def _caption(o: Outcome) -> str:
    e = o.experiment
    return (e.caption + " " if e.caption else "") + f"After {e.citation}."


def _size(o: Outcome) -> str:
    size = "--quick" if o.quick else "default size"
    reused = f", {o.reused} found done in the results folder" if o.reused else ""
    return f"{size}, {o.seconds:.0f} s wall in this call ({o.computed} pieces computed{reused})"


def claims_table(outcomes: Sequence[Outcome]) -> tuple[list[str], list[list[str]]]:
    """The report's first table: claim, what the source documents say, our verdict, the size it ran at."""
    rows = [[o.experiment.name, o.experiment.claim, o.verdict.value, _size(o)] for o in outcomes]
    return ["claim", "the sources say", "verdict", "run"], rows


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def section_markdown(o: Outcome, base: Path | None = None) -> list[str]:
    """The claim's section in markdown (figure linked relative to ``base``, default the claim's folder)."""
    e = o.experiment
    base = base or o.folder
    lines = [f"## {e.name}: {e.title}", "", f"**Claim.** {e.claim}", "", f"**Source.** {e.citation}", "",
             f"**Verdict: {o.verdict.value}.** {o.verdict.reason}", "", f"**Rule** (written before the run). {e.rule}",
             "", f"*Run:* {_size(o)}; results in `{o.folder}`.", ""]
    for t in o.evidence.get("tables", []):
        lines += [f"**{t['title']}**", ""] + _md_table(t["columns"], t["rows"]) + [""]
        if t.get("note"):
            lines += [f"*{t['note']}*", ""]
    for n in o.evidence.get("notes", []):
        lines += [f"- {n}"]
    if o.evidence.get("notes"):
        lines.append("")
    if o.figure is not None and o.figure.exists():
        lines += [f"![{e.name}]({_rel(o.figure, base)})", "", f"*Figure: {_caption(o)}*", ""]
    return lines


def _section_html(o: Outcome, base: Path) -> str:
    e = o.experiment
    color = _BADGE.get(o.verdict.value, "#777")
    parts = [
        f"<h2 id='{html.escape(e.name)}'>{html.escape(e.name)}: {html.escape(e.title)}</h2>",
        f"<p><b>Claim.</b> {html.escape(e.claim)}</p><p><b>Source.</b> {html.escape(e.citation)}</p>",
        f"<div class='verdict' style='border-left:5px solid {color}'><b style='color:{color}'>Verdict: "
        f"{html.escape(o.verdict.value)}</b><br>{html.escape(o.verdict.reason)}<br><b>Rule</b> (written before the "
        f"run): {html.escape(e.rule)}</div>",
        f"<p><i>Run: {html.escape(_size(o))}; results in "
        f"<code>{html.escape(str(o.folder))}</code>.</i></p>",
    ]
    for t in o.evidence.get("tables", []):
        parts.append(f"<h3>{html.escape(t['title'])}</h3>" + _html_table(t["columns"], t["rows"]))
        if t.get("note"):
            parts.append(f"<p><i>{html.escape(t['note'])}</i></p>")
    if o.evidence.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in o.evidence["notes"]) + "</ul>")
    if o.figure is not None and o.figure.exists():
        parts.append(f"<figure><img src='{html.escape(_rel(o.figure, base))}'><figcaption>"
                     f"{html.escape(_caption(o))}</figcaption></figure>")
    return "".join(parts)


def write_report(
    outcomes: Sequence[Outcome], out: str | os.PathLike, not_built: Sequence[str] = (), stem: str = "report"
) -> Path:
    """Write ``<stem>.md`` and ``<stem>.html`` in ``out``: the claims table first, then each claim's section.
    ``not_built``: registered claims without an experiment file (listed as such). Returns the HTML path."""
    from optimlab.lab.training.runner import environment

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = claims_table(outcomes)
    rows += [[n, "(experiment not built yet)", "–", "–"] for n in not_built]
    md = ["# The source documents' claims, reproduced", "",
          "Each claim's verdict is computed from the numbers by the rule written in its experiment file "
          "(`optimlab/lab/reproduce/experiments/`); rerun one with `python3 -m optimlab reproduce NAME`.", ""]
    md += _md_table(columns, rows) + [""]
    for o in outcomes:
        md += section_markdown(o, out)
    env = environment()
    md += ["## Environment", "", "```"] + [f"{k}: {v}" for k, v in env.items()] + ["```", ""]
    (out / f"{stem}.md").write_text("\n".join(md))
    parts = ["<h1>The source documents' claims, reproduced</h1>",
             "<p>Each verdict is computed from the numbers by the rule written in the claim's experiment file; "
             "rerun one with <code>python3 -m optimlab reproduce NAME</code>.</p>",
             _html_table(columns, rows)]
    parts += [_section_html(o, out) for o in outcomes]
    parts.append("<h2>Environment</h2><pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in env.items())) + "</pre>")
    path = out / f"{stem}.html"
    path.write_text(html_page("optimlab reproduce", parts))
    return path
