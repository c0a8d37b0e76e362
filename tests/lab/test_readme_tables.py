"""``scripts/readme_tables.py``: the README's table of the default comparison is written from a committed results
folder, and the README holds exactly what the script writes (issue 22)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_block_is_what_the_script_writes_from_the_committed_folder() -> None:
    """Real, not skipped: while ``docs/results/default-compare`` is absent the block must say so (and show no
    number); once the folder is committed, the block must be its table."""
    rt = _script()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    expected = rt.block(ROOT / rt.DEFAULT_RESULTS, name=str(rt.DEFAULT_RESULTS))
    assert rt.current(text) == expected, "the README's block is stale: run python3 scripts/readme_tables.py"
    assert rt.rewrite(text, expected) == text


def test_the_script_writes_the_table_of_a_results_folder_with_its_machine_and_versions(tiny_study, tmp_path) -> None:
    from optimlab.lab.present.summary import summarize_study
    from optimlab.lab.present.tables import format_summary
    from optimlab.lab.study.tuning import load_study
    from optimlab.lab.training.runner import environment

    rt = _script()
    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("protocol.json", "results.jsonl"):  # the two files a committed folder holds
        shutil.copy(tiny_study[0] / name, folder / name)
    block = rt.block(folder, name="docs/results/tiny")
    table = format_summary(summarize_study(load_study(folder)))
    env = environment()
    head, body = block.split("\n\n", 1)
    assert body == f"```\n{table}\n```"
    assert head.startswith("Written by `scripts/readme_tables.py` from `docs/results/tiny/` (")
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    days = sorted({r["environment"]["date"][:10] for r in records})
    when = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    for part in (f"({len(records)} runs, {when} UTC)", f"on {env['cpu_model']}, {env['cpu_count']} logical CPUs",
                 f"torch {env['torch']}", f"numpy {env['numpy']}", f"Python {env['python']}",
                 f"sha256 {env['code']['source_sha256'][:12]}", "torch thread(s) per run"):
        assert part in head, (part, head)

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{rt.BEGIN}\nhand-typed numbers\n{rt.END}\nafter\n", encoding="utf-8")
    args = ["--results", str(folder), "--readme", str(readme), "--figures", str(tmp_path / "docs")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert rt.main([*args, "--check"]) == 1  # differs: nothing written
        assert "hand-typed numbers" in readme.read_text()
        assert rt.main(args) == 0
        written = readme.read_text()
        assert rt.main([*args, "--check"]) == 0
        assert rt.main(args) == 0 and readme.read_text() == written  # idempotent
    assert written.startswith("# title\n\nbefore\n") and written.endswith(f"\n{rt.END}\nafter\n")
    assert rt.current(written).split("\n\n", 1)[1] == f"```\n{table}\n```"
    assert "hand-typed" not in written
    task = load_study(folder).task.name
    drawn = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert drawn == [f"compare-{task}-answer.png", f"compare-{task}.png"]


@pytest.mark.parametrize("text", ["no markers\n", "<!-- begin: default-compare -->\nonly a start\n",
                                  "<!-- end: default-compare -->\n<!-- begin: default-compare -->\n"])
def test_a_readme_without_its_markers_is_refused_with_a_message(tmp_path, capsys, text) -> None:
    rt = _script()
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    assert rt.main(["--results", str(tmp_path / "none"), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "expected one line '<!-- begin: default-compare -->'" in err and "Traceback" not in err
    assert readme.read_text() == text
