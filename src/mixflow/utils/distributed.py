"""The few collectives mixflow needs, as no-ops outside a process group.

mixflow only adds small reductions of per-domain statistics to a data-parallel run; it never
assumes it is alone (DESIGN.md, "Scale").
"""

from __future__ import annotations

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


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if is_distributed():
        dist.barrier()
