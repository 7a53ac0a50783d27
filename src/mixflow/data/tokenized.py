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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.data.cache_build import MASK, META, OFFSETS, TARGETS, TOKENS, build_entry, content_sha256
from mixflow.data.rows import TokenFile, TokenRows
from mixflow.data.sources import DomainSource, resolve_files
from mixflow.data.tokenizer import TextTokenizer, tokenizer_fingerprint
from mixflow.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Bumped whenever the files of an entry change meaning; old entries are then not reused.
FORMAT_VERSION = 1


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


def cache_key(
    source: DomainSource, tokenizer: TextTokenizer, cutoff_len: int, packing: bool, max_documents: int | None
) -> dict[str, Any]:
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
        raise ConfigError(
            f"tokenized_dir: cannot create {target.parent} ({err.strerror}); "
            "expected a writable directory (set tokenized_dir)"
        ) from None
    with _locked(target.with_name(target.name + ".lock"), source.name):
        if (target / META).is_file() and not overwrite:
            meta = json.loads((target / META).read_text(encoding="utf-8"))
            stale = _verify(meta) if verify else []
            if not stale:
                return CacheEntry(target, _open_rows(target, meta), meta, reused=True)
            logger.warning("tokenized %s: content changed in %s; rebuilding %s", source.name, ", ".join(stale), target)
        meta = build_entry(source, tokenizer, key, fp, target, workers, progress)
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
        raise DataError(
            f"{directory / TOKENS}: {size} bytes, expected {meta['num_tokens'] * dtype.itemsize} "
            "(a damaged cache entry: delete it or set overwrite_cache: true)"
        )
    tokens = TokenFile(directory / TOKENS, dtype, meta["num_tokens"])
    if meta["key"]["formatting"] is not None:  # instruction rows: a target mask and per-row target counts
        return TokenRows(
            tokens,
            offsets=np.load(directory / OFFSETS),
            mask=TokenFile(directory / MASK, np.dtype(np.uint8), meta["num_tokens"]),
            row_targets=np.load(directory / TARGETS),
        )
    if meta["key"]["packing"]:
        return TokenRows(tokens, block=meta["key"]["cutoff_len"])
    return TokenRows(tokens, offsets=np.load(directory / OFFSETS))  # 8 bytes per document, in memory
