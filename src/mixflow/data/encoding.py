"""Encoding documents (or instruction examples) in batches, in worker processes when asked.

An encoder is a picklable callable from a batch of items to their encodings, so a worker process
receives it once at start-up; :func:`encoded_batches` keeps the output in input order and at most
two batches per worker in flight, so the reader never runs ahead of the writer.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from typing import Any

from mixflow.data.instructions import render
from mixflow.data.packing import BATCH_DOCUMENTS
from mixflow.data.tokenizer import TextTokenizer, encode_batch
from mixflow.utils.iterables import batched


class TextEncoder:
    """Token ids of a batch of documents."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> list[Any]:
        return encode_batch(self.tokenizer, texts)


class ChatEncoder:
    """(token ids, target mask) of a batch of located conversations."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, examples: list[tuple[str, list[dict[str, str]]]]) -> list[Any]:
        return [render(self.tokenizer, turns, where) for where, turns in examples]


_worker_encoder: Any = None


def _init_worker(encoder: Any) -> None:
    global _worker_encoder
    _worker_encoder = encoder


def _encode_in_worker(items: list[Any]) -> list[Any]:
    return _worker_encoder(items)


def encoded_batches(items: Iterable[Any], encoder: Any, workers: int) -> Iterator[list[Any]]:
    """``encoder`` of each batch of documents (or examples), in order."""
    if workers <= 1:
        for batch in batched(items, BATCH_DOCUMENTS):
            yield encoder(batch)
        return
    # fork starts a worker in milliseconds (spawn re-imports everything: seconds); the parent's
    # tokenizer threads are not used in the children, which must not start their own either.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(encoder,))
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    with pool:
        # At most two batches per worker in flight (Pool.imap would read the whole corpus ahead).
        pending: collections.deque[Any] = collections.deque()
        for batch in batched(items, BATCH_DOCUMENTS):
            pending.append(pool.apply_async(_encode_in_worker, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
