"""Classification data: labelled files, label vocabulary, dataset rows and ids, collator, per-sample
losses of a classifier, the model builder and the offline demo."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixflow.data.classification import (
    ClassificationCollator,
    ClassificationDataset,
    LabelVocabulary,
    read_labelled,
    tokenize_labelled,
)
from mixflow.data.classification_demo import FLIP_RATE, NEGATIVE, POSITIVE, build_classification_demo
from mixflow.data.packing import tokenize_in_memory
from mixflow.data.sources import DomainSource
from mixflow.data.tokenizer import ByteTokenizer
from mixflow.loss.objective import weighted_loss
from mixflow.loss.per_sample import sample_losses
from mixflow.recipes.classification import accuracy_metrics


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_classifier_logits_give_one_cross_entropy_per_sample():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g, requires_grad=True)
    labels = torch.tensor([0, 2, -100, 1, 1])
    for shift in (True, False):  # shifting never applies to [B, C] logits
        out = sample_losses(logits, labels, shift=shift)
        expected = F.cross_entropy(logits, labels, reduction="none", ignore_index=-100)
        assert torch.allclose(out.token_loss_sum, expected)
        assert out.token_count.tolist() == [1, 1, 0, 1, 1]
        assert torch.allclose(out.mean, expected)
    loss = weighted_loss(sample_losses(logits, labels), None, None)
    (g_ours,) = torch.autograd.grad(loss, logits)
    plain = F.cross_entropy(logits, labels, ignore_index=-100)
    (g_plain,) = torch.autograd.grad(plain, logits)
    assert torch.allclose(loss, plain) and torch.allclose(g_ours, g_plain)
    with pytest.raises(ValueError, match="one label per row"):
        sample_losses(logits, torch.zeros(4, dtype=torch.long))


def test_read_labelled_formats_and_errors(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    src = DomainSource("x", _jsonl(tmp_path / "x.jsonl", rows), label_field="label")
    assert read_labelled(src) == (["a", "b"], [1, 0])
    (tmp_path / "arr.json").write_text(json.dumps(rows))
    assert read_labelled(DomainSource("y", str(tmp_path / "arr.json"), label_field="label")) == (["a", "b"], [1, 0])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sentence": ["c", "d"], "y": ["pos", "neg"]}), tmp_path / "z.parquet")
    src = DomainSource("z", str(tmp_path / "z.parquet"), text_field="sentence", label_field="y")
    assert read_labelled(src, max_examples=1) == (["c"], ["pos"])
    with pytest.raises(ValueError, match="missing field 'label'"):
        read_labelled(DomainSource("w", _jsonl(tmp_path / "w.jsonl", [{"text": "a"}]), label_field="label"))
    (tmp_path / "t.txt").write_text("a\n")
    with pytest.raises(ValueError, match="unsupported format"):
        read_labelled(DomainSource("t", str(tmp_path / "t.txt"), label_field="label"))


def test_label_vocabulary():
    ints = LabelVocabulary.infer([0, 2, 1, 2])
    assert ints.num_labels == 3 and ints.names is None
    assert ints.encode([2, 0], "x").tolist() == [2, 0]
    with pytest.raises(ValueError, match="label 3 is outside 0..2"):
        ints.encode([3], "test.jsonl")
    assert LabelVocabulary.infer([0, 0]).num_labels == 2  # a classifier has at least two classes
    assert LabelVocabulary.infer([0, 1], num_labels=4).num_labels == 4
    words = LabelVocabulary.infer(["pos", "neg", "neu", "pos"])
    assert words.names == ["neg", "neu", "pos"] and words.encode(["pos", "neg"], "x").tolist() == [2, 0]
    with pytest.raises(ValueError, match="'bad' is not one of the training labels"):
        words.encode(["bad"], "real.jsonl")
    with pytest.raises(ValueError, match="not mixed"):
        LabelVocabulary.infer([1, "pos"])


def test_dataset_rows_labels_ids_and_the_language_model_split(tmp_path):
    tok = ByteTokenizer()
    texts = [f"text number {i}" for i in range(20)]
    labels = np.arange(20) % 3
    a = tokenize_labelled("a", texts, labels, tok, cutoff_len=8, val_size=0.25, seed=7)
    b = tokenize_labelled("b", texts[:6], labels[:6], tok, cutoff_len=64)
    # the held-out rows are the ones the language-model path holds out for the same file and seed
    path = tmp_path / "a.txt"
    path.write_text("\n".join(texts) + "\n")
    lm = tokenize_in_memory(DomainSource("a", str(path)), tok, 8, packing=False, val_size=0.25, seed=7, progress=False)
    assert [r.tolist() for r in a.val] == [r.tolist() for r in lm.val]
    assert all(len(r) == 8 for r in a.train)  # truncated, not packed
    train = ClassificationDataset([a, b])
    assert len(train) == 15 + 6 and train.domain_sizes == [15, 6]
    item = train[16]
    assert item["domain_ids"] == 1 and item["sample_ids"] == 16 and item["labels"] == int(labels[1])
    assert item["input_ids"].tolist() == list(b"text number 1")
    assert train.labels.tolist() == [int(train[i]["labels"]) for i in range(len(train))]
    only_b = train.single_domain(1)
    assert len(only_b) == 6 and only_b[0]["domain_ids"] == 1 and only_b[0]["labels"] == 0
    val = ClassificationDataset([a, b], split="val")
    assert len(val) == 5


def test_collator_pads_inputs_and_stacks_labels():
    batch = ClassificationCollator(pad_token_id=9)(
        [
            {"input_ids": torch.tensor([1, 2, 3]), "labels": 1, "domain_ids": 0, "sample_ids": 4},
            {"input_ids": torch.tensor([5]), "labels": 0, "domain_ids": 1, "sample_ids": 7},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [5, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["domain_ids"].tolist() == [0, 1] and batch["sample_ids"].tolist() == [4, 7]


def test_classifier_from_config_and_accuracy_metric():
    from types import SimpleNamespace

    from mixflow.recipes.classification import build_classifier

    run = SimpleNamespace(
        model=SimpleNamespace(
            model_name_or_path=None,
            model_config={
                "model_type": "llama",
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 32,
            },
        )
    )
    model = build_classifier(run, ByteTokenizer(), LabelVocabulary(3, ["a", "b", "c"]))
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 3 and model.config.pad_token_id == ByteTokenizer.pad_token_id
    assert model.config.id2label[2] == "c"
    batch = ClassificationCollator(ByteTokenizer.pad_token_id)(
        [{"input_ids": torch.tensor([1, 2, 3]), "labels": 1}, {"input_ids": torch.tensor([4]), "labels": 2}]
    )
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (2, 3)
    pred = SimpleNamespace(predictions=np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), label_ids=np.array([1, 1, -100]))
    assert accuracy_metrics(pred) == {"accuracy": 0.5}


def test_classification_demo_is_shifted_in_the_documented_way(tmp_path):
    paths = build_classification_demo(tmp_path, synthetic_per_topic=400, real_size=60, test_per_topic=20, seed=1)

    def polarity(text):  # the true label from the text: opinion word, negated or not
        words = [w for w in text.replace(",", " ").replace(".", " ").split() if w in POSITIVE + NEGATIVE]
        assert len(words) == 1
        return int((words[0] in POSITIVE) != (f"not {words[0]}" in text))

    for topic, path in paths["synthetic"].items():
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        wrong = [r for r in rows if r["label"] != polarity(r["text"])]
        assert all(r["flipped"] for r in wrong) and len(wrong) == sum(r["flipped"] for r in rows)
        if topic == "restaurants":
            assert abs(len(wrong) / len(rows) - FLIP_RATE) < 0.06
            assert all(r["label"] == 1 for r in wrong)  # the generator is too upbeat
        else:
            assert not wrong
    for path in [paths["real"], *paths["test"].values()]:
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        assert all(r["label"] == polarity(r["text"]) for r in rows)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert sorted(info) == sorted(paths["synthetic"])


def test_classification_config_keys_are_checked_at_load(tmp_path):
    from mixflow.config import ConfigError, load_config

    data = _jsonl(tmp_path / "a.jsonl", [{"text": "x", "label": 0}])
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "y", "label": 1}])
    base = {
        "domains": [{"name": "a", "path": data}],
        "model_config": {"model_type": "llama"},
        "output_dir": str(tmp_path / "out"),
        "train_type": "static",
    }
    run = load_config(raw={**base, "task": "classification", "eval_data": test, "real_data": [test], "num_labels": 3})
    assert run.data.eval_data == [test] and run.data.real_data == [test] and run.model.num_labels == 3
    cases = [
        ({"eval_data": test}, "eval_data: only used with task: classification"),
        ({"task": "classification", "eval_data": str(tmp_path / "nope.jsonl")}, "eval_data: file not found"),
        ({"task": "classification", "eval_data": data}, "eval_data: .* already a domain name"),
        ({"task": "classification", "num_labels": 1}, "num_labels: expected an integer >= 2"),
        ({"task": "regression"}, "task: expected one of"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(raw={**base, **extra})


def test_classification_demo_command(tmp_path, capsys):
    from mixflow.cli.main import main

    assert (
        main(
            [
                "data",
                "classification-demo",
                str(tmp_path),
                "--per-topic",
                "20",
                "--real-size",
                "8",
                "--test-per-topic",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "real (real_data)" in out and "wrong 'positive' label" in out
    assert len((tmp_path / "real.jsonl").read_text().splitlines()) == 8
    assert len((tmp_path / "synthetic" / "travel.jsonl").read_text().splitlines()) == 20
