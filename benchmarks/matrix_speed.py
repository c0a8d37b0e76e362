"""Per-step time of the matrix optimizers against torch and the peer libraries, on GPT-2-small-shaped matrices (CPU).

* Muon vs torch.optim.Muon: the hidden matrices of GPT-2 small (12 layers x qkv (2304, 768), attention projection
  (768, 768), MLP (3072, 768) and (768, 3072), nn.Linear orientation), Newton-Schulz in bfloat16 (both).
* NorMuon (issue 26) vs optimlab's Muon with the same (Polar Express) Newton-Schulz on the same matrices, and vs
  microsoft/dion's NorMuon with ``--dion PATH`` (a checkout; not on PyPI), single process on CPU.
* SOAP vs pytorch_optimizer's SOAP and HeavyBall's SOAP, Shampoo vs pytorch_optimizer's ScalableShampoo and
  Shampoo, at the same preconditioner frequency ``--frequency`` (default 10): the four matrices of one GPT-2-small
  block (``--layers``). "refresh" is the mean of ``frequency`` consecutive steps, which include one refresh of the
  bases or roots (the amortized per-step cost); "plain" the fastest step without one.
* Kron vs kron-torch 0.3.3's Kron and HeavyBall's PSGDKron on the same block, with the preconditioner updated every
  step (``preconditioner_update_probability=1``: the first 500 steps of the default schedule) and never after the
  first (the floor of the schedule is 0.03: a step is then mostly a "plain" one). kron-torch runs eagerly
  (``torch._dynamo.config.disable``: its ``torch.compile`` decorators would compile for minutes on this CPU).

Peers: ``pip install --no-deps pytorch_optimizer heavyball kron-torch==0.3.3 opt-einsum`` (kron-torch needs
opt-einsum, its declared dependency: without it ``torch.einsum`` contracts left to right and forms the factors'
outer product); HeavyBall runs eagerly here (``heavyball.utils.compile_mode = None``: its torch.compile would take
minutes on this CPU before the first step).
Reproduce: ``PYTHONPATH=src python3 benchmarks/matrix_speed.py`` (``--quick`` for a smoke test with small matrices).
Timings on a shared machine are noisy: read ratios, and repeat.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import optimlab

GPT2_BLOCK = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]


def shapes(layers: int, width: int) -> list[tuple[int, int]]:
    scale = width / 768
    return [(int(a * scale), int(b * scale)) for a, b in GPT2_BLOCK] * layers


def make(shapes_: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(0.02 * torch.randn(s, generator=g)).requires_grad_() for s in shapes_]


def timed_steps(build: Callable[[list[torch.Tensor]], torch.optim.Optimizer], shapes_: list[tuple[int, int]],
                steps: int, warmup: int) -> list[float]:
    params = make(shapes_)
    opt = build(params)
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in params]
    times = []
    for k in range(warmup + steps):
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr * (1 + 0.01 * k)
        t0 = time.perf_counter()
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def peers_soap(freq: int) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    try:
        import pytorch_optimizer

        out["pytorch_optimizer SOAP"] = lambda ps: pytorch_optimizer.SOAP(ps, lr=3e-3, precondition_frequency=freq)
    except ImportError:
        pass
    try:
        import heavyball
        import heavyball.utils

        heavyball.utils.compile_mode = None
        out["heavyball SOAP (eager)"] = lambda ps: heavyball.SOAP(ps, lr=3e-3, precondition_frequency=freq,
                                                                  use_precond_schedule=False, max_precond_dim=10000,
                                                                  merge_dims=False)
    except ImportError:
        pass
    return out


def peers_shampoo(freq: int) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    try:
        import pytorch_optimizer
        from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

        out["pytorch_optimizer ScalableShampoo"] = lambda ps: pytorch_optimizer.ScalableShampoo(
            ps, lr=1e-3, start_preconditioning_step=freq, preconditioning_compute_steps=freq, block_size=1024,
            graft_type=LayerWiseGrafting.RMSPROP)  # it has no Adam grafting
        out["pytorch_optimizer Shampoo"] = lambda ps: pytorch_optimizer.Shampoo(
            ps, lr=1e-3, preconditioning_compute_steps=freq)
    except ImportError:
        pass
    return out


def dion_normuon(path: str) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    """microsoft/dion's NorMuon (``dion/normuon.py``) from a local checkout, with its defaults."""
    import sys

    sys.path.insert(0, path)
    from dion.normuon import NorMuon  # type: ignore[import-not-found]

    return lambda ps: NorMuon(ps, lr=0.01)


def peers_kron(prob: float) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    try:
        import kron_torch.kron

        out["kron-torch Kron (eager)"] = lambda ps: kron_torch.kron.Kron(ps, lr=3e-4,
                                                                       preconditioner_update_probability=prob)
    except ImportError:
        pass
    try:
        import heavyball
        import heavyball.utils

        heavyball.utils.compile_mode = None
        out["heavyball PSGDKron (eager)"] = lambda ps: heavyball.PSGDKron(
            ps, lr=3e-4, preconditioner_update_probability=prob, max_size_triangular=8192, merge_dims=True)
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small matrices, few steps (a smoke test)")
    ap.add_argument("--layers", type=int, default=None, help="GPT-2 blocks (Muon: 12; SOAP/Shampoo: 1)")
    ap.add_argument("--frequency", type=int, default=10, help="SOAP/Shampoo preconditioner frequency")
    ap.add_argument("--only", default="muon,normuon,soap,shampoo,kron")
    ap.add_argument("--dion", default=None, help="a checkout of microsoft/dion (the folder holding dion/): time its "
                    "NorMuon too (single process; its torch.compile'd steps compile on the first, warm-up, step)")
    args = ap.parse_args()
    width = 128 if args.quick else 768
    freq = 3 if args.quick else args.frequency
    only = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, width {width}, frequency {freq}")
    rows = []

    if "muon" in only:
        sh = shapes(args.layers or (2 if args.quick else 12), width)
        steps = 2 if args.quick else 3
        ours = timed_steps(lambda ps: optimlab.Muon(ps, lr=0.02), sh, steps, 1)
        plain = timed_steps(lambda ps: optimlab.Muon(ps, lr=0.02, foreach=False), sh, steps, 1)
        torch_t = timed_steps(lambda ps: torch.optim.Muon(ps, lr=0.02), sh, steps, 1)
        rows.append(("Muon", len(sh), "optimlab (stacked)", min(ours), None))
        rows.append(("Muon", len(sh), "optimlab (foreach=False)", min(plain), None))
        rows.append(("Muon", len(sh), "torch.optim.Muon", min(torch_t), None))
        print(f"Muon: torch / optimlab per step = {min(torch_t) / min(ours):.2f}x")

    if "normuon" in only:  # issue 26: NorMuon against Muon with the same Newton-Schulz, and dion's if given
        sh = shapes(args.layers or (2 if args.quick else 12), width)
        steps = 2 if args.quick else 3
        times = {"optimlab NorMuon (stacked)": timed_steps(lambda ps: optimlab.NorMuon(ps), sh, steps, 1),
                 "optimlab NorMuon (foreach=False)": timed_steps(lambda ps: optimlab.NorMuon(ps, foreach=False), sh,
                                                                 steps, 1),
                 "optimlab Muon (Polar Express)": timed_steps(
                     lambda ps: optimlab.Muon(ps, lr=0.02, ns_coefficients="polar_express"), sh, steps, 1)}
        if args.dion:
            times["dion NorMuon"] = timed_steps(dion_normuon(args.dion), sh, steps, 1)
        for impl, t in times.items():
            rows.append(("NorMuon", len(sh), impl, min(t), None))
        base = min(times["optimlab NorMuon (stacked)"])
        print("NorMuon: " + ", ".join(f"{impl} / optimlab NorMuon = {min(t) / base:.2f}x" for impl, t in times.items()
                                     if impl != "optimlab NorMuon (stacked)"))

    if "kron" in only:
        torch._dynamo.config.disable = True  # kron-torch's @torch.compile: eager (see the module docstring)
        sh = shapes(args.layers or 1, width)
        steps = 2 if args.quick else 3
        for prob, label in ((1.0, "update every step"), (1e-9, "no update")):
            results = {"optimlab": timed_steps(lambda ps, prob=prob: optimlab.Kron(
                ps, lr=3e-4, preconditioner_update_probability=prob), sh, steps, 1)}
            for peer, build in peers_kron(prob).items():
                try:
                    results[peer] = timed_steps(build, sh, steps, 1)
                except Exception as exc:  # a peer that fails is reported, not fatal
                    print(f"{peer}: failed ({type(exc).__name__}: {str(exc)[:120]})")
            for impl, times in results.items():
                rows.append((f"Kron ({label})", len(sh), impl, min(times), None))
            for peer in results.keys() - {"optimlab"}:
                print(f"Kron ({label}): {peer} / optimlab per step = "
                      f"{min(results[peer]) / min(results['optimlab']):.2f}x")

    for name, cls, peers, kw in (("soap", optimlab.SOAP, peers_soap(freq), dict(lr=3e-3, precondition_frequency=freq)),
                                 ("shampoo", optimlab.Shampoo, peers_shampoo(freq),
                                  dict(lr=1e-3, precondition_frequency=freq))):
        if name not in only:
            continue
        sh = shapes(args.layers or 1, width)
        # warm-up past the first refresh (SOAP's first step builds its bases; Shampoo's first root at step freq)
        warm = freq + 1
        results = {"optimlab": timed_steps(lambda ps, cls=cls, kw=kw: cls(ps, **kw), sh, freq, warm)}
        for peer, build in peers.items():
            try:
                results[peer] = timed_steps(build, sh, freq, warm)
            except Exception as exc:  # a peer that fails is reported, not fatal
                print(f"{peer}: failed ({type(exc).__name__}: {str(exc)[:120]})")
        for impl, times in results.items():
            rows.append((name.upper() if name == "soap" else "Shampoo", len(sh), impl, min(times),
                         sum(times) / len(times)))
        ours_amortized = sum(results["optimlab"]) / freq
        others = {k: sum(v) / freq for k, v in results.items() if k != "optimlab"}
        if others:
            best = min(others, key=others.get)
            print(f"{name}: fastest peer ({best}) / optimlab, amortized per step = "
                  f"{others[best] / ours_amortized:.2f}x; plain step = "
                  f"{min(results[best]) / min(results['optimlab']):.2f}x")

    print(f"\n{'optimizer':<26} {'mats':>4} {'implementation':<36} {'plain step s':>12} {'with refresh s':>15}")
    for opt_name, n, impl, plain_t, amort in rows:
        amort_s = f"{amort:15.3f}" if amort is not None else f"{'-':>15}"
        print(f"{opt_name:<26} {n:>4} {impl:<36} {plain_t:12.3f} {amort_s}")


if __name__ == "__main__":
    main()
