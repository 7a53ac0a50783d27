"""A domain made of many files: folders, globs, lists, compressed shards, and the errors that name
the file (issue 9, part 1)."""

from __future__ import annotations

import gzip
import json

import pytest
import zstandard

from mixflow.config import ConfigError, load_config
from mixflow.data.sources import DomainSource, read_documents, resolve_files, sources_from_dataset_info


def _jsonl(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_folder_glob_and_list_are_read_in_order(tmp_path):
    _jsonl(tmp_path / "web" / "part-00001.jsonl", ["b1", "b2"])
    _jsonl(tmp_path / "web" / "part-00000.jsonl", ["a1"])
    _jsonl(tmp_path / "web" / "sub" / "part-00002.jsonl", ["c1"])
    (tmp_path / "web" / "README.md").write_text("not data")
    assert read_documents(DomainSource("web", str(tmp_path / "web"))) == ["a1", "b1", "b2", "c1"]
    assert read_documents(DomainSource("web", str(tmp_path / "web" / "part-*.jsonl"))) == ["a1", "b1", "b2"]
    listed = [str(tmp_path / "web" / "sub"), str(tmp_path / "web" / "part-00000.jsonl")]
    assert read_documents(DomainSource("web", listed)) == ["c1", "a1"]  # a list keeps its order


def test_compressed_shards(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "gz line"}) + "\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("plain one\nplain two\n")
    with gzip.open(tmp_path / "c.json.gz", "wt", encoding="utf-8") as f:
        json.dump([{"text": "array item"}], f)
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zst line"}\n'))
    docs = read_documents(DomainSource("mix", str(tmp_path)))
    assert docs == ["gz line", "plain one", "plain two", "array item", "zst line"]


def test_errors_name_the_pattern_the_shard_and_the_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"domain 'web': pattern .*part-\*\.jsonl matches no file"):
        resolve_files(DomainSource("web", str(tmp_path / "part-*.jsonl")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"folder .*empty holds no \.jsonl"):
        resolve_files(DomainSource("web", str(tmp_path / "empty")))
    _jsonl(tmp_path / "shards" / "part-0.jsonl", ["ok"])
    (tmp_path / "shards" / "part-1.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"part-1\.jsonl holds no records \(an empty shard\)"):
        read_documents(DomainSource("web", str(tmp_path / "shards")))
    with gzip.open(tmp_path / "bad.jsonl.gz", "wb") as f:
        f.write(b'{"text": "fine"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl\.gz:2: not valid UTF-8"):
        read_documents(DomainSource("web", str(tmp_path / "bad.jsonl.gz")))


def test_dataset_info_file_name_may_be_a_folder_and_config_errors_come_first(tmp_path):
    _jsonl(tmp_path / "data" / "web" / "part-0.jsonl", ["x " * 50])
    (tmp_path / "data" / "dataset_info.json").write_text(
        json.dumps({"web": {"file_name": "web"}, "gone": {"file_name": "gone/*.jsonl"}})
    )
    (source,) = sources_from_dataset_info(tmp_path / "data", ["web"])
    assert [p.name for p in resolve_files(source)] == ["part-0.jsonl"]
    base = {"model_config": {"model_type": "llama"}, "output_dir": str(tmp_path / "out")}
    with pytest.raises(ConfigError, match=r"^dataset: domain 'gone': pattern .*gone/\*\.jsonl matches no file$"):
        load_config(raw={**base, "dataset": "web,gone", "dataset_dir": str(tmp_path / "data")})
    run = load_config(raw={**base, "domains": [{"name": "web", "path": [str(tmp_path / "data" / "web" / "*.jsonl")]}]})
    assert run.data.domains[0].path == [str(tmp_path / "data" / "web" / "*.jsonl")]
    with pytest.raises(ConfigError, match=r"^domains\[0\]\.path: domain 'web': path .*nope not found$"):
        load_config(raw={**base, "domains": [{"name": "web", "path": [str(tmp_path / "nope")]}]})
