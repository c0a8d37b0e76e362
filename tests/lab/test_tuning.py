"""The tuning protocol: search spaces and trial points, selection on validation only (the test split is never
read before selection), the results folder (protocol kept with the results, mismatches refused), resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from optimlab.lab.catalog.presets import DEFAULT_OPTIMIZERS, PRESETS, search_space
from optimlab.lab.catalog.space import MIN_LR_DECADES, Param, SearchSpace, halton, parse_space, trial_points
from optimlab.lab.catalog.tasks import ClassificationTask, get_task
from optimlab.lab.executors.local import LocalExecutor
from optimlab.lab.study import tuning
from optimlab.lab.study.cost import estimate_cost, remaining_configs
from optimlab.lab.study.protocol import TUNING_SEED_BASE, Protocol, ProtocolMismatchError, default_protocol
from optimlab.lab.study.selection import select
from optimlab.lab.study.tuning import load_study, tune_and_run
from optimlab.lab.training.record import RunRecord
from optimlab.lab.training.results import load_records

TINY = dict(steps=40, eval_every=20, budget=3, seeds=(0, 1), batch_size=50)


def test_every_preset_has_a_search_space_of_at_least_two_decades_around_it() -> None:
    for name, preset in PRESETS.items():
        lr = search_space(name).lr
        assert lr.log and lr.low <= preset.lr <= lr.high and lr.decades >= MIN_LR_DECADES, name
    for spec in DEFAULT_OPTIMIZERS:
        assert search_space(spec).params[0].name == "lr"
    assert [p.name for p in search_space("adamw").params] == ["lr", "weight_decay"]
    assert [p.name for p in search_space("adamw@weight_decay=0.1").params] == ["lr"]  # fixed by the spec
    assert search_space("adam@lr=1e-2").lr.low == pytest.approx(1e-3)  # centred on the override


def test_halton_points_are_stratified_deterministic_and_differ_by_study() -> None:
    pts = halton(8, 1, seed=0)[:, 0]
    # 8 points of the base-2 sequence, shifted: exactly one in each eighth of [0, 1)
    assert sorted(int(8 * u) for u in pts) == list(range(8))
    assert (halton(8, 2, seed=3) == halton(8, 2, seed=3)).all()
    space = search_space("adam")
    a, b = trial_points(space, 8, "quasirandom", study=0), trial_points(space, 8, "quasirandom", study=1)
    assert a != b and len(a) == 8
    assert all(space.lr.low <= p["lr"] <= space.lr.high for p in a + b)
    grid = trial_points(space, 4, "grid")
    assert [p["lr"] for p in grid] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Param("lr", 1e-3, 1e-3), "empty"),
        (lambda: Param("lr", 1e-1, 1e-3), "inverted"),
        (lambda: Param("lr", 0.0, 1.0), "expected > 0"),
        (lambda: Param("lr", 1e-3, math.inf), "finite"),
        (lambda: SearchSpace((Param("momentum", 0.8, 0.99, log=False),)), "the lr first"),
        (lambda: trial_points(search_space("adam"), 0), "at least 1 trial"),
        (lambda: parse_space("adam"), "expected OPTIMIZER:NAME=LOW..HIGH"),
        (lambda: parse_space("adam:lr=1e-3"), "NAME=LOW..HIGH"),
        (lambda: parse_space("adam:lr=a..b"), "must be numbers"),
        (lambda: default_protocol("mnist1d-mlp", budget=0), "at least 1 trial"),
        (lambda: default_protocol("mnist1d-mlp", target=1.5), "can only reach 0 < target <= 1"),
        (lambda: default_protocol("shakespeare-char", target=0.5), "target >= 1"),
        (lambda: default_protocol("rosenbrock", seeds=(0, 1)), "deterministic"),
        (lambda: default_protocol("mnist1d-mlp", seeds=(1, 1)), "distinct"),
        (lambda: default_protocol("mnist1d-mlp", tuning="random"), "expected one of"),
        (lambda: default_protocol("cifar"), "unknown task 'cifar'"),
    ],
)
def test_bad_spaces_and_protocols_raise_one_clear_message(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def _trial(lr: float, val: float | None, status: str = "ok", wd: float | None = None, task: str = "mnist1d-mlp",
           metric: str = "accuracy", first: float = 0.1) -> RunRecord:
    """A tuning trial's record, written by hand: only what selection reads is meaningful."""
    config = {"task": task, "optimizer": "adam", "lr": lr, "seed": TUNING_SEED_BASE, "steps": 10, "batch_size": 10,
              "eval_every": 10, "schedule": "constant", "hparams": [] if wd is None else [["weight_decay", wd]],
              "splits": ["val"]}
    return RunRecord.from_json({"version": 2, "key": f"trial-{lr}", "config": config, "status": status,
                                "metric": metric, "history": {"step": [0, 10], f"val_{metric}": [first, val]},
                                "test": None})


def test_selection_takes_the_best_validation_value_and_flags_edges() -> None:
    task = get_task("mnist1d-mlp")
    space = search_space("adam")
    trials = [_trial(1e-3, 0.80), _trial(1e-2, 0.90), _trial(3e-2, 0.95, "diverged"), _trial(3e-3, 0.85)]
    sel = select("adam", space, trials, task)
    assert sel.lr == 1e-2 and sel.value == 0.90 and sel.edges == []  # the diverged trial is never chosen
    sel = select("adam", space, [_trial(1e-3, 0.8), _trial(1e-2, 0.9)], task)
    assert sel.edges and "highest value tried" in sel.edges[0] and "0.0001..0.1" in sel.edges[0]
    sel = select("adam", space, [_trial(1e-3, None, "diverged"), _trial(1e-2, None, "diverged")], task)
    assert sel.all_diverged and sel.lr == 1e-3 and sel.value is None
    loss_task = get_task("shakespeare-char")  # lower is better
    t = [_trial(lr, v, task=loss_task.name, metric="perplexity", first=9.0) for lr, v in ((1e-3, 5.0), (2e-3, 4.0))]
    assert select("adam", space, t, loss_task).lr == 2e-3


def test_tuning_never_reads_the_test_split_before_selection(tmp_path: Path, monkeypatch) -> None:
    events: list[tuple] = []
    real_evaluate = ClassificationTask.evaluate
    real_select = tuning.select

    def logged_evaluate(self, model, data, split):
        events.append(("eval", split, data.x_test is None))
        return real_evaluate(self, model, data, split)

    def logged_select(spec, *args, **kwargs):
        events.append(("select", spec))
        return real_select(spec, *args, **kwargs)

    monkeypatch.setattr(ClassificationTask, "evaluate", logged_evaluate)
    monkeypatch.setattr(tuning, "select", logged_select)
    protocol = default_protocol("mnist1d-mlp", **TINY)
    study = tune_and_run("mnist1d-mlp", ["sgdm", "adamw"], protocol, tmp_path, executor=LocalExecutor())
    assert study.complete
    first_test = min(i for i, e in enumerate(events) if e[:2] == ("eval", "test"))
    # every optimizer's selection was made before any run read the test split
    assert {e[1] for e in events[:first_test] if e[0] == "select"} == {"sgdm", "adamw"}
    first_select = min(i for i, e in enumerate(events) if e[0] == "select")
    tuning_evals = [e for e in events[:first_select] if e[0] == "eval"]
    assert tuning_evals and {e[1] for e in tuning_evals} == {"val"}
    assert all(hidden for _, _, hidden in tuning_evals)  # the tuning runs' data had no test split at all
    # tuning records carry no test numbers; final records evaluate test exactly once, at the end
    for result in study.results.values():
        assert all(r.test_values is None and r.config.splits == ("val",) for r in result.selection.trials)
        assert all(set(r.test_values) == {"loss", "accuracy"} for r in result.finals)
        assert {r.config.seed for r in result.finals} == {0, 1}  # fresh seeds, not the tuning seeds
        assert all(r.config.seed >= TUNING_SEED_BASE for r in result.selection.trials)
        assert {r.config.lr for r in result.finals} == {result.selection.lr}


def test_protocol_is_stored_with_the_results_and_mismatches_are_refused(tmp_path: Path) -> None:
    protocol = default_protocol("mnist1d-mlp", **TINY)
    tune_and_run("mnist1d-mlp", ["sgdm"], protocol, tmp_path)
    study = load_study(tmp_path)
    assert study.protocol == protocol and list(study.results) == ["sgdm"] and study.complete
    before = (tmp_path / "results.jsonl").read_bytes()
    other = default_protocol("mnist1d-mlp", **{**TINY, "steps": 30})
    with pytest.raises(ProtocolMismatchError, match="steps: 40 there, 30 now"):
        tune_and_run("mnist1d-mlp", ["sgdm"], other, tmp_path)
    assert (tmp_path / "results.jsonl").read_bytes() == before  # nothing lost, nothing appended
    # the same protocol with one more optimizer extends the folder; the finished runs are reused
    study = tune_and_run("mnist1d-mlp", ["sgdm", "adam"], protocol, tmp_path)
    assert list(study.results) == ["sgdm", "adam"] and study.complete
    assert load_study(tmp_path).results.keys() == {"sgdm", "adam"}
    assert len(load_records(tmp_path)) == 2 * (3 + 2)


def test_presets_without_tuning_and_explicit_lr_grid(tmp_path: Path) -> None:
    none = default_protocol("mnist1d-mlp", **{**TINY, "tuning": "none"})
    assert "not tuned" in none.describe() and none.trial_settings("adam") == []
    study = tune_and_run("mnist1d-mlp", ["adam"], none, tmp_path / "none")
    sel = study.results["adam"].selection
    assert not sel.tuned and sel.lr == PRESETS["adam"].lr and len(study.results["adam"].finals) == 2
    grid = Protocol("mnist1d-mlp", 40, 50, 20, tuning="grid", budget=2, lrs=(1e-3, 1e-2), seeds=(0,))
    study = tune_and_run("mnist1d-mlp", ["adam"], grid, tmp_path / "grid")
    assert sorted(r.config.lr for r in study.results["adam"].selection.trials) == [1e-3, 1e-2]


def test_cost_estimate_counts_only_what_is_left(tmp_path: Path) -> None:
    protocol = default_protocol("mnist1d-mlp", **TINY)
    todo = remaining_configs(protocol, ["sgdm", "adam"], tmp_path)
    assert len(todo) == 2 * (3 + 2)
    cost = estimate_cost(protocol, todo, probe_steps=5)
    assert cost.runs == 10 and cost.train_steps == 2 * (3 * protocol.trial_steps + 2 * 40) and cost.seconds > 0
    assert "expected about" in cost.describe()
    tune_and_run("mnist1d-mlp", ["sgdm"], protocol, tmp_path)
    assert len(remaining_configs(protocol, ["sgdm", "adam"], tmp_path)) == 5
