"""Readers of the files a domain is made of: decompression, text lines, JSON lines or arrays,
parquet and saved datasets, each yielding rows with where they came from (file and line or row),
so that an error can name the place. :mod:`mixflow.data.sources` picks the reader per file.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mixflow.errors import DataError
from mixflow.utils.jsonlog import read_json

#: Compressed variants of .jsonl, .json and .txt files.
COMPRESSIONS = (".gz", ".zst")


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a ``datasets.save_to_disk`` directory (a dataset or a dataset dict)."""
    return ((path / "dataset_info.json").is_file() and (path / "state.json").is_file()) or (
        path / "dataset_dict.json"
    ).is_file()


def file_format(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix or "") of a file, e.g. ``("jsonl", ".gz")`` for ``a.jsonl.gz``."""
    suffixes = [x.lower() for x in path.suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSIONS else ""
    rest = suffixes[:-1] if compression else suffixes
    return (rest[-1] if rest else ""), compression


def open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed on the fly for ``.gz`` and ``.zst``."""
    compression = file_format(path)[1]
    if compression == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst files needs the zstandard package (pip install zstandard)") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines; bytes that are not UTF-8 are an error naming the line."""
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{number}: not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})"
                ) from None
            if line.strip():
                yield number, line.rstrip("\r\n")


def json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for JSON lines, or for the items of one JSON array (LLaMA-Factory's .json)."""
    if file_format(path)[0] == ".json" and _starts_with_bracket(path):
        records = _read_json_array(path)
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON array of objects")
        yield from ((f"{path} item {i}", r) for i, r in enumerate(records))
        return
    for number, line in text_lines(path):
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: expected one JSON object per line ({exc.msg})") from None


def _read_json_array(path: Path) -> Any:
    """The one JSON value of a (possibly compressed) ``.json`` file."""
    if not file_format(path)[1]:
        return read_json(path, "a JSON array of objects")
    with open_binary(path) as handle:
        data = handle.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: expected a JSON array of objects ({err})") from None


def _starts_with_bracket(path: Path) -> bool:
    """Whether the first non-blank line opens a JSON array (else the file is JSON lines)."""
    for _, line in text_lines(path):
        return line.lstrip().startswith("[")
    return False


#: Rows read at a time from a parquet file or a saved dataset.
BATCH_ROWS = 1024

Batches = Callable[[list[str]], Iterator[dict[str, list[Any]]]]
"""Given the columns to read, column batches (name → values) in row order."""


def rows_of(batches: Iterator[dict[str, list[Any]]], fields: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """Rows (a tuple of ``fields``) out of column batches."""
    for batch in batches:
        yield from zip(*(batch[f] for f in fields))


def parquet_columns(path: Path) -> tuple[list[str], Batches]:
    """(column names, batch reader) of a parquet file."""
    import pyarrow.parquet as pq

    def batches(columns: list[str]) -> Iterator[dict[str, list[Any]]]:
        # Only the requested columns, a batch of rows at a time: a shard never has to fit in memory.
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield {c: batch.column(c).to_pylist() for c in columns}

    return pq.read_schema(path).names, batches


def saved_dataset_columns(name: str, path: Path) -> tuple[list[str], Batches]:
    """(column names, batch reader) of domain ``name``'s saved dataset (its train split)."""
    import datasets

    if not is_saved_dataset(path):
        raise DataError(
            f"domain {name!r}: directory {path} is not a datasets.save_to_disk directory "
            "(no state.json/dataset_info.json or dataset_dict.json)"
        )
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{path}: expected a 'train' split, found {', '.join(loaded.keys()) or 'none'}")
        loaded = loaded["train"]

    def batches(columns: list[str]) -> Iterator[dict[str, list[Any]]]:
        yield from loaded.select_columns(columns).iter(batch_size=BATCH_ROWS)

    return list(loaded.column_names), batches
