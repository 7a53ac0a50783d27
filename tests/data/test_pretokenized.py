"""Pre-tokenized domains read in place: Megatron indexed datasets, numpy token arrays, mixflow's own
cache entries — rows equal to the documents written, and every damaged file named in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixflow.data.pretokenized import MEGATRON_MAGIC, read_megatron, read_mixflow, read_numpy, write_megatron
from mixflow.errors import DataError
from tests.helpers import TINY_MODEL

EOS = 0
DOCS = [np.arange(1, 6), np.arange(10, 13), np.arange(20, 29), np.arange(30, 32)]  # 5, 3, 9 and 2 tokens


def _with_eos(docs):
    return [np.append(d, EOS) for d in docs]


@pytest.mark.parametrize("dtype", ["uint16", "int32"])
def test_a_megatron_dataset_reads_as_its_documents(tmp_path, dtype):
    prefix = write_megatron(tmp_path / "web_text_document", _with_eos(DOCS), dtype)
    one_per_doc = read_megatron(prefix, cutoff_len=8, packing=False)
    assert [one_per_doc.rows[i].tolist() for i in range(4)] == [
        [1, 2, 3, 4, 5, 0],
        [10, 11, 12, 0],
        list(range(20, 28)),
        [30, 31, 0],
    ]  # the third cut at 8
    assert one_per_doc.documents == 4 and one_per_doc.num_tokens == 6 + 4 + 8 + 3
    packed = read_megatron(str(prefix) + ".bin", cutoff_len=4, packing=True)  # the .bin path works too
    stream = np.concatenate(_with_eos(DOCS))
    assert len(packed.rows) == stream.size // 4
    assert (
        np.concatenate([packed.rows[i] for i in range(len(packed.rows))]).tolist()
        == stream[: 4 * len(packed.rows)].tolist()
    )
    split = one_per_doc.rows.take(np.array([3, 1]))
    assert [split[0].tolist(), split[1].tolist()] == [[30, 31, 0], [10, 11, 12, 0]] and split.lengths().tolist() == [
        3,
        4,
    ]


def test_damaged_megatron_files_are_named(tmp_path):
    prefix = write_megatron(tmp_path / "d", _with_eos(DOCS))
    binary, idx = tmp_path / "d.bin", tmp_path / "d.idx"
    binary.write_bytes(binary.read_bytes()[:-6])
    with pytest.raises(DataError, match=r"d.bin: 40 bytes, but the index points to byte 46 \(a truncated .bin"):
        read_megatron(prefix, 8, False)
    write_megatron(prefix, _with_eos(DOCS))
    data = idx.read_bytes()
    for damaged, message in [
        (b"NOTANIDX!" + data[9:], "not a Megatron index"),
        (data[:9] + (2).to_bytes(8, "little") + data[17:], "index version 2, expected 1"),
        (data[:17] + bytes([9]) + data[18:], "dtype code 9"),
        (data[:-8], "a truncated index"),
    ]:
        idx.write_bytes(damaged)
        with pytest.raises(DataError, match=message):
            read_megatron(prefix, 8, False)
    with pytest.raises(
        FileNotFoundError, match=r"missing.idx: not found \(a Megatron dataset is PREFIX.bin and PREFIX.idx\)"
    ):
        read_megatron(tmp_path / "missing", 8, False)
    write_megatron(tmp_path / "empty", [])
    with pytest.raises(DataError, match="no document"):
        read_megatron(tmp_path / "empty", 8, False)
    assert MEGATRON_MAGIC == b"MMIDIDX\x00\x00"


def test_numpy_token_arrays_split_at_eos(tmp_path):
    stream = np.concatenate(_with_eos(DOCS)).astype(np.uint16)
    np.save(tmp_path / "tokens.npy", stream)
    stream.tofile(tmp_path / "tokens.bin")
    for domain in (
        read_numpy(tmp_path / "tokens.npy", 16, False, EOS),
        read_numpy(tmp_path / "tokens.bin", 16, False, EOS, dtype="uint16"),
    ):
        assert [domain.rows[i].tolist() for i in range(4)] == [d.tolist() for d in _with_eos(DOCS)]
    assert len(read_numpy(tmp_path / "tokens.npy", 5, True, None).rows) == stream.size // 5
    with pytest.raises(DataError, match=r"tokens.npy: holds uint16, but the domain declares dtype int32"):
        read_numpy(tmp_path / "tokens.npy", 16, False, EOS, dtype="int32")
    with pytest.raises(DataError, match=r"a raw token file needs its dtype"):
        read_numpy(tmp_path / "tokens.bin", 16, False, EOS)
    stream.astype(np.uint8).tofile(tmp_path / "odd.bin")
    with pytest.raises(DataError, match=r"odd.bin: 23 bytes is not a whole number of uint16 tokens"):
        read_numpy(tmp_path / "odd.bin", 16, False, EOS, dtype="uint16")
    with pytest.raises(DataError, match=r"one row per document needs eos_id"):
        read_numpy(tmp_path / "tokens.npy", 16, False, None)
    np.save(tmp_path / "grid.npy", np.zeros((2, 3), dtype=np.uint16))
    with pytest.raises(DataError, match=r"expected a 1-D token array, got shape \(2, 3\)"):
        read_numpy(tmp_path / "grid.npy", 16, False, EOS)


def test_a_mixflow_cache_entry_is_a_source_on_another_machine(tmp_path):
    entry = tmp_path / "code-0123"
    entry.mkdir()
    stream = np.concatenate(_with_eos(DOCS)).astype(np.uint16)
    stream.tofile(entry / "tokens.bin")
    np.save(entry / "offsets.npy", np.concatenate([[0], np.cumsum([d.size + 1 for d in DOCS])]))
    (entry / "meta.json").write_text(json.dumps({"dtype": "uint16", "num_tokens": int(stream.size)}))
    domain = read_mixflow(entry, cutoff_len=4, packing=False)
    assert [domain.rows[i].tolist() for i in range(4)] == [[1, 2, 3, 4], [10, 11, 12, 0], [20, 21, 22, 23], [30, 31, 0]]
    with pytest.raises(FileNotFoundError, match="not a mixflow cache entry"):
        read_mixflow(tmp_path, 4, False)


def _pretokenized_data(root, top=250):
    """Three domains already tokenized (byte ids, the byte tokenizer's EOS 258): a Megatron prefix, a .npy array, a raw file."""
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(1, top, size=n), 258) for n in rng.integers(20, 60, size=40)]
    write_megatron(root / "web_text_document", docs)
    np.save(root / "code.npy", np.concatenate(docs[:20]).astype(np.uint16))
    np.concatenate(docs[20:]).astype(np.int32).tofile(root / "books.bin")
    (root / "dataset_info.json").write_text(
        json.dumps(
            {
                "web": {"file_name": "web_text_document"},
                "code": {"file_name": "code.npy"},
                "books": {"file_name": "books.bin", "format": "numpy", "dtype": "int32"},
            }
        )
    )


def _train_config(tmp_path, **extra):
    import yaml

    cfg = {
        "dataset": "web,code,books",
        "dataset_dir": str(tmp_path / "data"),
        "tokenizer": "byte",
        "cutoff_len": 16,
        "packing": False,
        "val_size": 2,
        "train_type": "static",
        "mixture_sample_rule": "uniform",
        "model_config": TINY_MODEL,
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 6,
        "max_steps": 3,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        **extra,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_reads_pretokenized_domains_in_place(tmp_path, caplog):
    from mixflow.cli.main import main

    (tmp_path / "data").mkdir()
    _pretokenized_data(tmp_path / "data")
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(_train_config(tmp_path)), "--quiet"]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any("web:" in m and "read in place (megatron): 40 rows" in m for m in said)
    assert any("books:" in m and "(numpy): 20 rows" in m for m in said)
    summary = next(m for m in said if m.startswith("run summary:"))
    assert all(name in summary for name in ("web", "code", "books"))
    assert not (tmp_path / "data" / "tokenized").exists()  # nothing copied into a cache


def test_ids_beyond_the_vocabulary_and_a_missing_tokenizer_are_one_line_before_the_model(tmp_path, capsys):
    from mixflow.cli.main import main

    (tmp_path / "data").mkdir()
    _pretokenized_data(tmp_path / "data", top=300)  # ids up to 299 for a 259-token vocabulary
    assert main(["train", str(_train_config(tmp_path)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds token id" in err[0] and "outside the tokenizer's vocabulary [0, 259)" in err[0]
    _pretokenized_data(tmp_path / "data")
    cfg = _train_config(tmp_path)
    text = cfg.read_text().replace("tokenizer: byte\n", "")
    cfg.write_text(text)
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "set tokenizer: to the tokenizer it was tokenized with" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_pretokenized_entrys_mistakes_are_named_all_at_once(tmp_path):
    from mixflow.data.sources import domain_source

    write_megatron(tmp_path / "web", _with_eos(DOCS))
    assert domain_source("web", str(tmp_path / "web"), "domains[0]").token_format == "megatron"  # from the path
    with pytest.raises(DataError) as err:
        domain_source(
            "web",
            str(tmp_path / "web"),
            "domains[0]",
            text_field="body",
            token_format="numpy",
            dtype="float32",
            eos_id=-1,
        )
    assert str(err.value).splitlines() == [
        "domains[0]: text_field: a pre-tokenized domain (numpy) has no text to read",
        "domains[0]: dtype: expected an integer dtype such as uint16 or int32, got 'float32'",
        "domains[0]: eos_id: expected a token id (an integer >= 0), got -1",
    ]
    with pytest.raises(DataError, match=r"format: expected one of \['megatron', 'numpy', 'mixflow'\], got 'arrow'"):
        domain_source("web", str(tmp_path / "web"), "domains[0]", token_format="arrow")
    with pytest.raises(DataError, match=r"dtype: only for a pre-tokenized domain"):
        domain_source("text", "notes.jsonl", "domains[1]", dtype="uint16")


def test_several_prefixes_are_one_domain_whether_a_folder_a_glob_or_a_list(tmp_path):
    from mixflow.data.sources import detect_token_format

    shards = tmp_path / "web"
    write_megatron(shards / "web_00_text_document", _with_eos(DOCS[:2]))
    write_megatron(shards / "web_01_text_document", _with_eos(DOCS[2:]), "int32")  # dtypes may differ
    stream = np.concatenate(_with_eos(DOCS)).tolist()
    ways = [
        str(shards),
        str(shards / "web_*_text_document"),
        [str(shards / "web_00_text_document"), str(shards / "web_01_text_document")],
    ]
    for path in ways:
        assert detect_token_format(path) == "megatron"
        per_doc = read_megatron(path, cutoff_len=16, packing=False)
        assert [per_doc.rows[i].tolist() for i in range(len(per_doc.rows))] == [d.tolist() for d in _with_eos(DOCS)]
        packed = read_megatron(path, cutoff_len=5, packing=True)  # blocks run across the two files
        assert [t for i in range(len(packed.rows)) for t in packed.rows[i].tolist()] == stream[: 5 * len(packed.rows)]
    with pytest.raises(FileNotFoundError, match="matches no Megatron index"):
        read_megatron(str(shards / "books_*"), 5, True)
