"""The lab's presets for every registered optimizer (issue 12): a preset and a search space each, shown by
``optimlab list``; settings sized to the run; matrix optimizers built from the model; Schedule-Free evaluated at
its averaged point (and BatchNorm refreshed there)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimlab
from optimlab.lab.catalog.models import CharTransformer
from optimlab.lab.catalog.presets import CHECK_STEPS, PRESETS, build_optimizer, check_spec, search_space
from optimlab.lab.catalog.tasks import ClassificationTask, TensorSplits
from optimlab.lab.commands import cli
from optimlab.lab.training.runner import Callback, RunConfig, RunContext, run


def test_every_registered_optimizer_has_a_preset_and_a_search_space(capsys) -> None:
    assert set(optimlab.OPTIMIZERS) <= set(PRESETS)
    for name in optimlab.OPTIMIZERS:
        assert PRESETS[name].library_name == name and PRESETS[name].source, name
        assert search_space(name).params[0].name == "lr", name
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    for name in optimlab.OPTIMIZERS:
        line = next(line for line in listed if line[2:].split(" ")[0] == name)
        assert "tuned over lr log-uniform" in line and PRESETS[name].source in line, name


@pytest.mark.parametrize("name", [n for n in PRESETS if n not in ("sgd", "sgdm", "adam")])
def test_every_preset_builds_and_moves_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(name, model, steps=50)
    x = torch.randn(16, 4)
    for _ in range(2):  # ADOPT and SOAP take their first step to initialise their statistics
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    for a, p in zip(before, model.parameters(), strict=True):
        assert not torch.equal(a, p), name
    check_spec(name)
    for point_name in (p.name for p in search_space(name).params[1:]):  # a tuned hyperparameter is an argument
        check_spec(name, {point_name: PRESETS[name].tune[0].low})


def test_run_fractions_follow_the_run_length() -> None:
    model = nn.Linear(3, 3)
    ademamix = build_optimizer("ademamix", model, steps=1000).param_groups[0]
    assert ademamix["alpha_warmup"] == ademamix["beta3_warmup"] == 1000  # the paper: warm-ups = total steps
    assert ademamix["alpha"] == 5.0 and ademamix["betas"] == (0.9, 0.999, 0.9999)
    sf = build_optimizer("schedulefree-adamw", model, steps=400).param_groups[0]
    assert sf["warmup_steps"] == 20
    assert build_optimizer("schedulefree-sgd", model).param_groups[0]["warmup_steps"] == round(0.05 * CHECK_STEPS)
    assert build_optimizer("ademamix@alpha_warmup=7", model, steps=1000).param_groups[0]["alpha_warmup"] == 7
    assert PRESETS["schedulefree-adamw"].schedule == PRESETS["schedulefree-sgd"].schedule == "constant"


def test_the_runner_sizes_warmups_to_the_run(monkeypatch) -> None:
    seen = {}

    class Grab(Callback):
        def on_run_start(self, ctx: RunContext) -> None:
            seen.update(ctx.optimizer.param_groups[0])

    run(RunConfig("mnist1d-mlp", "ademamix", 1e-3, steps=3, eval_every=3, splits=("val",)), callbacks=[Grab()])
    assert seen["beta3_warmup"] == 3


def test_muon_gets_the_model_and_splits_the_char_transformer() -> None:
    model = CharTransformer(65, block_size=16, n_layer=2, n_head=4, n_embd=32)
    opt = build_optimizer("muon", model, adamw_lr=1e-3)
    names = {n: p for n, p in model.named_parameters()}
    by_id = {id(p): n for n, p in names.items()}
    muon = {by_id[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    adamw = {by_id[id(p)] for g in opt.param_groups if not g["use_muon"] for p in g["params"]}
    # the hidden matrices of each block go to Muon; embeddings, the head and every 1-D tensor to AdamW
    assert muon == {n for n, p in names.items() if n.startswith("blocks.") and p.dim() == 2}
    assert {"tok.weight", "pos.weight", "head.weight"} <= adamw and muon.isdisjoint(adamw)
    assert {g["lr"] for g in opt.param_groups if g["use_muon"]} == {0.02}
    assert {g["lr"] for g in opt.param_groups if not g["use_muon"]} == {1e-3}  # the tuned AdamW lr


def test_schedule_free_is_evaluated_at_its_averaged_point_in_the_lab() -> None:
    """Every evaluation of a Schedule-Free run happens with the optimizer in eval mode (parameters at x), and
    the recorded metric is the one at x, not at the training point y; training steps happen in train mode."""
    modes: list[tuple[str, bool]] = []
    at_y: dict[str, float] = {}

    class Watch(Callback):
        def on_eval(self, ctx: RunContext, metrics: dict) -> None:
            modes.append(("eval", ctx.optimizer.train_mode))
            assert ctx.task.evaluate(ctx.model, ctx.data, "val")["loss"] == metrics["val_loss"]

        def after_step(self, ctx: RunContext) -> None:
            modes.append(("step", ctx.optimizer.train_mode))

        def on_run_end(self, ctx: RunContext) -> None:  # the runner has put it back in train mode: y
            at_y.update(ctx.task.evaluate(ctx.model, ctx.data, "val"))

    config = RunConfig("mnist1d-mlp", "schedulefree-adamw", 1e-2, steps=6, eval_every=3, splits=("val",))
    record = run(config, callbacks=[Watch()])
    assert [m for m in modes if m[0] == "eval"] == [("eval", False)] * 3
    assert [m for m in modes if m[0] == "step"] == [("step", True)] * 6
    assert record.final("val_loss") != at_y["loss"]  # x and y differ: the evaluation was at x


def _bn_task() -> tuple[ClassificationTask, TensorSplits]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, generator=g), torch.randint(0, 2, (64,), generator=g)
    d = TensorSplits(x, y, x[:16], y[:16], x[:16], y[:16], 2)
    task = ClassificationTask(
        "bn-toy", "toy", lambda _: d, lambda _: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)),
        steps=5, batch_size=8, eval_every=5, target=0.5, train_eval_size=16,
    )
    return task, d


def test_batchnorm_statistics_are_recomputed_at_the_schedule_free_evaluation_point() -> None:
    task, d = _bn_task()
    torch.manual_seed(0)
    model = task.model(d)
    opt = build_optimizer("schedulefree-sgd@lr=0.5", model, steps=5)
    batches = task.batches(d, 8, torch.Generator().manual_seed(1))
    for _ in range(5):
        xb, yb = next(batches)
        opt.zero_grad()
        task.loss_fn(model(xb), yb).backward()
        opt.step()
    opt.eval()
    bn = model[1]
    stale = bn.running_mean.clone()
    task.before_eval(model, opt, d)
    # the statistics of bn_batches training batches at x, with BatchNorm's momentum, from the stale ones
    expected = stale.clone()
    with torch.no_grad():
        for xb, _ in [next(b) for b in [task.batches(d, 8, torch.Generator().manual_seed(0))] * task.bn_batches]:
            expected.lerp_(model[0](xb).mean(0), bn.momentum)
    assert not torch.allclose(bn.running_mean, stale)
    torch.testing.assert_close(bn.running_mean, expected)
    assert not model.training and not opt.train_mode


def test_before_eval_leaves_models_without_batchnorm_and_other_optimizers_alone() -> None:
    task, d = _bn_task()
    model = task.model(d)
    adam = build_optimizer("adam", model)
    stale = model[1].running_mean.clone()
    task.before_eval(model, adam, d)
    assert torch.equal(model[1].running_mean, stale) and model.training
