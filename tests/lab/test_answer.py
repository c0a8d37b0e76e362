"""The comparison's answer (issue 22): unstable optimizers are labelled and kept out of the best set, intervals
stay inside the metric's range, the headline never calls a wide sample a peer, and more seeds in an existing
folder run only the new runs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from lab_args import TINY

from optimlab.lab.commands.cli import main
from optimlab.lab.present.summary import summarize_study
from optimlab.lab.present.tables import format_summary, headline_sentence, summary_table, write_csv
from optimlab.lab.study.folder import check_folder, register_optimizers
from optimlab.lab.study.protocol import ProtocolMismatchError, default_protocol
from optimlab.lab.study.selection import Selection
from optimlab.lab.study.tuning import OptimizerResult, StudyResult
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import load_records

SOAP = [0.946, 0.952, 0.957, 0.962, 0.966]
LARS = [0.096, 0.112, 0.853, 0.871, 0.897]  # issue 22's LARS: bimodal, two seeds at chance


def _final(spec: str, seed: int, test: float | None, status: str = "ok") -> RunRecord:
    """A final run's record written by hand: untrained at 10 % (chance for 10 classes), then ``test``."""
    config = {"task": "mnist1d-mlp", "optimizer": spec, "lr": 1e-3, "seed": seed, "steps": 10, "batch_size": 10,
              "eval_every": 10, "schedule": "constant", "hparams": [], "splits": ["train", "val", "test"]}
    history = {"step": [0, 10], "time": [0.0, 1.0], "cpu": [0.0, 1.0], "train_accuracy": [0.1, test],
               "val_accuracy": [0.1, test], "train_loss": [2.3, None if test is None else 0.5]}
    return RunRecord.from_json({"version": 2, "key": f"{spec}-{seed}", "config": config, "status": status,
                                "metric": "accuracy", "history": history,
                                "test": None if test is None else {"accuracy": test, "loss": 0.5}})


def _study(values: dict[str, list[float | None]], **protocol) -> StudyResult:
    p = default_protocol("mnist1d-mlp", **protocol)
    results = {}
    for spec, vs in values.items():
        finals = [_final(spec, i, v, "ok" if v is not None else "diverged") for i, v in enumerate(vs)]
        sel = Selection(spec, 1e-3, {}, True)
        results[spec] = OptimizerResult(spec, None, sel, finals, expected_finals=len(vs))
    return StudyResult(p, results)


def _intervals(text: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\]", text)]


def test_the_lars_case_is_unstable_out_of_the_best_set_and_no_interval_leaves_the_range(tmp_path: Path) -> None:
    values: dict[str, list[float | None]] = {
        "soap": SOAP,
        "adam": [0.947, 0.951, 0.958, 0.961, 0.965],
        "sgd": [0.900, 0.902, 0.905, 0.898, 0.903],
        "lars": LARS,
        "lion": [0.95, None, 0.96, None, 0.955],
    }
    ts = summarize_study(_study(values))
    rows = {r.spec: r for r in ts.rows}
    assert rows["lars"].at_chance == 2 and rows["lars"].diverged == 0
    assert rows["lars"].verdict.label == "unstable" and not rows["lars"].in_best_set
    assert rows["lars"].seeds_text() == "3/5 ok; 2 at chance"
    assert rows["lion"].verdict.label == "unstable" and rows["lion"].seeds_text() == "3/5 ok; 2 diverged"
    assert rows["sgd"].verdict.label == "worse"
    assert ts.best.best == "soap" and set(ts.members) <= {"soap", "adam"} and "lars" not in ts.members
    # the failed seeds are not averaged in: LARS's interval is over its 3 trained seeds
    assert rows["lars"].headline.n == 3 and rows["lars"].headline.low >= 0.853
    sentence = headline_sentence(ts)
    assert sentence.startswith("mnist1d-mlp: best soap")
    peers = sentence.split("as good as it", 1)[1].split(";")[0] if "as good as it" in sentence else ""
    assert "lars" not in peers and "lion" not in peers
    assert "unstable" in sentence and "lars (3/5 ok; 2 at chance)" in sentence and "1 pp" in sentence
    printed = format_summary(ts)
    for low, high in _intervals(printed):
        assert 0.0 <= low <= high <= 100.0, (low, high)
    header, table = summary_table(ts)
    ci_col = next(i for i, h in enumerate(header) if "95% CI" in h)
    assert all(_intervals(row[ci_col]) or row[ci_col] == "-" for row in table)
    write_csv(ts, tmp_path / "s.csv")
    with open(tmp_path / "s.csv") as f:
        for row in csv.DictReader(f):
            assert 0.0 <= float(row["headline_low"]) <= float(row["headline_high"]) <= 1.0
            assert row["verdict"] in ("best", "as good as", "worse", "inconclusive", "unstable")


def test_the_whole_bimodal_sample_is_never_a_peer_even_when_no_seed_counts_as_failed() -> None:
    values = {"soap": SOAP, "lars": [0.696, 0.712, 0.853, 0.871, 0.897]}  # every seed trained, widely spread
    ts = summarize_study(_study(values))
    rows = {r.spec: r for r in ts.rows}
    assert rows["lars"].failed == 0 and rows["lars"].verdict.label in ("worse", "inconclusive")
    assert ts.members == ["soap"]
    assert "no other optimizer is shown within 1 pp of it" in headline_sentence(ts)
    for low, high in _intervals(format_summary(ts)):
        assert 0.0 <= low <= high <= 100.0


def test_the_margin_is_declared_in_the_protocol_and_checked() -> None:
    assert default_protocol("mnist1d-mlp").margin_value == 0.01
    assert default_protocol("shakespeare-char").margin_value == pytest.approx(0.02 * 6)
    assert default_protocol("mnist1d-mlp", margin=0.005).margin_value == 0.005
    for bad in (0.0, -1.0, float("nan"), 1.5, True):
        with pytest.raises(ValueError, match="Invalid margin"):
            default_protocol("mnist1d-mlp", margin=bad)
    # a wider margin makes a near optimizer "as good as"; the margin is printed in the answer
    values = {"soap": SOAP, "adam": [0.937, 0.941, 0.948, 0.951, 0.955]}
    narrow = summarize_study(_study(values, margin=0.002))
    wide = summarize_study(_study(values, margin=0.05))
    assert "adam" not in narrow.members and "adam" in wide.members
    assert "within 5 pp" in headline_sentence(wide)


def test_more_seeds_or_another_margin_are_accepted_in_a_folder_and_other_steps_refused(tmp_path: Path) -> None:
    p = default_protocol("mnist1d-mlp", seeds=(0, 1))
    register_optimizers(tmp_path, p, ["adam"])
    assert check_folder(tmp_path, default_protocol("mnist1d-mlp", seeds=(0, 1, 2))) == ["adam"]
    assert check_folder(tmp_path, default_protocol("mnist1d-mlp", seeds=(0, 1), margin=0.02, alpha=0.1)) == ["adam"]
    with pytest.raises(ProtocolMismatchError, match="steps: 3000 there, 100 now"):
        check_folder(tmp_path, default_protocol("mnist1d-mlp", seeds=(0, 1), steps=100))


def test_a_forced_divergence_is_labelled_unstable_by_the_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    argv = ["compare", "--task", "quadratic", "--tuning", "none", "--optimizers", "adam@lr=0.1,sgd@lr=1e3",
            "--steps", "200", "--no-progress", "--jobs", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    answer = next(line for line in printed.splitlines() if line.startswith("quadratic: best "))
    assert answer.startswith("quadratic: best adam@lr=0.1") and "unstable" in answer and "sgd@lr=1e3 (0/1 ok" in answer
    with open(out / "summary.csv") as f:
        rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert rows["sgd@lr=1e3"]["verdict"] == "unstable" and rows["sgd@lr=1e3"]["in_best_set"] == "False"


def test_more_seeds_in_a_finished_folder_run_only_the_new_runs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "f"
    base = [*TINY, "--steps", "10", "--eval-every", "10", "--budget", "2", "--optimizers", "adam", "--out", str(out)]
    assert main(["compare", *base, "--seeds", "2"]) == 0
    before = {r.key for r in load_records(out)}
    assert len(before) == 2 + 2
    capsys.readouterr()
    assert main(["compare", *base, "--seeds", "3"]) == 0
    printed = capsys.readouterr().out
    after = {r.key for r in load_records(out)}
    assert len(after) == len(before) + 1 and before <= after
    assert "still to do: 1 run" in printed
