"""Instruction (SFT) data: alpaca and sharegpt records, rendered with a chat template or the plain
one, prompts masked, whole-example packing, and one-line errors for what is not supported."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mixflow.data import tokenized as tk
from mixflow.data.dataset import MixtureDataset
from mixflow.data.instructions import conversation, formatting_of, render
from mixflow.data.keys import IGNORE_INDEX
from mixflow.data.packing import TokenizedDomain, tokenize_in_memory
from mixflow.data.sources import DomainSource, sources_from_dataset_info
from mixflow.data.tokenizer import ByteTokenizer, HFTokenizerAdapter

TOK = ByteTokenizer()
ALPACA = {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": "system"}


def _write_info(tmp_path, entries, files):
    for name, records in files.items():
        path = tmp_path / name
        if name.endswith(".json"):
            path.write_text(json.dumps(records), encoding="utf-8")
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")


def _targets(ids, mask):
    return bytes(int(i) for i, m in zip(ids, mask) if m and i < 256)


def test_alpaca_columns_train_on_the_response_not_the_instruction(tmp_path):
    # The entry from the issue: before, it trained silently on the instruction text alone.
    _write_info(
        tmp_path,
        {"alp": {"file_name": "a.json", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}},
        {
            "a.json": [
                {"instruction": "Add", "input": "2 and 3", "output": "5"},
                {"instruction": "Greet", "input": "", "output": "hello"},
            ]
        },
    )
    (source,) = sources_from_dataset_info(tmp_path, ["alp"])
    assert source.formatting is not None and source.formatting.kind == "alpaca"
    entry = tk.cache_domain(source, TOK, tmp_path / "cache", cutoff_len=64, packing=False, progress=False)
    rows = [(entry.rows[i], entry.rows.labels(i, IGNORE_INDEX)) for i in range(len(entry.rows))]
    texts = [bytes(int(t) for t in ids if t < 256).decode() for ids, _ in rows]
    assert texts == ["User: Add\n2 and 3\nAssistant: 5", "User: Greet\nAssistant: hello"]
    for _ids, labels in rows:
        assert labels[-1] == TOK.eos_token_id  # the model learns to stop
    assert [_targets(ids, labels != IGNORE_INDEX) for ids, labels in rows] == [b"5", b"hello"]


def test_history_and_sharegpt_make_every_assistant_turn_a_target():
    fmt = formatting_of(None, ALPACA, None, "x")
    turns = conversation(
        fmt, {"instruction": "q2", "input": None, "output": "a2", "history": [["q1", "a1"]], "system": "be brief"}, "x"
    )
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    ids, mask = render(TOK, turns, "x")
    assert _targets(ids, mask) == b"a1a2"
    share = formatting_of(
        "sharegpt",
        None,
        {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        "x",
    )
    turns = conversation(
        share,
        {
            "conversations": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "bye"},
                {"role": "assistant", "content": "ciao"},
            ]
        },
        "x",
    )
    ids, mask = render(TOK, turns, "x")
    assert _targets(ids, mask) == b"yociao"
    assert bytes(int(i) for i in ids if i < 256).decode() == "User: hi\nAssistant: yo\nUser: bye\nAssistant: ciao"


def _chat_tokenizer():
    words = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "hi", "there", "how", "are", "you", "fine"]
    vocab = {"[UNK]": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>")
    hf.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    return HFTokenizerAdapter(hf), vocab


def test_the_chat_template_renders_and_masks_by_offsets():
    tok, vocab = _chat_tokenizer()
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "how are you"},
        {"role": "assistant", "content": "fine"},
    ]
    ids, mask = render(tok, turns, "x")
    inverse = {v: k for k, v in vocab.items()}
    assert [inverse[i] for i in ids] == [
        "<|user|>",
        "hi",
        "<|end|>",
        "<|assistant|>",
        "hi",
        "there",
        "<|end|>",
        "<|user|>",
        "how",
        "are",
        "you",
        "<|end|>",
        "<|assistant|>",
        "fine",
        "<|end|>",
    ]
    # Each response and its end-of-turn token; the role header is the prompt's.
    assert [inverse[i] for i, m in zip(ids, mask) if m] == ["hi", "there", "<|end|>", "fine", "<|end|>"]


def test_a_template_that_does_not_extend_its_prefix_is_one_error():
    tok, _ = _chat_tokenizer()
    tok.tokenizer.chat_template = "{% for m in messages|reverse %}{{ m.content }} {% endfor %}"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fine"}]
    with pytest.raises(ValueError, match="^x: the tokenizer's chat template does not render"):
        render(tok, turns, "x")


def test_packing_whole_examples_and_dropping_examples_without_a_target(tmp_path):
    records = [{"instruction": "q" * n, "output": "a" * m} for n, m in ((1, 1), (1, 1), (2, 2), (40, 5))]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    source = DomainSource("alp", str(path), formatting=formatting_of("alpaca", None, None, "x"))
    single = tk.cache_domain(source, TOK, tmp_path / "c", cutoff_len=48, packing=False, progress=False)
    # The 40-character instruction leaves no response token within 48 tokens: dropped.
    assert len(single.rows) == 3 and single.meta["dropped_examples"] == 1
    lengths = single.rows.lengths().tolist()
    assert lengths == [21, 21, 23]
    packed = tk.cache_domain(source, TOK, tmp_path / "c", cutoff_len=48, packing=True, progress=False)
    assert packed.rows.lengths().tolist() == [42, 23]  # whole examples, never split, each row ≤ 48
    assert np.array_equal(
        np.concatenate([packed.rows[i] for i in range(2)]), np.concatenate([single.rows[i] for i in range(3)])
    )


def test_target_tokens_count_only_the_responses(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        "".join(json.dumps({"instruction": f"question {i}", "output": "x" * (i + 1)}) + "\n" for i in range(6)),
        encoding="utf-8",
    )
    source = DomainSource("alp", str(path), formatting=formatting_of("alpaca", None, None, "x"))
    for packing in (False, True):
        entry = tk.cache_domain(source, TOK, tmp_path / "c", cutoff_len=64, packing=packing, progress=False)
        ds = MixtureDataset([TokenizedDomain("alp", entry.rows.take(np.arange(len(entry.rows))), entry.rows.take([]))])
        counted = [int((ds[i]["labels"][1:] != IGNORE_INDEX).sum()) for i in range(len(ds))]
        assert ds.target_tokens(np.arange(len(ds))).tolist() == counted
        assert sum(counted) == sum(i + 2 for i in range(6))  # each response and its EOS


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"file_name": "a.jsonl", "columns": {"prompt": "q", "response": "r", "images": "img"}},
            r"columns\.images: images are not supported",
        ),
        (
            {"file_name": "a.jsonl", "formatting": "sharegpt", "tags": {"speaker": "x"}},
            r"tags\.speaker: not a sharegpt tag",
        ),
        ({"file_name": "a.jsonl", "formatting": "openai"}, r"formatting: 'openai' is not supported"),
        ({"file_name": "a.jsonl", "hf_hub_url": "org/data"}, r"hf_hub_url: mixflow reads local files only"),
        ({"file_name": "a.jsonl", "ranking": True}, r"ranking: preference"),
        (
            {"file_name": "a.jsonl", "columns": {"prompt": "q", "answer": "r"}},
            r"columns\.answer: a text entry reads one",
        ),
        ({"file_name": "a.jsonl", "subset": "x"}, r"subset: not supported by mixflow"),
        (
            {"file_name": "a.jsonl", "formatting": "sharegpt", "columns": {"messages": "m", "tools": "t"}},
            r"columns\.tools: tool descriptions are not supported",
        ),
    ],
)
def test_what_mixflow_does_not_support_is_one_error_naming_it(tmp_path, entry, message):
    _write_info(tmp_path, {"d": entry}, {"a.jsonl": [{"q": "x", "r": "y"}]})
    with pytest.raises(ValueError, match=message):
        sources_from_dataset_info(tmp_path, ["d"])


@pytest.mark.parametrize(
    "turns, message",
    [
        (
            [{"from": "human", "value": "a"}, {"from": "observation", "value": "b"}],
            r"turn 1: role 'observation' \(tool",
        ),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], r"turn 1: expected a assistant turn"),
        ([{"from": "human", "value": "a"}], r"the last turn must be the assistant's"),
        ([{"from": "gpt", "value": "a"}], r"turn 0: expected a user turn"),
        ([{"from": "human", "value": 3}, {"from": "gpt", "value": "b"}], r"turn 0: 'value' must be a string"),
    ],
)
def test_a_malformed_conversation_names_its_line(tmp_path, turns, message):
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps({"conversations": [{"from": "human", "value": "ok"}, {"from": "gpt", "value": "ok"}]})
        + "\n"
        + json.dumps({"conversations": turns})
        + "\n",
        encoding="utf-8",
    )
    source = DomainSource("s", str(path), formatting=formatting_of("sharegpt", None, None, "x"))
    with pytest.raises(ValueError, match=rf"^{path}:2: " + message):
        tk.cache_domain(source, TOK, tmp_path / "c", cutoff_len=64, progress=False)
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]  # nothing half-built is left


def test_the_in_memory_path_refuses_instruction_data(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n", encoding="utf-8")
    source = DomainSource("alp", str(path), formatting=formatting_of("alpaca", None, None, "x"))
    with pytest.raises(ValueError, match="tokenized through the cache"):
        tokenize_in_memory(source, TOK, cutoff_len=16, progress=False)
