"""Domains already tokenized, read in place: Megatron indexed datasets, numpy token arrays and
mixflow's own cache entries. Nothing is copied; rows are read a slice at a time
(:class:`~mixflow.data.rows.TokenFile`), so memory stays flat in the corpus size, and a domain's
sizes come from its index (or, for a raw array split at EOS, one scan of it).

**Megatron** (Megatron-LM ``core/datasets/indexed_dataset.py``'s ``MMIDIDX`` layout; a domain may be
several prefixes — a folder, a glob, a list — read as one stream): ``PREFIX.idx``
holds, little-endian, the magic ``MMIDIDX\\x00\\x00``, a version (uint64, 1), a dtype code (uint8:
1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16), the sequence count S
and the document-index count D (uint64 each), then S sequence lengths (int32), S byte pointers into
``PREFIX.bin`` (int64) and D document indices (int64: document d is sequences
``doc[d]..doc[d+1]``). ``PREFIX.bin`` is the tokens.

**numpy**: a ``.npy`` file (its header gives dtype and length; 1-D, C order) or a raw ``.bin`` /
memmap file of a declared ``dtype``; documents are split after each ``eos_id`` (OLMo-style token
files).

**mixflow**: a tokenization cache entry folder (``meta.json``, ``tokens.bin``), e.g. built on
another machine.

Rows are packed blocks of ``cutoff_len`` over the whole stream (``packing``), or one row per
document, cut at ``cutoff_len``.
"""

from __future__ import annotations

import glob
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.data.rows import TokenFile, TokenFiles, TokenRows
from mixflow.errors import DataError

#: The formats a domain's ``format`` key takes.
TOKEN_FORMATS: tuple[str, ...] = ("megatron", "numpy", "mixflow")
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
#: Megatron's dtype codes.
MEGATRON_DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}


@dataclass(frozen=True)
class PretokenizedDomain:
    """A pre-tokenized domain's rows and what the run summary and the checks read of it."""

    rows: TokenRows
    num_tokens: int
    documents: int
    source: str
    """The file(s) it was read from, for messages."""


def megatron_index(idx: Path) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype, sequence lengths, byte pointers, document indices) of a Megatron ``.idx`` file."""
    data = idx.read_bytes()
    header = len(MEGATRON_MAGIC) + 8 + 1 + 8 + 8
    if len(data) < header or not data.startswith(MEGATRON_MAGIC):
        raise DataError(f"{idx}: not a Megatron index (expected the header {MEGATRON_MAGIC!r})")
    at = len(MEGATRON_MAGIC)
    (version,) = struct.unpack_from("<Q", data, at)
    (code,) = struct.unpack_from("<B", data, at + 8)
    sequences, documents = struct.unpack_from("<QQ", data, at + 9)
    if version != 1:
        raise DataError(f"{idx}: index version {version}, expected 1")
    if code not in MEGATRON_DTYPES:
        raise DataError(f"{idx}: dtype code {code}, expected one of {sorted(MEGATRON_DTYPES)}")
    need = header + sequences * (4 + 8) + documents * 8
    if len(data) < need:
        raise DataError(
            f"{idx}: {len(data)} bytes, expected {need} for {sequences} sequences and {documents} "
            "document indices (a truncated index)"
        )
    lengths = np.frombuffer(data, dtype="<i4", count=sequences, offset=header).astype(np.int64)
    pointers = np.frombuffer(data, dtype="<i8", count=sequences, offset=header + 4 * sequences)
    docs = np.frombuffer(data, dtype="<i8", count=documents, offset=header + 12 * sequences)
    return np.dtype(MEGATRON_DTYPES[code]), lengths, pointers.copy(), docs.copy()


def megatron_prefixes(path: str | Path | list[str]) -> list[Path]:
    """The Megatron prefixes a domain's path names: a prefix, a folder (every ``*.idx`` in it), a
    glob of prefixes, or a list of any of these; in order (sorted within a folder or a glob)."""
    if isinstance(path, list):
        return [q for item in path for q in megatron_prefixes(item)]
    text = str(path).removesuffix(".bin").removesuffix(".idx")
    if glob.has_magic(text):
        found = sorted(glob.glob(text + ".idx")) or sorted(m for m in glob.glob(text) if m.endswith(".idx"))
        if not found:
            raise FileNotFoundError(f"{path}: matches no Megatron index (PREFIX.idx)")
        return [Path(f.removesuffix(".idx")) for f in found]
    if Path(text).is_dir():
        indexes = sorted(Path(text).glob("*.idx"))
        if not indexes:
            raise FileNotFoundError(f"{path}: a folder without a Megatron index (PREFIX.idx)")
        return [f.with_suffix("") for f in indexes]
    return [Path(text)]


def read_megatron(prefix: str | Path | list[str], cutoff_len: int, packing: bool) -> PretokenizedDomain:
    """The rows of ``PREFIX.bin`` / ``PREFIX.idx`` — or of several prefixes (a folder, a glob, a
    list) read as one stream, document after document (:func:`megatron_prefixes`)."""
    prefixes = megatron_prefixes(prefix)
    parts = [_megatron_part(q) for q in prefixes]
    if len(parts) == 1:
        return _domain(*parts[0], cutoff_len, packing, str(prefixes[0]))
    # several prefixes: their token files end to end, each one's document offsets shifted by its start
    stream = TokenFiles([tokens for tokens, _ in parts])
    offsets = np.concatenate(
        [part_offsets[:-1] + stream.starts[k] for k, (_, part_offsets) in enumerate(parts)] + [stream.starts[-1:]]
    ).astype(np.int64)
    return _domain(stream, offsets, cutoff_len, packing, ", ".join(map(str, prefixes)))


def _megatron_part(prefix: Path) -> tuple[TokenFile, np.ndarray]:
    """One prefix's token file and its documents' token offsets (n + 1), its index checked against
    its ``.bin``; no rows built (several prefixes are cut into rows once, as one stream)."""
    idx, binary = prefix.with_name(prefix.name + ".idx"), prefix.with_name(prefix.name + ".bin")
    for path in (idx, binary):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (a Megatron dataset is PREFIX.bin and PREFIX.idx)")
    dtype, lengths, pointers, docs = megatron_index(idx)
    if lengths.size == 0 or docs.size < 2:
        raise DataError(f"{idx}: no document (an empty Megatron dataset)")
    size = binary.stat().st_size
    end = int(pointers[-1] + lengths[-1] * dtype.itemsize)
    if end > size:
        raise DataError(
            f"{binary}: {size} bytes, but the index points to byte {end} (a truncated .bin, or an index "
            "of another file)"
        )
    if np.any(pointers % dtype.itemsize) or np.any(np.diff(pointers) != lengths[:-1] * dtype.itemsize):
        raise DataError(
            f"{idx}: its sequences are not contiguous in {binary.name}; expected the layout Megatron writes"
        )
    starts = pointers // dtype.itemsize
    # a document is its sequences, which are contiguous: its tokens run from its first sequence's start
    offsets = np.append(starts[docs[:-1]], starts[-1] + lengths[-1]).astype(np.int64)
    return TokenFile(binary, dtype, int(starts[-1] + lengths[-1])), offsets


def read_numpy(
    path: str | Path, cutoff_len: int, packing: bool, eos_id: int | None, dtype: str | None = None
) -> PretokenizedDomain:
    """The rows of a ``.npy`` token array, or of a raw token file of ``dtype``, split after ``eos_id``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    if path.suffix == ".npy":
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read:
                    raise ValueError(f"format version {version}")
                shape, fortran, found = read[version](f)
            except ValueError as err:
                raise DataError(f"{path}: not a .npy file this reader knows ({err})") from err
            offset = f.tell()
        if len(shape) != 1 or fortran:
            raise DataError(f"{path}: expected a 1-D token array, got shape {shape}")
        if dtype is not None and np.dtype(dtype) != found:
            raise DataError(f"{path}: holds {found}, but the domain declares dtype {dtype}")
        tokens = TokenFile(path, found, int(shape[0]), offset=offset)
        expected = offset + int(shape[0]) * found.itemsize
        if path.stat().st_size < expected:
            raise DataError(f"{path}: {path.stat().st_size} bytes, expected {expected} (a truncated array)")
    else:
        if dtype is None:
            raise DataError(f"{path}: a raw token file needs its dtype (e.g. dtype: uint16)")
        kind = np.dtype(dtype)
        size = path.stat().st_size
        if size % kind.itemsize:
            raise DataError(
                f"{path}: {size} bytes is not a whole number of {kind} tokens (the wrong dtype, or truncated)"
            )
        tokens = TokenFile(path, kind, size // kind.itemsize)
    if len(tokens) == 0:
        raise DataError(f"{path}: no tokens")
    if packing:
        return _domain(tokens, None, cutoff_len, True, str(path))
    if eos_id is None:
        raise DataError(f"{path}: one row per document needs eos_id (documents end at it)")
    return _domain(tokens, _eos_offsets(tokens, eos_id), cutoff_len, False, str(path))


def _eos_offsets(tokens: TokenFile, eos_id: int, chunk: int = 1 << 24) -> np.ndarray:
    """Document starts (and the end) of a stream split after every ``eos_id``, read in chunks."""
    ends = [np.flatnonzero(tokens[i : i + chunk] == eos_id) + i + 1 for i in range(0, len(tokens), chunk)]
    cuts = np.concatenate([np.zeros(1, dtype=np.int64), *ends]).astype(np.int64)
    if cuts[-1] != len(tokens):
        cuts = np.append(cuts, len(tokens))  # the last document has no EOS
    return cuts


def read_mixflow(entry: str | Path, cutoff_len: int, packing: bool) -> PretokenizedDomain:
    """The rows of a mixflow tokenization cache entry (as built, whatever ``cutoff_len`` it used,
    with this run's ``cutoff_len`` and ``packing`` applied to its documents)."""
    entry = Path(entry)
    meta_path, binary = entry / "meta.json", entry / "tokens.bin"
    if not meta_path.is_file() or not binary.is_file():
        raise FileNotFoundError(f"{entry}: not a mixflow cache entry (expected meta.json and tokens.bin)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    kind = np.dtype(meta["dtype"])
    if binary.stat().st_size != meta["num_tokens"] * kind.itemsize:
        raise DataError(f"{binary}: {binary.stat().st_size} bytes, expected {meta['num_tokens'] * kind.itemsize}")
    tokens = TokenFile(binary, kind, int(meta["num_tokens"]))
    offsets_path = entry / "offsets.npy"
    offsets = np.load(offsets_path) if offsets_path.is_file() else None
    if offsets is None and not packing:
        raise DataError(f"{entry}: a packed entry has no document offsets; read it with packing")
    return _domain(tokens, offsets, cutoff_len, packing, str(entry))


def _domain(
    tokens: TokenFile | TokenFiles, offsets: np.ndarray | None, cutoff_len: int, packing: bool, source: str
) -> PretokenizedDomain:
    if packing:
        rows = TokenRows(tokens, block=cutoff_len)
        if len(rows) == 0:
            raise DataError(f"{source}: {len(tokens)} tokens make no row of cutoff_len {cutoff_len}")
        documents = len(offsets) - 1 if offsets is not None else 0
        return PretokenizedDomain(rows, len(rows) * cutoff_len, documents, source)
    assert offsets is not None
    # one row per document, a longer one cut at cutoff_len (its first cutoff_len tokens)
    starts = offsets[:-1]
    ends = np.minimum(offsets[1:], starts + cutoff_len)
    keep = ends > starts
    rows = _document_rows(tokens, starts[keep], ends[keep])
    return PretokenizedDomain(rows, int((ends[keep] - starts[keep]).sum()), int(keep.sum()), source)


def _document_rows(tokens: TokenFile | TokenFiles, starts: np.ndarray, ends: np.ndarray) -> TokenRows:
    """Rows ``[starts[i], ends[i])`` (documents cut at cutoff_len): TokenRows over offsets when the
    rows are whole documents end to end, else a view of the cut rows."""
    if np.array_equal(starts[1:], ends[:-1]):
        return TokenRows(tokens, offsets=np.append(starts, ends[-1]).astype(np.int64))
    return TokenRows(tokens, spans=(starts.astype(np.int64), ends.astype(np.int64)))


def write_megatron(
    prefix: str | Path, documents: list[np.ndarray] | list[list[int]], dtype: np.dtype | str = "uint16"
) -> Path:
    """Write ``documents`` (token ids) as a Megatron indexed dataset ``PREFIX.bin`` + ``PREFIX.idx``
    (one sequence per document, the layout :func:`megatron_index` reads); returns the prefix."""
    prefix = Path(prefix)
    kind = np.dtype(dtype)
    code = next(c for c, t in MEGATRON_DTYPES.items() if np.dtype(t) == kind)
    arrays = [np.asarray(d, dtype=kind) for d in documents]
    lengths = np.array([a.size for a in arrays], dtype="<i4")
    pointers = (np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]) * kind.itemsize).astype("<i8")
    docs = np.arange(len(arrays) + 1, dtype="<i8")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".bin").write_bytes(b"".join(a.tobytes() for a in arrays))
    header = (
        MEGATRON_MAGIC + struct.pack("<Q", 1) + struct.pack("<B", code) + struct.pack("<QQ", len(arrays), docs.size)
    )
    prefix.with_name(prefix.name + ".idx").write_bytes(header + lengths.tobytes() + pointers.tobytes() + docs.tobytes())
    return prefix


def read_pretokenized(
    source: Any, cutoff_len: int, packing: bool, vocab_size: int, eos_id: int | None
) -> PretokenizedDomain:
    """A pre-tokenized source's rows (a :class:`~mixflow.data.sources.DomainSource` with a
    ``token_format``), after checking every id is below
    ``vocab_size`` (one chunked pass over the tokens; an id the model cannot embed is one error line
    naming the file, before any model loads)."""
    path = str(source.path)
    if source.token_format == "megatron":
        domain = read_megatron(source.path, cutoff_len, packing)
    elif source.token_format == "numpy":
        domain = read_numpy(
            path, cutoff_len, packing, source.eos_id if source.eos_id is not None else eos_id, source.dtype
        )
    else:
        domain = read_mixflow(path, cutoff_len, packing)
    tokens, chunk, top, low = domain.rows.tokens, 1 << 24, -1, 0
    for i in range(0, len(tokens), chunk):  # one pass over the tokens, both bounds at once
        part = tokens[i : i + chunk]
        top, low = max(top, int(part.max())), min(low, int(part.min()))
    if top >= vocab_size or low < 0:
        raise DataError(
            f"domain {source.name!r}: {domain.source} holds token id {top if top >= vocab_size else low}, "
            f"outside the tokenizer's vocabulary [0, {vocab_size}) (another tokenizer's ids?)"
        )
    return domain


def detect_token_format(path: str | list[str]) -> str | None:
    """The pre-tokenized format a domain's path says (a Megatron prefix, a ``.npy`` array, a mixflow
    cache entry folder), or None for text."""
    if isinstance(path, list):
        return "megatron" if path and all(detect_token_format(x) == "megatron" for x in path) else None
    if glob.has_magic(path):
        return "megatron" if glob.glob(path + ".idx") else None
    p = Path(path)
    if p.is_dir() and any(p.glob("*.idx")) and not any(p.glob("*.json*")):
        return "megatron"
    if not p.exists() and Path(path + ".bin").is_file() and Path(path + ".idx").is_file():
        return "megatron"
    if p.suffix == ".npy" and p.is_file():
        return "numpy"
    if p.is_dir() and (p / "meta.json").is_file() and (p / "tokens.bin").is_file():
        return "mixflow"
    return None


def source_errors(
    path: str | list[str], where: str, token_format: Any, dtype: Any, eos_id: Any, text_keys: dict[str, Any]
) -> list[str]:
    """Every problem of a pre-tokenized domain's entry: text keys, a bad format, path, dtype or eos_id."""
    errors = [
        f"{where}: {key}: a pre-tokenized domain ({token_format}) has no text to read"
        for key, value in text_keys.items()
        if value is not None
    ]
    if token_format not in TOKEN_FORMATS:
        errors.append(f"{where}: format: expected one of {list(TOKEN_FORMATS)}, got {token_format!r}")
    if token_format != "megatron" and (isinstance(path, list) or glob.has_magic(path)):
        errors.append(f"{where}: a {token_format} domain is one path (several are for Megatron prefixes)")
    if dtype is not None:
        try:
            if np.dtype(dtype).kind not in "iu":
                raise TypeError
        except TypeError:
            errors.append(f"{where}: dtype: expected an integer dtype such as uint16 or int32, got {dtype!r}")
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int) or eos_id < 0):
        errors.append(f"{where}: eos_id: expected a token id (an integer >= 0), got {eos_id!r}")
    return errors
