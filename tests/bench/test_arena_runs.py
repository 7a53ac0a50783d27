"""The arena's worker processes: one per device where there are devices, each seeing only its own."""

from __future__ import annotations

import os

from mixflow.bench.arena_runs import usable_cores, worker_pool


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


def _rows_scored(documents: list[str], cutoff: int, max_rows: int | None, batch: int = 4) -> list[list[int]]:
    from mixflow.bench.arena_runs import _scored_batches
    from mixflow.data.tokenizer import ByteTokenizer

    return [
        row.tolist() for rows in _scored_batches(ByteTokenizer(), documents, cutoff, batch, max_rows) for row in rows
    ]


def test_every_token_is_scored_without_a_cap_the_last_row_shorter():
    rows = _rows_scored(["abcdefg", "hij"], cutoff=4, max_rows=None)
    eos = 258
    stream = [*b"abcdefg", eos, *b"hij", eos]  # 12 tokens: three full rows
    assert [t for row in rows for t in row] == stream and all(len(r) == 4 for r in rows)
    rows = _rows_scored(["abcdefghij"], cutoff=4, max_rows=None)  # 11 tokens: the last row has 3
    assert [len(r) for r in rows] == [4, 4, 3]


def test_a_cap_scores_that_many_full_rows_spread_over_the_whole_stream():
    documents = [chr(ord("a") + i) * 7 for i in range(20)]  # 160 tokens with the EOS ends: 40 rows of 4
    rows = _rows_scored(documents, cutoff=4, max_rows=5)
    assert len(rows) == 5 and all(len(r) == 4 for r in rows)
    everything = _rows_scored(documents, cutoff=4, max_rows=None)
    assert rows[0] == everything[0] and rows[-1] == everything[-1]  # first and last row: the whole stream
    assert rows == [everything[i] for i in (0, 10, 20, 29, 39)]
    assert _rows_scored(documents, cutoff=4, max_rows=40) == everything  # a cap that is not reached changes nothing
