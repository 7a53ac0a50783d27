"""ByteTokenizer and load_tokenizer."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mixflow.data.tokenizer import (
    TOKENIZER_FILE,
    ByteTokenizer,
    TextTokenizer,
    load_tokenizer,
)


def test_byte_ids_and_specials():
    tok = ByteTokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.encode("Ab") == [65, 98]
    assert tok.encode("") == []
    assert isinstance(tok, TextTokenizer)


def test_round_trip_unicode_and_skips_specials():
    tok = ByteTokenizer()
    text = "héllo, 世界 🙂"
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode([tok.bos_token_id, *ids, tok.eos_token_id, tok.pad_token_id]) == text


def test_decode_invalid_utf8_replaces():
    tok = ByteTokenizer()
    assert tok.decode([0xFF, 65]) == "\ufffdA"


def test_save_and_load(tmp_path):
    path = ByteTokenizer().save_pretrained(tmp_path / "tok")
    assert path.name == TOKENIZER_FILE
    assert json.loads(path.read_text())["type"] == "byte"
    assert isinstance(ByteTokenizer.from_pretrained(tmp_path / "tok"), ByteTokenizer)
    assert isinstance(load_tokenizer(str(tmp_path / "tok")), ByteTokenizer)


def test_from_pretrained_rejects_other_type(tmp_path):
    (tmp_path / TOKENIZER_FILE).write_text('{"type": "bpe"}')
    with pytest.raises(ValueError, match="type"):
        ByteTokenizer.from_pretrained(tmp_path)


def test_from_pretrained_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=TOKENIZER_FILE):
        ByteTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", [None, "byte"])
def test_load_tokenizer_byte(name):
    assert isinstance(load_tokenizer(name), ByteTokenizer)


def test_load_tokenizer_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(str(tmp_path / "nowhere"))


def test_load_tokenizer_directory_without_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="local tokenizer directory"):
        load_tokenizer(str(tmp_path))


def _save_tiny_hf_tokenizer(directory):
    """A word-level HF tokenizer built in memory, so nothing is downloaded."""

    vocab = {"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>")
    hf.save_pretrained(directory)


def test_load_local_hf_tokenizer_falls_back_pad_to_eos(tmp_path):
    _save_tiny_hf_tokenizer(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert isinstance(tok, TextTokenizer)
    assert tok.encode("hello world") == [2, 3]
    assert tok.eos_token_id == 1
    assert tok.pad_token_id == 1
    assert tok.vocab_size == 4
