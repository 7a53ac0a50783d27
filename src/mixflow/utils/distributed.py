"""The few collectives mixflow needs, as no-ops outside a process group.

mixflow only adds small reductions of per-domain statistics to a data-parallel run; it never
assumes it is alone (docs/design.md). The sharding helpers tell a provider when parameters
are FSDP2 DTensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def _collective_device(tensor: torch.Tensor) -> torch.device:
    # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor on the input's device)."""
    if not is_distributed():
        return tensor.clone()
    work = tensor.detach().to(_collective_device(tensor)).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation along dim 0 of ``tensor`` from every rank, in rank order (equal shapes required)."""
    if not is_distributed():
        return tensor.detach().clone()
    work = tensor.detach().to(_collective_device(tensor)).contiguous()
    out = [torch.empty_like(work) for _ in range(world_size())]
    dist.all_gather(out, work)
    return torch.cat(out).to(tensor.device)


def all_gather_varlen(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenation of a 1-D ``tensor`` from every rank in rank order, lengths allowed to differ,
    and where this rank's part starts in it."""
    if not is_distributed():
        return tensor.detach().clone(), 0
    device = _collective_device(tensor)
    sizes = all_gather_cat(torch.tensor([tensor.numel()], device=device)).tolist()
    if max(sizes) == 0:
        return tensor.detach().clone(), 0
    padded = torch.zeros(max(sizes), dtype=tensor.dtype, device=device)
    padded[: tensor.numel()] = tensor.detach().to(device)
    parts = all_gather_cat(padded).reshape(len(sizes), -1)
    out = torch.cat([parts[r, :n] for r, n in enumerate(sizes)]).to(tensor.device)
    return out, int(sum(sizes[: rank()]))


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if is_distributed():
        dist.barrier()


def is_sharded_tensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a DTensor (a parameter that FSDP2 ``fully_shard`` keeps sharded)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without DTensor shards nothing
        return False
    return isinstance(tensor, DTensor)


def is_sharded(model: Any) -> bool:
    """Whether any parameter of ``model`` is sharded (FSDP2): then every forward is a collective that
    all ranks must run the same number of times."""
    return any(is_sharded_tensor(p) for p in model.parameters())


def local_rows(tensor: Any) -> tuple[torch.Tensor, int]:
    """(this rank's rows, the first row's index) of a matrix: the whole matrix when it is not sharded,
    else the local shard of a DTensor sharded on dim 0 over a 1-D mesh (FSDP2's layout: ``torch.chunk``
    pieces of ceil(n / world) rows)."""
    if not is_sharded_tensor(tensor):
        return tensor, 0
    from torch.distributed.tensor import Shard

    if tensor.device_mesh.ndim != 1 or tuple(tensor.placements) != (Shard(0),):
        raise ValueError(f"expected a parameter sharded on its rows over one mesh dimension, got {tensor.placements}")
    size = -(-tensor.shape[0] // tensor.device_mesh.size())
    return tensor.to_local(), tensor.device_mesh.get_local_rank() * size


#: Variables through which MPI launchers (mpirun with Open MPI, Intel MPI, MPICH) give the world size.
MPI_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launcher_problem(env: Any = None) -> str | None:
    """Why this process is alone although its launcher was asked for several (None: no sign of it).

    ``accelerate launch`` with a ``MULTI_CPU`` config and ``num_processes: N`` starts one process
    unless mpirun and a hostfile are given: it sets ``ACCELERATE_USE_CPU=True`` and ``MASTER_ADDR`` for
    a rendezvous but no world size, and the run would silently train with 1/N of the global batch."""
    import os

    env = os.environ if env is None else env
    sized = env.get("WORLD_SIZE") is not None or any(env.get(v) for v in MPI_SIZE_VARIABLES)
    if not sized and "MASTER_ADDR" in env and str(env.get("ACCELERATE_USE_CPU", "")).lower() == "true":
        return (
            "launch: accelerate started one process for a multi-process CPU config (distributed_type MULTI_CPU "
            "starts several only through mpirun with a hostfile); use torchrun --nproc_per_node N, or an accelerate "
            "config with distributed_type: MULTI_GPU, which runs torchrun (on CPU too)"
        )
    return None
