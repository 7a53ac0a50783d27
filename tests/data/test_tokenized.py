"""The tokenization cache: same rows as tokenizing in memory, reused on a match, rebuilt on a
change, atomic, built once by concurrent processes."""

import json
import multiprocessing
import os
import time

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mixflow.data import tokenized as tk
from mixflow.data.cache_build import _tmp_suffix
from mixflow.data.packing import split_indices, tokenize_in_memory
from mixflow.data.rows import TokenFile, TokenRows
from mixflow.data.sources import DomainSource
from mixflow.data.tokenizer import ByteTokenizer, HFTokenizerAdapter

TOK = ByteTokenizer()


def _texts(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "hello", "world", "ünïcode"]
    return [" ".join(rng.choice(words, size=int(rng.integers(0, 30)))) for _ in range(n)]


def _source(tmp_path, texts, name="web"):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return DomainSource(name, str(path))


def _rows(rows):
    return [np.asarray(rows[i]).tolist() for i in range(len(rows))]


def _hf_tokenizer():
    vocab = {"[UNK]": 0, "</s>": 1, "alpha": 2, "beta": 3, "gamma": 4, "delta": 5, "hello": 6, "world": 7}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return HFTokenizerAdapter(PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>"))


@pytest.mark.parametrize("packing", [True, False])
def test_cached_rows_equal_the_in_memory_rows(tmp_path, packing):
    # 2500 documents: more than one tokenizer batch, so batch boundaries are crossed.
    source = _source(tmp_path, _texts(2500))
    entry = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, packing=packing, progress=False)
    memory = tokenize_in_memory(source, TOK, cutoff_len=16, packing=packing, progress=False)
    assert not entry.reused
    assert isinstance(entry.rows.tokens, TokenFile) and entry.rows.tokens.dtype == np.uint16
    assert _rows(entry.rows) == _rows(memory.train)
    assert entry.rows.lengths().tolist() == [len(r) for r in _rows(memory.train)]
    assert entry.meta["num_documents"] == 2500


def test_workers_give_the_same_tokens_as_one_process(tmp_path):
    source = _source(tmp_path, _texts(2300, seed=1))
    tok = _hf_tokenizer()
    one = tk.cache_domain(source, tok, tmp_path / "a", cutoff_len=8, progress=False)
    two = tk.cache_domain(source, tok, tmp_path / "b", cutoff_len=8, workers=2, progress=False)
    assert two.meta["workers"] == 2
    assert np.array_equal(one.rows.tokens[:], two.rows.tokens[:]) and len(one.rows.tokens) == len(two.rows.tokens)
    assert len(one.rows) > 0


def test_a_matching_entry_is_reused_and_a_changed_source_makes_a_new_one(tmp_path):
    source = _source(tmp_path, _texts(50))
    first = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)
    again = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)
    assert again.reused and again.directory == first.directory
    assert os.stat(again.directory / tk.TOKENS).st_ino == os.stat(first.directory / tk.TOKENS).st_ino
    other_len = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=8, progress=False)
    assert not other_len.reused and other_len.directory != first.directory
    _source(tmp_path, _texts(50) + ["one more document"])  # same path, new content
    changed = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)
    assert not changed.reused and changed.directory != first.directory
    assert changed.meta["num_documents"] == 51


def test_overwrite_rebuilds_a_matching_entry(tmp_path):
    source = _source(tmp_path, _texts(30))
    first = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)
    rebuilt = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, overwrite=True, progress=False)
    assert not rebuilt.reused and rebuilt.directory == first.directory
    assert _rows(rebuilt.rows) == _rows(first.rows)
    assert not list((tmp_path / "cache").glob("*.old-*")) and not list((tmp_path / "cache").glob("*.tmp-*"))


def test_verify_catches_a_content_change_that_keeps_size_and_mtime(tmp_path):
    source = _source(tmp_path, ["aaaa bbbb"] * 20)
    first = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=8, progress=False)
    st = os.stat(source.path)
    _source(tmp_path, ["cccc dddd"] * 20)  # same length
    os.utime(source.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    stale = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=8, progress=False)
    assert stale.reused  # paths, sizes and mtimes match: only hashing tells
    checked = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=8, verify=True, progress=False)
    assert not checked.reused and checked.directory == first.directory
    assert bytes(np.asarray(checked.rows[0], dtype=np.uint8)).startswith(b"cccc")


class _FailingTokenizer(ByteTokenizer):
    """Fails on its second batch: a build that dies half-way."""

    calls = 0

    def encode_batch(self, texts):
        type(self).calls += 1
        if type(self).calls == 2:
            raise KeyboardInterrupt
        return super().encode_batch(texts)


def test_a_build_that_dies_leaves_no_entry_and_the_next_run_builds_it(tmp_path):
    source = _source(tmp_path, _texts(2500))
    with pytest.raises(KeyboardInterrupt):
        tk.cache_domain(source, _FailingTokenizer(), tmp_path / "cache", cutoff_len=16, progress=False)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
    # What a SIGKILL leaves behind (a half-written temporary directory) is never trusted either.
    target = tk.entry_dir(tmp_path / "cache", "web", tk.fingerprint(tk.cache_key(source, TOK, 16, True, None)))
    dead = multiprocessing.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()  # a pid that no process holds now
    stale = target.parent / f"{target.name}{_tmp_suffix(dead.pid)}"
    (stale / "tokens.bin").parent.mkdir()
    (stale / "tokens.bin").write_bytes(b"\0" * 1000)
    live = target.parent / f"other-0123456789abcdef{_tmp_suffix(os.getppid())}"  # a running build is never touched
    live.mkdir()
    elsewhere = target.parent / f"other-0123456789abcdef.tmp-another-host-{dead.pid}"  # another machine's build
    elsewhere.mkdir()
    entry = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)
    assert not entry.reused and entry.directory == target and len(entry.rows) > 0
    assert not stale.exists() and live.is_dir() and elsewhere.is_dir()  # only this host's killed builds go


def test_a_damaged_entry_is_one_error_naming_its_file(tmp_path):
    source = _source(tmp_path, _texts(100))
    entry = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)
    with open(entry.directory / tk.TOKENS, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match=r"tokens\.bin: 10 bytes, expected .*overwrite_cache"):
        tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=16, progress=False)


def test_an_unwritable_cache_directory_is_one_error_naming_the_key(tmp_path):
    source = _source(tmp_path, _texts(5))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"^tokenized_dir: cannot create .*a_file/cache"):
        tk.cache_domain(source, TOK, blocker / "cache", cutoff_len=16, progress=False)


class _WideTokenizer(ByteTokenizer):
    vocab_size = 70_000

    def encode_batch(self, texts):
        return [np.asarray([69_999, 65_536, 3], dtype=np.int64) for _ in texts]


def test_a_vocabulary_over_65536_is_stored_as_uint32(tmp_path):
    source = _source(tmp_path, ["x", "y"])
    entry = tk.cache_domain(source, _WideTokenizer(), tmp_path / "cache", cutoff_len=4, progress=False)
    assert entry.rows.tokens.dtype == np.uint32
    assert _rows(entry.rows) == [
        [69_999, 65_536, 3, ByteTokenizer.eos_token_id],
        [69_999, 65_536, 3, ByteTokenizer.eos_token_id],
    ]


class _SlowTokenizer(ByteTokenizer):
    def encode_batch(self, texts):
        time.sleep(2.0)
        return super().encode_batch(texts)


def _build_in_child(args):
    path, cache = args
    entry = tk.cache_domain(DomainSource("web", path), _SlowTokenizer(), cache, cutoff_len=16, progress=False)
    return entry.reused, str(entry.directory)


def test_two_processes_build_an_entry_once(tmp_path):
    source = _source(tmp_path, _texts(40))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build_in_child, [(source.path, str(tmp_path / "cache"))] * 2)
    # Both overlap in the slow build; without the lock both would build.
    assert sorted(reused for reused, _ in results) == [False, True]
    assert len({d for _, d in results}) == 1


def test_token_rows_take_and_index_errors():
    rows = TokenRows(np.arange(12, dtype=np.uint16), offsets=np.asarray([0, 2, 7, 12]))
    sub = rows.take(np.asarray([2, 0]))
    assert _rows(sub) == [[7, 8, 9, 10, 11], [0, 1]] and sub.lengths().tolist() == [5, 2]
    assert _rows(sub.take(np.asarray([1]))) == [[0, 1]]
    assert sub[-1].tolist() == [0, 1]
    with pytest.raises(IndexError):
        sub[2]
    with pytest.raises(ValueError, match="exactly one of block"):
        TokenRows(np.arange(4), block=2, offsets=np.asarray([0, 4]))


def test_token_file_reads_slices_and_survives_pickling(tmp_path):
    import pickle

    path = tmp_path / "t.bin"
    np.arange(10, dtype=np.uint32).tofile(path)
    f = TokenFile(path, np.uint32, 10)
    assert f[2:5].tolist() == [2, 3, 4] and f[8:20].tolist() == [8, 9] and f[5:5].size == 0
    assert pickle.loads(pickle.dumps(f))[0:3].tolist() == [0, 1, 2]
    with pytest.raises(TypeError):
        f[::2]
    short = TokenFile(path, np.uint32, 12)  # the file holds 10
    with pytest.raises(ValueError, match="ends before token 12"):
        short[0:12]


def test_split_indices_partition_the_rows():
    train, val = split_indices("web", 100, 0.1, seed=3)
    assert len(val) == 10 and sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert np.array_equal(val, split_indices("web", 100, 0.1, seed=3)[1])
    with pytest.raises(ValueError, match="leave no training rows"):
        split_indices("web", 3, 3, seed=0)
