"""What a run reads before anything is built: its domains' sources, tokenizer and split seed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixflow.config.schema import RunConfig, domain_names
from mixflow.data.sources import DomainSource, domain_source, resolve_files, sources_from_dataset_info
from mixflow.data.tokenizer import ByteTokenizer, load_tokenizer


def as_path_list(value: str | Sequence[str] | None) -> list[str]:
    """``real_data`` / ``eval_data``: one path or a list of paths."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def source_name(path: str) -> str:
    """Name an extra labelled file is reported under: its file name without extension."""
    p = Path(path)
    return p.stem if p.suffix else p.name


def split_seed(run: RunConfig) -> int:
    """Seed of the held-out split: ``data_seed`` when set (0 included), else ``seed`` (default 42)."""
    data_seed = run.training.get("data_seed")
    return int(data_seed if data_seed is not None else run.training.get("seed", 42))


def domain_sources(run: RunConfig) -> list[DomainSource]:
    """The configured domains as :class:`DomainSource` objects, in order."""
    if run.data.domains is not None:
        return [
            domain_source(
                d.name,
                d.path,
                f"domains[{i}]",
                d.text_field,
                d.formatting,
                d.columns,
                d.tags,
                d.format,
                d.dtype,
                d.eos_id,
            )
            for i, d in enumerate(run.data.domains)
        ]
    return sources_from_dataset_info(run.data.dataset_dir, domain_names(run))


def tokenized_dir(run: RunConfig) -> Path:
    """The tokenization cache's directory: ``tokenized_dir``; default ``<dataset_dir>/tokenized``
    with ``dataset``, else ``tokenized`` in the inline domains' files' common parent directory."""
    if run.data.tokenized_dir is not None:
        return Path(run.data.tokenized_dir)
    if run.data.domains is None:
        return Path(run.data.dataset_dir) / "tokenized"
    parents = [str(f.resolve().parent) for s in domain_sources(run) for f in resolve_files(s)]
    return Path(os.path.commonpath(parents)) / "tokenized"


def choose_tokenizer(run: RunConfig) -> Any:
    """The configured tokenizer; default: the model directory's when it has one, else the byte tokenizer."""
    if run.data.tokenizer is not None:
        return load_tokenizer(run.data.tokenizer)
    path = run.model.model_name_or_path
    if path is not None and any(
        (Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "mixflow_tokenizer.json")
    ):
        return load_tokenizer(path)
    return ByteTokenizer()
