"""Reading raw domains in each supported format, and resolving names through dataset_info.json."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixflow.data.sources import DomainSource, read_documents, sources_from_dataset_info


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "twö", "x": 1}])
    assert read_documents(DomainSource("a", str(path))) == ["one", "twö"]


def test_jsonl_custom_field_and_blank_lines(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"body": "x"}\n\n{"body": "y"}\n', encoding="utf-8")
    assert read_documents(DomainSource("a", str(path), text_field="body")) == ["x", "y"]


def test_json_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "x"}, {"text": "y"}], indent=2), encoding="utf-8")
    assert read_documents(DomainSource("a", str(path))) == ["x", "y"]


def test_txt_non_empty_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first doc\n\n   \nsecond doc\n", encoding="utf-8")
    assert read_documents(DomainSource("a", str(path))) == ["first doc", "second doc"]


def test_parquet(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["p", "q"], "id": [1, 2]}), path)
    assert read_documents(DomainSource("a", str(path), text_field="content")) == ["p", "q"]


def test_parquet_missing_column(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["p"]}), path)
    with pytest.raises(ValueError, match="'text'.*content"):
        read_documents(DomainSource("a", str(path)))


def test_saved_hf_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["h1", "h2", "h3"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_documents(DomainSource("a", str(tmp_path / "ds"))) == ["h1", "h2", "h3"]


def test_saved_hf_dataset_dict_uses_train(tmp_path):
    import datasets

    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["t"]}),
            "test": datasets.Dataset.from_dict({"text": ["e"]}),
        }
    )
    splits.save_to_disk(str(tmp_path / "dd"))
    assert read_documents(DomainSource("a", str(tmp_path / "dd"))) == ["t"]


def test_saved_hf_dataset_dict_without_train(tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": ["e"]})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="'train' split"):
        read_documents(DomainSource("a", str(tmp_path / "dd")))


def test_plain_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="save_to_disk"):
        read_documents(DomainSource("a", str(tmp_path)))


def test_missing_path_names_domain_and_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"'wiki'.*nope\.jsonl"):
        read_documents(DomainSource("wiki", str(missing)))


def test_missing_field_names_file_line_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"text": "ok"}, {"body": "bad"}])
    with pytest.raises(ValueError, match=r"a\.jsonl:3: missing field 'text'"):
        read_documents(DomainSource("a", str(path)))


def test_non_string_text(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [{"text": 5}])
    with pytest.raises(ValueError, match=r":1: field 'text' must be a string"):
        read_documents(DomainSource("a", str(path)))


def test_bad_json_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.jsonl:2: expected one JSON object"):
        read_documents(DomainSource("a", str(path)))


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text\nx\n")
    with pytest.raises(ValueError, match=r"'\.csv'.*\.jsonl.*\.txt.*\.parquet"):
        read_documents(DomainSource("a", str(path)))


def _write_info(tmp_path):
    _write_jsonl(tmp_path / "wiki.jsonl", [{"text": "w"}])
    (tmp_path / "sub").mkdir()
    _write_jsonl(tmp_path / "sub" / "code.jsonl", [{"src": "c"}])
    (tmp_path / "notes.txt").write_text("n\n")
    info = {
        "wikipedia": {"file_name": "wiki.jsonl"},
        "code": {"file_name": "sub/code.jsonl", "columns": {"prompt": "src"}},
        "notes": {"file_name": "notes.txt", "text_field": "line"},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))


def test_dataset_info_mapping(tmp_path):
    _write_info(tmp_path)
    wiki, code, notes = sources_from_dataset_info(str(tmp_path), ["wikipedia", "code", "notes"])
    assert wiki == DomainSource("wikipedia", str(tmp_path / "wiki.jsonl"), "text")
    assert code == DomainSource("code", str(tmp_path / "sub" / "code.jsonl"), "src")
    assert notes.text_field == "line"
    assert read_documents(code) == ["c"]


def test_dataset_info_unknown_name_suggests(tmp_path):
    _write_info(tmp_path)
    expected = r"'wikipedai'.*available: code, notes, wikipedia.*did you mean 'wikipedia'"
    with pytest.raises(ValueError, match=expected):
        sources_from_dataset_info(tmp_path, ["wikipedai"])


def test_dataset_info_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        sources_from_dataset_info(tmp_path, ["a"])


def test_dataset_info_entry_without_file_name(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"columns": {}}}))
    with pytest.raises(ValueError, match="'a'.*file_name"):
        sources_from_dataset_info(tmp_path, ["a"])


@pytest.mark.parametrize("suffix", [".jsonl", ".txt", ".json"])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    good = b'{"text": "fine"}\n' if suffix != ".txt" else b"fine\n"
    path.write_bytes(good + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"bad\{suffix}:2: not valid UTF-8 \(byte 0xe9"):
        read_documents(DomainSource(name="d", path=str(path)))


def test_a_corrupt_archive_and_a_line_that_is_not_an_object_are_one_line_each(tmp_path):
    import gzip

    from mixflow.data.sources import DomainSource, iter_documents

    good = gzip.compress(b"\n".join(b'{"text": "document %d"}' % i for i in range(2000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])  # a truncated download
    with pytest.raises(ValueError, match=r"cut\.jsonl\.gz: not a readable \.gz"):
        list(iter_documents(DomainSource("web", str(tmp_path / "cut.jsonl.gz"))))
    (tmp_path / "list.jsonl").write_text('{"text": "fine"}\n["not", "an", "object"]\n')
    with pytest.raises(ValueError, match=r"list\.jsonl:2: expected a JSON object with 'text', got a JSON list"):
        list(iter_documents(DomainSource("web", str(tmp_path / "list.jsonl"))))
