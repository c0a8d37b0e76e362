"""Issue 22: ``optimlab compare --lengths``: one study per training length, each tuned on its own, resumable, and a
rank table across lengths that says whether the answer changes with the length."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from optimlab.lab.commands.cli import main
from optimlab.lab.commands.compare import parse_lengths
from optimlab.lab.present.lengths import kendall_tau, rank_table, ranking_sentence, ranks

SMALL = ["--task", "mnist1d-mlp", "--eval-every", "10", "--seeds", "2", "--budget", "1"]
SMALL += ["--batch-size", "50", "--no-progress", "--jobs", "1", "--optimizers", "sgdm", "adam"]


def _summary(means: dict[str, float | None], best: str, members: tuple[str, ...], higher: bool = True):
    """A stand-in of a TaskSummary with the fields the rank table reads (rows' spec and headline, the best set)."""
    rows = [SimpleNamespace(spec=s, headline=None if m is None else SimpleNamespace(mean=m)) for s, m in means.items()]
    return SimpleNamespace(rows=rows, higher_is_better=higher, members=list(members),
                           best=SimpleNamespace(best=best, members=members))


def test_ranks_follow_the_metric_direction_and_skip_optimizers_without_a_headline() -> None:
    ts = _summary({"a": 0.9, "b": 0.95, "c": None, "d": 0.9}, "b", ("b",))
    assert ranks(ts) == {"b": 1, "a": 2, "d": 2}  # ties share the better rank
    loss = _summary({"a": 3.0, "b": 2.0}, "b", ("b",), higher=False)
    assert ranks(loss) == {"b": 1, "a": 2}


def test_kendall_tau_by_hand() -> None:
    assert kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3}) == 1.0
    assert kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}) == -1.0
    assert kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 3, "c": 2}) == pytest.approx(1 / 3)  # (2 - 1) / 3
    assert kendall_tau({"a": 1}, {"a": 1, "b": 2}) is None


def test_the_rank_table_marks_best_sets_and_the_sentence_says_whether_the_answer_changes() -> None:
    short = _summary({"sgdm": 0.90, "adam": 0.93, "soap": 0.92}, "adam", ("adam", "soap"))
    long = _summary({"sgdm": 0.96, "adam": 0.94, "soap": 0.95}, "sgdm", ("sgdm",))
    header, rows = rank_table({1000: long, 400: short})
    assert header == ["optimizer", "400 steps", "1000 steps"]
    assert rows == [["sgdm", "3", "1 *"], ["soap", "2 *", "2"], ["adam", "1 *", "3"]]
    text = ranking_sentence({400: short, 1000: long})
    assert "adam at 400, sgdm at 1000 steps" in text
    assert "the answer changes with the length: adam, the best at 400 steps, is outside the best set at 1000" in text
    assert "Kendall's tau of the rankings at 400 and 1000 steps: -1.00" in text
    tie = _summary({"sgdm": 0.96, "adam": 0.95}, "sgdm", ("sgdm", "adam"))
    both = _summary({"sgdm": 0.90, "adam": 0.93}, "adam", ("adam", "sgdm"))
    assert "no clear change" in ranking_sentence({400: both, 1000: tie})
    assert "the same best optimizer at every length" in ranking_sentence({400: long, 1000: long})


@pytest.mark.parametrize(
    ("value", "message"),
    [("400,abc", "comma-separated step counts"), ("0,100", "positive"), ("100,100", "each length once"),
     (",", "positive")],
)
def test_bad_lengths_are_one_line_not_a_traceback(value: str, message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match=message):
        parse_lengths(value)
    assert main(["compare", *SMALL, "--lengths", value, "--dry-run", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optimlab: error: Invalid --lengths") and "Traceback" not in err


def test_lengths_conflict_with_steps_and_with_a_single_study_folder(tmp_path: Path, capsys) -> None:
    assert main(["compare", *SMALL, "--lengths", "20,30", "--steps", "20", "--dry-run"]) == 2
    assert "--lengths conflicts with --steps" in capsys.readouterr().err
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "protocol.json").write_text("{}")
    assert main(["compare", *SMALL, "--lengths", "20,30", "--dry-run", "--out", str(tmp_path / "one")]) == 2
    assert "holds the results of one study" in capsys.readouterr().err
    assert parse_lengths(" 2500, 400,1000") == (400, 1000, 2500)


def test_compare_at_several_lengths_tunes_each_resumes_and_reports_the_ranks(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lengths"
    # one length run first as a plain study in its sub-folder: --lengths reuses its runs (only what is missing runs)
    assert main(["compare", *SMALL, "--steps", "20", "--out", str(out / "steps-20")]) == 0
    first = (out / "steps-20" / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(["compare", *SMALL, "--lengths", "30,20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "20 steps -> " in text and "still to do: 0 runs" in text.split("30 steps ->")[0]
    assert (out / "steps-20" / "results.jsonl").read_text() == first  # nothing ran again at 20 steps
    records = [json.loads(x) for x in (out / "steps-30" / "results.jsonl").read_text().splitlines()]
    assert {r["config"]["steps"] for r in records if "test" in r["config"]["splits"]} == {30}
    assert {r["config"]["steps"] for r in records if "test" not in r["config"]["splits"]} == {12}  # 40 % of 30
    assert "rank by headline mean at each training length" in text and "20 steps  30 steps" in text
    assert "best: " in text and "Kendall's tau of the rankings at 20 and 30 steps" in text
    page = (out / "report.html").read_text()
    assert "20 steps" in page and "30 steps" in page and "steps-20/report.html" in page
    assert (out / "steps-30" / "report.html").exists()
    sub = (out / "steps-30" / "report.html").read_text()
    assert "What was tuned" in sub and "one_minus_beta1 0.02..0.5 (log)" in sub
    # again: nothing left to run
    assert main(["compare", *SMALL, "--lengths", "20,30", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("still to do: 0 runs") == 2
