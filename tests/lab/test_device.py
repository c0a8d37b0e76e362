"""Where runs train: the device names, the data mover, the GPU each local worker gets, Ray's default device, the
record naming the device, and ``--device cuda`` without CUDA as one line.

CUDA cannot be tested on CI (no GPU); the CPU path is the tested one and the CUDA logic is tested with
``torch.cuda.is_available``/``device_count`` patched. On a machine with NVIDIA GPUs, run (from the repository
root, with the test extra installed)::

    PYTHONPATH=src python -m pytest -q tests/lab/test_device.py            # these tests, the GPU one included
    optimlab compare --task mnist1d-mlp --optimizers adam,sgdm --quick --device cuda --out /tmp/gpu-local
    optimlab compare --task mnist1d-mlp --optimizers adam --quick --jobs 2 --device cuda --out /tmp/gpu-pool
    optimlab compare --task mnist1d-mlp --optimizers adam --quick --backend ray --gpus-per-run 0.5 --out /tmp/gpu-ray

and check that ``environment.device`` is ``cuda`` with the GPU's model under ``environment.gpu`` in each
``results.jsonl`` (``python -c "import json; print(json.loads(open('/tmp/gpu-ray/results.jsonl').readline())
['environment'])"``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from optimlab.lab.commands.cli import main
from optimlab.lab.executors.backends import add_backend_arguments, checkpointing_from_args
from optimlab.lab.training import device as dev
from optimlab.lab.training.runner import RunConfig, run


@dataclass(frozen=True)
class Splits:
    x: torch.Tensor
    y: list[torch.Tensor]
    name: str


class Pair(NamedTuple):
    a: torch.Tensor
    b: dict[str, torch.Tensor]


def test_to_device_moves_every_tensor_in_dataclasses_tuples_lists_and_dicts() -> None:
    data = (Splits(torch.zeros(2), [torch.ones(1)], "s"), Pair(torch.zeros(1), {"k": torch.ones(3)}), 7)
    moved = dev.to_device(data, torch.device("meta"))  # a device torch has everywhere: proves the tensors moved
    splits, pair, seven = moved
    assert isinstance(splits, Splits) and isinstance(pair, Pair) and seven == 7 and splits.name == "s"
    assert {t.device.type for t in (splits.x, splits.y[0], pair.a, pair.b["k"])} == {"meta"}
    assert data[0].x.device.type == "cpu"  # the task's own data is left as it was
    cpu = dev.to_device(data, torch.device("cpu"))
    assert cpu[0].x is data[0].x  # no copy on the CPU


def test_device_names_and_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(dev.CudaUnavailableError, match="no CUDA GPU"):
        dev.resolve_device("cuda")
    with pytest.raises(ValueError, match="Invalid device: 'gpu'"):
        dev.resolve_device("gpu")
    assert dev.worker_device("cuda", 3) == "cuda"  # no GPU seen: resolve_device then says so
    assert dev.worker_device("auto", 3) == "auto"


def test_the_local_pool_gives_worker_i_gpu_i_mod_n(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [dev.worker_device("cuda", i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert dev.worker_device("auto", 4) == "cuda:1"
    assert dev.worker_device("cpu", 4) == "cpu"


def test_the_record_names_the_device() -> None:
    config = RunConfig(task="quadratic", optimizer="adam", lr=0.1, steps=3, eval_every=3)
    record = run(config, device="cpu")
    assert record.environment["device"] == "cpu" and "gpu" not in record.environment
    assert "device" not in record.to_json()["config"]  # not part of the config, nor of its key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (see the module's docstring)")
def test_a_run_on_cuda_names_the_gpu_and_resumes() -> None:
    config = RunConfig(task="mnist1d-mlp", optimizer="adam", lr=1e-3, steps=20, batch_size=32, eval_every=10)
    record = run(config, device="cuda")
    assert record.environment["device"] == "cuda" and record.environment["gpu"]
    assert run(config, device="cuda").history == record.history  # deterministic on the GPU too


def test_ray_trains_on_the_gpu_it_reserves() -> None:
    pytest.importorskip("ray")
    from optimlab.lab.executors.ray import RayExecutor

    assert RayExecutor(gpus_per_run=0.5).device == "cuda"  # built, not started: nothing is contacted
    assert RayExecutor().device == "cpu"
    assert RayExecutor(gpus_per_run=1, device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="gpus_per_run > 0"):
        RayExecutor(device="cuda")


def test_checkpoint_flags() -> None:
    p = argparse.ArgumentParser()
    add_backend_arguments(p)
    default = checkpointing_from_args(p.parse_args([]))
    assert default is not None and (default.every_steps, default.every_minutes) == (None, 10.0)
    assert checkpointing_from_args(p.parse_args(["--checkpoint-minutes", "0"])) is None
    steps = checkpointing_from_args(p.parse_args(["--checkpoint-every", "50", "--checkpoint-minutes", "0"]))
    assert steps is not None and (steps.every_steps, steps.every_minutes) == (50, None)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--device", "cuda"], "optimlab: error: --device cuda: torch sees no CUDA GPU on this machine"),
        (["--checkpoint-every", "0"], "optimlab: error: Invalid --checkpoint-every: 0"),
        (["--checkpoint-minutes", "-1"], "optimlab: error: Invalid --checkpoint-minutes: -1"),
    ],
)
def test_bad_device_and_checkpoint_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, flags: list[str], message: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["compare", "--task", "quadratic", "--optimizers", "adam", "--steps", "2", "--seeds", "1"]
    assert main([*args, *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
