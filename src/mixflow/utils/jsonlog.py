"""JSON files: append-only JSON-lines logs and atomic writes that a killed run can never tear, and
reads whose errors name the file and line."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixflow.errors import DataError


def _clean(value: Any) -> Any:
    # JSON has no NaN; null says "no value" to any reader, including the seed's plotting snippet.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as one line with a single ``write`` on an ``O_APPEND`` descriptor.

    The whole line goes out in one system call and is fsync'ed, so a killed process leaves either
    the whole line or none of it, never a torn line.
    """
    line = (json.dumps(_clean(record), ensure_ascii=False) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"{path}: short write ({written} of {len(line)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a malformed line is an error naming the file and line number."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not a JSON object ({err.msg})") from None


def read_json(path: str | os.PathLike, expected: str = "valid JSON") -> Any:
    """The JSON value in ``path``; a malformed file is one error naming the file, line and ``expected``."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[err.start]:#04x})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: expected {expected} ({err.msg})") from None


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON to a temporary file in the same directory, fsync, then rename over ``path``."""
    write_text_atomic(path, json.dumps(_clean(payload), indent=1))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file in the same directory, fsync, then rename over ``path``: a
    reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
