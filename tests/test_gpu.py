"""On a CUDA device: every row of the dispatch table, forced with ``dispatch.only``, against the CPU plain loop.

CI has no GPU, so every test here is skipped there; ``benchmarks/gpu_check.sh`` runs this module first on a GPU
machine. Each optimizer of ``optim_db`` (every sample configuration) runs 10 steps in float64 on CUDA with one
bucket row allowed at a time (``fused``: torch's fused kernels; ``triton``: the Triton kernels generated from the
traced rule, compiled for the device, not interpreted; ``blocked``: the cache-blocked eager path, with tiny blocks
so that it runs on these small tensors; ``foreach``: whole lists), and its parameters must equal those of the CPU
plain loop (``foreach=False``) to float64 round-off: ``rtol=1e-10, atol=1e-12``, the tolerance of
``test_every_optimizer.py::test_cuda_matches_cpu`` (a different order of float64 additions or a fused multiply-add
moves the last bits only; a wrong rule moves the first digits). Gradients are computed on the CPU and copied, so both
runs see the same bits. A row that the class cannot take (no fused kernel for it, a rule that is not element-wise for
``triton``) is skipped, never passed in silence: the test asserts that the forced row actually ran.
"""

from __future__ import annotations

import pytest
import torch
from optim_db import CASES, case_id
from problems import loss_at, make_params

from optimlab.core import dispatch, kernels, tiling
from optimlab.core import triton_kernels as tk

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")

ALL = pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
ROWS = ("fused", "triton", "blocked", "foreach")
STEPS = 10


def _cpu_plain_loop(info, cfg):
    params = make_params(torch.float64)
    opt = info.make(params, **cfg, foreach=False)
    for k in range(STEPS):
        opt.zero_grad()
        loss_at(params, k).backward()
        opt.step()
    return params


def _cuda_run(info, cfg, row):
    params = [p.detach().cuda().requires_grad_() for p in make_params(torch.float64)]
    opt = info.make(params, **cfg)
    before = dispatch.taken[row]
    for k in range(STEPS):
        opt.zero_grad()
        cpu = [p.detach().cpu().requires_grad_() for p in params]
        loss_at(cpu, k).backward()
        for p, c in zip(params, cpu, strict=True):
            p.grad = c.grad.cuda()
        with dispatch.only(row):
            opt.step()
    torch.cuda.synchronize()
    return params, dispatch.taken[row] - before


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 7 elements and no minimum size, so the blocked row runs on these tiny tensors."""
    monkeypatch.setattr(tiling, "DEFAULT_BLOCK_ELEMS", 7)
    monkeypatch.setattr(tiling, "MIN_BLOCKED_ELEMS", 0)


@ALL
@pytest.mark.parametrize("row", ROWS)
def test_each_row_on_cuda_equals_the_cpu_plain_loop(case, row, tiny_blocks, monkeypatch):
    info, cfg = case
    if cfg.get("foreach") is False or cfg.get("differentiable"):
        pytest.skip("this configuration takes the per-parameter loop, not the bucket table")
    if row == "triton" and not tk.available():
        pytest.skip("Triton is not installed or too old")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(kernels, "_enabled", False)  # the C kernels are CPU-only; keep them out of the way
    ref = _cpu_plain_loop(info, cfg)
    got, ran = _cuda_run(info, cfg, row)
    if ran == 0 and row != "foreach":
        pytest.skip(f"{info.name} never takes the {row!r} row (its own path, or the row does not fit the class)")
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-12)


def test_triton_kernels_ran_on_the_device():
    """A whole step of Adam on CUDA with only the ``triton`` row allowed runs a compiled (not interpreted) kernel."""
    if not tk.available():
        pytest.skip("Triton is not installed or too old")
    import os

    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "unset TRITON_INTERPRET to test the GPU kernels"
    import optimlab

    p = torch.nn.Parameter(torch.randn(1000, device="cuda"))
    p.grad = torch.randn_like(p)
    opt = optimlab.Adam([p], lr=1e-3, fused=False)
    runs = tk.stats()["runs"]
    with dispatch.only("triton"):
        opt.step()
    assert tk.stats()["runs"] == runs + 1
