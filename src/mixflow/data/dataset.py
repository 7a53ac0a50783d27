"""A map-style dataset over several tokenized domains, and a collator that keeps domain ids."""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from mixflow.data.keys import DOMAIN_KEY, IGNORE_INDEX, SAMPLE_KEY
from mixflow.data.packing import TokenizedDomain
from mixflow.data.rows import TokenRows


class MixtureDataset(Dataset):
    """Rows of all domains, concatenated in domain order.

    Global row ``i`` of domain ``d`` has index ``domain_offsets[d] + i``, which
    is the index a mixture sampler yields for it.

    Attributes: ``domain_names`` and ``domain_sizes`` (rows per domain in this
    split), ``domain_offsets`` (global index of each domain's first row) and
    ``global_domain_ids`` (the ``domain_ids`` value each domain reports).
    """

    def __init__(self, domains: Sequence[TokenizedDomain], split: Literal["train", "val"] = "train"):
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
        if not domains:
            raise ValueError("domains: expected at least one TokenizedDomain")
        self.split = split
        self._init(
            names=[d.name for d in domains],
            rows=[d.train if split == "train" else d.val for d in domains],
            ids=list(range(len(domains))),
        )

    def _init(self, names: list[str], rows: list[TokenRows], ids: list[int]) -> None:
        self.domain_names: list[str] = names
        self.domain_sizes: list[int] = [len(r) for r in rows]
        self.domain_offsets: list[int] = list(itertools.accumulate(self.domain_sizes[:-1], initial=0))
        self.global_domain_ids: list[int] = ids
        self._rows = rows
        self._total = sum(self.domain_sizes)

    def __len__(self) -> int:
        return self._total

    def target_tokens(self, indices: np.ndarray) -> np.ndarray:
        """Target tokens of each global row (int64): the positions a shifted causal-LM loss counts,
        ``len(row) − 1``. With the sampler's plan they give a step's tokens per domain before its
        first forward (``objective_normalization: domain``)."""
        idx = np.asarray(indices, dtype=np.int64)
        positions = np.searchsorted(np.asarray(self.domain_offsets), idx, side="right") - 1
        out = np.empty(idx.shape, dtype=np.int64)
        for d in np.unique(positions).tolist():
            mask = positions == d
            counts = self._rows[d].target_counts()
            if counts is not None:  # instruction rows: only the response tokens are targets
                out[mask] = counts[idx[mask] - self.domain_offsets[d]]
            else:
                out[mask] = np.maximum(self._row_lengths(d)[idx[mask] - self.domain_offsets[d]] - 1, 0)
        return out

    def _row_lengths(self, d: int) -> np.ndarray:
        """Tokens of each row of domain position ``d`` (computed once per domain)."""
        cache = self.__dict__.setdefault("_lengths", {})
        if d not in cache:
            cache[d] = self._rows[d].lengths()  # from the offsets, without reading a token
        return cache[d]

    def locate(self, index: int) -> tuple[int, int]:
        """Position of a global index: ``(domain position, row within that domain)``."""
        i = operator.index(index)
        if i < 0:
            i += self._total
        if not 0 <= i < self._total:
            raise IndexError(f"index {index} out of range for dataset of {self._total} rows")
        # bisect_right skips empty domains, whose offset equals the next one's.
        position = bisect.bisect_right(self.domain_offsets, i) - 1
        return position, i - self.domain_offsets[position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        position, row = self.locate(index)
        rows = self._rows[position]
        ids = np.asarray(rows[row])
        input_ids = torch.as_tensor(ids, dtype=torch.long)
        labels = rows.labels(row, IGNORE_INDEX, ids)
        item = {
            "input_ids": input_ids,
            "labels": input_ids.clone() if labels is None else torch.as_tensor(labels, dtype=torch.long),
            DOMAIN_KEY: self.global_domain_ids[position],
            SAMPLE_KEY: self.domain_offsets[position] + row,
        }
        return item

    def single_domain(self, d: int) -> MixtureDataset:
        """A dataset with only domain ``d``'s rows, still reporting ``domain_ids == d``.

        Used for per-domain evaluation.
        """
        if not 0 <= d < len(self.domain_names):
            raise ValueError(f"d: expected a domain index in [0, {len(self.domain_names)}), got {d}")
        subset = MixtureDataset.__new__(MixtureDataset)
        subset.split = self.split
        subset._init(
            names=[self.domain_names[d]],
            rows=[self._rows[d]],
            ids=[self.global_domain_ids[d]],
        )
        return subset


def _as_long(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.long).reshape(-1)


class DomainCollator:
    """Right-pads a list of features into a batch and keeps each sample's domain id.

    ``labels`` are padded with -100 so padded positions carry no loss; when a
    feature has no ``labels`` its ``input_ids`` are used.
    """

    def __init__(self, pad_token_id: int, document_eos: int | None = None) -> None:
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or pad_token_id < 0:
            raise ValueError(f"pad_token_id: expected a non-negative integer, got {pad_token_id!r}")
        self.pad_token_id = pad_token_id
        #: With an EOS id: ``position_ids`` that restart after every EOS and no ``attention_mask``, from
        #: which transformers' masking builds a block-diagonal causal mask (each packed document attends
        #: to itself only) for the models whose masks it builds (Llama, Mistral, Qwen2, Gemma, ...).
        self.document_eos = document_eos

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Batch ``features`` into ``input_ids``, ``attention_mask`` (or, per document, ``position_ids``),
        ``labels`` and ``domain_ids``."""
        if not features:
            raise ValueError("features: expected at least one feature to collate")
        inputs = [_as_long(f["input_ids"]) for f in features]
        labels = [_as_long(f["labels"]) if "labels" in f else x for f, x in zip(features, inputs)]
        for j, (x, y) in enumerate(zip(inputs, labels)):
            if len(y) != len(x):
                raise ValueError(f"features[{j}]: labels length {len(y)} must equal input_ids length {len(x)}")
        input_ids, attention_mask = pad_right(inputs, self.pad_token_id)
        label_ids, _ = pad_right(labels, IGNORE_INDEX)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}
        if self.document_eos is not None:
            # right padding comes after every real token, so causal attention never reaches it
            batch = {
                "input_ids": input_ids,
                "position_ids": document_positions(input_ids, self.document_eos),
                "labels": label_ids,
            }
        return {**batch, **mixflow_columns(features, require_domain=True)}


def document_positions(input_ids: torch.Tensor, eos: int) -> torch.Tensor:
    """Positions that restart at 0 after every ``eos`` token of a row (a new packed document)."""
    index = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[:, 1:] = input_ids[:, :-1] == eos
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - first


def pad_right(sequences: Sequence[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(``LongTensor[B, T]`` right-padded with ``value``, attention mask of the real positions)."""
    width = max(len(x) for x in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for j, x in enumerate(sequences):
        out[j, : len(x)] = x
        mask[j, : len(x)] = 1
    return out, mask


def mixflow_columns(features: Sequence[Mapping[str, Any]], require_domain: bool) -> dict[str, torch.Tensor]:
    """``domain_ids`` (and ``sample_ids`` when every feature has one) as ``LongTensor[B]``."""
    out = {}
    if require_domain or all(DOMAIN_KEY in f for f in features):
        out[DOMAIN_KEY] = torch.as_tensor([int(f[DOMAIN_KEY]) for f in features], dtype=torch.long)
    if all(SAMPLE_KEY in f for f in features):
        out[SAMPLE_KEY] = torch.as_tensor([int(f[SAMPLE_KEY]) for f in features], dtype=torch.long)
    return out
