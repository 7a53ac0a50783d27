"""Tokenize once: a per-domain cache of token arrays on disk, read a row at a time.

A domain's documents are streamed from its files (never all in memory), tokenized in batches
(in ``workers`` processes when asked) and appended to ``tokens.bin`` (uint16 when the vocabulary
fits, else uint32). Packed domains are the stream of documents each followed by EOS, cut into
blocks of ``cutoff_len`` when read; unpacked domains keep one row per non-empty document
(truncated to ``cutoff_len``) with its start in ``offsets.npy``. ``meta.json`` records what the
entry was built from.

An entry lives in ``<tokenized_dir>/<domain>-<fingerprint>/``. The fingerprint covers the source
files (paths, sizes, modification times), the text field, the tokenizer's definition,
``cutoff_len``, ``packing``, ``max_samples`` and this format's version, so any change makes a new
entry and a match is reused. The held-out split is not part of it: it is drawn from the row count
and the seed when the entry is opened (:func:`~mixflow.data.packing.split_indices`), so changing
``val_size`` costs no tokenization. An entry is built in a temporary directory and renamed into
place, so a killed build never leaves an entry a later run trusts; a file lock makes concurrent
processes (ranks, two jobs) build it once while the others wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.data.encoding import ChatEncoder, TextEncoder, encoded_batches
from mixflow.data.instructions import conversation
from mixflow.data.rows import TokenFile, TokenRows
from mixflow.data.sources import DomainSource, iter_documents, iter_located_records, resolve_files
from mixflow.data.tokenizer import TextTokenizer, tokenizer_fingerprint
from mixflow.errors import ConfigError, DataError
from mixflow.utils.progress import progress as progress_bar

logger = logging.getLogger(__name__)

#: Bumped whenever the files of an entry change meaning; old entries are then not reused.
FORMAT_VERSION = 1
META = "meta.json"
TOKENS = "tokens.bin"
OFFSETS = "offsets.npy"
MASK = "mask.bin"
TARGETS = "targets.npy"


@dataclass
class CacheEntry:
    """One domain's tokenized rows, read from its cache entry."""

    directory: Path
    """The entry's directory."""
    rows: TokenRows
    """Every row of the domain (before the held-out split)."""
    meta: dict[str, Any]
    """``meta.json``: the fingerprint's inputs, the counts and how long the build took."""
    reused: bool
    """Whether the entry existed (True) or was built by this call."""


def source_stats(source: DomainSource) -> list[dict[str, Any]]:
    """Path, size and modification time of each of the domain's files (a saved dataset directory:
    of each file in it), in the order they are read."""
    out = []
    for path in resolve_files(source):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            st = f.stat()
            out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def cache_key(source: DomainSource, tokenizer: TextTokenizer, cutoff_len: int, packing: bool,
              max_documents: int | None) -> dict[str, Any]:
    """Everything that decides an entry's tokens and rows."""
    return {
        "format_version": FORMAT_VERSION,
        "domain": source.name,
        "text_field": source.text_field,
        "files": source_stats(source),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "cutoff_len": int(cutoff_len),
        "packing": bool(packing),
        "max_samples": max_documents,
        "formatting": dataclasses.asdict(source.formatting) if source.formatting is not None else None,
    }


def fingerprint(key: dict[str, Any]) -> str:
    """sha256 of the key's JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def entry_dir(cache_dir: str | Path, name: str, fp: str) -> Path:
    """Where a domain's entry with fingerprint ``fp`` lives."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "domain"
    return Path(cache_dir) / f"{safe}-{fp[:16]}"


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


def cache_domain(
    source: DomainSource,
    tokenizer: TextTokenizer,
    cache_dir: str | Path,
    cutoff_len: int,
    packing: bool = True,
    max_documents: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> CacheEntry:
    """The domain's cache entry: reused when its fingerprint matches (and, with ``verify``, every
    file's content hash too), else built (``overwrite`` rebuilds a matching one)."""
    key = cache_key(source, tokenizer, cutoff_len, packing, max_documents)
    fp = fingerprint(key)
    target = entry_dir(cache_dir, source.name, fp)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"tokenized_dir: cannot create {target.parent} ({err.strerror}); "
                         "expected a writable directory (set tokenized_dir)") from None
    with _locked(target.with_name(target.name + ".lock"), source.name):
        if (target / META).is_file() and not overwrite:
            meta = json.loads((target / META).read_text(encoding="utf-8"))
            stale = _verify(meta) if verify else []
            if not stale:
                return CacheEntry(target, _open_rows(target, meta), meta, reused=True)
            logger.warning("tokenized %s: content changed in %s; rebuilding %s", source.name, ", ".join(stale), target)
        meta = _build(source, tokenizer, key, fp, target, workers, progress)
        return CacheEntry(target, _open_rows(target, meta), meta, reused=False)


@contextlib.contextmanager
def _locked(lock_path: Path, name: str) -> Iterator[None]:
    """An exclusive lock on ``lock_path``: one process builds an entry, the others wait for it."""
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("tokenized %s: another process is building its cache; waiting (%s)", name, lock_path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _verify(meta: dict[str, Any]) -> list[str]:
    """Files whose content no longer hashes as when the entry was built."""
    paths = [f["path"] for f in meta["key"]["files"]]
    return [p for p, old, new in zip(paths, meta["content_sha256"], content_sha256(paths)) if old != new]


def _open_rows(directory: Path, meta: dict[str, Any]) -> TokenRows:
    dtype = np.dtype(meta["dtype"])
    size = (directory / TOKENS).stat().st_size
    if size != meta["num_tokens"] * dtype.itemsize:
        raise DataError(f"{directory / TOKENS}: {size} bytes, expected {meta['num_tokens'] * dtype.itemsize} "
                         "(a damaged cache entry: delete it or set overwrite_cache: true)")
    tokens = TokenFile(directory / TOKENS, dtype, meta["num_tokens"])
    if meta["key"]["formatting"] is not None:  # instruction rows: a target mask and per-row target counts
        return TokenRows(tokens, offsets=np.load(directory / OFFSETS), mask=TokenFile(directory / MASK, np.dtype(np.uint8),
                         meta["num_tokens"]), row_targets=np.load(directory / TARGETS))
    if meta["key"]["packing"]:
        return TokenRows(tokens, block=meta["key"]["cutoff_len"])
    return TokenRows(tokens, offsets=np.load(directory / OFFSETS))  # 8 bytes per document, in memory


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
        logger.info("removed %d unfinished cache build(s) of killed processes: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed


def _build(source: DomainSource, tokenizer: TextTokenizer, key: dict[str, Any], fp: str, target: Path,
           workers: int, progress: bool) -> dict[str, Any]:
    start = time.perf_counter()
    remove_stale_builds(target.parent)
    tmp = target.with_name(target.name + _tmp_suffix())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        dtype = token_dtype(tokenizer.vocab_size)
        extra: dict[str, Any] = {}
        with progress_bar(enabled=progress, desc=f"tokenize {source.name}", unit="doc") as bar:
            if source.formatting is not None:
                examples = iter_examples(source, key["max_samples"])
                encoded = encoded_batches(examples, ChatEncoder(tokenizer), workers)
                num_docs, num_tokens, num_rows, extra = _write_examples(source.name, encoded, tokenizer, dtype, key,
                                                                        tmp, bar)
            else:
                texts = iter_documents(source, limit=key["max_samples"])
                num_docs, num_tokens, per_row = _write_tokens(
                    source.name, encoded_batches(texts, TextEncoder(tokenizer), workers), tokenizer, dtype, key,
                    tmp / TOKENS, bar)
                if per_row is not None:
                    np.save(tmp / OFFSETS, np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64))
                num_rows = len(per_row) if per_row is not None else num_tokens // key["cutoff_len"]
        meta = {**extra,
            "fingerprint": fp, "key": key, "dtype": dtype.name, "num_documents": num_docs,
            "num_tokens": num_tokens, "num_rows": num_rows,
            "content_sha256": content_sha256(f["path"] for f in key["files"]),
            "build_seconds": round(time.perf_counter() - start, 3), "workers": workers,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    others = [p.name for p in target.parent.glob(target.name[: -17] + "-*") if p.is_dir() and p != target
              and ".tmp-" not in p.name]
    logger.info("tokenized %s: %d documents, %d tokens, %d rows in %.1f s into %s%s", source.name, num_docs,
                num_tokens, num_rows, meta["build_seconds"], target,
                f" ({len(others)} older entr{'y' if len(others) == 1 else 'ies'} of this domain there: "
                "remove them to free space)" if others else "")
    return meta


def _write_tokens(name: str, batches: Iterable[list[Any]], tokenizer: TextTokenizer, dtype: np.dtype,
                  key: dict[str, Any], path: Path, bar: Any) -> tuple[int, int, np.ndarray | None]:
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


def _write_examples(name: str, batches: Iterable[list[Any]], tokenizer: TextTokenizer, dtype: np.dtype,
                    key: dict[str, Any], tmp: Path, bar: Any) -> tuple[int, int, int, dict[str, Any]]:
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
        logger.warning("tokenized %s: %d example(s) kept no response token within cutoff_len %d and were dropped",
                       name, dropped, cutoff)
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
