"""The arena's worker processes: one per device where there are devices, each seeing only its own."""

from __future__ import annotations

import os
import sys

import pytest

from mixflow.bench.arena_runs import usable_cores, worker_pool
from mixflow.utils.allocator import keep_freed_memory
from tests.helpers import PROBE_BYTES, PROBE_PAGES, reused_buffer_faults


def _visible_device(barrier) -> tuple[int, str]:
    barrier.wait(timeout=60)  # both workers hold a task at once: two distinct processes answer
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def _environment(name: str) -> str:
    return os.environ.get(name, "unset")


def test_with_devices_each_worker_sees_only_its_own(monkeypatch):
    from multiprocessing import get_context

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the parent's own restriction is respected
    with get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(2)
        with worker_pool(jobs=8, devices=2) as pool:
            answers = [f.result(timeout=120) for f in [pool.submit(_visible_device, barrier) for _ in range(2)]]
    assert len({pid for pid, _ in answers}) == 2
    assert sorted(device for _, device in answers) == ["5", "7"]


def test_on_the_cpu_the_workers_see_what_the_parent_sees(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with worker_pool(jobs=1) as pool:
        assert pool.submit(_environment, "CUDA_VISIBLE_DEVICES").result(timeout=120) == "unset"
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def _faults_then_threshold() -> tuple[int, int]:
    # the faults first: measured with what the worker's initializer set, not with this call's
    return reused_buffer_faults(), keep_freed_memory()


def test_a_worker_keeps_freed_memory_so_a_steps_buffers_are_not_faulted_in_again():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt: Linux")
    with worker_pool(jobs=1) as pool:
        faults, threshold = pool.submit(_faults_then_threshold).result(timeout=120)
    if threshold < PROBE_BYTES:
        pytest.skip(f"this C library's mmap threshold stays below the probe's buffer ({threshold} bytes)")
    assert faults <= PROBE_PAGES // 100
