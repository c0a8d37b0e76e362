"""The diagnostics commands end to end on tiny budgets, the compare --diagnostics callback, and what it records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optimlab import diagnostics as D
from optimlab.lab.catalog.tasks import get_task
from optimlab.lab.commands.cli import main
from optimlab.lab.commands.diagnose_handlers import parse_range
from optimlab.lab.present.diagnostic_plots import diagnostics_panels
from optimlab.lab.training.diagnostic_runs import (
    CaptureCallback,
    DiagnosticsCallback,
    RecorderCallback,
    eval_batches,
    metric_fn,
    rerun_with_diagnostics,
)
from optimlab.lab.training.progress import Progress
from optimlab.lab.training.runner import RunConfig, run

TINY = ["--task", "mnist1d-mlp", "--steps", "24", "--examples", "200", "--no-progress"]


def _report(out: Path, pngs: list[str]) -> dict:
    page = (out / "report.html").read_text()
    for png in pngs:
        assert (out / png).stat().st_size > 5000, png
        assert f"src='{png}'" in page
    assert "arxiv.org" in page  # captions cite the papers
    return json.loads((out / "diagnostics.json").read_text())


def test_walk_writes_its_figures_into_the_results_folder_never_the_cwd(tmp_path: Path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code = main(["walk", *TINY, "--optimizers", "sgd", "lamb", "--segments", "3", "--points", "4",
                 "--noise-every", "6"])
    assert code == 0
    out = cwd / "optimlab-runs" / "mnist1d-mlp" / "diagnostics" / "walk"
    assert sorted(p.name for p in cwd.iterdir()) == ["optimlab-runs"]
    d = _report(out, ["walk.png", "layer_rates.png", "segments.png"])
    assert set(d) == {"sgd", "lamb"}
    rec = d["lamb"]["recorder"]
    assert rec["step"] == list(range(1, 25)) and len(rec["layers"]) == 6
    ratios = dict(zip(rec["layers"], rec["layer"]["trust_ratio"][0], strict=True))
    assert rec["layers"][:2] == ["0.weight", "0.bias"]  # the model's order
    assert all((v is None) == name.endswith("bias") for name, v in ratios.items())  # LAMB: biases excluded
    assert d["sgd"]["recorder"]["layer"]["trust_ratio"][0] == [None] * 6
    assert len(d["sgd"]["recorder"]["noise"]["step"]) == 4
    seg = d["sgd"]["segments"]
    assert seg["steps"] == [12, 13, 14] and len(seg["loss"][0]) == 4
    # a segment starts where the previous one ended (the same iterate)
    assert seg["loss"][0][-1] == pytest.approx(seg["loss"][1][0], rel=1e-6)
    assert "Report:" in capsys.readouterr().out


def test_interpolate_and_histograms(tmp_path: Path):
    out = tmp_path / "i"
    assert main(["interpolate", *TINY, "--examples", "3600", "--optimizers", "adam", "--alphas=-0.5:1.5:9", "--out",
                 str(out)]) == 0
    d = _report(out, ["interpolation.png"])
    train = d["adam"]["interpolation"]["train"]
    assert train["alphas"] == list(np.linspace(-0.5, 1.5, 9)) and "val" in d["adam"]["interpolation"]
    # at alpha = 1 the weights are the final ones: the loss there is the runner's final loss on the same 3600
    assert train["loss"][6] == pytest.approx(d["adam"]["final"]["train_loss"], rel=1e-6)
    assert train["loss"][2] > 2.0  # the initialization: about ln 10
    out = tmp_path / "h"
    assert main(["histograms", *TINY, "--optimizers", "adam", "--schedules", "constant",
                 "warmup_cosine@warmup=10", "--out", str(out)]) == 0
    d = _report(out, ["histograms.png"])
    assert set(d) == {"adam | constant", "adam | warmup_cosine@warmup=10"}
    h = d["adam | constant"]
    n = sum(h["hist"]["grad"][0]) + sum(h["hist_outside"]["grad"][0])
    assert n == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10  # every parameter of the MLP, every step
    assert len(h["hist"]["grad"]) == 24


def test_landscape_of_the_quadratic_task_is_the_function(tmp_path: Path):
    out = tmp_path / "l"
    assert main(["landscape", "--task", "quadratic", "--optimizers", "sgd", "--lr", "0.07", "--steps", "10",
                 "--grid", "5", "--checkpoints", "5", "--no-progress", "--out", str(out)]) == 0
    d = _report(out, ["landscape_1d.png", "landscape_2d.png", "landscape_3d.png", "trajectory_pca.png"])
    entry = d["sgd"]
    # the final point: 10 steps of GD with lr 0.07 on (x^2 + 20 y^2)/2 from (-4, 1.5)
    x, y = -4.0 * 0.93**10, 1.5 * (1 - 0.07 * 20) ** 10
    grid = np.linspace(-1, 1, 5)
    want = np.array([[0.5 * ((x + a) ** 2 + 20 * (y + b) ** 2) for b in grid] for a in grid])
    np.testing.assert_allclose(np.array(entry["2d"]["loss"]), want, rtol=1e-12)
    line = np.linspace(-1, 1, 51)  # the 1-D curve has at least 51 points
    np.testing.assert_allclose(entry["1d"]["loss"], 0.5 * ((x + line) ** 2 + 20 * y**2), rtol=1e-12)
    assert len(entry["trajectory"]["coords"]) == 6  # steps 0, 2, ..., 10


def test_sharpness_command(tmp_path: Path):
    out = tmp_path / "s"
    assert main(["sharpness", *TINY, "--optimizers", "sgd", "adam", "--seeds", "2", "--track", "2", "--trace",
                 "--trace-iters", "5", "--iters", "20", "--out", str(out)]) == 0
    d = _report(out, ["sharpness.png"])
    assert len(d["sgd"]) == 2 and d["sgd"][0]["top"]["value"] > 0 and d["sgd"][0]["trace"]["samples"] == 5
    assert d["sgd"][0]["during"]["step"] == [0, 12, 24]
    # the eigenvalue at the end of the tracked run is the final one (same weights, same batch, same seed)
    assert d["sgd"][0]["during"]["top"][-1] == pytest.approx(d["sgd"][0]["top"]["value"], rel=1e-6)


def test_bad_arguments_are_reported(tmp_path: Path, capsys):
    assert main(["interpolate", *TINY, "--alphas", "a:b", "--out", str(tmp_path)]) == 2
    assert "--alphas must be 'lo:hi:points'" in capsys.readouterr().err
    assert main(["walk", *TINY, "--optimizers", "adamm", "--out", str(tmp_path)]) == 2
    assert "unknown optimizer 'adamm'" in capsys.readouterr().err
    assert main(["landscape", *TINY, "--range", "-1", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["walk", "--every", "0"])
    np.testing.assert_array_equal(parse_range("0,0.5,1", "x"), [0, 0.5, 1])


def test_progress_lines_when_stdout_is_not_a_terminal(capsys):
    bar = Progress(20, "adam: 2-D", unit="point")
    for i in range(1, 21):
        bar(i, 20)
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].startswith("  adam: 2-D: 2/20 point (10%")
    assert "20/20 point (100%" in lines[-1]
    Progress(5, "quiet", enabled=False).update(5)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------------------------
# compare --diagnostics: the callback, the panels


def test_diagnostics_callback_leaves_the_run_unchanged_and_records_json(tmp_path: Path):
    config = RunConfig("mnist1d-cnn", "lamb", 1e-2, seed=1, steps=30, batch_size=32, eval_every=10)
    plain = run(config)
    cb = DiagnosticsCallback(first=5, every=10, examples=100, sharpness_examples=64, iters=10)
    noisy = RecorderCallback(every=1, histograms=True, noise_every=3)
    capture = CaptureCallback()
    rec = run(config, callbacks=[cb, noisy, capture])
    for key in ("train_loss", "val_accuracy", "batch_loss"):
        assert rec.history[key] == plain.history[key]  # bit for bit, with noise-scale backward passes too
    assert rec.test_values == plain.test_values  # the test split, evaluated once at the end (record format 2)
    d = json.loads(json.dumps(rec.extras["diagnostics"], allow_nan=False))
    assert d["walk"]["step"] == [1, 2, 3, 4, 5, 10, 20, 30]
    assert d["histograms"]["step"] == [1, 2, 3, 4, 5, 10, 20, 30] and len(d["histograms"]["grad"][0]) == 56
    assert d["sharpness"]["value"] > 0 and d["sharpness"]["examples"] == 64
    assert len(d["interpolation"]["alphas"]) == 15 and d["interpolation"]["examples"] == 100
    assert d["layer"]["trust_ratio"][0][0] is not None
    # the final-weights numbers are those of the trained model: the line from its initialization, its sharpness
    task = get_task("mnist1d-cnn")
    data = task.load()
    model, theta0 = capture.model, capture.theta0
    line = D.interpolate(model, theta0, D.current_weights(model), task.loss_fn, eval_batches(task, data, "train", 100),
                         D.default_alphas(15), metric_fn=metric_fn(task))
    np.testing.assert_allclose(d["interpolation"]["loss"], line.loss, rtol=1e-5)
    np.testing.assert_allclose(d["interpolation"]["metric"], line.metric, rtol=1e-5)
    top = D.top_hessian_eigenvalue(model, task.loss_fn, (data.x_train[:64], data.y_train[:64]), iters=10)
    assert d["sharpness"]["value"] == pytest.approx(top.value, rel=1e-5)
    # the record reproduces: the same extras from the finished record's config
    again = rerun_with_diagnostics(rec, callback=DiagnosticsCallback(first=5, every=10, examples=100,
                                                                      sharpness_examples=64, iters=10))
    assert again == rec.extras["diagnostics"]
    # panels for a report
    other = run(RunConfig("mnist1d-cnn", "sgdm", 0.05, seed=1, steps=30, batch_size=32, eval_every=10),
                callbacks=[DiagnosticsCallback(first=5, every=10, examples=100, sharpness_examples=64, iters=10)])
    paths, fragment = diagnostics_panels([rec, other, plain], tmp_path)
    assert [p.name for p in paths] == ["diag_walk_mnist1d-cnn.png", "diag_histograms_mnist1d-cnn.png",
                                       "diag_sharpness_mnist1d-cnn.png", "diag_interpolation_mnist1d-cnn.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
    assert fragment.count("<img") == 4 and "arXiv:1802.08770" in fragment
    assert diagnostics_panels([plain], tmp_path) == ([], "")


def test_diagnostics_callback_measures_an_optimizer_with_eval_mode_at_its_evaluation_weights():
    import torch

    from optimlab.lab.training.runner import RunContext

    class Shifted(torch.optim.SGD):  # stands for Schedule-Free: eval() moves the model to other weights
        def eval(self):
            with torch.no_grad():
                for p in self.param_groups[0]["params"]:
                    p.mul_(0.5)  # exact: train() gives back the same bits

        def train(self):
            with torch.no_grad():
                for p in self.param_groups[0]["params"]:
                    p.mul_(2.0)

    task = get_task("mnist1d-mlp")
    data = task.load()
    torch.manual_seed(0)
    model = task.model(data)
    opt = Shifted(model.parameters(), lr=0.1)
    ctx = RunContext(RunConfig("mnist1d-mlp", "sgd", 0.1, steps=1), task, model, opt)
    cb = DiagnosticsCallback(examples=100, sharpness_examples=64, iters=5)
    cb.on_run_start(ctx)
    theta0 = D.current_weights(model)
    x, y = data.x_train[:32], data.y_train[:32]
    task.loss_fn(model(x), y).backward()
    opt.step()
    ctx.step = 1
    trained = D.current_weights(model)
    cb.on_run_end(ctx)
    assert all(torch.equal(a, b) for a, b in zip(D.current_weights(model), trained, strict=True))  # train() again
    at_eval = [t * 0.5 for t in trained]
    want = D.interpolate(model, theta0, at_eval, task.loss_fn, eval_batches(task, data, "train", 100), [1.0])
    got = ctx.extras["diagnostics"]["interpolation"]
    assert got["alphas"][12] == pytest.approx(1.0)
    assert got["loss"][12] == pytest.approx(float(want.loss[0]), rel=1e-5)
