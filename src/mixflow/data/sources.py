"""Raw domains: where each domain's documents live and how to read them."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_FORMATS = (".jsonl", ".json", ".txt", ".parquet", "a datasets.save_to_disk directory")


@dataclass
class DomainSource:
    """One data domain and the file it is read from."""

    name: str
    """Domain name, used in logs, metrics and weight files."""
    path: str
    """A ``.jsonl``/``.json``/``.txt``/``.parquet`` file or a ``save_to_disk`` directory."""
    text_field: str = "text"
    """Field (JSON) or column (parquet, datasets) that holds each document's text."""
    label_field: str | None = None
    """Reserved for per-sample labels; not read yet."""


def read_documents(source: DomainSource) -> list[str]:
    """Read every document of ``source`` as a string, in file order.

    Raises FileNotFoundError when the path is missing and ValueError for an
    unsupported format or a document without ``source.text_field``.
    """
    path = Path(source.path)
    if not path.exists():
        raise FileNotFoundError(f"domain {source.name!r}: path {path} not found")
    if path.is_dir():
        return _read_saved_dataset(source, path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_json_lines(source, path)
    if suffix == ".txt":
        with path.open(encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle if line.strip()]
    if suffix == ".parquet":
        return _read_parquet(source, path)
    raise ValueError(
        f"domain {source.name!r}: path {path} has unsupported format {suffix or '(none)'!r}; "
        f"expected one of {', '.join(SUPPORTED_FORMATS)}"
    )


def _text_of(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _read_json_lines(source: DomainSource, path: Path) -> list[str]:
    if path.suffix.lower() == ".json" and _starts_with_bracket(path):
        return _read_json_array(source, path)
    documents: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: expected one JSON object per line ({exc.msg})") from None
            if not isinstance(record, dict) or source.text_field not in record:
                raise ValueError(f"{where}: missing field {source.text_field!r}")
            documents.append(_text_of(record[source.text_field], where, source.text_field))
    return documents


def _starts_with_bracket(path: Path) -> bool:
    # LLaMA-Factory style .json files are often one JSON array, not JSON lines.
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("[")
    return False


def _read_json_array(source: DomainSource, path: Path) -> list[str]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: expected a JSON array of objects ({exc.msg})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON array of objects")
    documents = []
    for index, record in enumerate(records):
        where = f"{path} item {index}"
        if not isinstance(record, dict) or source.text_field not in record:
            raise ValueError(f"{where}: missing field {source.text_field!r}")
        documents.append(_text_of(record[source.text_field], where, source.text_field))
    return documents


def _column(source: DomainSource, path: Path, columns: list[str], values_of: Any) -> list[str]:
    if source.text_field not in columns:
        raise ValueError(
            f"{path}: missing column {source.text_field!r}; available: {', '.join(columns)}"
        )
    values = values_of(source.text_field)
    return [_text_of(v, f"{path} row {i}", source.text_field) for i, v in enumerate(values)]


def _read_parquet(source: DomainSource, path: Path) -> list[str]:
    import pyarrow.parquet as pq

    # Read the schema first so only the text column is loaded from disk.
    schema_names = pq.read_schema(path).names
    return _column(
        source,
        path,
        schema_names,
        lambda f: pq.read_table(path, columns=[f]).column(f).to_pylist(),
    )


def _read_saved_dataset(source: DomainSource, path: Path) -> list[str]:
    import datasets

    is_dataset = (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    is_dataset_dict = (path / "dataset_dict.json").is_file()
    if not (is_dataset or is_dataset_dict):
        raise ValueError(
            f"domain {source.name!r}: directory {path} is not a datasets.save_to_disk directory "
            "(no state.json/dataset_info.json or dataset_dict.json)"
        )
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ValueError(
                f"{path}: expected a 'train' split, found {', '.join(loaded.keys()) or 'none'}"
            )
        loaded = loaded["train"]
    return _column(source, path, list(loaded.column_names), lambda f: loaded[f])


def sources_from_dataset_info(dataset_dir: str | Path, names: list[str]) -> list[DomainSource]:
    """Resolve domain ``names`` through ``<dataset_dir>/dataset_info.json``.

    Each entry maps a name to ``{"file_name": relative path}`` plus an optional
    text field, given as ``"columns": {"prompt": field}`` (LLaMA-Factory style)
    or ``"text_field": field``.
    """
    info_path = Path(dataset_dir) / "dataset_info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"dataset info {info_path} not found")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{info_path}: expected valid JSON ({exc.msg})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{info_path}: expected a JSON object mapping names to entries")

    sources = []
    for name in names:
        if name not in info:
            close = difflib.get_close_matches(name, list(info), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"dataset {name!r} not in {info_path}; available: {', '.join(sorted(info))}{hint}"
            )
        sources.append(_source_from_entry(name, info[name], info_path))
    return sources


def _source_from_entry(name: str, entry: Any, info_path: Path) -> DomainSource:
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        raise ValueError(f"{info_path}: entry {name!r} needs a string field 'file_name'")
    text_field = entry.get("text_field")
    columns = entry.get("columns")
    if text_field is None and isinstance(columns, dict):
        text_field = columns.get("prompt")
    if text_field is None:
        text_field = "text"
    if not isinstance(text_field, str):
        raise ValueError(f"{info_path}: entry {name!r} text field must be a string")
    return DomainSource(
        name=name,
        path=str(info_path.parent / entry["file_name"]),
        text_field=text_field,
    )
