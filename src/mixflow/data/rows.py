"""Token rows over one flat token array, which may be a memory map of a tokenization cache.

A packed domain is a stream of tokens cut into blocks of ``cutoff_len``; an unpacked one is a
stream of documents with their start offsets. Either way a row is a slice of the stream, so the
rows of a corpus of any size cost a process only the pages it reads (and 8 bytes per row for the
index of a train/held-out split).
"""

from __future__ import annotations

import numpy as np


class TokenRows:
    """Rows of ``tokens``: blocks of ``block`` tokens, or documents between ``offsets[i]`` and
    ``offsets[i + 1]``; ``index`` picks (and orders) a subset of them (a split)."""

    def __init__(self, tokens: np.ndarray, *, block: int | None = None, offsets: np.ndarray | None = None,
                 index: np.ndarray | None = None) -> None:
        if (block is None) == (offsets is None):
            raise ValueError("TokenRows: expected exactly one of block (packed) or offsets (per-document rows)")
        if tokens.ndim != 1:
            raise ValueError(f"tokens: expected a 1-D token array, got shape {tokens.shape}")
        self.tokens = tokens
        self.block = block
        self.offsets = offsets
        total = len(tokens) // block if block is not None else len(offsets) - 1  # type: ignore[arg-type]
        self.index = index
        self._len = total if index is None else len(index)

    def __len__(self) -> int:
        return self._len

    def _base(self, i: int) -> int:
        if not -self._len <= i < self._len:
            raise IndexError(f"row {i} out of range for {self._len} rows")
        i %= self._len
        return int(self.index[i]) if self.index is not None else i

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as an int32 array (a copy, so a memory map's pages are not held on to)."""
        j = self._base(int(i))
        if self.block is not None:
            start, stop = j * self.block, (j + 1) * self.block
        else:
            start, stop = int(self.offsets[j]), int(self.offsets[j + 1])  # type: ignore[index]
        return np.asarray(self.tokens[start:stop], dtype=np.int32)

    def lengths(self) -> np.ndarray:
        """Tokens of every row (int64)."""
        if self.block is not None:
            return np.full(self._len, self.block, dtype=np.int64)
        per_doc = np.diff(np.asarray(self.offsets, dtype=np.int64))
        return per_doc if self.index is None else per_doc[self.index]

    @property
    def num_tokens(self) -> int:
        """Tokens in these rows."""
        return int(self.lengths().sum())

    def take(self, index: np.ndarray) -> TokenRows:
        """The rows at ``index`` (positions in these rows), sharing the token array."""
        idx = np.asarray(index, dtype=np.int64)
        base = idx if self.index is None else self.index[idx]
        return TokenRows(self.tokens, block=self.block, offsets=self.offsets, index=base)
