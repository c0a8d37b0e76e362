"""What every HTML page of the lab shares: one style sheet, the page around the parts, a table, a captioned figure.

The pages are the ``compare``/``report`` page (:mod:`optimlab.lab.present.report`), the benchmark's page, the
diagnostics commands' page (:func:`optimlab.lab.present.diagnostic_plots.write_report`) and the reproduction report
(:mod:`optimlab.lab.reproduce.report`). Text is escaped here; a :class:`Markup` string is HTML already.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["STYLE", "Markup", "html_table", "figure_html", "html_page"]

# Tables of numbers are right-aligned after their first column; a table of sentences (class 'text') is left-aligned
# under centred headers.
# .answer/.notes/.in: the report's answer, notes and best-set rows; .verdict: a reproduction's verdict.
STYLE = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12.5px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;margin:.6em 0}
.answer{font-size:1.15em;background:#f4f8ff;border-left:4px solid #1f77b4;padding:.6em 1em}
.notes{background:#fff8e6;border-left:4px solid #e6a100;padding:.4em 1em}
code,pre{background:#f6f6f6}pre{padding:.6em;overflow-x:auto;font-size:12px}.in{font-weight:600}
table.text{margin:.4em 0}table.text td{text-align:left}table.text th{text-align:center}
figcaption{font-size:13px;color:#444;margin-bottom:1.6em}
.verdict{background:#f8f8f8;padding:.5em 1em;margin:.6em 0}"""


class Markup(str):
    """A string that is HTML already: :func:`html_table` puts it in its cell as it is, unescaped."""


def _cell(value: Any) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


def html_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], *, text: bool = False) -> str:
    """A table with ``header`` and ``rows``; each cell is ``str(value)`` escaped, or a :class:`Markup` as it is.
    ``text``: a table of sentences, left-aligned under centred headers (else numbers, right-aligned after the first
    column)."""
    head = "".join(f"<th>{_cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    table = "<table class='text'>" if text else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(png: str | Path, caption_html: str, alt: str = "") -> str:
    """The PNG ``png`` (referenced by its file name: the page lies next to it) with its caption (HTML)."""
    return (f"<figure><img src='{html.escape(Path(png).name)}' alt='{html.escape(alt or Path(png).stem)}'>"
            f"<figcaption>{caption_html}</figcaption></figure>")


def html_page(title: str, parts: Sequence[str]) -> str:
    """A whole page: ``title`` in the head, :data:`STYLE`, and the ``parts`` (HTML) as its body."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
