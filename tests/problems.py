"""Small deterministic problems shared by the tests (importable by a fresh process)."""

from __future__ import annotations

import torch


def make_params(dtype: torch.dtype = torch.float64, seed: int = 0, noncontiguous: bool = False) -> list[torch.Tensor]:
    """Mixed shapes: a matrix, a vector, a 0-d scalar and a 3-d tensor (optionally non-contiguous views)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (5,), (), (2, 3, 4)]
    params = []
    for shape in shapes:
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        if noncontiguous and len(shape) >= 2:
            t = torch.randn(tuple(reversed(shape)), generator=g, dtype=torch.float64).transpose(0, -1)
        params.append(t.to(dtype).requires_grad_())
    return params


def loss_at(params: list[torch.Tensor], step: int, seed: int = 0) -> torch.Tensor:
    """A non-quadratic loss whose data changes every step (so gradients are stochastic but reproducible)."""
    g = torch.Generator().manual_seed(seed * 100003 + step)
    total = params[0].new_zeros(())
    for p in params:
        target = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        total = total + ((p - target) ** 2).sum() * 0.5 + 0.1 * torch.log(torch.cosh(p * 2)).sum()
    return total


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: int, start: int = 0, seed: int = 0) -> None:
    for k in range(start, start + steps):
        opt.zero_grad()
        loss_at(params, k, seed).backward()
        opt.step()
