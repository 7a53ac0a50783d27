"""``task: classification`` as a run: labelled data, a sequence classifier, accuracy and its table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixflow.config.schema import RunConfig
from mixflow.data.classification import (
    ClassificationDataset,
    LabelledDomain,
    LabelVocabulary,
    labelled_dataset,
    read_labelled,
    tokenize_labelled,
)
from mixflow.data.keys import IGNORE_INDEX
from mixflow.data.sources import DomainSource
from mixflow.recipes.inputs import as_path_list, choose_tokenizer, domain_sources, source_name, split_seed
from mixflow.recipes.models import scratch_config


@dataclass
class ClassificationData:
    """Everything ``task: classification`` trains and evaluates on (the classification counterpart of
    :class:`~mixflow.recipes.build.PreparedData`)."""

    tokenizer: Any
    domains: list[LabelledDomain]
    train: ClassificationDataset
    val: dict[str, ClassificationDataset]
    """Held-out rows per training domain (``val_size``)."""
    evaluation: dict[str, ClassificationDataset]
    """Everything evaluated at the end: ``val`` plus one entry per ``eval_data`` file."""
    vocabulary: LabelVocabulary

    @property
    def num_labels(self) -> int:
        return self.vocabulary.num_labels


def prepare_classification_data(run: RunConfig, progress: bool = True) -> ClassificationData:
    """Read, tokenize and split the labelled training domains; read the ``eval_data`` files."""
    tokenizer = choose_tokenizer(run)
    d = run.data
    seed = split_seed(run)
    val_size: float | int = d.val_size if d.val_size < 1 else int(d.val_size)
    sources = [
        DomainSource(name=s.name, path=s.path, text_field=s.text_field, label_field=d.label_field)
        for s in domain_sources(run)
    ]
    raw = [read_labelled(s, d.max_samples) for s in sources]
    vocabulary = LabelVocabulary.infer([y for _, labels in raw for y in labels], run.model.num_labels)
    domains = [
        tokenize_labelled(
            s.name, texts, vocabulary.encode(labels, f"domain {s.name!r}"), tokenizer, d.cutoff_len, val_size, seed
        )
        for s, (texts, labels) in zip(sources, raw)
    ]
    train = ClassificationDataset(domains, split="train")
    val: dict[str, ClassificationDataset] = {}
    if any(dom.num_val for dom in domains):
        full_val = ClassificationDataset(domains, split="val")
        val = {dom.name: full_val.single_domain(i) for i, dom in enumerate(domains) if dom.num_val}
    evaluation = dict(val)
    text_field = sources[0].text_field if sources else "text"
    for path in as_path_list(d.eval_data):
        name = source_name(path)
        evaluation[name] = labelled_dataset(name, path, text_field, d.label_field, tokenizer, d.cutoff_len, vocabulary)
    return ClassificationData(tokenizer, domains, train, val, evaluation, vocabulary)


def build_classifier(run: RunConfig, tokenizer: Any, vocabulary: LabelVocabulary) -> Any:
    """A sequence classifier: a local pretrained directory (a new head when it has none) or a
    from-scratch ``model_config`` (``AutoModelForSequenceClassification``); nothing is downloaded."""
    from transformers import AutoModelForSequenceClassification

    labels = {}
    if vocabulary.names is not None:
        labels = {
            "id2label": dict(enumerate(vocabulary.names)),
            "label2id": {n: i for i, n in enumerate(vocabulary.names)},
        }
    if run.model.model_name_or_path is not None and run.model.train_from_scratch:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(
            run.model.model_name_or_path, local_files_only=True, num_labels=vocabulary.num_labels, **labels
        )
        model = AutoModelForSequenceClassification.from_config(config)
    elif run.model.model_name_or_path is not None:
        model = AutoModelForSequenceClassification.from_pretrained(
            run.model.model_name_or_path, local_files_only=True, num_labels=vocabulary.num_labels, **labels
        )
    else:
        config = scratch_config(run.model.model_config or {}, tokenizer, num_labels=vocabulary.num_labels, **labels)
        model = AutoModelForSequenceClassification.from_config(config)
    # Decoder classifiers pool the last non-padding token, which needs the pad id.
    if getattr(model.config, "pad_token_id", None) is None and getattr(tokenizer, "pad_token_id", None) is not None:
        model.config.pad_token_id = int(tokenizer.pad_token_id)
    return model


def accuracy_metrics(prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for the Trainer: accuracy of argmax(logits) on labelled rows."""
    logits = prediction.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    labels = np.asarray(prediction.label_ids).reshape(-1)
    keep = labels != IGNORE_INDEX
    predicted = np.asarray(logits).reshape(len(labels), -1).argmax(axis=-1)
    return {"accuracy": float((predicted[keep] == labels[keep]).mean()) if keep.any() else float("nan")}


def format_classification_table(metrics: Mapping[str, Any]) -> str:
    """Loss and accuracy per evaluated set (training domains' held-out rows, then ``eval_data``)."""
    losses = metrics.get("val_loss", {})
    accuracy = metrics.get("val_accuracy", {})
    weights = metrics.get("final_sampling_weights", {})
    names = list(dict.fromkeys([*weights, *losses]))
    width = max([len("set"), *(len(n) for n in names)])
    lines = [f"{'set':<{width}}  {'loss':>8}  {'accuracy':>8}  {'weight':>7}"]
    for name in names:
        loss, acc = losses.get(name), accuracy.get(name)
        loss_s = f"{loss:8.4f}" if loss is not None else f"{'-':>8}"
        acc_s = f"{acc:8.4f}" if acc is not None else f"{'-':>8}"
        weight_s = f"{weights[name]:7.4f}" if name in weights else f"{'-':>7}"
        lines.append(f"{name:<{width}}  {loss_s}  {acc_s}  {weight_s}")
    return "\n".join(lines)
