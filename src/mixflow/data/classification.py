"""Sequence classification data: labelled domains, a dataset with integer labels and a collator
(the run around them, model and metrics, is :mod:`mixflow.recipes.classification`).

Each domain file holds one example per record with a text field and a label field (JSON lines, a
JSON array, parquet, or a ``datasets.save_to_disk`` directory). Texts are tokenized one example per
row, truncated to ``cutoff_len`` (no packing). Labels are integers ``0..C-1`` or strings; strings
are numbered in sorted order of the training domains' labels. Rows are indexed exactly like a
language-model :class:`~mixflow.data.dataset.MixtureDataset` (domains concatenated in order), so
``sample_ids`` are global row indices that per-example caches (IMP's checkers) can be keyed by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mixflow.data.dataset import DomainCollator, MixtureDataset, mixflow_columns, pad_right
from mixflow.data.keys import DOMAIN_KEY, IGNORE_INDEX, SAMPLE_KEY
from mixflow.data.packing import TokenizedDomain, split_indices
from mixflow.data.rows import as_token_rows
from mixflow.data.sources import DomainSource, read_records
from mixflow.errors import ConfigError, DataError


# ---- reading ------------------------------------------------------------------------------
def read_labelled(source: DomainSource, max_examples: int | None = None) -> tuple[list[str], list[Any]]:
    """Texts and raw labels of ``source`` (its ``text_field`` and ``label_field``), in file order."""
    fields = (source.text_field, source.label_field or "label")
    rows = read_records(source, fields, text_fields=fields[:1], limit=max_examples)
    return [text for text, _ in rows], [label for _, label in rows]


# ---- labels -------------------------------------------------------------------------------
@dataclass
class LabelVocabulary:
    """How raw labels map to class indices ``0..num_labels-1``."""

    num_labels: int
    names: list[str] | None = None
    """Class names when labels are strings (index i is ``names[i]``); None for integer labels."""

    @classmethod
    def infer(cls, labels: Sequence[Any], num_labels: int | None = None) -> LabelVocabulary:
        """Integer labels: ``num_labels`` or max + 1; string labels: their sorted set."""
        if labels and all(isinstance(y, str) for y in labels):
            names = sorted(set(labels))
            if num_labels is not None and num_labels != len(names):
                raise ConfigError(
                    f"num_labels: expected {len(names)} (the distinct string labels {names}), got {num_labels}"
                )
            return cls(len(names), names)
        if not all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in labels):
            bad = next(y for y in labels if not (isinstance(y, (int, np.integer)) and not isinstance(y, bool)))
            raise DataError(f"label_field: expected integer labels or string labels (not mixed), got {bad!r}")
        if num_labels is not None:
            return cls(num_labels)
        # A classifier needs at least two classes even if the data shows only one.
        return cls(max(2, max((int(y) for y in labels), default=0) + 1))

    def encode(self, labels: Sequence[Any], where: str) -> np.ndarray:
        """Class indices of raw ``labels``; unknown or out-of-range labels are errors naming ``where``."""
        if self.names is not None:
            index = {name: i for i, name in enumerate(self.names)}
            unknown = [y for y in labels if y not in index]
            if unknown:
                raise DataError(f"{where}: label {unknown[0]!r} is not one of the training labels {self.names}")
            return np.asarray([index[y] for y in labels], dtype=np.int64)
        out = np.asarray([int(y) if not isinstance(y, str) else -1 for y in labels], dtype=np.int64)
        bad = out[(out < 0) | (out >= self.num_labels)]
        if bad.size:
            raise DataError(
                f"{where}: label {int(bad[0])} is outside 0..{self.num_labels - 1} (num_labels {self.num_labels})"
            )
        return out


# ---- tokenized domains and the dataset ----------------------------------------------------
@dataclass
class LabelledDomain(TokenizedDomain):
    """A domain's token rows (one per example, unpacked) and their class indices."""

    train_labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    val_labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def encode_text(tokenizer: Any, text: str, cutoff_len: int) -> np.ndarray:
    """Token ids of one example, truncated to ``cutoff_len``; never empty.

    A Hugging Face tokenizer adds its special tokens ([CLS] ... [SEP] for BERT-style classifiers);
    the byte tokenizer adds none. An empty text becomes a single EOS so every row has a token to pool.
    """
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None:
        ids = list(hf.encode(text, add_special_tokens=True, truncation=True, max_length=cutoff_len))
    else:
        ids = list(tokenizer.encode(text))[:cutoff_len]
    if not ids:
        ids = [int(tokenizer.eos_token_id)]
    return np.asarray(ids, dtype=np.int32)


def tokenize_labelled(
    name: str,
    texts: Sequence[str],
    labels: np.ndarray,
    tokenizer: Any,
    cutoff_len: int,
    val_size: float | int = 0.0,
    seed: int = 0,
) -> LabelledDomain:
    """Tokenize one labelled domain and hold out ``val_size`` examples exactly as
    :func:`~mixflow.data.packing.tokenize_in_memory` does for unpacked text (same permutation)."""
    rows = [encode_text(tokenizer, t, cutoff_len) for t in texts]
    # Split the row *indices* with the language-model split, so both tasks hold out the same rows.
    train_index, val_index = split_indices(name, len(rows), val_size, seed)
    return LabelledDomain(
        name=name,
        train=as_token_rows([rows[i] for i in train_index]),
        val=as_token_rows([rows[i] for i in val_index]),
        train_labels=labels[train_index],
        val_labels=labels[val_index],
    )


class ClassificationDataset(MixtureDataset):
    """A :class:`MixtureDataset` whose rows carry an integer class label instead of next-token labels."""

    def __init__(self, domains: Sequence[LabelledDomain], split: Literal["train", "val"] = "train"):
        super().__init__(domains, split)
        self._labels = [np.asarray(d.train_labels if split == "train" else d.val_labels) for d in domains]

    def target_tokens(self, indices: np.ndarray) -> np.ndarray:
        """One target per row: the class label (the per-sample loss counts one item)."""
        return np.ones(np.asarray(indices).shape, dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position, row = self.locate(index)
        item = {
            "input_ids": torch.as_tensor(np.asarray(self._rows[position][row]), dtype=torch.long),
            "labels": int(self._labels[position][row]),
            DOMAIN_KEY: self.global_domain_ids[position],
            SAMPLE_KEY: self.domain_offsets[position] + row,
        }
        return item

    @property
    def labels(self) -> np.ndarray:
        """Class index of every row, in global row order."""
        parts = [np.asarray(x, dtype=np.int64) for x in self._labels]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def single_domain(self, d: int) -> ClassificationDataset:
        """Only domain ``d``'s rows, still reporting ``domain_ids == d`` (per-domain evaluation)."""
        if not 0 <= d < len(self.domain_names):
            raise ValueError(f"d: expected a domain index in [0, {len(self.domain_names)}), got {d}")
        subset = ClassificationDataset.__new__(ClassificationDataset)
        subset.split = self.split
        subset._init(names=[self.domain_names[d]], rows=[self._rows[d]], ids=[self.global_domain_ids[d]])
        subset._labels = [self._labels[d]]
        return subset


class ClassificationCollator(DomainCollator):
    """Right-pads ``input_ids`` (``attention_mask`` marks real tokens) and stacks the labels as
    ``LongTensor[B]``; keeps ``domain_ids`` and ``sample_ids``."""

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("features: expected at least one feature to collate")
        input_ids, attention_mask = pad_right(
            [torch.as_tensor(f["input_ids"], dtype=torch.long).reshape(-1) for f in features], self.pad_token_id
        )
        labels = torch.as_tensor(
            [int(f["labels"]) if "labels" in f else IGNORE_INDEX for f in features], dtype=torch.long
        )
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return {**batch, **mixflow_columns(features, require_domain=False)}


def labelled_dataset(
    name: str,
    path: str,
    text_field: str,
    label_field: str,
    tokenizer: Any,
    cutoff_len: int,
    vocabulary: LabelVocabulary,
    domain_id: int = 0,
) -> ClassificationDataset:
    """One labelled file as a single-domain dataset (a real set, a test set)."""
    texts, raw = read_labelled(DomainSource(name=name, path=path, text_field=text_field, label_field=label_field))
    labels = vocabulary.encode(raw, f"{path}")
    domain = tokenize_labelled(name, texts, labels, tokenizer, cutoff_len)
    data = ClassificationDataset([domain])
    data.global_domain_ids = [domain_id]
    return data
