"""Sequence classification data: labelled domains, a dataset with integer labels, a collator, and
the model and metrics of ``task: classification``.

Each domain file holds one example per record with a text field and a label field (JSON lines, a
JSON array, parquet, or a ``datasets.save_to_disk`` directory). Texts are tokenized one example per
row, truncated to ``cutoff_len`` (no packing). Labels are integers ``0..C-1`` or strings; strings
are numbered in sorted order of the training domains' labels. Rows are indexed exactly like a
language-model :class:`~mixflow.data.dataset.MixtureDataset` (domains concatenated in order), so
``sample_ids`` are global row indices that per-example caches (IMP's checkers) can be keyed by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch

from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.keys import DOMAIN_KEY, IGNORE_INDEX, SAMPLE_KEY
from mixflow.data.packing import TokenizedDomain, _split
from mixflow.data.sources import DomainSource

LABELLED_FORMATS = (".jsonl", ".json", ".parquet", "a datasets.save_to_disk directory")


# ---- reading ------------------------------------------------------------------------------
def read_labelled(source: DomainSource, max_examples: int | None = None) -> tuple[list[str], list[Any]]:
    """Texts and raw labels of ``source`` (its ``text_field`` and ``label_field``), in file order."""
    label_field = source.label_field or "label"
    path = Path(source.path)
    if not path.exists():
        raise FileNotFoundError(f"domain {source.name!r}: path {path} not found")
    if path.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"{path}: expected a 'train' split, found {', '.join(loaded.keys()) or 'none'}")
            loaded = loaded["train"]
        records: Sequence[Mapping[str, Any]] = _columns_to_records(
            path, list(loaded.column_names), lambda f: loaded[f], source.text_field, label_field
        )
    elif path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        records = _columns_to_records(
            path, names, lambda f: pq.read_table(path, columns=[f]).column(f).to_pylist(), source.text_field, label_field
        )
    elif path.suffix.lower() in (".jsonl", ".json"):
        records = _json_records(path)
    else:
        raise ValueError(
            f"domain {source.name!r}: path {path} has unsupported format {path.suffix or '(none)'!r} for "
            f"classification; expected one of {', '.join(LABELLED_FORMATS)}"
        )
    texts, labels = [], []
    for i, record in enumerate(records):
        if max_examples is not None and i >= max_examples:
            break
        for key in (source.text_field, label_field):
            if not isinstance(record, Mapping) or key not in record:
                raise ValueError(f"{path} record {i}: missing field {key!r}")
        text = record[source.text_field]
        if not isinstance(text, str):
            raise ValueError(f"{path} record {i}: field {source.text_field!r} must be a string")
        texts.append(text)
        labels.append(record[label_field])
    return texts, labels


def _json_records(path: Path) -> list[Any]:
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and raw.lstrip().startswith("["):
        try:
            records = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: expected a JSON array of objects ({exc.msg})") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON array of objects")
        return records
    records = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: expected one JSON object per line ({exc.msg})") from None
    return records


def _columns_to_records(path: Path, names: list[str], column: Any, text_field: str, label_field: str) -> list[dict]:
    for key in (text_field, label_field):
        if key not in names:
            raise ValueError(f"{path}: missing column {key!r}; available: {', '.join(names)}")
    texts, labels = column(text_field), column(label_field)
    return [{text_field: t, label_field: y} for t, y in zip(texts, labels)]


# ---- labels -------------------------------------------------------------------------------
@dataclass
class LabelVocabulary:
    """How raw labels map to class indices ``0..num_labels-1``."""

    num_labels: int
    names: list[str] | None = None
    """Class names when labels are strings (index i is ``names[i]``); None for integer labels."""

    @classmethod
    def infer(cls, labels: Sequence[Any], num_labels: int | None = None) -> "LabelVocabulary":
        """Integer labels: ``num_labels`` or max + 1; string labels: their sorted set."""
        if labels and all(isinstance(y, str) for y in labels):
            names = sorted(set(labels))
            if num_labels is not None and num_labels != len(names):
                raise ValueError(f"num_labels: expected {len(names)} (the distinct string labels {names}), got {num_labels}")
            return cls(len(names), names)
        if not all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in labels):
            bad = next(y for y in labels if not (isinstance(y, (int, np.integer)) and not isinstance(y, bool)))
            raise ValueError(f"label_field: expected integer labels or string labels (not mixed), got {bad!r}")
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
                raise ValueError(f"{where}: label {unknown[0]!r} is not one of the training labels {self.names}")
            return np.asarray([index[y] for y in labels], dtype=np.int64)
        out = np.asarray([int(y) if not isinstance(y, str) else -1 for y in labels], dtype=np.int64)
        bad = out[(out < 0) | (out >= self.num_labels)]
        if bad.size:
            raise ValueError(f"{where}: label {int(bad[0])} is outside 0..{self.num_labels - 1} (num_labels {self.num_labels})")
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
    :func:`~mixflow.data.packing.tokenize_domain` does for unpacked text (same permutation)."""
    rows = [encode_text(tokenizer, t, cutoff_len) for t in texts]
    # Split the row *indices* with the language-model split, so both tasks hold out the same rows.
    split = _split(name, list(range(len(rows))), val_size, seed)
    train_index = np.asarray(split.train, dtype=np.int64)
    val_index = np.asarray(split.val, dtype=np.int64)
    return LabelledDomain(
        name=name,
        train=[rows[i] for i in train_index],
        val=[rows[i] for i in val_index],
        train_labels=labels[train_index],
        val_labels=labels[val_index],
    )


class ClassificationDataset(MixtureDataset):
    """A :class:`MixtureDataset` whose rows carry an integer class label instead of next-token labels."""

    def __init__(self, domains: Sequence[LabelledDomain], split: Literal["train", "val"] = "train"):
        super().__init__(domains, split)
        self._labels = [np.asarray(d.train_labels if split == "train" else d.val_labels) for d in domains]

    def __getitem__(self, index: int) -> dict[str, Any]:
        position, row = self.locate(index)
        return {
            "input_ids": torch.as_tensor(np.asarray(self._rows[position][row]), dtype=torch.long),
            "labels": int(self._labels[position][row]),
            DOMAIN_KEY: self.global_domain_ids[position],
            SAMPLE_KEY: self.domain_offsets[position] + row,
        }

    @property
    def labels(self) -> np.ndarray:
        """Class index of every row, in global row order."""
        parts = [np.asarray(x, dtype=np.int64) for x in self._labels]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def single_domain(self, d: int) -> "ClassificationDataset":
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
        inputs = [torch.as_tensor(f["input_ids"], dtype=torch.long).reshape(-1) for f in features]
        width = max(len(x) for x in inputs)
        input_ids = torch.full((len(inputs), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for j, x in enumerate(inputs):
            input_ids[j, : len(x)] = x
            attention_mask[j, : len(x)] = 1
        labels = torch.as_tensor([int(f["labels"]) if "labels" in f else IGNORE_INDEX for f in features], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if all(DOMAIN_KEY in f for f in features):
            batch[DOMAIN_KEY] = torch.as_tensor([int(f[DOMAIN_KEY]) for f in features], dtype=torch.long)
        if all(SAMPLE_KEY in f for f in features):
            batch[SAMPLE_KEY] = torch.as_tensor([int(f[SAMPLE_KEY]) for f in features], dtype=torch.long)
        return batch


def labelled_dataset(
    name: str, path: str, text_field: str, label_field: str, tokenizer: Any, cutoff_len: int,
    vocabulary: LabelVocabulary, domain_id: int = 0,
) -> ClassificationDataset:
    """One labelled file as a single-domain dataset (a real set, a test set)."""
    texts, raw = read_labelled(DomainSource(name=name, path=path, text_field=text_field, label_field=label_field))
    labels = vocabulary.encode(raw, f"{path}")
    domain = tokenize_labelled(name, texts, labels, tokenizer, cutoff_len)
    data = ClassificationDataset([domain])
    data.global_domain_ids = [domain_id]
    return data
