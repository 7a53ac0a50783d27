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


def test_scoring_under_bfloat16_autocast_is_within_a_thousandth_of_float32(tmp_path):
    import json

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mixflow.bench.arena_runs import split_losses

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    split = tmp_path / "test"
    split.mkdir()
    for name in ("a", "b"):
        texts = [f"{name} document {i} " * 9 for i in range(6)]
        (split / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    info = {name: {"file_name": f"{name}.jsonl", "columns": {"prompt": "text"}} for name in ("a", "b")}
    (split / "dataset_info.json").write_text(json.dumps(info))
    args = (str(tmp_path / "model"), "byte", [str(split)], ["a", "b"], 16)
    [exact], [fast] = split_losses(*args), split_losses(*args, bf16=True)
    assert exact.keys() == fast.keys() == {"a", "b"}
    assert all(exact[d] != fast[d] and abs(exact[d] - fast[d]) < 1e-3 * exact[d] for d in exact)
