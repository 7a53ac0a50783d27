"""Token rows over one flat token array: in memory, or a tokenization cache's file on disk.

A packed domain is a stream of tokens cut into blocks of ``cutoff_len``; an unpacked one is a
stream of documents with their start offsets. Either way a row is a slice of the stream, so the
rows of a corpus of any size cost a process only the rows it reads (and 8 bytes per row for the
index of a train/held-out split).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.errors import DataError


class _TokenStream:
    """A 1-D token array read a contiguous slice at a time (the part every reader shares)."""

    ndim = 1
    length: int
    dtype: np.dtype

    def __len__(self) -> int:
        return self.length

    @property
    def shape(self) -> tuple[int]:
        return (self.length,)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"{type(self).__name__}: only contiguous slices can be read")
        start, stop, _ = key.indices(self.length)
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError


class TokenFile(_TokenStream):
    """A 1-D token array in a file, read a slice at a time with ``pread``.

    Not a memory map on purpose: every page a map touches stays counted in the process's resident
    memory, so a run that samples rows all over a large corpus would look as if it held it; a read
    costs one system call and keeps nothing. Safe to share with forked DataLoader workers and to
    pickle (the file is reopened in the new process)."""

    def __init__(self, path: str | Path, dtype: np.dtype | str, length: int, offset: int = 0) -> None:
        self.path = str(path)
        self.dtype = np.dtype(dtype)
        self.length = int(length)
        self.offset = int(offset)
        """Bytes before the first token (a header, e.g. a ``.npy`` file's)."""
        self._fd: int | None = None

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = self.dtype.itemsize
        data = os.pread(self._fd, (stop - start) * size, self.offset + start * size)
        if len(data) != (stop - start) * size:
            raise DataError(f"{self.path}: ends before token {stop} (a damaged cache entry)")
        return np.frombuffer(data, dtype=self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]


class TokenFiles(_TokenStream):
    """Several token files read as one stream (a domain of several Megatron prefixes): a slice is
    read from each file it spans."""

    def __init__(self, parts: list[TokenFile]) -> None:
        if not parts:
            raise ValueError("TokenFiles: expected at least one file")
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.dtype = np.result_type(*(p.dtype for p in parts))
        self.length = int(self.starts[-1])

    def _read(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        pieces = []
        for k in range(first, len(self.parts)):
            lo, hi = int(self.starts[k]), int(self.starts[k + 1])
            if lo >= stop:
                break
            pieces.append(self.parts[k][max(start, lo) - lo : min(stop, hi) - lo])
        return (
            pieces[0].astype(self.dtype, copy=False) if len(pieces) == 1 else np.concatenate(pieces).astype(self.dtype)
        )


class TokenRows:
    """Rows of ``tokens``: blocks of ``block`` tokens, documents between ``offsets[i]`` and
    ``offsets[i + 1]``, or any spans ``[spans[0][i], spans[1][i])`` (documents cut at a length);
    ``index`` picks (and orders) a subset of them (a split)."""

    def __init__(
        self,
        tokens: np.ndarray | TokenFile | TokenFiles,
        *,
        block: int | None = None,
        offsets: np.ndarray | None = None,
        index: np.ndarray | None = None,
        mask: np.ndarray | TokenFile | None = None,
        row_targets: np.ndarray | None = None,
        spans: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if sum(x is not None for x in (block, offsets, spans)) != 1:
            raise ValueError("TokenRows: expected exactly one of block (packed), offsets (per-document rows) or spans")
        self._ends: np.ndarray | None = None
        if spans is not None:  # stored as offsets (the starts) and ends: the per-document code paths apply
            offsets, self._ends = np.asarray(spans[0], dtype=np.int64), np.asarray(spans[1], dtype=np.int64)
        if tokens.ndim != 1:
            raise ValueError(f"tokens: expected a 1-D token array, got shape {tokens.shape}")
        self.tokens = tokens
        self.block = block
        self.offsets = offsets
        if block is not None:
            total = len(tokens) // block
        elif self._ends is not None:
            total = len(self._ends)
        else:
            assert offsets is not None, "exactly one of block, offsets, spans (checked above)"
            total = len(offsets) - 1
        self.index = index
        self._len = total if index is None else len(index)
        if (mask is None) != (row_targets is None) or (mask is not None and block is not None):
            raise ValueError("TokenRows: a target mask comes with per-document rows and their row_targets")
        self.mask = mask
        """1 where a token is a target (instruction rows: the responses); None: every token is."""
        self.row_targets = row_targets
        """Target tokens of every row (of the whole stream) a shifted causal-LM loss counts."""

    def __len__(self) -> int:
        return self._len

    def _base(self, i: int) -> int:
        if not -self._len <= i < self._len:
            raise IndexError(f"row {i} out of range for {self._len} rows")
        i %= self._len
        return int(self.index[i]) if self.index is not None else i

    def _span(self, i: int) -> tuple[int, int]:
        j = self._base(int(i))
        if self.block is not None:
            return j * self.block, (j + 1) * self.block
        if self._ends is not None:
            return int(self.offsets[j]), int(self._ends[j])  # type: ignore[index]
        return int(self.offsets[j]), int(self.offsets[j + 1])  # type: ignore[index]

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as an int32 array (writable: torch takes it as is)."""
        start, stop = self._span(i)
        row = np.asarray(self.tokens[start:stop], dtype=np.int32)
        return row if row.flags.writeable else row.copy()  # an int32 file's slice is its read-only buffer

    def labels(self, i: int, ignore_index: int, ids: np.ndarray | None = None) -> np.ndarray | None:
        """Row ``i``'s labels, ``ignore_index`` where a token is not a target; None without a mask.
        ``ids``: the row's tokens when the caller already read them (``self[i]``)."""
        if self.mask is None:
            return None
        start, stop = self._span(i)
        ids = np.asarray(self.tokens[start:stop], dtype=np.int32) if ids is None else ids
        return np.where(np.asarray(self.mask[start:stop], dtype=bool), ids, np.int32(ignore_index))

    def target_counts(self) -> np.ndarray | None:
        """Target tokens of each row a shifted causal-LM loss counts (int64); None without a mask."""
        if self.row_targets is None:
            return None
        return self.row_targets if self.index is None else self.row_targets[self.index]

    def lengths(self) -> np.ndarray:
        """Tokens of every row (int64)."""
        if self.block is not None:
            return np.full(self._len, self.block, dtype=np.int64)
        starts = np.asarray(self.offsets, dtype=np.int64)
        per_doc = self._ends - starts if self._ends is not None else np.diff(starts)
        return per_doc if self.index is None else per_doc[self.index]

    @property
    def num_tokens(self) -> int:
        """Tokens in these rows."""
        return int(self.lengths().sum())

    def take(self, index: np.ndarray) -> TokenRows:
        """The rows at ``index`` (positions in these rows), sharing the token array."""
        idx = np.asarray(index, dtype=np.int64)
        base = idx if self.index is None else self.index[idx]
        spans = None if self._ends is None or self.offsets is None else (self.offsets, self._ends)
        return TokenRows(
            self.tokens,
            block=self.block,
            offsets=None if spans else self.offsets,
            index=base,
            mask=self.mask,
            row_targets=self.row_targets,
            spans=spans,
        )


def as_token_rows(rows: np.ndarray | list[np.ndarray] | TokenRows) -> TokenRows:
    """``rows`` as :class:`TokenRows`: a 2-D array of packed rows (one block per row), a list of
    1-D rows (documents end to end), or TokenRows as they are. The one shape every consumer reads."""
    if isinstance(rows, TokenRows):
        return rows
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        block = max(int(rows.shape[1]), 1)
        return TokenRows(np.ascontiguousarray(rows, dtype=np.int32).reshape(-1), block=block)
    parts = [np.asarray(r, dtype=np.int32).reshape(-1) for r in rows]
    offsets = np.concatenate([[0], np.cumsum([p.size for p in parts], dtype=np.int64)]).astype(np.int64)
    return TokenRows(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32), offsets=offsets)
