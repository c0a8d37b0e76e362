"""Write the README's table of the default comparison from a committed results folder, never by hand.

The README's block between ``<!-- begin: default-compare -->`` and ``<!-- end: default-compare -->`` is what this
script makes of ``docs/results/default-compare/`` (its ``protocol.json`` and ``results.jsonl``, the only files of
the folder to commit; about 3 KB a run, some 600 KB for the default 195 runs): a line naming where and when the
runs ran (CPU model, logical CPUs, torch threads per run, Python, torch and numpy versions, the dates, the code's
identity: all read from the records), then what ``optimlab compare`` prints of the folder (the answer, protocol,
table and notes, :func:`optimlab.lab.present.tables.format_summary`). While the folder holds no results the block
says so and names the command below. ``tests/lab/test_readme_tables.py`` checks that the README's block is what
this script writes, so a change to the statistics or the table asks for the README to be regenerated.

To regenerate, on a quiet machine, from the repository root (the coordinator does it after the final default run):

    rm -rf docs/results/default-compare
    python3 -m optimlab compare --out docs/results/default-compare
    python3 scripts/readme_tables.py                  # rewrites README.md's block and its two figures
    git add docs/results/default-compare/protocol.json docs/results/default-compare/results.jsonl README.md \
        docs/compare-mnist1d-cnn-answer.png docs/compare-mnist1d-cnn.png

The same run also draws the README's two figures of it, ``docs/compare-TASK-answer.png`` (the answer) and
``docs/compare-TASK.png`` (the learning curves), with the report's figure code (``--figures DIR`` puts them
elsewhere); commit them with the folder.

``python3 scripts/readme_tables.py --check`` rewrites nothing and exits 1 when the README's block differs from what
it would write (0 when equal). Run it with the optimlab whose numbers are wanted (``PYTHONPATH=src`` from a
checkout).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BEGIN", "END", "DEFAULT_RESULTS", "README", "block", "rewrite", "current", "figures", "main"]

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- begin: default-compare -->"
END = "<!-- end: default-compare -->"
DEFAULT_RESULTS = Path("docs/results/default-compare")
README = Path("README.md")
COMMAND = "python3 -m optimlab compare --out docs/results/default-compare && python3 scripts/readme_tables.py"


def _one_or_all(values: Sequence[object]) -> str:
    """The value every record agrees on, or all of them joined by ' / ' (in first-seen order)."""
    seen = list(dict.fromkeys(str(v) for v in values))
    return " / ".join(seen) if seen else "not recorded"


def _where_and_when(records: Sequence[object], folder: str) -> str:
    envs = [dict(r.environment) for r in records]  # type: ignore[attr-defined]

    def field(key: str) -> str:
        return _one_or_all([e[key] for e in envs if e.get(key) is not None])

    dates = sorted(str(e["date"]) for e in envs if e.get("date"))
    when = "dates not recorded" if not dates else dates[0][:10] if dates[0][:10] == dates[-1][:10] else (
        f"{dates[0][:10]} to {dates[-1][:10]}"
    )
    codes = [e.get("code") or {} for e in envs]
    sha = _one_or_all([c["source_sha256"][:12] for c in codes if c.get("source_sha256")])
    commits = [
        c["git"]["commit"][:10] + (" with changes" if c["git"].get("dirty") else "") for c in codes if c.get("git")
    ]
    code = f"optimlab sources sha256 {sha}" + (f" (git {_one_or_all(commits)})" if commits else "")
    return (
        f"Written by `scripts/readme_tables.py` from `{folder}/` ({len(records)} runs, {when} UTC) on "
        f"{field('cpu_model')}, {field('cpu_count')} logical CPUs, {field('torch_threads')} torch thread(s) per run; "
        f"Python {field('python')}, torch {field('torch')}, numpy {field('numpy')}; {code}."
    )


def block(results: Path, name: str | None = None) -> str:
    """The README's block (without its marker lines) for the results folder ``results``; ``name`` is how the block
    names the folder (default: ``results`` as given)."""
    folder = (name or str(results)).rstrip("/")
    if not (results / "protocol.json").exists() or not (results / "results.jsonl").exists():
        return (
            f"No results are committed in `{folder}/` yet, so there is no table here: the numbers of the default "
            f"comparison are written only from a committed run (`{COMMAND}`)."
        )
    from optimlab.lab.present.summary import summarize_study
    from optimlab.lab.present.tables import format_summary
    from optimlab.lab.study.tuning import load_study

    ts = summarize_study(load_study(results))
    records = [rec for r in ts.rows for rec in r.records] + [
        rec for r in ts.rows if r.selection is not None for rec in r.selection.trials
    ]
    return f"{_where_and_when(records, folder)}\n\n```\n{format_summary(ts)}\n```"


def figures(results: Path, folder: Path) -> list[Path]:
    """Draw the README's figures of the results folder ``results`` into ``folder``: the answer and the learning
    curves, as the report draws them; return the files written (none for a folder without results)."""
    if not (results / "protocol.json").exists() or not (results / "results.jsonl").exists():
        return []
    from optimlab.lab.present.report_figures import PLOTS
    from optimlab.lab.present.summary import summarize_study
    from optimlab.lab.study.tuning import load_study

    ts = summarize_study(load_study(results))
    task = ts.study.task.name
    written = []
    for name, file in (("answer", f"compare-{task}-answer.png"), ("curves", f"compare-{task}.png")):
        if PLOTS[name][0](ts, folder / file):
            written.append(folder / file)
    return written


def rewrite(text: str, new_block: str) -> str:
    """``text`` (a README) with the lines between its markers replaced by ``new_block``; a ``ValueError`` says
    what is wrong with the markers."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one line {BEGIN!r} and, after it, one line {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{new_block}\n{END}{tail}"


def current(text: str) -> str:
    """The block now between the markers of ``text`` (without the newlines next to the markers)."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    parser.add_argument("--readme", type=Path, default=README, help="README to rewrite (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if the block differs")
    parser.add_argument("--figures", type=Path, default=Path("docs"), help="folder of the README's figures")
    args = parser.parse_args(argv)
    results = args.results if args.results.is_absolute() else ROOT / args.results
    readme = args.readme if args.readme.is_absolute() else ROOT / args.readme
    try:
        text = readme.read_text(encoding="utf-8")
        new = rewrite(text, block(results, name=str(args.results)))
    except (OSError, ValueError) as e:
        print(f"readme_tables: {readme}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{readme}'s block differs from what {results} gives; run: python3 scripts/readme_tables.py")
            return 1
        print(f"{readme}'s block is what {results} gives")
        return 0
    if new != text:
        readme.write_text(new, encoding="utf-8")
    print(f"{readme}: block {'rewritten' if new != text else 'unchanged'} from {results}")
    out = args.figures if args.figures.is_absolute() else ROOT / args.figures
    try:
        for path in figures(results, out):
            print(f"figure: {path}")
    except OSError as e:
        print(f"readme_tables: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
