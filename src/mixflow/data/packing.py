"""Tokenization, packing into fixed-length blocks, and a per-domain held-out split."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from mixflow.data.rows import TokenRows, as_token_rows
from mixflow.data.sources import DomainSource, iter_documents
from mixflow.data.tokenizer import TextTokenizer, encode_batch
from mixflow.errors import ConfigError, DataError
from mixflow.utils.iterables import batched
from mixflow.utils.progress import progress as progress_bar

#: Documents per tokenizer call.
BATCH_DOCUMENTS = 1000


@dataclass
class TokenizedDomain:
    """One domain's token rows, split into train and held-out validation rows."""

    name: str
    """Domain name."""
    train: TokenRows
    """Training rows (:class:`~mixflow.data.rows.TokenRows`; a 2-D array of packed rows or a list of
    1-D rows is taken as such, :func:`~mixflow.data.rows.as_token_rows`)."""
    val: TokenRows
    """Held-out rows, same layout as ``train``; empty when no split was asked for."""

    def __post_init__(self) -> None:
        self.train, self.val = as_token_rows(self.train), as_token_rows(self.val)

    @property
    def num_train(self) -> int:
        """Number of training rows."""
        return len(self.train)

    @property
    def num_val(self) -> int:
        """Number of held-out rows."""
        return len(self.val)


def tokenize_in_memory(
    source: DomainSource,
    tokenizer: TextTokenizer,
    cutoff_len: int,
    packing: bool = True,
    val_size: float | int = 0.0,
    seed: int = 0,
    max_documents: int | None = None,
    progress: bool = True,
) -> TokenizedDomain:
    """Read, tokenize and split one domain.

    With ``packing`` every document gets EOS appended, all are concatenated and
    cut into blocks of exactly ``cutoff_len`` tokens (the short tail is
    dropped). Without it each non-empty document is one row, truncated to
    ``cutoff_len``. ``val_size`` (a fraction in [0, 1) or a row count) rows are
    held out by a permutation seeded with ``seed``.
    """
    check_cutoff_len(cutoff_len)
    if source.formatting is not None:
        raise ConfigError(
            f"domain {source.name!r}: instruction data ({source.formatting.kind}) is tokenized through "
            "the cache (mixflow.data.tokenized.cache_domain), which keeps its target mask"
        )
    if max_documents is not None and not (_is_int(max_documents) and max_documents >= 1):
        raise ConfigError(f"max_documents: expected a positive integer or None, got {max_documents!r}")
    if not ((_is_int(val_size) and val_size >= 0) or _is_fraction(val_size)):
        raise ConfigError(f"val_size: expected a float in [0, 1) or an int >= 1, got {val_size!r}")

    documents = iter_documents(source, limit=max_documents)
    with progress_bar(documents, enabled=progress, desc=f"tokenize {source.name}", unit="doc", leave=False) as bar:
        encoded = (ids for batch in batched(bar, BATCH_DOCUMENTS) for ids in encode_batch(tokenizer, batch))
        if packing:
            rows = as_token_rows(_pack(encoded, tokenizer.eos_token_id, cutoff_len))
        else:
            rows = as_token_rows([np.asarray(ids[:cutoff_len], dtype=np.int32) for ids in encoded if len(ids)])
    return _split(source.name, rows, val_size, seed)


#: A causal-LM row needs one input and one target token.
MIN_CUTOFF_LEN = 2


def check_cutoff_len(cutoff_len: object) -> None:
    """The one check of ``cutoff_len`` (the config loader and the tokenizer path both call it)."""
    if not (_is_int(cutoff_len) and cutoff_len >= MIN_CUTOFF_LEN):
        raise ConfigError(f"cutoff_len: expected an integer >= {MIN_CUTOFF_LEN}, got {cutoff_len!r}")


def _is_int(value: object) -> TypeGuard[int]:  # numpy integers too: they compare like ints
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_fraction(value: object) -> bool:
    return isinstance(value, float) and 0.0 <= value < 1.0


def _pack(encoded: Iterable[Sequence[int]], eos_token_id: int, cutoff_len: int) -> np.ndarray:
    # Keep only the unfinished tail between documents, so memory stays at the
    # finished blocks plus less than one block of carry-over.
    blocks: list[np.ndarray] = []
    carry = np.empty(0, dtype=np.int32)
    for ids in encoded:
        stream = np.concatenate([carry, np.asarray(ids, dtype=np.int32), np.asarray([eos_token_id], dtype=np.int32)])
        full = len(stream) // cutoff_len * cutoff_len
        if full:
            blocks.append(stream[:full].reshape(-1, cutoff_len))
        carry = stream[full:]
    if not blocks:
        return np.empty((0, cutoff_len), dtype=np.int32)
    return np.concatenate(blocks, axis=0)


def _split(name: str, rows: TokenRows, val_size: float | int, seed: int) -> TokenizedDomain:
    train_index, val_index = split_indices(name, len(rows), val_size, seed)
    if not len(val_index):
        return TokenizedDomain(name=name, train=rows, val=rows.take(val_index))
    return TokenizedDomain(name=name, train=rows.take(train_index), val=rows.take(val_index))


def split_indices(name: str, total: int, val_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of a domain of ``total`` rows, each sorted: ``val_size`` (a
    fraction in [0, 1) or a row count) rows held out by a permutation seeded with ``seed``."""
    if _is_fraction(val_size):
        num_val = int(val_size * total)
        # Asking for a held-out fraction means per-domain evaluation is wanted,
        # so a small domain still gets one held-out row rather than none.
        if val_size > 0 and num_val == 0 and total > 1:
            num_val = 1
    else:
        num_val = int(val_size)
    if total - num_val < 1:
        raise DataError(
            f"domain {name!r}: {total} rows leave no training rows after holding out "
            f"{num_val} (val_size={val_size!r}); expected more data or a smaller val_size"
        )
    if num_val == 0:
        return np.arange(total, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(total)
    # Sorting each side keeps rows in file order, which makes debugging easier
    # without affecting the sampler, which draws its own permutation.
    return np.sort(order[num_val:]), np.sort(order[:num_val])
