"""Run a test function in several processes with the gloo backend (CPU only, no GPU needed).

Plugin authors test that their algorithm agrees across ranks the way mixflow's own tests do::

    from mixflow.testing import run_distributed

    def check(rank, world_size, out_dir):   # module level: it is pickled into spawned processes
        ...

    def test_two_ranks(tmp_path):
        run_distributed(check, str(tmp_path))
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple, errors: Any) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        fn(rank, world_size, *args)
    except BaseException:  # report any failure, including assertion errors, to the parent
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], *args: Any, world_size: int = 2) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; raise if any rank fails.

    ``fn`` must be importable (a module-level function) because processes are spawned.
    """
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    mp.start_processes(
        _entry, args=(world_size, _free_port(), fn, args, errors), nprocs=world_size, join=True, start_method="spawn"
    )
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    if failures:
        raise AssertionError("\n".join(failures))
