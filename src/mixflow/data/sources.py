"""Raw domains: where each domain's documents live and how to read them.

A domain's source is a file, a folder (every readable file in it, recursively, in sorted order), a
glob pattern, or a list of any of these; files are ``.jsonl``, ``.json``, ``.txt`` or ``.parquet``,
the first three optionally compressed (``.gz``, ``.zst``), or a ``datasets.save_to_disk`` directory.
"""

from __future__ import annotations

import difflib
import glob
import gzip
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixflow.data.file_readers import (
    COMPRESSIONS,
    file_format,
    is_saved_dataset,
    json_records,
    parquet_columns,
    rows_of,
    saved_dataset_columns,
    text_lines,
)
from mixflow.data.instructions import Formatting, formatting_of
from mixflow.data.pretokenized import detect_token_format, source_errors
from mixflow.errors import DataError
from mixflow.utils.jsonlog import read_json

SUPPORTED_FORMATS = (".jsonl", ".json", ".txt", ".parquet", "a datasets.save_to_disk directory")
_READABLE = (".jsonl", ".json", ".txt", ".parquet")


@dataclass
class DomainSource:
    """One data domain and the file it is read from."""

    name: str
    """Domain name, used in logs, metrics and weight files."""
    path: str | list[str]
    """A file, a folder, a glob pattern or a list of these (see the module docstring)."""
    text_field: str = "text"
    """Field (JSON) or column (parquet, datasets) that holds each document's text."""
    label_field: str | None = None
    """Field holding each example's label (``task: classification``); None for text domains."""
    formatting: Formatting | None = None
    """Instruction data (alpaca or sharegpt records rendered to a conversation); None: plain text."""
    token_format: str | None = None
    """Already tokenized, read in place (:mod:`mixflow.data.pretokenized`): ``megatron``, ``numpy``
    or ``mixflow``; None: text, tokenized into the cache."""
    dtype: str | None = None
    """A raw numpy token file's dtype (e.g. ``uint16``)."""
    eos_id: int | None = None
    """Where a numpy token stream's documents end (default: the tokenizer's EOS)."""


def read_documents(source: DomainSource) -> list[str]:
    """Read every document of ``source`` as a string, in file order.

    Raises FileNotFoundError when the path is missing and ValueError for an
    unsupported format or a document without ``source.text_field``.
    """
    return list(iter_documents(source))


def iter_documents(source: DomainSource, limit: int | None = None) -> Iterator[str]:
    """The documents of ``source`` one at a time (at most ``limit``), in file order."""
    for (text,) in iter_records(source, (source.text_field,), text_fields=(source.text_field,), limit=limit):
        yield text


def read_records(
    source: DomainSource, fields: Sequence[str], text_fields: Sequence[str] = (), limit: int | None = None
) -> list[tuple[Any, ...]]:
    """The values of ``fields`` for every record of ``source`` (at most ``limit``), in file order.

    One reader for every format and every task: a ``.jsonl``/``.json`` file (JSON lines or one
    array of objects), ``.txt`` (one document per line; ``fields`` must be the text field alone),
    ``.parquet`` and a ``datasets.save_to_disk`` directory. Fields in ``text_fields`` must hold
    strings. Errors name the file and the line, item or row.
    """
    return list(iter_records(source, fields, text_fields, limit))


def iter_records(
    source: DomainSource, fields: Sequence[str], text_fields: Sequence[str] = (), limit: int | None = None
) -> Iterator[tuple[Any, ...]]:
    """:func:`read_records` one record at a time: a corpus never has to fit in memory (a JSON
    array file is the exception: it is one JSON value, parsed whole)."""
    for _, row in iter_located_records(source, fields, text_fields=text_fields, limit=limit):
        yield row


def iter_located_records(
    source: DomainSource,
    fields: Sequence[str],
    optional: Sequence[str] = (),
    text_fields: Sequence[str] = (),
    limit: int | None = None,
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(where, values of ``fields`` then of ``optional``) for each record; ``where`` is the file and
    line, item or row (for errors found later). An ``optional`` field a record (or a file's
    columns) lacks is None."""
    count = 0
    for path in resolve_files(source):
        if limit is not None and count >= limit:
            return
        in_file = 0
        for located in _file_records(source, path, fields, optional, text_fields):
            if limit is not None and count >= limit:
                return
            yield located
            count += 1
            in_file += 1
        if not in_file:
            raise DataError(f"domain {source.name!r}: {path} holds no records (an empty shard)")


def resolve_files(source: DomainSource) -> list[Path]:
    """The files (and ``save_to_disk`` directories) of a domain, in order: each path of the list as
    given, a folder's readable files and a glob's matches in sorted order. A path or pattern that
    matches nothing is an error naming it."""
    specs = source.path if isinstance(source.path, list) else [source.path]
    if not specs:
        raise DataError(f"domain {source.name!r}: expected at least one path")
    out: list[Path] = []
    for spec in specs:
        if glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True)) or sorted(glob.glob(spec + ".idx"))  # or prefixes
            if not matches:
                raise FileNotFoundError(f"domain {source.name!r}: pattern {spec} matches no file")
            for match in matches:
                out += _expand(source, Path(match))
        else:
            path = Path(spec)
            megatron = [Path(spec + ext) for ext in (".bin", ".idx")]
            if not path.exists() and all(f.is_file() for f in megatron):
                out += megatron  # a Megatron dataset's prefix
                continue
            if not path.exists():
                raise FileNotFoundError(f"domain {source.name!r}: path {path} not found")
            out += [path] if source.token_format is not None else _expand(source, path)
    return out


def _expand(source: DomainSource, path: Path) -> list[Path]:
    if not path.is_dir() or is_saved_dataset(path):
        return [path]
    files = sorted(f for f in path.rglob("*") if f.is_file() and file_format(f)[0] in _READABLE)
    if not files:
        raise DataError(
            f"domain {source.name!r}: folder {path} holds no {', '.join(_READABLE)} file "
            f"(optionally {' or '.join(COMPRESSIONS)}) and is not a datasets.save_to_disk directory"
        )
    return files


def _file_records(
    source: DomainSource, path: Path, fields: Sequence[str], optional: Sequence[str], text_fields: Sequence[str]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    suffix = "" if path.is_dir() else file_format(path)[0]
    if path.is_dir() or suffix == ".parquet":
        names, batches = saved_dataset_columns(source.name, path) if path.is_dir() else parquet_columns(path)
        for key in fields:
            if key not in names:
                raise DataError(f"{path}: missing column {key!r}; available: {', '.join(names)}")
        wanted = (*fields, *optional)
        present = [k for k in wanted if k in names]
        order = [present.index(k) if k in names else None for k in wanted]  # None: an absent optional column
        rows = (tuple(r[i] if i is not None else None for i in order) for r in rows_of(batches(present), present))
        located = ((f"{path} row {i}", row) for i, row in enumerate(rows))
    elif suffix in (".jsonl", ".json"):
        located = (
            (where, _fields_of(record, fields, where) + tuple(record.get(k) for k in optional))
            for where, record in json_records(path)
        )
    elif suffix == ".txt" and list(fields) == [source.text_field] and not optional:
        located = ((f"{path}:{n}", (line,)) for n, line in text_lines(path))
    else:
        formats = (
            SUPPORTED_FORMATS if list(fields) == [source.text_field] else SUPPORTED_FORMATS[:2] + SUPPORTED_FORMATS[3:]
        )
        raise DataError(
            f"domain {source.name!r}: path {path} has unsupported format {suffix or '(none)'!r}; "
            f"expected one of {', '.join(formats)} (.jsonl, .json and .txt optionally {' or '.join(COMPRESSIONS)})"
        )
    try:
        for where, row in located:
            for key, value in zip(fields, row):
                if key in text_fields and not isinstance(value, str):
                    raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
            yield where, row
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # a truncated or corrupt archive, found mid-read
        raise DataError(f"{path}: not a readable {file_format(path)[1] or 'file'} ({err})") from None


def _fields_of(record: Any, fields: Sequence[str], where: str) -> tuple[Any, ...]:
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: expected a JSON object with {', '.join(repr(f) for f in fields)}, "
            f"got a JSON {type(record).__name__}"
        )
    for key in fields:
        if key not in record:
            raise DataError(f"{where}: missing field {key!r}")
    return tuple(record[key] for key in fields)


def sources_from_dataset_info(dataset_dir: str | Path, names: list[str]) -> list[DomainSource]:
    """Resolve domain ``names`` through ``<dataset_dir>/dataset_info.json``.

    Each entry maps a name to ``{"file_name": relative path}`` plus an optional
    text field, given as ``"columns": {"prompt": field}`` (LLaMA-Factory style)
    or ``"text_field": field``.
    """
    info_path = Path(dataset_dir) / "dataset_info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"dataset info {info_path} not found")
    info = read_json(info_path)
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: expected a JSON object mapping names to entries")

    sources = []
    for name in names:
        if name not in info:
            close = difflib.get_close_matches(name, list(info), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"dataset {name!r} not in {info_path}; available: {', '.join(sorted(info))}{hint}")
        sources.append(_source_from_entry(name, info[name], info_path))
    return sources


#: dataset_info.json entry keys mixflow reads; the others LLaMA-Factory knows are refused by name.
ENTRY_KEYS = ("file_name", "formatting", "columns", "tags", "text_field", "ranking", "format", "dtype", "eos_id")
_REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def _source_from_entry(name: str, entry: Any, info_path: Path) -> DomainSource:
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        raise DataError(f"{info_path}: entry {name!r} needs a string field 'file_name'")
    where = f"{info_path}: entry {name!r}"
    for key in entry:
        if key in _REMOTE_KEYS:
            raise DataError(f"{where}: {key}: mixflow reads local files only (file_name); remove it")
        if key not in ENTRY_KEYS:
            raise DataError(f"{where}: {key}: not supported by mixflow; expected some of {', '.join(ENTRY_KEYS)}")
    if entry.get("ranking"):
        raise DataError(f"{where}: ranking: preference (ranking) data is not supported by mixflow")
    return domain_source(
        name,
        str(info_path.parent / entry["file_name"]),
        where,
        text_field=entry.get("text_field"),
        formatting=entry.get("formatting"),
        columns=entry.get("columns"),
        tags=entry.get("tags"),
        token_format=entry.get("format"),
        dtype=entry.get("dtype"),
        eos_id=entry.get("eos_id"),
    )


def domain_source(
    name: str,
    path: str | list[str],
    where: str,
    text_field: Any = None,
    formatting: Any = None,
    columns: Any = None,
    tags: Any = None,
    token_format: Any = None,
    dtype: Any = None,
    eos_id: Any = None,
) -> DomainSource:
    """A domain from LLaMA-Factory's keys (a ``dataset_info.json`` entry or an inline domain):
    instruction data when ``formatting`` or an instruction column says so, else plain text read
    from ``text_field`` or ``columns.prompt`` (default ``text``); already tokenized when ``format``
    (or the path: a Megatron prefix, a ``.npy`` file, a cache entry) says so. ``where`` names it in errors."""
    token_format = token_format if token_format is not None else detect_token_format(path)
    if token_format is not None:
        problems = source_errors(
            path,
            where,
            token_format,
            dtype,
            eos_id,
            {"text_field": text_field, "formatting": formatting, "columns": columns, "tags": tags},
        )
        if problems:
            raise DataError("\n".join(problems))
        return DomainSource(name=name, path=path, token_format=token_format, dtype=dtype, eos_id=eos_id)
    if dtype is not None or eos_id is not None:
        raise DataError(
            f"{where}: {'dtype' if dtype is not None else 'eos_id'}: only for a pre-tokenized domain "
            "(format: numpy); this one is text"
        )
    if columns is not None and not isinstance(columns, dict):
        raise DataError(f"{where}: columns: expected an object mapping column roles to fields")
    fmt = formatting_of(formatting, columns, tags, where)
    if fmt is None:
        extra = sorted(set(columns or {}) - {"prompt"})
        if extra:
            raise DataError(f"{where}: columns.{extra[0]}: a text entry reads one column ('prompt' or text_field)")
        if text_field is None and columns:
            text_field = columns.get("prompt")
    elif text_field is not None:
        raise DataError(f"{where}: text_field: an instruction entry ({fmt.kind}) reads its columns, not text_field")
    if text_field is None:
        text_field = "text"
    if not isinstance(text_field, str):
        raise DataError(f"{where}: text_field: expected a string, got {text_field!r}")
    return DomainSource(name=name, path=path, text_field=text_field, formatting=fmt)
