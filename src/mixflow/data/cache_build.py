"""Writing one tokenization-cache entry (:mod:`mixflow.data.tokenized` finds, locks and reads them).

A domain's documents are tokenized in batches and appended to ``tokens.bin`` in a temporary folder
named after this host and process, ``meta.json`` is written last, and the folder is renamed into
place: a killed build never leaves an entry a later run trusts, and the next build removes this
host's folders of builds whose process is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.data.encoding import ChatEncoder, TextEncoder, encoded_batches
from mixflow.data.instructions import conversation
from mixflow.data.sources import DomainSource, iter_documents, iter_located_records
from mixflow.data.tokenizer import TextTokenizer
from mixflow.errors import DataError
from mixflow.utils.progress import progress as progress_bar

logger = logging.getLogger("mixflow.data.tokenized")  # one logger for the whole cache

META = "meta.json"
TOKENS = "tokens.bin"
OFFSETS = "offsets.npy"
MASK = "mask.bin"
TARGETS = "targets.npy"


def content_sha256(paths: Iterable[str]) -> list[str]:
    """sha256 of each file's bytes (as stored, compressed or not)."""
    out = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
        out.append(h.hexdigest())
    return out


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _tmp_suffix(pid: int | None = None) -> str:
    # the host is in the name: a cache shared between machines (or containers) never judges another
    # machine's build by a process id of its own
    return f".tmp-{socket.gethostname()}-{os.getpid() if pid is None else pid}"


def remove_stale_builds(directory: Path) -> list[Path]:
    """Delete this host's ``*.tmp-<host>-<pid>`` folders of builds whose process is gone (a killed
    build); returns them."""
    removed = []
    prefix = _tmp_suffix(0)[:-1]  # ".tmp-<host>-"
    for path in directory.glob(f"*{prefix}*") if directory.is_dir() else []:
        pid = path.name.rsplit(prefix, 1)[1]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.info(
            "removed %d unfinished cache build(s) of killed processes: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def build_entry(
    source: DomainSource,
    tokenizer: TextTokenizer,
    key: dict[str, Any],
    fp: str,
    target: Path,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Tokenize ``source`` into the entry folder ``target`` (built aside, renamed into place); returns
    its ``meta.json``."""
    start = time.perf_counter()
    remove_stale_builds(target.parent)
    tmp = target.with_name(target.name + _tmp_suffix())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        dtype = token_dtype(tokenizer.vocab_size)
        num_docs, num_tokens, num_rows, extra = _tokenize_into(tmp, source, tokenizer, dtype, key, workers, progress)
        meta = {
            **extra,
            "fingerprint": fp,
            "key": key,
            "dtype": dtype.name,
            "num_documents": num_docs,
            "num_tokens": num_tokens,
            "num_rows": num_rows,
            "content_sha256": content_sha256(f["path"] for f in key["files"]),
            "build_seconds": round(time.perf_counter() - start, 3),
            "workers": workers,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log_built(source.name, meta, target)
    return meta


def _tokenize_into(
    tmp: Path,
    source: DomainSource,
    tokenizer: TextTokenizer,
    dtype: np.dtype,
    key: dict[str, Any],
    workers: int,
    progress: bool,
) -> tuple[int, int, int, dict[str, Any]]:
    """Write the domain's token files into ``tmp``: (documents, tokens, rows, extra meta fields)."""
    with progress_bar(enabled=progress, desc=f"tokenize {source.name}", unit="doc") as bar:
        if source.formatting is not None:
            examples = iter_examples(source, key["max_samples"])
            encoded = encoded_batches(examples, ChatEncoder(tokenizer), workers)
            return _write_examples(source.name, encoded, tokenizer, dtype, key, tmp, bar)
        texts = encoded_batches(iter_documents(source, limit=key["max_samples"]), TextEncoder(tokenizer), workers)
        num_docs, num_tokens, per_row = _write_tokens(source.name, texts, tokenizer, dtype, key, tmp / TOKENS, bar)
    if per_row is not None:
        np.save(tmp / OFFSETS, np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64))
    num_rows = len(per_row) if per_row is not None else num_tokens // key["cutoff_len"]
    return num_docs, num_tokens, num_rows, {}


def _log_built(name: str, meta: dict[str, Any], target: Path) -> None:
    """One line per build, naming older entries of the domain left beside it (space to free)."""
    others = [
        p.name
        for p in target.parent.glob(target.name[:-17] + "-*")
        if p.is_dir() and p != target and ".tmp-" not in p.name
    ]
    logger.info(
        "tokenized %s: %d documents, %d tokens, %d rows in %.1f s into %s%s",
        name,
        meta["num_documents"],
        meta["num_tokens"],
        meta["num_rows"],
        meta["build_seconds"],
        target,
        f" ({len(others)} older entr{'y' if len(others) == 1 else 'ies'} of this domain there: "
        "remove them to free space)"
        if others
        else "",
    )


def _write_tokens(
    name: str,
    batches: Iterable[list[Any]],
    tokenizer: TextTokenizer,
    dtype: np.dtype,
    key: dict[str, Any],
    path: Path,
    bar: Any,
) -> tuple[int, int, np.ndarray | None]:
    """Append every document's tokens to ``path``: (documents, tokens, row lengths or None when packed)."""
    cutoff, packing = key["cutoff_len"], key["packing"]
    eos = np.asarray([tokenizer.eos_token_id], dtype=dtype)
    lengths: list[np.ndarray] = []
    num_tokens = num_docs = 0
    with open(path, "wb") as out:
        for batch in batches:
            pieces = []
            for ids in batch:
                arr = _checked_ids(name, np.asarray(ids, dtype=np.int64), tokenizer.vocab_size)
                if packing:  # EOS after every document, as the in-memory packer does
                    pieces += [arr.astype(dtype), eos]
                elif arr.size:
                    pieces.append(arr[:cutoff].astype(dtype))
            if not packing:
                lengths.append(np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces)))
            chunk = np.concatenate(pieces) if pieces else np.empty(0, dtype=dtype)
            out.write(chunk.tobytes())
            num_tokens += len(chunk)
            num_docs += len(batch)
            bar.update(len(batch))
        out.flush()
        os.fsync(out.fileno())
    if packing:
        return num_docs, num_tokens, None
    return num_docs, num_tokens, np.concatenate(lengths) if lengths else np.empty(0, dtype=np.int64)


def _checked_ids(name: str, ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """``ids``, after checking they fit the vocabulary (and so the token dtype)."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise DataError(f"domain {name!r}: the tokenizer produced an id outside [0, {vocab_size})")
    return ids


def iter_examples(source: DomainSource, limit: int | None) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(where, conversation) of each instruction record of ``source``."""
    fmt = source.formatting
    assert fmt is not None
    required, optional = fmt.fields()
    names = [*required, *optional]
    for where, values in iter_located_records(source, required, optional, limit=limit):
        yield where, conversation(fmt, dict(zip(names, values)), where)


def _write_examples(
    name: str,
    batches: Iterable[list[Any]],
    tokenizer: TextTokenizer,
    dtype: np.dtype,
    key: dict[str, Any],
    tmp: Path,
    bar: Any,
) -> tuple[int, int, int, dict[str, Any]]:
    """Write each example's tokens and target mask, truncated to ``cutoff_len``; one row per example, or
    (``packing``) whole examples packed greedily into rows of at most ``cutoff_len`` tokens. An example
    with no target token left after truncation is dropped (and counted). Returns (examples, tokens,
    rows, extra meta)."""
    cutoff = key["cutoff_len"]
    # per batch, one array each (not a Python int per example: a corpus of 10⁸ examples stays small)
    lengths: list[np.ndarray] = []
    counts: list[np.ndarray] = []  # target tokens of each example
    firsts: list[np.ndarray] = []  # whether its first token is a target
    num_docs = dropped = 0
    with open(tmp / TOKENS, "wb") as out, open(tmp / MASK, "wb") as out_mask:
        for batch in batches:
            kept = []
            for ids, mask in batch:
                ids, mask = ids[:cutoff], mask[:cutoff]
                if not mask[1:].any():  # a shifted loss never sees position 0's label
                    dropped += 1
                    continue
                out.write(_checked_ids(name, ids, tokenizer.vocab_size).astype(dtype).tobytes())
                out_mask.write(mask.astype(np.uint8).tobytes())
                kept.append((len(ids), int(mask.sum()), bool(mask[0])))
            if kept:
                length, count, first_is_target_doc = zip(*kept)
                lengths.append(np.asarray(length, dtype=np.int64))
                counts.append(np.asarray(count, dtype=np.int64))
                firsts.append(np.asarray(first_is_target_doc, dtype=bool))
            num_docs += len(batch)
            bar.update(len(batch))
        for handle in (out, out_mask):
            handle.flush()
            os.fsync(handle.fileno())
    starts = np.concatenate([[0], np.cumsum(np.concatenate([np.empty(0, np.int64), *lengths]))]).astype(np.int64)
    offsets = _pack_whole(starts, cutoff) if key["packing"] else starts
    np.save(tmp / OFFSETS, offsets)
    num_tokens = int(starts[-1])
    # Target tokens a shifted causal-LM loss counts per row: its examples' targets but the row's first position.
    cum = np.concatenate([[0], np.cumsum(np.concatenate([np.empty(0, np.int64), *counts]))]).astype(np.int64)
    first, last = np.searchsorted(starts, offsets[:-1]), np.searchsorted(starts, offsets[1:])
    first_is_target = np.concatenate([*firsts, [False]]).astype(np.int64)
    targets = cum[last] - cum[first] - first_is_target[first]
    np.save(tmp / TARGETS, targets.astype(np.int64))
    if dropped:
        logger.warning(
            "tokenized %s: %d example(s) kept no response token within cutoff_len %d and were dropped",
            name,
            dropped,
            cutoff,
        )
    return num_docs, num_tokens, len(offsets) - 1, {"dropped_examples": dropped, "target_tokens": int(targets.sum())}


def _pack_whole(starts: np.ndarray, cutoff: int) -> np.ndarray:
    """Row offsets that group consecutive examples (given by their ``starts``) greedily into rows of at
    most ``cutoff`` tokens, never splitting one."""
    rows = [0]
    for start, stop in zip(starts[:-1].tolist(), starts[1:].tolist()):
        if stop - rows[-1] > cutoff and start > rows[-1]:
            rows.append(start)
    rows.append(int(starts[-1]))
    return np.asarray(sorted(set(rows)), dtype=np.int64)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target`` (a rename: a reader sees the old entry or the new)."""
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
