"""The execution path the matrix optimizers (Muon, SOAP, Shampoo) share, and whole matrices under FSDP2.

Their update of a parameter needs the whole matrix (an orthogonalization, Kronecker factors, an eigenbasis), so
they do not run through the element-wise machinery of :class:`optimlab.core.base.Optimizer`. They override
``_step_group`` with :meth:`MatrixOptimizer._step_matrices` for the groups that are theirs (Muon's AdamW groups
still take the base path), and batch same-shape matrices themselves. A later dispatch function in the base class
may take over that choice; until then this override is the one place it is made.

Under FSDP2 a parameter is a DTensor shard. The scheme here is *owner computes*: each DTensor parameter has an
owner rank (round robin over the parameters of a group, so the work is spread evenly); every rank all-gathers the
matrix it needs (``full_tensor()``, the traffic of one FSDP unshard of that parameter), only the owner runs the
cubic-cost part and keeps the state tied to the whole matrix, then broadcasts the resulting direction, and every
rank applies its own shard of it. State that is element-wise in the parameter's coordinates (Muon's momentum)
stays sharded. The result equals the unsharded run (``tests/test_distributed.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..core.base import Optimizer

__all__ = ["MatrixOptimizer", "WholeMatrices"]


def _dtensor_cls() -> Any:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


class WholeMatrices:
    """Owner-computes helper for one step of one group: which rank computes which parameter, and the collectives.

    Without DTensors (the common case) every call is the identity and this rank owns everything.
    """

    def __init__(self, params: Iterable[Tensor]) -> None:
        cls = _dtensor_cls()
        self.params = list(params)
        self.sharded = cls is not None and any(isinstance(p, cls) for p in self.params)
        self._index = {id(p): i for i, p in enumerate(self.params)}

    def is_sharded(self, p: Tensor) -> bool:
        cls = _dtensor_cls()
        return cls is not None and isinstance(p, cls)

    def _mesh_rank(self, p: Tensor) -> tuple[Any, int, int]:
        mesh = p.device_mesh
        if mesh.ndim != 1:
            raise NotImplementedError(f"{type(self).__name__}: DTensor parameters on a {mesh.ndim}-D device mesh; "
                                      "only 1-D meshes (FSDP2 fully_shard) are supported")
        return mesh, mesh.get_local_rank(), mesh.size()

    def owner(self, p: Tensor) -> int:
        """The mesh rank that computes ``p``'s matrix step."""
        if not self.is_sharded(p):
            return 0
        _, _, size = self._mesh_rank(p)
        return self._index[id(p)] % size

    def owns(self, p: Tensor) -> bool:
        if not self.is_sharded(p):
            return True
        _, rank, _ = self._mesh_rank(p)
        return self.owner(p) == rank

    def full(self, t: Tensor) -> Tensor:
        """The whole tensor (an all-gather for a DTensor; the tensor itself otherwise)."""
        return t.full_tensor() if self.is_sharded(t) else t

    def share(self, p: Tensor, full: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Broadcast the owner's ``full`` (shape of ``p``) to every rank and return this rank's shard of it (a plain
        tensor laid out as ``p``'s local tensor). Without sharding: ``full`` itself."""
        if not self.is_sharded(p):
            assert full is not None
            return full
        import torch.distributed as dist
        from torch.distributed.tensor import distribute_tensor

        mesh, rank, _ = self._mesh_rank(p)
        group = mesh.get_group()
        owner = self.owner(p)
        buf = full.contiguous() if rank == owner and full is not None else \
            torch.empty(p.shape, dtype=dtype, device=p.to_local().device)
        dist.broadcast(buf, src=dist.get_global_rank(group, owner), group=group)
        return distribute_tensor(buf, mesh, p.placements, src_data_rank=None).to_local()

    @staticmethod
    def local(t: Tensor) -> Tensor:
        """The local shard of a DTensor (written in place by the caller), or the tensor itself."""
        cls = _dtensor_cls()
        return t.to_local() if cls is not None and isinstance(t, cls) else t


def _copy_saved(value: Any, device: torch.device) -> Any:
    """A copy of a saved state value in its saved dtype (0-d counters stay where they were, on the host)."""
    if isinstance(value, Tensor):
        return value.detach().clone() if value.dim() == 0 else value.detach().to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: _copy_saved(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_saved(v, device) for v in value)
    return value


class MatrixOptimizer(Optimizer):
    """Base class of the matrix optimizers: their own step for their groups, and a dtype-preserving load.

    Subclasses implement :meth:`_step_matrices` (and may override :meth:`_is_matrix_group`).
    """

    def _is_matrix_group(self, group: dict[str, Any]) -> bool:
        return True

    def _step_group(self, group: dict[str, Any]) -> None:
        """Override of the base class's per-group step: matrix groups take :meth:`_step_matrices`."""
        if self._is_matrix_group(group):
            self._step_matrices(group)
        else:
            super()._step_group(group)

    def _step_matrices(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _state_spec(self, p: Tensor, group: dict[str, Any]) -> tuple[dict[str, torch.Size], set[str]]:
        """A matrix group's state is created by its step, not by ``_init_state``: the step count is 0-d and the
        ``_lazy_param_state`` tensors have the parameter's shape (factors and bases are lists: not checked)."""
        if not self._is_matrix_group(group):
            return super()._state_spec(p, group)
        return {"step": torch.Size([]), **{k: p.shape for k in self._lazy_param_state}}, set()

    def _with_grads(self, group: dict[str, Any]) -> list[tuple[Tensor, Tensor, dict[str, Any]]]:
        """``(param, gradient, state)`` for the parameters that have a gradient; the gradient is negated (a new
        tensor) under ``maximize``, never written to."""
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients; "
                                   "use torch.optim.SparseAdam or dense gradients")
            g = torch.neg(p.grad) if group["maximize"] else p.grad
            out.append((p, g, self.state[p]))
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, but every state tensor keeps its saved dtype: torch casts floating state to the parameter's
        dtype (and integer index tensors too), while these optimizers keep factors and eigenbases in float32 for
        low-precision parameters, so a resumed run continues bit for bit."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                self.state[p][key] = _copy_saved(value, p.device)
