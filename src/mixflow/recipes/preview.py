"""``mixflow data preview``: what the model will see — a few rows per domain, as the tokenizer
decodes them, with the target tokens marked (instruction masks) and document boundaries shown
(packing), so a chat template or a packing choice can be checked without decoding ``mask.bin``.

Markup: ``⟦…⟧`` encloses the tokens that are targets when a domain has a mask (everything else
is context the loss ignores); ``⟪EOS⟫`` is the end-of-document token between packed documents.
Packed documents share a row and, with ``packed_attention: causal`` (the default), attend to earlier
documents in the same row; ``packed_attention: document`` keeps each to itself (README: Data).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixflow.config.schema import RunConfig
from mixflow.data.keys import IGNORE_INDEX
from mixflow.errors import ConfigError
from mixflow.recipes.build import cache_domains
from mixflow.recipes.inputs import choose_tokenizer, domain_sources

TARGET_OPEN, TARGET_CLOSE, EOS_MARK = "⟦", "⟧", "⟪EOS⟫"


def render_row(tokenizer: Any, ids: np.ndarray, labels: np.ndarray | None) -> str:
    """One row as text: spans of target tokens in ⟦…⟧ (when ``labels`` mark them), EOS as ⟪EOS⟫."""
    eos = getattr(tokenizer, "eos_token_id", None)
    pieces: list[str] = []
    span: list[int] = []
    span_is_target: bool | None = None

    def flush() -> None:
        if span:
            text = tokenizer.decode(span)
            pieces.append(f"{TARGET_OPEN}{text}{TARGET_CLOSE}" if span_is_target else text)
            span.clear()

    for j, token in enumerate(ids.tolist()):
        is_target = labels is not None and int(labels[j]) != IGNORE_INDEX
        if token == eos:
            flush()
            pieces.append(EOS_MARK)
            continue
        if is_target != span_is_target:
            flush()
            span_is_target = is_target
        span.append(int(token))
    flush()
    return "".join(pieces)


def preview(run: RunConfig, domains: list[str] | None = None, rows: int = 3) -> list[str]:
    """Lines to print: for each chosen domain, its first ``rows`` rows rendered, with a header."""
    names = [s.name for s in domain_sources(run)]
    unknown = [d for d in domains or [] if d not in names]
    if unknown:
        raise ConfigError(f"domain: unknown {unknown}; expected one of {names}")
    tokenizer = choose_tokenizer(run)
    out = []
    for name, entry in zip(names, cache_domains(run, progress=False)):
        if domains and name not in domains:
            continue
        masked = entry.rows.mask is not None
        out.append(
            f"== {name}: {len(entry.rows)} rows of {run.data.cutoff_len} tokens"
            + (f"; targets in {TARGET_OPEN}…{TARGET_CLOSE}" if masked else "; every token is a target")
            + f"; {EOS_MARK} ends a document"
        )
        for i in range(min(rows, len(entry.rows))):
            ids = entry.rows[i]
            labels = entry.rows.labels(i, IGNORE_INDEX, ids) if masked else None
            out.append(f"-- row {i} ({len(ids)} tokens)")
            out.append(render_row(tokenizer, ids, labels))
    return out
