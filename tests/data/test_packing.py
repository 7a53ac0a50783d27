"""Tokenization, packing into blocks and the held-out split."""

import json

import numpy as np
import pytest

from mixflow.data.packing import TokenizedDomain, tokenize_in_memory
from mixflow.data.rows import TokenRows
from mixflow.data.sources import DomainSource
from mixflow.data.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
EOS = TOK.eos_token_id


def _flat(rows):
    return [t for i in range(len(rows)) for t in rows[i].tolist()]


def _source(tmp_path, texts, name="dom"):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return DomainSource(name, str(path))


def test_packed_blocks_shape_and_eos_between_documents(tmp_path):
    source = _source(tmp_path, ["abc", "de", "fghij"])
    dom = tokenize_in_memory(source, TOK, cutoff_len=4, progress=False)
    stream = [*b"abc", EOS, *b"de", EOS, *b"fghij", EOS]  # 13 tokens -> 3 full blocks
    assert isinstance(dom.train, TokenRows) and dom.train.block == 4  # one row type for every source
    assert all(dom.train[i].dtype == np.int32 for i in range(3))
    assert dom.train.lengths().tolist() == [4, 4, 4]
    assert _flat(dom.train) == stream[:12]
    assert dom.num_train == 3 and dom.num_val == 0
    assert len(dom.val) == 0


def test_document_longer_than_block_spans_blocks(tmp_path):
    dom = tokenize_in_memory(_source(tmp_path, ["x" * 10]), TOK, cutoff_len=4, progress=False)
    # 10 bytes + EOS = 11 tokens: two full blocks, the 3-token tail is dropped.
    assert dom.train.lengths().tolist() == [4, 4]
    assert _flat(dom.train) == [ord("x")] * 8


def test_max_documents(tmp_path):
    source = _source(tmp_path, ["aaa", "bbb", "ccc"])
    dom = tokenize_in_memory(source, TOK, cutoff_len=4, max_documents=2, progress=False)
    assert _flat(dom.train) == [*b"aaa", EOS, *b"bbb", EOS]


def test_unpacked_truncates_and_drops_empty(tmp_path):
    source = _source(tmp_path, ["abcdefgh", "", "xy"])
    dom = tokenize_in_memory(source, TOK, cutoff_len=5, packing=False, progress=False)
    assert dom.train.offsets is not None  # one row per document
    assert [dom.train[i].tolist() for i in range(len(dom.train))] == [list(b"abcde"), list(b"xy")]
    assert all(dom.train[i].dtype == np.int32 for i in range(len(dom.train)))


@pytest.mark.parametrize("val_size, expected_val", [(0.25, 5), (3, 3)])
def test_val_split_disjoint_and_sized(tmp_path, val_size, expected_val):
    # 20 distinct documents of 3 bytes + EOS pack into exactly 20 distinct blocks.
    texts = [f"{i:03d}" for i in range(20)]
    source = _source(tmp_path, texts)
    dom = tokenize_in_memory(source, TOK, cutoff_len=4, val_size=val_size, seed=1, progress=False)
    assert dom.num_val == expected_val
    assert dom.num_train == 20 - expected_val
    train = {tuple(dom.train[i].tolist()) for i in range(len(dom.train))}
    val = {tuple(dom.val[i].tolist()) for i in range(len(dom.val))}
    assert not train & val
    assert len(train | val) == 20


def test_small_fraction_still_holds_out_one_row(tmp_path):
    source = _source(tmp_path, [f"{i:03d}" for i in range(5)])
    dom = tokenize_in_memory(source, TOK, cutoff_len=4, val_size=0.01, progress=False)
    assert (dom.num_train, dom.num_val) == (4, 1)


def test_val_split_is_seeded(tmp_path):
    source = _source(tmp_path, [f"{i:03d}" for i in range(20)])
    a = tokenize_in_memory(source, TOK, cutoff_len=4, val_size=4, seed=3, progress=False)
    b = tokenize_in_memory(source, TOK, cutoff_len=4, val_size=4, seed=3, progress=False)
    c = tokenize_in_memory(source, TOK, cutoff_len=4, val_size=4, seed=4, progress=False)
    assert np.array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)


def test_val_split_unpacked(tmp_path):
    source = _source(tmp_path, ["a", "bb", "ccc", "dddd"])
    dom = tokenize_in_memory(source, TOK, cutoff_len=8, packing=False, val_size=1, progress=False)
    rows = sorted(part[i].tolist() for part in (dom.train, dom.val) for i in range(len(part)))
    assert rows == sorted([list(b"a"), list(b"bb"), list(b"ccc"), list(b"dddd")])
    assert (dom.num_train, dom.num_val) == (3, 1)


def test_zero_train_rows_names_domain(tmp_path):
    source = _source(tmp_path, ["abc", "def"], name="tiny")
    with pytest.raises(ValueError, match="'tiny'"):
        tokenize_in_memory(source, TOK, cutoff_len=4, val_size=2, progress=False)
    with pytest.raises(ValueError, match="'tiny'"):
        tokenize_in_memory(source, TOK, cutoff_len=1000, progress=False)


@pytest.mark.parametrize("val_size", [1.0, -0.1, -1, "0.1", True])
def test_bad_val_size(tmp_path, val_size):
    with pytest.raises(ValueError, match="val_size"):
        tokenize_in_memory(_source(tmp_path, ["abc"]), TOK, cutoff_len=2, val_size=val_size, progress=False)


def test_bad_cutoff_len(tmp_path):
    with pytest.raises(ValueError, match="cutoff_len"):
        tokenize_in_memory(_source(tmp_path, ["abc"]), TOK, cutoff_len=0, progress=False)


def test_counts_on_dataclass():
    dom = TokenizedDomain("d", train=np.zeros((3, 2), np.int32), val=[np.zeros(1, np.int32)])
    assert (dom.num_train, dom.num_val) == (3, 1)
