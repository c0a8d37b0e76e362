"""Where a run trains: the device names (``cpu``, ``cuda``, ``auto``), moving a task's data to a device, and how a
record names the device.

A task stays device-agnostic: its ``load`` returns tensors on the CPU and its ``batches`` yields CPU tensors; the
runner moves the data once (:func:`to_device`) and the model once, before training. :func:`to_device` walks
tensors inside dataclasses, tuples (named ones too), lists and dicts, and leaves everything else as it is.

The device is not part of a run's config key (:meth:`~optimlab.lab.training.config.RunConfig.key`), as the torch
thread count is not: the record names where it ran (``environment["device"]``, and ``environment["gpu"]``, the GPU
model, on CUDA). CPU and GPU numbers of one config differ in their last digits; do not mix them in one results
folder (the lab's default is ``cpu``, so a GPU is used only when asked for).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["DEVICES", "CudaUnavailableError", "resolve_device", "worker_device", "to_device", "describe_device"]

DEVICES = ("cpu", "cuda", "auto")


class CudaUnavailableError(ValueError):
    """``--device cuda`` on a machine where torch sees no CUDA GPU."""


def resolve_device(name: str) -> torch.device:
    """The torch device of ``name``: ``"cpu"``, ``"cuda"`` (the current CUDA device; the local pool and Ray choose
    it per worker), ``"cuda:N"`` or ``"auto"`` (``cuda`` when torch sees a GPU, else ``cpu``). Raises
    :class:`CudaUnavailableError` for ``cuda`` without CUDA and ``ValueError`` for any other name."""
    if not isinstance(name, str) or not (name in DEVICES or name.startswith("cuda:")):
        raise ValueError(f"Invalid device: {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"--device {name}: this machine has no CUDA GPU that torch {torch.__version__} can use "
            "(use --device cpu, or --device auto to take a GPU only where there is one)"
        )
    device = torch.device(name)
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def worker_device(name: str, worker: int) -> str:
    """The device of the local pool's worker number ``worker``: with ``cuda`` (or ``auto`` where torch sees a
    GPU), GPU ``worker mod n`` of the ``n`` this process sees (``"cuda:i"``); otherwise ``name`` unchanged."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if count:
            return f"cuda:{worker % count}"
    return name


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it on ``device``: tensors, dataclasses (a copy, by ``dataclasses.replace``),
    tuples, named tuples, lists and dicts, at any depth; anything else is returned as it is. On the CPU, CPU
    tensors are returned unchanged (no copy)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        moved = {f.name: to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **moved)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items())
    return obj


def describe_device(device: torch.device) -> dict[str, Any]:
    """What a record says about the device: ``{"device": "cpu"}`` or ``{"device": "cuda", "gpu": <model>}``."""
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device)}
    return {"device": device.type}
