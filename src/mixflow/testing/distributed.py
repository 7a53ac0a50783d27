"""Run a test function in several processes with the gloo backend (CPU only, no GPU needed).

Plugin authors test that their algorithm agrees across ranks the way mixflow's own tests do::

    from mixflow.testing import run_distributed

    def check(rank, world_size, out_dir):   # module level: it is pickled into spawned processes
        ...

    def test_two_ranks(tmp_path):
        run_distributed(check, str(tmp_path))

A run passes only when every rank reports that its function returned. The ranks then meet at a
barrier, destroy the process group and leave with ``os._exit``: the interpreter's finalization is
skipped on purpose. gloo's worker threads can still be releasing the tensors of completed
collectives when a process exits (the group is not always destroyed with ``destroy_process_group``
while autograd or optimizer state holds work on it); a thread that needs the GIL while the
interpreter finalizes calls ``std::terminate`` and the rank dies with SIGABRT after a successful
body. Ranks rendezvous through a file store in a fresh temporary folder, so no TCP port is picked
and released before use (another process could take it in between).
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

_OK, _FAILED, _PEER = "ok", "failed", "peer failed"


def _entry(
    rank: int, world_size: int, store: str, timeout: float, fn: Callable[..., Any], args: tuple, reports: Any
) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size)
    )
    code = 0
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        fn(rank, world_size, *args)
    except BaseException:  # any failure, assertion errors included, goes to the parent with its traceback
        code = 1
        reports.put((rank, _FAILED, traceback.format_exc()))
    else:
        try:
            dist.barrier()  # no rank tears the group down while another is still in a collective
            reports.put((rank, _OK, ""))
        except BaseException:  # a peer failed or died: the peer's report says why
            code = 1
            reports.put((rank, _PEER, traceback.format_exc()))
    try:
        if code == 0 and dist.is_initialized():
            dist.destroy_process_group()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # see the module docstring: no interpreter finalization after the group's threads ran


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "was still running"
    if exitcode < 0:
        try:
            return f"died with {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"died with signal {-exitcode}"
    return f"exited with code {exitcode}"


def run_distributed(fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 300.0) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; raise if any rank fails.

    ``fn`` must be importable (a module-level function) because processes are spawned. A rank
    fails when ``fn`` raises (its traceback is in the error), when it dies before reporting (a
    signal, ``os._exit``), or when it crashes during teardown after reporting success (named as
    such, so it is never mistaken for a failure of ``fn``). ``timeout`` (seconds) bounds every
    collective and the whole run, so a rank waiting for a dead peer cannot hang the test suite.
    """
    ctx = mp.get_context("spawn")
    reports = ctx.SimpleQueue()
    outcome: dict[int, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="mixflow-gloo-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [
            # not daemonic: a rank may start processes of its own (DataLoader workers, tokenizing pools);
            # the loop below ends every rank itself
            ctx.Process(target=_entry, args=(rank, world_size, store, timeout, fn, args, reports))
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout + 30.0
        first_failure: float | None = None
        while any(p.is_alive() for p in procs):
            _drain(reports, outcome)  # a large traceback must not block a rank on a full pipe
            failed = any(p.exitcode not in (None, 0) for p in procs) or any(s == _FAILED for s, _ in outcome.values())
            if failed and first_failure is None:
                first_failure = time.monotonic()
            # peers of a failed rank get a few seconds to report their own error, then they are stopped
            if time.monotonic() > deadline or (first_failure is not None and time.monotonic() - first_failure > 10.0):
                for p in procs:
                    if p.is_alive():
                        p.kill()
            time.sleep(0.02)
        for p in procs:
            p.join()
        _drain(reports, outcome)
    if any(status == _FAILED for status, _ in outcome.values()):
        # the function failed on some rank: its peers' errors at the barrier (or their being stopped)
        # follow from it and would only bury the traceback that matters
        failures = [f"rank {rank}:\n{text}" for rank, (status, text) in sorted(outcome.items()) if status == _FAILED]
        raise AssertionError("\n".join(failures))
    problems = []
    for rank, p in enumerate(procs):
        status, text = outcome.get(rank, (None, ""))
        if status == _PEER:
            problems.append(f"rank {rank} returned, then lost its peers at the final barrier:\n{text}")
        elif status is None:
            problems.append(f"rank {rank} {_exit_reason(p.exitcode)} before reporting a result")
        elif p.exitcode != 0:
            problems.append(
                f"rank {rank} reported success, then {_exit_reason(p.exitcode)} while tearing down its process "
                "group (a defect of mixflow.testing.run_distributed, not of the tested function)"
            )
    if problems:
        raise AssertionError("\n".join(problems))


def _drain(reports: Any, outcome: dict[int, tuple[str, str]]) -> None:
    while True:
        try:
            if reports.empty():
                return
            rank, status, text = reports.get()
        except (EOFError, OSError, queue.Empty):
            return
        outcome[rank] = (status, text)
