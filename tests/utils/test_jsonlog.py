"""Crash-safe JSON files: whole lines, atomic replaces, errors that name the file and line."""

import json
import os

import pytest

from mixflow.utils.jsonlog import append_jsonl, read_json, read_jsonl, write_json_atomic


def test_lines_are_appended_whole_and_nan_becomes_null(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1, "w": [0.5, float("nan")]})
    append_jsonl(path, {"step": 2, "w": [0.25, 0.75]})
    assert path.read_text().count("\n") == 2
    assert list(read_jsonl(path)) == [{"step": 1, "w": [0.5, None]}, {"step": 2, "w": [0.25, 0.75]}]


def test_a_torn_line_is_an_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: not a JSON object"):
        list(read_jsonl(path))


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"a": 1})
    real_replace = os.replace

    def crash(*args):  # the process dies between writing the temporary file and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"a": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(path.read_text()) == {"a": 1}  # the old content, whole
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_read_json_names_the_file_line_and_what_was_expected(tmp_path):
    path = tmp_path / "info.json"
    path.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(ValueError, match=r"info\.json:3: expected a mapping \("):
        read_json(path, "a mapping")
