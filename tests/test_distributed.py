"""Every optimizer under FSDP2 (parameters are DTensor shards) on 2 CPU processes with gloo.

Layer-wise optimizers (LARS, LAMB: trust ratios from per-layer norms) are where sharding bites: a norm taken on a
local shard is wrong. optimlab keeps norms as tensors (a DTensor norm is reduced across ranks) and never calls
``.item()`` on them; this test checks that every registered optimizer gives, on sharded parameters, the trajectory
of the same optimizer on an unsharded copy of the model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed as dist

import optimlab

SRC = str(Path(__file__).resolve().parents[1] / "src")

_WORKER = textwrap.dedent("""
    import json, os, sys, torch, torch.distributed as dist
    sys.path.insert(0, {src!r})
    import optimlab
    from torch.distributed.fsdp import fully_shard

    rank = int(sys.argv[1])
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results = {{}}
    for name in sorted(optimlab.OPTIMIZERS):
        torch.manual_seed(0)
        make = lambda: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
        model, ref = make(), make()
        ref.load_state_dict(model.state_dict())
        for m in model:
            if isinstance(m, torch.nn.Linear):
                fully_shard(m)
        fully_shard(model)
        kw = dict(lr=0.05 if name in ("lars",) else 0.01, weight_decay=0.01)
        kw = {{**kw, **{after_adam!r}.get(name, {{}})}}
        kw = {{k: v for k, v in kw.items() if v is not None}}
        opt = optimlab.create_optimizer(name, model, **kw)
        ropt = optimlab.create_optimizer(name, ref, **kw)
        g = torch.Generator().manual_seed(1)
        init = [p.detach().clone() for p in ref.parameters()]
        for _ in range(6):
            X, y = torch.randn(16, 8, generator=g), torch.randn(16, 5, generator=g)
            for o, m in ((opt, model), (ropt, ref)):
                o.zero_grad()
                ((m(X) - y) ** 2).mean().backward()
                o.step()
        err = max((p.full_tensor() - q).abs().max().item() for p, q in zip(model.parameters(), ref.parameters()))
        moved = max((q - i).abs().max().item() for q, i in zip(ref.parameters(), init))
        results[name] = (err, moved)
    if rank == 0:
        with open({out!r}, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()
""")


# After Adam (issue 12): arguments where the common ones do not fit (None removes one: Rprop has no weight decay).
AFTER_ADAM_KWARGS = {
    "rprop": dict(weight_decay=None),
    "adadelta": dict(lr=1.0),
    "prodigy": dict(lr=1.0, d0=1e-4),
    "schedulefree-sgd": dict(lr=0.1),
    "ademamix": dict(alpha_warmup=3, beta3_warmup=3),
    "asgd": dict(t0=2.0),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip("FSDP2 (torch.distributed.fsdp.fully_shard) is not available")
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "results.json"
    code = _WORKER.format(src=SRC, port=_free_port(), out=str(out), after_adam=AFTER_ADAM_KWARGS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], env=env, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    if not out.exists():
        raise AssertionError("FSDP2 workers failed:\n" + "\n".join(e[-3000:] for e in errors))
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(optimlab.OPTIMIZERS))
def test_fsdp2_sharded_matches_unsharded(fsdp_results, name):
    err, moved = fsdp_results[name]
    assert moved > 1e-4  # the optimizer did move the weights
    assert err <= 1e-5 * max(1.0, moved), (err, moved)


# -- issue12b: the matrix optimizers on uneven shards, with options that make every matrix path run -------------------
# Hidden matrices of 7 and 9 rows split 4/3 and 5/4 over two ranks; Shampoo's 4-blocks cross the shard boundary;
# Newton-Schulz runs in float64 so "equal" can mean round-off. Each matrix is gathered to its owner rank, which runs
# the matrix step (see optimlab.algorithms._matrix_step).
_MATRIX_CONFIGS = {
    "muon": dict(lr=0.02, ns_dtype="float64", adamw_lr=0.01),
    "muon-plain-loop": dict(lr=0.02, ns_dtype="float64", adamw_lr=0.01, foreach=False, momentum_form="sum"),
    "soap": dict(lr=0.01, precondition_frequency=2),
    "soap-merge": dict(lr=0.01, precondition_frequency=2, merge_dims=True, max_precond_dim=8),
    "shampoo": dict(lr=0.01, precondition_frequency=2, max_preconditioner_dim=4),
    "shampoo-l2": dict(lr=0.01, precondition_frequency=2, weight_decay_type="l2", grafting="rmsprop"),
    "kron": dict(lr=0.01, preconditioner_update_probability=1.0),
    "kron-diag": dict(lr=0.01, memory_save_mode="one_diag", momentum_into_precond_update=False,
                      preconditioner_update_probability=0.5, precond_update_mode="random"),
}
# Issue 26: NorMuon's second moment lives with the owner of each matrix (per row of the whole matrix).
_MATRIX_CONFIGS.update({
    "normuon": dict(lr=0.02, ns_dtype="float64", adamw_lr=0.01),
    "normuon-plain-loop": dict(lr=0.02, ns_dtype="float64", adamw_lr=0.01, foreach=False, momentum_form="ema",
                               nesterov=True, stat_axis="longer", beta2=0.5),
})

_MATRIX_WORKER = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    sys.path.insert(0, {src!r})
    import optimlab
    from torch.distributed.fsdp import fully_shard

    rank = int(sys.argv[1])
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    configs = json.loads({configs!r})
    results = {{}}
    for key, cfg in sorted(configs.items()):
        name = key.split("-")[0]
        if cfg.get("ns_dtype") == "float64":
            cfg = dict(cfg, ns_dtype=torch.float64)
        torch.manual_seed(0)
        make = lambda: torch.nn.Sequential(torch.nn.Linear(8, 7), torch.nn.Tanh(), torch.nn.Linear(7, 9),
                                           torch.nn.Tanh(), torch.nn.Linear(9, 5))
        model, ref = make(), make()
        ref.load_state_dict(model.state_dict())
        for m in model:
            if isinstance(m, torch.nn.Linear):
                fully_shard(m)
        fully_shard(model)
        opt = optimlab.create_optimizer(name, model, weight_decay=0.01, **cfg)
        ropt = optimlab.create_optimizer(name, ref, weight_decay=0.01, **cfg)
        g = torch.Generator().manual_seed(1)
        init = [p.detach().clone() for p in ref.parameters()]
        for _ in range(7):
            X, y = torch.randn(16, 8, generator=g), torch.randn(16, 5, generator=g)
            for o, m in ((opt, model), (ropt, ref)):
                o.zero_grad()
                ((m(X) - y) ** 2).mean().backward()
                o.step()
        err = max((p.full_tensor() - q).abs().max().item() for p, q in zip(model.parameters(), ref.parameters()))
        moved = min((q - i).abs().max().item() for q, i in zip(ref.parameters(), init))
        results[key] = (err, moved)
    if rank == 0:
        with open({out!r}, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def fsdp_matrix_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("fsdp_matrix") / "results.json"
    code = _MATRIX_WORKER.format(src=SRC, port=_free_port(), out=str(out), configs=json.dumps(_MATRIX_CONFIGS))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], env=env, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    if not out.exists():
        raise AssertionError("FSDP2 workers failed:\n" + "\n".join(e[-3000:] for e in errors))
    return json.loads(out.read_text())


@pytest.mark.parametrize("key", sorted(_MATRIX_CONFIGS))
def test_fsdp2_uneven_shards_match_unsharded_for_matrix_optimizers(fsdp_matrix_results, key):
    err, moved = fsdp_matrix_results[key]
    assert moved > 1e-4  # every parameter moved
    assert err <= 1e-6 * max(1.0, moved), (err, moved)
