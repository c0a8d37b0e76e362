"""Claim 1, ``adam-step-bound``: the lecture's table of Adam's movements around one informative gradient.

The claim (the lecture, "Adam 的最大步长", after Kingma & Ba): with β₁ = 0, β₂ = 0.999, after 100,000 steps of
gradient 1 the 999 non-informative steps 100000-100998 move about 1000·η in all, the informative step 100999 (gradient
100,000) only about 10√10·η, and the next step (gradient 1) 10^-3.5·η: one update of Adam is bounded by
η/√(1-β₂) = 10√10·η whatever the gradient. AMSGrad (Reddi et al. 2018: v̂ = max(v̂, v)) and AdaBound (Luo et al.
2019: the per-element lr clipped into [0.1 - 0.1/((1-β₂)t+1), 0.1 + 0.1/((1-β₂)t)]) are the lecture's fixes;
their numbers on the same sequence are printed beside Adam's.

Citations: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (Section 2.1, the step bound);
Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018; Luo, Xiong, Liu & Sun, "Adaptive Gradient
Methods with Dynamic Bound of Learning Rate", ICLR 2019 (reference code github.com/Luolc/AdaBound); the lecture
(source document 003, "改进 Adam").

How: optimlab's own Adam, Adam(amsgrad=True) and AdaBound step one float64 scalar through the exact gradient
sequence (``p.grad`` set by hand; no model), and the closed form is evaluated beside them. The closed form with
bias correction and ε: all-ones gradients give v_t = 1 - β₂^t exactly, so v̂ = 1 and each step is η/(1+ε); the big
gradient G gives v̂ = (β₂v + (1-β₂)G²)/(1-β₂^t) and the step η·G/(√v̂ + ε), and so on.

Size: default, the lecture's 101,000 steps of each of the three optimizers; ``--quick``, the big gradient at step
10,999 instead, which leaves Adam's numbers unchanged to 1e-4 but moves AdaBound's bounds. ``optimlab reproduce
adam-step-bound --dry-run`` prices them on this machine (:func:`work`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from optimlab.lab.reproduce.base import Check, Context, Verdict, table, verdict_from_checks
from optimlab.lab.study.cost import Steps

NAME = "adam-step-bound"
TITLE = "Adam's largest step: 1000·η for 999 useless steps, 10√10·η for the informative one"
CLAIM = ("Adam (β₁ = 0, β₂ = 0.999) after 100,000 steps of gradient 1 meets one gradient of 100,000: the 999 steps "
         "before moved ~1000·η, the informative step moves only ~10√10·η, the next 10^-3.5·η.")
CITATION = ("Kingma & Ba 2015 (Adam, Sec. 2.1); Reddi et al. 2018 (AMSGrad); Luo et al. 2019 (AdaBound, "
            "github.com/Luolc/AdaBound); the lecture's table (source document 003)")
CAPTION = ("Movement |Δθ|/η per step around the big gradient (log scale), optimlab's Adam, AMSGrad and AdaBound "
           "with β₁ = 0, β₂ = 0.999; dashed: the lecture's 1, 10√10 and 10^-3.5.")

PROTOCOL: dict[str, Any] = {
    "big_step": 100999,  # the step (1-based) whose gradient is big; every other gradient is 1
    "big_gradient": 1e5,
    "steps_after": 3000,  # steps of gradient 1 after the big one (the figure shows Adam recover, AMSGrad not)
    "lr": 1e-3,
    "beta1": 0.0,
    "beta2": 0.999,
    "eps": 1e-8,
    "adabound": {"final_lr": 0.1, "gamma": 1e-3},  # the reference defaults; gamma = 1 - beta2 as in the lecture
    "tolerance": 0.01,  # relative tolerance of "about" in the lecture's numbers
    "closed_form_tolerance": 1e-9,  # the exact run against the closed form (float64)
    "window": 1500,  # steps before the big one kept for the figure
    "seeds": [0],  # deterministic: no randomness anywhere
}
QUICK: dict[str, Any] = {"big_step": 10999, "steps_after": 1000, "window": 500}

LECTURE = {"before": 1000.0, "big": 10 * math.sqrt(10), "next": 10**-3.5}  # in units of eta

RULE = ("reproduced if optimlab's Adam moves within 1% (the protocol's tolerance) of the lecture's three numbers "
        "(the 999 steps before: 1000·η in all; the informative step: 10√10·η; the next: 10^-3.5·η) and the exact "
        "run matches the closed form to 1e-9 relative for Adam, AMSGrad and AdaBound; not reproduced if none holds; "
        "mixed otherwise.")

OPTIMIZERS = ("adam", "amsgrad", "adabound")


def work(protocol: dict[str, Any]) -> list[Steps]:
    """One scalar run per optimizer (their names are the lab's presets); the closed form costs nothing."""
    return [Steps(name, protocol["big_step"] + protocol["steps_after"]) for name in OPTIMIZERS]


def _build(name: str, p: Any, pr: dict[str, Any]) -> Any:
    import optimlab

    betas = (pr["beta1"], pr["beta2"])
    if name == "adam":
        return optimlab.Adam([p], lr=pr["lr"], betas=betas, eps=pr["eps"])
    if name == "amsgrad":
        return optimlab.Adam([p], lr=pr["lr"], betas=betas, eps=pr["eps"], amsgrad=True)
    return optimlab.AdaBound([p], lr=pr["lr"], betas=betas, eps=pr["eps"], **pr["adabound"])


def _exact(name: str, pr: dict[str, Any], bar: Any) -> dict[str, Any]:
    """Step optimlab's optimizer through the sequence; movements |Δθ|/η."""
    import torch

    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = _build(name, p, pr)
    one = torch.ones(1, dtype=torch.float64)
    big = torch.full((1,), float(pr["big_gradient"]), dtype=torch.float64)
    n_big, total = pr["big_step"], pr["big_step"] + pr["steps_after"]
    start_window = n_big - pr["window"]
    before, window = 0.0, []
    for t in range(1, total + 1):
        # the update does not read p (no weight decay): start each step at 0 and read the movement exactly
        with torch.no_grad():
            p.zero_()
        p.grad = big if t == n_big else one
        opt.step()
        move = abs(p.item()) / pr["lr"]
        if n_big - 999 <= t < n_big:
            before += move
        if t >= start_window:
            window.append(move)
        if t % 1000 == 0:
            bar.update(1000)
    bar.update(total % 1000)
    return {"before": before, "big": window[n_big - start_window], "next": window[n_big - start_window + 1],
            "window_start": start_window, "window": window}


def _closed_form(name: str, pr: dict[str, Any]) -> dict[str, float]:
    """The movements /η from the update rules' formulas (β₁ = 0 so m̂ = g), with bias correction and ε."""
    b2, eps, g_big, n = pr["beta2"], pr["eps"], pr["big_gradient"], pr["big_step"]
    lr = pr["lr"]

    def bc(t: int) -> float:
        return 1 - b2**t

    # before the big step every v_t = 1 - b2^t, so v_hat = 1 (and max v_hat = 1 for AMSGrad)
    v_big = b2 * bc(n - 1) + (1 - b2) * g_big**2
    v_next = b2 * v_big + (1 - b2)
    if name in ("adam", "amsgrad"):
        before = sum(1 / (1 + eps) for _ in range(999))
        big = g_big / (math.sqrt(v_big / bc(n)) + eps)
        vn = v_next if name == "adam" else max(v_big, v_next)  # AMSGrad keeps the max of v (then corrects it)
        nxt = 1 / (math.sqrt(vn / bc(n + 1)) + eps)
        return {"before": before, "big": big, "next": nxt}
    # AdaBound (reference code): step_size = lr * sqrt(bc2)/bc1, clip(step_size/(sqrt(v)+eps), lower, upper) * m,
    # final_lr scaled by lr/base_lr (= 1 here); bounds lower = f(1 - 1/(gamma t + 1)), upper = f(1 + 1/(gamma t))
    f, gamma = pr["adabound"]["final_lr"], pr["adabound"]["gamma"]

    def rate(t: int, v: float) -> float:
        raw = lr * math.sqrt(bc(t)) / (math.sqrt(v) + eps)
        return min(max(raw, f * (1 - 1 / (gamma * t + 1))), f * (1 + 1 / (gamma * t))) / lr

    before = sum(rate(t, bc(t)) for t in range(n - 999, n))
    return {"before": before, "big": rate(n, v_big) * g_big, "next": rate(n + 1, v_next)}


def run(ctx: Context) -> dict[str, Any]:
    pr = ctx.protocol
    key = {k: v for k, v in pr.items() if k != "seeds"}
    total = pr["big_step"] + pr["steps_after"]
    exact, closed = {}, {}
    bar = ctx.bar(len(OPTIMIZERS) * total, "adam, amsgrad, adabound", "step")
    for name in OPTIMIZERS:
        exact[name] = ctx.cached({"claim": NAME, "optimizer": name, **key}, lambda name=name: _exact(name, pr, bar))
        closed[name] = _closed_form(name, pr)
    bar.close()
    n = pr["big_step"]
    rows = [["the lecture", LECTURE["before"], LECTURE["big"], LECTURE["next"]]]
    for name in OPTIMIZERS:
        rows.append([f"{name} (optimlab, exact)", exact[name]["before"], exact[name]["big"], exact[name]["next"]])
        rows.append([f"{name} (closed form)", closed[name]["before"], closed[name]["big"], closed[name]["next"]])
    cols = ["movement / η", f"steps {n - 999}-{n - 1} (sum)", f"step {n} (g = {pr['big_gradient']:g})",
            f"step {n + 1} (g = 1)"]
    b2 = pr["beta2"]
    notes = [
        f"Adam's bound on one step with β₁ = 0 is η/√(1-β₂) = {1 / math.sqrt(1 - b2):.6g}·η (the informative step "
        f"reaches {exact['adam']['big'] / (1 / math.sqrt(1 - b2)):.6f} of it); the lecture's text writes the bound "
        f"as √(1-β₂)·η = {math.sqrt(1 - b2):.4g}·η, the reciprocal: its table's 10√10·η is the correct value.",
        f"AMSGrad keeps v̂ at its maximum: {pr['steps_after']} steps after the big gradient it still moves "
        f"{exact['amsgrad']['window'][-1]:.4g}·η a step, Adam {exact['adam']['window'][-1]:.4g}·η (recovering "
        "as v decays by β₂ a step).",
        f"AdaBound's clipped rate makes it move like SGD with lr ≈ {pr['adabound']['final_lr']:g}: "
        f"{exact['adabound']['big']:.4g}·η on the big gradient.",
    ]
    return {
        "exact": exact,
        "closed_form": closed,
        "lecture": LECTURE,
        "tolerance": pr["tolerance"],
        "closed_form_tolerance": pr["closed_form_tolerance"],
        "big_step": n,
        "tables": [table("Movements around the big gradient (units of η)", cols, rows,
                         "exact: optimlab's optimizer stepped in float64; closed form: the update rule's formula "
                         "with bias correction and ε (module docstring).")],
        "notes": notes,
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def verdict(evidence: dict[str, Any]) -> Verdict:
    tol, ctol = evidence["tolerance"], evidence["closed_form_tolerance"]
    adam, lec = evidence["exact"]["adam"], evidence["lecture"]
    labels = {"before": "the 999 steps before ≈ 1000·η", "big": "the informative step ≈ 10√10·η",
              "next": "the next step ≈ 10^-3.5·η"}
    checks = [
        Check(f"Adam: {labels[k]}", _rel(adam[k], lec[k]) <= tol,
              f"{adam[k]:.6g}·η, {100 * _rel(adam[k], lec[k]):.3g}% off; tolerance {100 * tol:g}%")
        for k in ("before", "big", "next")
    ]
    worst = max(_rel(evidence["exact"][o][k], evidence["closed_form"][o][k])
                for o in OPTIMIZERS for k in ("before", "big", "next"))
    checks.append(Check("the exact runs equal the closed form (Adam, AMSGrad, AdaBound)", worst <= ctol,
                        f"largest relative difference {worst:.2g}; tolerance {ctol:g}"))
    return verdict_from_checks(checks)


def figure(evidence: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optimlab.lab.present.figures import save_figure
    from optimlab.lab.present.style import color_for

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name in OPTIMIZERS:
        e = evidence["exact"][name]
        steps = range(e["window_start"], e["window_start"] + len(e["window"]))
        ax.plot(list(steps), e["window"], color=color_for(name), label=name, lw=1.6)
    for k, v in evidence["lecture"].items():
        if k != "before":
            ax.axhline(v, color="k", ls="--", lw=0.8)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.axvline(evidence["big_step"], color="grey", lw=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("time step")
    ax.set_ylabel("movement |Δθ| / η")
    ax.set_title("Adam's step bound (β₁ = 0, β₂ = 0.999), one gradient of 10⁵")
    ax.legend()
    save_figure(fig, path)
