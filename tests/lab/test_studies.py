"""Selection noise in the answer (issue 22): ``--studies N`` repeats the whole tuning N times (AlgoPerf's rule),
each study with its own quasi-random shift, tuning seeds and final seeds; the answer is the median of the study
means with a two-level bootstrap interval; one study is exactly the runs of before; more studies in a folder run
only the new ones; and how often each selected setting sits at the edge of the values tried is reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from optimlab.lab.commands.cli import main
from optimlab.lab.present import stats
from optimlab.lab.present.summary import edge_report, summarize_study
from optimlab.lab.present.tables import format_summary, summary_notes, write_csv
from optimlab.lab.study.cost import planned_configs
from optimlab.lab.study.folder import check_folder, register_optimizers
from optimlab.lab.study.protocol import STUDY_SEED_STRIDE, TUNING_SEED_BASE, Protocol, default_protocol
from optimlab.lab.study.selection import Selection
from optimlab.lab.study.tuning import OptimizerResult, StudyResult, load_study
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import load_records

# a tuned comparison on the deterministic 2-D quadratic: 3 trials of 8 steps, one final run of 20 steps
QUAD = ["--task", "quadratic", "--steps", "20", "--budget", "3", "--optimizers", "adam,sgd", "--no-progress",
        "--jobs", "1"]


# ------------------------------------------------------------------------------------------------
# the hierarchical bootstrap


def test_the_two_level_bootstrap_on_hand_cases() -> None:
    # two studies of means 0 and 1: the median of a resample is 0 (both draws study 0: 1/4), 1 (1/4) or 0.5
    ci = stats.hierarchical_bootstrap_ci([[0.0, 0.0], [1.0, 1.0]])
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.5, 0.0, 1.0, 2)
    assert ci.sd == pytest.approx(np.std([0.0, 1.0], ddof=1))
    # three studies: the median of the study means, not the mean of the seeds (10 would pull the mean to 4.3)
    assert stats.hierarchical_bootstrap_ci([[1.0, 2.0, 3.0], [1.5, 2.5], [10.0]]).mean == 2.0
    # one study: a bootstrap over its seeds; one value: no interval
    one = stats.hierarchical_bootstrap_ci([[1.0, 2.0, 3.0]])
    assert one.mean == 2.0 and 1.0 <= one.low < 2.0 < one.high <= 3.0
    single = stats.hierarchical_bootstrap_ci([[4.0]])
    assert single.mean == 4.0 and np.isnan(single.low) and np.isnan(single.high)
    # pure and seeded: the same groups give the same interval
    g = [list(np.linspace(0.9, 0.93, 7) + 0.01 * k) for k in range(4)]
    assert stats.hierarchical_bootstrap_ci(g) == stats.hierarchical_bootstrap_ci(g)
    assert stats.hierarchical_bootstrap_ci(g, resamples=500, seed=1) != stats.hierarchical_bootstrap_ci(
        g, resamples=500, seed=2)
    # bounds inside the values' range (an accuracy interval stays in [0, 1])
    acc = stats.hierarchical_bootstrap_ci([[0.99, 1.0, 1.0], [1.0, 1.0], [0.1, 0.12]])
    assert 0.1 <= acc.low <= acc.high <= 1.0


@pytest.mark.parametrize("groups, match", [([], "groups"), ([[1.0], []], r"groups\[1\]"),
                                           ([[1.0, float("nan")]], r"groups\[0\]")])
def test_the_two_level_bootstrap_refuses_bad_input(groups, match) -> None:
    with pytest.raises(ValueError, match=match):
        stats.hierarchical_bootstrap_ci(groups)
    with pytest.raises(ValueError, match="resamples"):
        stats.hierarchical_bootstrap_ci([[1.0, 2.0]], resamples=10)


def test_the_interval_widens_when_the_study_means_differ() -> None:
    """Simulation: 3 studies of 5 seeds with the same seed noise; as the study means move apart, the two-level
    interval widens with them, while a bootstrap of the pooled seeds barely does (it treats the selection as
    fixed); and with equal study means its width is that of the seed noise."""
    rng = np.random.default_rng(0)
    widths, pooled = [], []
    for spread in (0.0, 0.02, 0.05, 0.1):
        w, p = [], []
        for _ in range(30):
            groups = [list(0.9 + spread * k + 0.005 * rng.standard_normal(5)) for k in (-1, 0, 1)]
            ci = stats.hierarchical_bootstrap_ci(groups, resamples=1000, seed=int(rng.integers(1 << 30)))
            w.append(ci.high - ci.low)
            pc = stats.bootstrap_ci([v for g in groups for v in g], resamples=1000)
            p.append(pc.high - pc.low)
        widths.append(float(np.mean(w)))
        pooled.append(float(np.mean(p)))
    assert widths == sorted(widths) and widths[-1] > 10 * widths[0]
    assert widths[-1] > 0.75 * 2 * 0.1  # covers most of the range of the study means (-0.1..+0.1)
    assert widths[-1] > 2 * pooled[-1]


# ------------------------------------------------------------------------------------------------
# the protocol: study 0 is today's runs, study s its own shift and seeds


def test_one_study_gives_exactly_the_config_keys_of_before_and_each_study_its_own() -> None:
    one = default_protocol("mnist1d-mlp")
    three = default_protocol("mnist1d-mlp", studies=3)
    assert one.studies == 1 and one.study_protocols() == [one]
    s0, s1, s2 = three.study_protocols()
    for spec in ("adam", "sgdm"):
        assert [c.key() for c in s0.tuning_configs(spec)] == [c.key() for c in one.tuning_configs(spec)]
        assert [c.key() for c in s0.final_configs(spec, 1e-3, {})] == [
            c.key() for c in one.final_configs(spec, 1e-3, {})]
        # its own quasi-random shift and tuning seeds
        assert s1.trial_settings(spec) != s0.trial_settings(spec) != s2.trial_settings(spec)
        assert {c.seed for c in s1.tuning_configs(spec)} == {TUNING_SEED_BASE + 1000 + j for j in range(6)}
    # disjoint final seeds: study s runs seeds + s * STUDY_SEED_STRIDE
    assert s1.seeds == tuple(x + STUDY_SEED_STRIDE for x in one.seeds) and s2.seeds[0] == 2 * STUDY_SEED_STRIDE
    # the plan counts every study
    assert len(planned_configs(three, ["adam"])) == 3 * len(planned_configs(one, ["adam"]))
    # a protocol.json written before (no "studies") reads back as one study
    d = one.to_dict()
    del d["studies"]
    assert Protocol.from_dict(d) == one
    assert "3 independent studies" in three.describe() and "studies" not in one.describe()


@pytest.mark.parametrize("fields, match", [
    ({"studies": 0}, "studies"), ({"studies": True}, "studies"), ({"studies": 2.0}, "studies"),
    ({"studies": 2, "tuning": "none"}, "studies"), ({"studies": 3, "study": 998}, "studies"),
    ({"studies": 2, "seeds": (0, STUDY_SEED_STRIDE)}, "seeds"),
])
def test_bad_studies_are_refused_naming_the_argument(fields, match) -> None:
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        default_protocol("mnist1d-mlp", **fields)


def test_a_folder_accepts_more_studies_and_an_old_folder_still_loads(tmp_path: Path) -> None:
    register_optimizers(tmp_path, default_protocol("mnist1d-mlp"), ["adam"])
    manifest = json.loads((tmp_path / "protocol.json").read_text())
    del manifest["protocol"]["studies"]  # as a folder made before this field
    (tmp_path / "protocol.json").write_text(json.dumps(manifest))
    assert check_folder(tmp_path, default_protocol("mnist1d-mlp", studies=3)) == ["adam"]


def test_an_old_folder_gives_the_same_summary(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    assert main(["compare", *QUAD, "--out", str(out)]) == 0
    capsys.readouterr()
    today = format_summary(summarize_study(load_study(out)))
    manifest = json.loads((out / "protocol.json").read_text())
    del manifest["protocol"]["studies"]  # a folder written before the field existed
    (out / "protocol.json").write_text(json.dumps(manifest))
    old = load_study(out)
    assert old.protocol.studies == 1 and old.stale == 0 and old.complete
    assert format_summary(summarize_study(old)) == today
    # and the command on it runs nothing
    assert main(["compare", *QUAD, "--out", str(out)]) == 0
    assert "still to do: 0 runs" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# two studies end to end, and a third added to the folder


def _trials(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.config.seed >= TUNING_SEED_BASE]


def test_two_studies_run_twice_the_tuning_and_the_answer_spans_both(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q2"
    assert main(["compare", *QUAD, "--studies", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "plan: 12 tuning trials + 4 final runs (2 studies)" in printed
    records = load_records(out)
    trials, finals = _trials(records), [r for r in records if r.config.seed < TUNING_SEED_BASE]
    assert len(trials) == 2 * 2 * 3 and len(finals) == 2 * 2
    for spec in ("adam", "sgd"):
        by_study = {k: sorted(r.config.lr for r in trials if r.config.optimizer == spec
                              and (r.config.seed - TUNING_SEED_BASE) // 1000 == k) for k in (0, 1)}
        assert len(by_study[0]) == len(by_study[1]) == 3 and by_study[0] != by_study[1]  # other shifts
        assert sorted(r.config.seed for r in finals if r.config.optimizer == spec) == [0, STUDY_SEED_STRIDE]
    study = load_study(out)
    summary = summarize_study(study)
    for row in summary.rows:
        assert row.studies == 2 and len(row.study_means) == 2
        values = [v[0] for v in row.study_values]
        assert row.headline == stats.hierarchical_bootstrap_ci([[v] for v in values])
        assert row.headline.low == pytest.approx(min(values)) and row.headline.high == pytest.approx(max(values))
        assert row.tuning_trials == 6
    assert summary.comparison is not None and all(v.n == 2 for v in summary.comparison.verdicts.values())
    assert "median of 2 tuning studies' means" in printed
    for row in summary.rows:  # each study's selection is shown
        note = next(line for line in printed.splitlines() if f"{row.spec}: selected per study: " in line)
        picks = note.split("selected per study: ")[1].split("; study means ")[0].split(" | ")
        assert [p.split(",")[0] for p in picks] == [f"lr {s.lr:.3g}" for s in row.selections]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["studies"] == "2" and len(r["study_means"].split()) == 2 for r in rows)


def test_more_studies_in_a_folder_run_only_the_new_study(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q3"
    assert main(["compare", *QUAD, "--studies", "2", "--out", str(out)]) == 0
    before = {r.key for r in load_records(out)}
    capsys.readouterr()
    assert main(["compare", *QUAD, "--studies", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "still to do: 8 runs" in printed  # one study: 2 x (3 trials + 1 final run)
    new = [r for r in load_records(out) if r.key not in before]
    assert before <= {r.key for r in load_records(out)} and len(new) == 8
    assert {(r.config.seed - TUNING_SEED_BASE) // 1000 for r in _trials(new)} == {2}
    assert {r.config.seed for r in new if r.config.seed < TUNING_SEED_BASE} == {2 * STUDY_SEED_STRIDE}
    assert all(row.studies == 3 for row in summarize_study(load_study(out)).rows)


# ------------------------------------------------------------------------------------------------
# verdicts on the study means, and the edge report


def _final(spec: str, seed: int, value: float) -> RunRecord:
    config = {"task": "mnist1d-mlp", "optimizer": spec, "lr": 1e-3, "seed": seed, "steps": 10, "batch_size": 10,
              "eval_every": 10, "schedule": "constant", "hparams": [], "splits": ["train", "val", "test"]}
    history = {"step": [0, 10], "time": [0.0, 1.0], "cpu": [0.0, 1.0], "train_accuracy": [0.1, value],
               "val_accuracy": [0.1, value], "train_loss": [2.3, 0.5]}
    return RunRecord.from_json({"version": 2, "key": f"{spec}-{seed}", "config": config, "status": "ok",
                                "metric": "accuracy", "history": history, "test": {"accuracy": value, "loss": 0.5}})


def _studies(values: dict[str, list[list[float]]], sides: dict[str, list[dict[str, str]]] | None = None
             ) -> StudyResult:
    n = len(next(iter(values.values())))
    p = default_protocol("mnist1d-mlp", studies=n, seeds=tuple(range(len(next(iter(values.values()))[0]))))
    results = {}
    for spec, groups in values.items():
        per = []
        for s, g in enumerate(groups):
            side = (sides or {}).get(spec, [{}] * n)[s]
            sel = Selection(spec, 1e-3, {}, True, edge_sides=side)
            per.append(OptimizerResult(spec, None, sel, [_final(spec, s * STUDY_SEED_STRIDE + i, v)
                                                         for i, v in enumerate(g)], len(g)))
        results[spec] = OptimizerResult(spec, None, per[0].selection, [r for x in per for r in x.finals],
                                        sum(len(g) for g in groups), per_study=per)
    return StudyResult(p, results)


def test_the_verdicts_take_the_study_means_as_units() -> None:
    # within a study the seeds agree to 0.1 point, but re-tuning moved b by 2 points: pooled seeds would call b
    # worse than a (0.6 point apart, 15 seeds each); three study means cannot
    a = [[0.950, 0.951, 0.950, 0.951, 0.950]] * 3
    b = [[0.934, 0.935, 0.934, 0.935, 0.934], [0.954, 0.955, 0.954, 0.955, 0.954], [0.944, 0.945, 0.944, 0.945, 0.944]]
    summary = summarize_study(_studies({"adam": a, "sgd": b}))
    verdict = summary.comparison.verdicts["sgd"]
    assert summary.comparison.best == "adam" and verdict.label == "inconclusive" and verdict.n == 3
    pooled = stats.classify({"adam": [v for g in a for v in g], "sgd": [v for g in b for v in g]},
                            higher_is_better=True, margin=0.001)
    assert pooled.verdicts["sgd"].label == "worse"  # what pooling the seeds would have said
    row = next(r for r in summary.rows if r.spec == "sgd")
    assert row.headline.mean == pytest.approx(0.9444)  # the median study: (3 * 0.944 + 2 * 0.945) / 5
    assert row.headline.low < 0.94 and row.headline.high > 0.95


def test_the_edge_report_counts_the_studies(tmp_path: Path) -> None:
    g = [[0.95, 0.96]] * 3
    sides = {"adam": [{"lr": "upper"}, {"lr": "upper"}, {"lr": "lower", "beta2": "lower"}]}
    summary = summarize_study(_studies({"adam": g, "sgd": g}, sides))
    rows = {r.spec: r for r in summary.rows}
    assert edge_report(rows["adam"]) == (
        "beta2 at the lower edge in 1/3 studies; lr at the lower edge in 1/3 studies; "
        "lr at the upper edge in 2/3 studies"
    )
    assert edge_report(rows["sgd"]) == ""
    notes = summary_notes(summary)
    assert any(n.startswith("adam: selected setting at the edge") and "lr at the upper edge in 2/3 studies" in n
               for n in notes)
    assert not any(n.startswith("sgd:") and "edge" in n for n in notes)
    write_csv(summary, tmp_path / "s.csv")
    with open(tmp_path / "s.csv") as f:
        csv_rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert "lr at the upper edge in 2/3 studies" in csv_rows["adam"]["edge_studies"]
    assert csv_rows["sgd"]["edge_studies"] == ""


def test_the_edge_report_with_one_study(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    assert main(["compare", *QUAD, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = summarize_study(load_study(out))
    with open(out / "summary.csv") as f:
        csv_rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    for row in summary.rows:
        sides = row.selection.edge_sides
        expected = "; ".join(f"{k} at the {v} edge in 1/1 study" for k, v in sorted(sides.items()))
        assert edge_report(row) == expected and csv_rows[row.spec]["edge_studies"] == expected
        assert csv_rows[row.spec]["studies"] == "1"
        if expected:
            assert f"{row.spec}: selected setting at the edge of the values tried: {expected}" in printed
    assert any(r.selection.edge_sides for r in summary.rows)  # the case is exercised


def test_more_studies_go_to_the_folder_of_one_study() -> None:
    from optimlab.lab.commands.compare import _default_out

    one, three = default_protocol("mnist1d-cnn"), default_protocol("mnist1d-cnn", studies=3)
    assert _default_out(three) == _default_out(one) == Path("optimlab-runs/mnist1d-cnn")
    assert _default_out(default_protocol("mnist1d-cnn", studies=3, steps=500)) == Path(
        "optimlab-runs/mnist1d-cnn-steps500")
