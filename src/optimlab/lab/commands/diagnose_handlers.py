"""What the diagnostics commands do (:mod:`optimlab.lab.commands.diagnose` holds their arguments): ``walk``,
``interpolate``, ``landscape``, ``histograms`` and ``sharpness``, each a function of the parsed arguments that
trains every optimizer spec given, looks at what it did, and writes the figures, ``diagnostics.json`` and
``report.html`` (:func:`out_dir`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimlab import diagnostics as D
from optimlab.lab.catalog.presets import parse_spec, preset_lr
from optimlab.lab.catalog.tasks import ClassificationTask, SyntheticTask, Task, get_task
from optimlab.lab.present import diagnostic_plots as P
from optimlab.lab.training.diagnostic_runs import TrainedRun, eval_batches, metric_fn, train
from optimlab.lab.training.jsonable import jsonable
from optimlab.lab.training.progress import Progress
from optimlab.lab.training.runner import RunConfig

__all__ = ["walk", "interpolate", "landscape", "histograms", "sharpness", "parse_range", "out_dir"]


def parse_range(value: str, name: str) -> np.ndarray:
    """``'lo:hi:n'`` -> ``np.linspace(lo, hi, n)``; ``'a,b,c'`` -> those values."""
    try:
        if ":" in value:
            lo, hi, n = value.split(":")
            if int(n) < 1:
                raise ValueError
            return np.linspace(float(lo), float(hi), int(n))
        vals = np.array([float(v) for v in value.split(",") if v.strip()])
    except ValueError:
        raise ValueError(f"{name} must be 'lo:hi:points' or comma-separated numbers, got {value!r}") from None
    if vals.size == 0 or not np.isfinite(vals).all():
        raise ValueError(f"{name} must be 'lo:hi:points' or comma-separated numbers, got {value!r}")
    return vals


def out_dir(args: argparse.Namespace, command: str) -> Path:
    """``--out``, else ``optimlab-runs/TASK/diagnostics/COMMAND`` (never the current directory itself)."""
    return Path(args.out) if args.out else Path("optimlab-runs") / args.task / "diagnostics" / command


def _setup(args: argparse.Namespace) -> tuple[Task, Any, list[str], int, int]:
    task = get_task(args.task)
    data = task.load(args.data_dir)  # fails fast with the data set's message
    specs = [s.strip() for s in args.optimizers if s.strip()]
    if not specs:
        raise ValueError("--optimizers needs at least one optimizer spec")
    for s in specs:
        parse_spec(s)
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    steps = args.steps or task.steps
    batch = args.batch_size or task.batch_size
    return task, data, specs, steps, batch


def _config(task: Task, spec: str, args: argparse.Namespace, steps: int, batch: int, seed: int | None = None,
            schedule: str | None = None) -> RunConfig:
    lr = args.lr if args.lr is not None else preset_lr(spec)
    if args.lr is not None and "lr" in dict(parse_spec(spec).kwargs):
        raise ValueError(f"--lr conflicts with the lr given in optimizer spec {spec!r}; use one of them")
    return RunConfig(task.name, spec, float(lr), args.seed if seed is None else seed, steps, batch, steps,
                     schedule or args.schedule)


def _final(run: TrainedRun) -> dict[str, Any]:
    r, m = run.record, run.record.metric
    return {"train_loss": r.final("train_loss"), f"val_{m}": r.final(f"val_{m}"), f"test_{m}": r.test(m),
            "status": r.status, "steps_done": r.steps_done}


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.4g}"


def _finish(out: Path, command: str, task: Task, payload: dict[str, Any], intro: str, parts: list[str],
            table: tuple[list[str], list[list[Any]]], started: float) -> int:
    (out / "diagnostics.json").write_text(json.dumps(jsonable(payload), indent=1, allow_nan=False))
    header, rows = table
    report = P.write_report(out, f"optimlab {command}: {task.name}",
                            f"<p>{intro}</p>" + P.html_table(header, rows), parts)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print()
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\n{command} done in {time.perf_counter() - started:.1f}s. Numbers: {out / 'diagnostics.json'}\n"
          f"Report: {report}")
    return 0


def _intro(task: Task, steps: int, batch: int, args: argparse.Namespace, extra: str = "") -> str:
    return (f"{task.description}. {steps} steps, batch size {batch}, seed {args.seed}, schedule "
            f"<code>{args.schedule}</code>; LR: {f'{args.lr:g} for all' if args.lr else 'each preset'}. "
            f"{extra}")


# ----------------------------------------------------------------------------------------------------
# walk


def walk(args: argparse.Namespace) -> int:
    """``optimlab walk``: update angles, distance from the initialization, update norms, the gradient noise
    scale, and the loss on the segments between consecutive iterates (Xing et al. 2018)."""
    started = time.perf_counter()
    task, data, specs, steps, batch = _setup(args)
    out = out_dir(args, "walk")
    show = not args.no_progress
    if args.segment_start is None:
        args.segment_start = steps // 2
    if args.segment_start < 0:
        raise ValueError(f"--segment-start must be >= 0, got {args.segment_start}")
    segs = max(0, min(args.segments, steps - args.segment_start))
    noise_every = args.noise_every if args.noise_every is not None else max(1, steps // 40)
    if isinstance(task, SyntheticTask):
        noise_every = 0
    batches = eval_batches(task, data, "train", args.examples)
    alphas = np.linspace(0.0, 1.0, args.points)
    print(f"optimlab walk: {task.name}, {len(specs)} optimizer(s), {steps} steps, batch {batch}; recording every "
          f"{args.every} step(s); {segs} segment(s) x {args.points} points on {len(batches)} batch(es) -> {out}",
          flush=True)
    runs, payload, walks, segments, table = [], {}, [], [], []
    for spec in specs:
        config = _config(task, spec, args, steps, batch)
        ck = range(args.segment_start, args.segment_start + segs + 1) if segs else ()
        run = train(config, every=args.every, checkpoint_steps=ck, noise_every=noise_every,
                    data_dir=args.data_dir, progress=show)
        runs.append(run)
        hist = run.record.extras["recorder"]
        walks.append((spec, hist))
        seg = {"steps": [], "alphas": alphas.tolist(), "loss": []}
        if segs:
            cks = run.checkpoints
            bar = Progress((len(cks) - 1) * alphas.size, f"{spec}: segments", show, "point")
            for k in range(len(cks) - 1):
                res = D.interpolate(run.model, cks[k][1], cks[k + 1][1], task.loss_fn, batches, alphas,
                                    progress=lambda d, t, k=k, bar=bar: bar(k * alphas.size + d, 0))
                seg["steps"].append(cks[k][0])
                seg["loss"].append(res.loss.tolist())
            bar.close()
            segments.append((spec, seg))
        payload[spec] = {"config": asdict(run.config), "final": _final(run), "recorder": hist, "segments": seg}
        cos = np.array([np.nan if v is None else v for v in hist["cos_prev"]], dtype=float)
        tail = cos[-max(1, cos.size // 10):]
        table.append([spec, f"{config.lr:g}", _fmt(_final(run)["train_loss"]),
                      _fmt(hist["dist_init"][-1] if hist["dist_init"] else None),
                      _fmt(float(np.nanmean(tail)) if np.isfinite(tail).any() else None),
                      _fmt(hist["noise"]["b_simple_ema"][-1] if hist["noise"]["b_simple_ema"] else None)])
    parts = [
        "<h2>Update angles and distance</h2>",
        P.figure_html(P.plot_walk(walks, out / "walk.png", f"{task.name}: a walk with each optimizer"),
                      "Left: cosine between consecutive updates (thin: every record; thick: running mean); full-batch "
                      "GD with a large lr settles at −1, bouncing across a valley, SGD wanders. Middle: squared "
                      "distance from the initialization; SGD travels much farther than GD. Right: update norm"
                      + ("; far right: the gradient noise scale (dots: single estimates; line: the paper's "
                         f"exponential averages of |G|² and tr Σ), {P.CITATIONS['noise']}" if noise_every else "")
                      + f". After {P.CITATIONS['walk']}."),
        P.figure_html(P.plot_layer_rates(walks, out / "layer_rates.png", f"{task.name}: per-layer step sizes"),
                      "Effective lr per layer ‖Δθ‖/‖g‖ (a layer is a parameter tensor; median over layers, band: "
                      f"smallest to largest) and, for LAMB and LARS, the trust ratios, {P.CITATIONS['trust']}."),
    ]
    if segments:
        parts += ["<h2>Between consecutive iterates</h2>", P.figure_html(
            P.plot_segments(segments, out / "segments.png",
                            f"{task.name}: loss between consecutive iterates, steps {args.segment_start} to "
                            f"{args.segment_start + segs}"),
            f"Training loss on the first {args.examples} training examples along the line between the iterates "
            "before and after each update: roughly convex with a minimum in between (the valley floor, marked); "
            f"a large lr keeps the iterates high above it. After {P.CITATIONS['walk']}, Figure 1.")]
    return _finish(out, "walk", task, payload, _intro(task, steps, batch, args), parts,
                   (["optimizer", "lr", "final train loss", "‖θ−θ0‖", "mean cos (last 10%)", "B_simple"], table),
                   started)


# ----------------------------------------------------------------------------------------------------
# interpolate


def interpolate(args: argparse.Namespace) -> int:
    """``optimlab interpolate``: the loss on the line from the initialization to each solution (Goodfellow et
    al. 2015)."""
    started = time.perf_counter()
    task, data, specs, steps, batch = _setup(args)
    out = out_dir(args, "interpolate")
    show = not args.no_progress
    alphas = parse_range(args.alphas, "--alphas")
    splits = {"train": eval_batches(task, data, "train", args.examples)}
    if not isinstance(task, SyntheticTask):
        splits["val"] = eval_batches(task, data, "val", args.examples)
    metric = task.metric if isinstance(task, ClassificationTask) else None
    print(f"optimlab interpolate: {task.name}, {len(specs)} optimizer(s), {steps} steps; {alphas.size} points "
          f"from {alphas[0]:g} to {alphas[-1]:g} on {', '.join(splits)} -> {out}", flush=True)
    payload, lines, table = {}, [], []
    for spec in specs:
        run = train(_config(task, spec, args, steps, batch), every=None, data_dir=args.data_dir, progress=show)
        res = {}
        for split, batches in splits.items():
            bar = Progress(alphas.size, f"{spec}: {split}", show, "point")
            r = D.interpolate(run.model, run.theta0, run.final, task.loss_fn, batches, alphas,
                              metric_fn=metric_fn(task), progress=bar)
            bar.close()
            res[split] = {**r.to_dict(), "examples": r.cost.examples}
        lines.append((spec, res))
        payload[spec] = {"config": asdict(run.config), "final": _final(run), "interpolation": res}
        loss = np.array([np.nan if v is None else v for v in res["train"]["loss"]])
        inside = (alphas >= 0) & (alphas <= 1)
        li = loss[inside]
        mono = bool(np.all(np.diff(li) <= 1e-12)) if np.isfinite(li).all() else False
        barrier = float(np.nanmax(li) - max(li[0], li[-1])) if np.isfinite(li).any() else math.nan
        table.append([spec, f"{run.config.lr:g}", _fmt(li[0]), _fmt(li[-1]), _fmt(max(barrier, 0.0)),
                      "yes" if mono else "no"])
    parts = [P.figure_html(P.plot_interpolation(lines, out / "interpolation.png", metric,
                                                f"{task.name}: from the initialization to the solution"),
                           f"Loss{' and ' + metric if metric else ''} along (1 − α) θ_init + α θ_final for each "
                           f"optimizer (solid: the first {args.examples} training examples; dashed: validation). "
                           "On many problems the loss falls monotonically along this line, with no barrier "
                           f"between the initialization and the solution. After {P.CITATIONS['interpolation']}.")]
    return _finish(out, "interpolate", task, payload, _intro(task, steps, batch, args), parts,
                   (["optimizer", "lr", "loss at init", "loss at solution", "barrier on [0, 1]",
                     "monotone on [0, 1]"], table), started)


# ----------------------------------------------------------------------------------------------------
# landscape


def _examples(batches: list[tuple[Any, Any]]) -> int:
    return sum(int(y.shape[0]) if isinstance(y, torch.Tensor) else 1 for _, y in batches)


def _axes_directions(model: torch.nn.Module) -> list[list[torch.Tensor]]:
    (p,) = [p for p in model.parameters()]
    return [[torch.eye(p.numel(), dtype=p.dtype)[i].reshape(p.shape)] for i in range(min(2, p.numel()))]


def landscape(args: argparse.Namespace) -> int:
    """``optimlab landscape``: filter-normalized 1-D/2-D/3-D loss landscapes around each solution and the path on the
    PCA plane of its checkpoints (Li et al. 2018)."""
    started = time.perf_counter()
    task, data, specs, steps, batch = _setup(args)
    out = out_dir(args, "landscape")
    show = not args.no_progress
    if not (args.range > 0 and math.isfinite(args.range)):
        raise ValueError(f"--range must be a positive number, got {args.range}")
    grid = np.linspace(-args.range, args.range, args.grid)
    line = np.linspace(-args.range, args.range, max(args.grid, 51) | 1)  # curves are cheap: at least 51 points
    batches = eval_batches(task, data, "train", args.examples)
    plots = set(args.plots)
    synthetic = isinstance(task, SyntheticTask)
    n_ck = min(args.checkpoints, steps)
    ck_steps = sorted({int(round(s)) for s in np.linspace(0, steps, n_ck + 1)}) if "trajectory" in plots else []
    points = (line.size if "1d" in plots else 0) + (grid.size**2 if plots & {"2d", "3d"} else 0) \
        + (grid.size**2 if "trajectory" in plots else 0)
    print(f"optimlab landscape: {task.name}, {len(specs)} optimizer(s), {steps} steps; then per optimizer "
          f"{points} points x {len(batches)} batch(es) ({_examples(batches)} examples) -> {out}",
          flush=True)
    metric = task.metric if isinstance(task, ClassificationTask) else None
    payload, one, two, paths, table = {}, [], [], [], []
    for spec in specs:
        run = train(_config(task, spec, args, steps, batch), every=None, checkpoint_steps=ck_steps,
                    data_dir=args.data_dir, progress=show)
        model = run.model
        dirs = _axes_directions(model) if synthetic else D.random_directions(model, 2, seed=args.direction_seed)
        entry: dict[str, Any] = {"config": asdict(run.config), "final": _final(run)}
        row = [spec, f"{run.config.lr:g}", _fmt(_final(run)["train_loss"])]
        if "1d" in plots:
            bar = Progress(line.size, f"{spec}: 1-D", show, "point")
            r1 = D.landscape(model, task.loss_fn, batches, dirs[:1], line, metric_fn=metric_fn(task), bn=args.bn,
                             progress=bar)
            bar.close()
            entry["1d"] = r1.to_dict()
            one.append((spec, entry["1d"]))
            mid = line.size // 2
            edge = np.nanmean([r1.loss[0], r1.loss[-1]])
            row.append(_fmt(edge / r1.loss[mid] if r1.loss[mid] > 0 else None))
        if plots & {"2d", "3d"} and len(dirs) > 1:
            bar = Progress(grid.size**2, f"{spec}: 2-D", show, "point")
            r2 = D.landscape(model, task.loss_fn, batches, dirs, grid, metric_fn=metric_fn(task), bn=args.bn,
                             progress=bar)
            bar.close()
            entry["2d"] = r2.to_dict()
            two.append((spec, entry["2d"]))
            row.append(f"{r2.cost.forward_passes} passes")
        if "trajectory" in plots and len(run.checkpoints) >= 3:
            cks = [w for _, w in run.checkpoints]
            try:
                pca = D.trajectory_pca(cks, center=run.final, model=model, ignore=None if synthetic else "biasbn")
            except ValueError as e:  # e.g. a path along a line: no plane to draw
                print(f"  {spec}: no PCA plane ({e})", flush=True)
                payload[spec] = entry
                table.append(row + ["-"])
                continue
            c = pca.coords
            span = np.ptp(c, axis=0)
            pad = 0.2 * np.maximum(span, 1e-3 * max(span.max(), 1e-12))
            gx = np.linspace(c[:, 0].min() - pad[0], c[:, 0].max() + pad[0], args.grid)
            gy = np.linspace(c[:, 1].min() - pad[1], c[:, 1].max() + pad[1], args.grid)
            bar = Progress(gx.size * gy.size, f"{spec}: PCA plane", show, "point")
            rp = D.landscape(model, task.loss_fn, batches, pca.directions, [gx, gy], center=pca.center,
                             bn=args.bn, progress=bar)
            bar.close()
            entry["trajectory"] = {"steps": [s for s, _ in run.checkpoints], "coords": c.tolist(),
                                   "explained": pca.explained_variance_ratio.tolist(), "landscape": rp.to_dict()}
            paths.append((spec, entry["trajectory"]))
            row.append(f"{100 * pca.explained_variance_ratio.sum():.1f}%")
        payload[spec] = entry
        table.append(row)
    header = ["optimizer", "lr", "final train loss"]
    if "1d" in plots:
        header.append(f"1-D: loss at ±{args.range:g} / at 0")
    if plots & {"2d", "3d"}:
        header.append("2-D cost")
    if "trajectory" in plots:
        header.append("PCA: variance in 2 PCs")
    axes = "the coordinate axes of the 2-D problem" if synthetic else \
        f"filter-normalized random directions (seed {args.direction_seed}; biases and norm gains not moved)"
    bn = {"recompute": "BatchNorm statistics re-estimated at every point", "eval": "BatchNorm in eval mode with the "
          "trained statistics", "batch": "BatchNorm on batch statistics"}[args.bn]
    parts = []
    if one:
        parts.append(P.figure_html(P.plot_landscape_1d(one, out / "landscape_1d.png", metric,
                                                       f"{task.name}: 1-D landscape around each solution"),
                                   f"Train loss{' and ' + metric if metric else ''} along {axes}, θ* + α δ, on the "
                                   f"first {args.examples} training examples ({bn}; dropout off). Wider, flatter "
                                   f"basins are Li et al.'s picture of better-generalizing minima. "
                                   f"{P.CITATIONS['landscape']}."))
    if two and "2d" in plots:
        parts.append(P.figure_html(P.plot_landscape_2d(two, out / "landscape_2d.png",
                                                       f"{task.name}: 2-D landscape (contours of log10 loss)"),
                                   f"log10 of the train loss at θ* + α δ + β η with δ, η {axes}, "
                                   f"on a {args.grid} × {args.grid} grid; shared colour scale, star: the solution. "
                                   f"{P.CITATIONS['landscape']}."))
    if two and "3d" in plots:
        parts.append(P.figure_html(P.plot_landscape_3d(two, out / "landscape_3d.png",
                                                       f"{task.name}: loss surfaces"),
                                   "The same grids as surfaces (z: the train loss on a log scale). "
                                   f"{P.CITATIONS['landscape']}."))
    if paths:
        parts.append(P.figure_html(P.plot_trajectory(paths, out / "trajectory_pca.png",
                                                     f"{task.name}: paths on the PCA plane of their checkpoints"),
                                   f"{len(ck_steps)} checkpoints (steps {ck_steps[0]} to {ck_steps[-1]}) projected "
                                   "on the first two principal directions of θ_i − θ_final (biases ignored), over "
                                   f"the train loss on that plane. After {P.CITATIONS['landscape']}, Section 7."))
    return _finish(out, "landscape", task, payload, _intro(task, steps, batch, args), parts, (header, table),
                   started)


# ----------------------------------------------------------------------------------------------------
# histograms


def histograms(args: argparse.Namespace) -> int:
    """``optimlab histograms``: ``|g|``, ``|update|`` and step-size histograms over the first steps (RAdam's
    Figure 2)."""
    started = time.perf_counter()
    task, data, specs, steps, batch = _setup(args)
    out = out_dir(args, "histograms")
    show = not args.no_progress
    schedules = args.schedules or [args.schedule]
    print(f"optimlab histograms: {task.name}, {len(specs)} optimizer(s) x {len(schedules)} schedule(s), the first "
          f"{steps} steps -> {out}", flush=True)
    payload, runs, table = {}, [], []
    for spec in specs:
        for schedule in schedules:
            label = spec if len(schedules) == 1 else f"{spec} | {schedule}"
            run = train(_config(task, spec, args, steps, batch, schedule=schedule), every=1, histograms=True,
                        data_dir=args.data_dir, progress=show)
            h = run.record.extras["recorder"]
            runs.append((label, {"steps": h["step"], "bins": h["bins"], **h["hist"]}))
            payload[label] = {"config": asdict(run.config), "final": _final(run), "steps": h["step"],
                              "bins": h["bins"], "hist": h["hist"], "hist_outside": h["hist_outside"],
                              "lr": h["lr"]}
            counts = np.array(h["hist"]["step_size"][-1], dtype=float)
            table.append([label, f"{run.config.lr:g}", _fmt(_final(run)["train_loss"]),
                          _spread(counts, D.LogBins(**h["bins"]))])
    parts = [P.figure_html(P.plot_waterfall(runs, out / "histograms.png", ("grad", "update", "step_size"),
                                            f"{task.name}: the first {steps} steps", args.max_lines),
                           "Histograms on fixed log bins, stacked along y by step (lighter: earlier): the gradient "
                           "|g|, the update |Δθ| and the effective per-parameter step |Δθ_i|/|g_i| (the spread of "
                           "Adam's adaptive step sizes). Without warm-up Adam's first updates are distorted: the "
                           f"RAdam paper's argument for rectification and warm-up. After {P.CITATIONS['histograms']}.")]
    return _finish(out, "histograms", task, payload, _intro(task, steps, batch, args, "Histograms every step."),
                   parts, (["run", "lr", "final train loss", "step sizes at the last step (5%, 50%, 95%)"], table),
                   started)


def _spread(counts: np.ndarray, bins: D.LogBins) -> str:
    if counts.sum() == 0:
        return "-"
    cdf = np.cumsum(counts) / counts.sum()
    edges = bins.edges
    qs = [edges[min(int(np.searchsorted(cdf, q)), counts.size - 1) + 1] for q in (0.05, 0.5, 0.95)]
    return ", ".join(f"<{q:.2g}" for q in qs)


# ----------------------------------------------------------------------------------------------------
# sharpness


def sharpness(args: argparse.Namespace) -> int:
    """``optimlab sharpness``: the top Hessian eigenvalue (and trace) of the final weights, and during training."""
    started = time.perf_counter()
    task, data, specs, steps, batch = _setup(args)
    out = out_dir(args, "sharpness")
    show = not args.no_progress
    if not (args.tol >= 0 and math.isfinite(args.tol)):
        raise ValueError(f"--tol must be a finite number >= 0, got {args.tol}")
    hvp_batch = eval_batches(task, data, "train", args.examples)
    track = sorted({int(round(s)) for s in np.linspace(0, steps, args.track + 1)}) if args.track > 0 else []
    print(f"optimlab sharpness: {task.name}, {len(specs)} optimizer(s) x {args.seeds} seed(s), {steps} steps; "
          f"power iteration (<= {args.iters} Hessian-vector products) on {args.examples} training examples"
          f"{', at ' + str(len(track)) + ' points during training' if track else ''} -> {out}", flush=True)
    payload, runs, table = {}, [], []
    metric = task.metric

    def top(model: torch.nn.Module, seed: int) -> D.HessianEigen:
        return D.top_hessian_eigenvalue(model, task.loss_fn, hvp_batch, iters=args.iters, tol=args.tol, seed=seed)

    for spec in specs:
        tops, traces, tests, entries, during = [], [], [], [], None
        for seed in range(args.seeds):
            run = train(_config(task, spec, args, steps, batch, seed=seed), every=None,
                        checkpoint_steps=track if seed == 0 else (), data_dir=args.data_dir, progress=show)
            e = top(run.model, seed)
            entry: dict[str, Any] = {"config": asdict(run.config), "final": _final(run), "top": e.to_dict()}
            tops.append(e.value)
            if args.trace:
                tr = D.hessian_trace(run.model, task.loss_fn, hvp_batch, iters=args.trace_iters, tol=0.0, seed=seed)
                entry["trace"] = tr.to_dict()
                traces.append(tr.value)
            tests.append(_final(run)[f"test_{metric}"])
            if seed == 0 and track:
                bar = Progress(len(run.checkpoints), f"{spec}: sharpness during training", show, "point")
                vals = []
                probe = get_task(task.name).model(data)
                for k, (_, w) in enumerate(run.checkpoints):
                    with torch.no_grad():
                        for p, t in zip(probe.parameters(), w, strict=True):
                            p.copy_(t)
                    vals.append(top(probe, seed).value)
                    bar(k + 1, len(run.checkpoints))
                bar.close()
                during = {"step": [s for s, _ in run.checkpoints], "top": vals}
                entry["during"] = during
            entries.append(entry)
        is_sgd = parse_spec(spec).base == "sgd" and not parse_spec(spec).wrappers
        runs.append((spec, {"top": tops, "trace": traces, "test": tests if metric != "loss" else [],
                            "during": during, "lr": float(entries[0]["config"]["lr"]), "sgd": is_sgd}))
        payload[spec] = entries
        table.append([spec, entries[0]["config"]["lr"], _fmt(float(np.nanmean(np.abs(tops)))),
                      _fmt(float(np.nanmean(traces))) if traces else "-",
                      _fmt(float(np.nanmean([t for t in tests if t is not None])), pct=metric == "accuracy")
                      if any(t is not None for t in tests) else "-",
                      f"{sum(1 for en in entries if en['top']['converged'])}/{len(entries)}"])
    parts = [P.figure_html(P.plot_sharpness(runs, out / "sharpness.png", metric if metric != "loss" else None,
                                            f"{task.name}: sharpness"),
                           f"Top Hessian eigenvalue of the training loss on {args.examples} fixed training examples, "
                           "by power iteration with Hessian-vector products (at most "
                           f"{args.iters}, relative tolerance {args.tol:g}), at the final weights (dots: seeds) "
                           "against the final test metric, and during training (seed 0) with the stability limit "
                           f"2/lr of gradient descent for plain SGD ({P.CITATIONS['stability']}). "
                           f"{P.CITATIONS['sharpness']}.")]
    return _finish(out, "sharpness", task, payload, _intro(task, steps, batch, args), parts,
                   (["optimizer", "lr", "|λ_max|", "trace", f"test {metric}", "converged"], table), started)
