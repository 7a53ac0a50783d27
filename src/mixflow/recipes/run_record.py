"""What a run folder records about its domains, so that its weights can be handed to another trainer
later (``mixflow export``) without the config or the machine that trained it.

``<output_dir>/mixflow_domains.json``: for each domain, in the run's order, its name, where its data
lives (absolute paths, as configured: files, a folder, a glob, Megatron prefixes), its format
(``text`` or the pre-tokenized ``megatron`` / ``numpy`` / ``mixflow``) and its training rows and tokens;
and the weights the algorithm starts from (its weights log records only changes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixflow.data.packing import TokenizedDomain
from mixflow.data.sources import DomainSource
from mixflow.utils.jsonlog import read_json, write_json_atomic

DOMAINS_FILE = "mixflow_domains.json"


def domain_record(source: DomainSource, domain: TokenizedDomain) -> dict[str, Any]:
    """One domain's entry of ``mixflow_domains.json``."""
    paths = source.path if isinstance(source.path, list) else [source.path]
    record: dict[str, Any] = {
        "name": source.name,
        "paths": [os.path.abspath(p) for p in paths],
        "format": source.token_format or "text",
        "train_rows": int(domain.num_train),
        "train_tokens": int(domain.train.num_tokens),
    }
    if source.dtype is not None:
        record["dtype"] = source.dtype
    return record


def write_domains(
    output_dir: str | Path,
    sources: Sequence[DomainSource],
    domains: Sequence[TokenizedDomain],
    initial_weights: Sequence[float],
) -> Path:
    """Write ``<output_dir>/mixflow_domains.json`` (atomically; call on the main process).
    ``initial_weights``: the algorithm's ``domain_weights`` before its first step."""
    path = Path(output_dir) / DOMAINS_FILE
    by_name = {d.name: d for d in domains}
    records = [domain_record(s, by_name[s.name]) for s in sources if s.name in by_name]
    write_json_atomic(path, {"domains": records, "initial_weights": [float(w) for w in initial_weights]})
    return path


def read_domains(run_dir: str | Path) -> dict[str, Any] | None:
    """What a run recorded (``domains``, ``initial_weights``); None for a run without the file (one
    trained before mixflow wrote it)."""
    path = Path(run_dir) / DOMAINS_FILE
    return dict(read_json(path, "a mixflow domains file")) if path.is_file() else None
