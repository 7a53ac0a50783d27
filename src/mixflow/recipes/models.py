"""From-scratch model configs shared by the language-model and classification paths."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixflow.config.errors import ConfigError


def scratch_config(model_config: Mapping[str, Any], tokenizer: Any, **overrides: Any) -> Any:
    """``AutoConfig.for_model`` from a ``model_config`` mapping (``model_type`` required), with
    ``vocab_size`` and the special token ids defaulting to the tokenizer's."""
    from transformers import AutoConfig

    kwargs = dict(model_config)
    model_type = kwargs.pop("model_type")
    kwargs.setdefault("vocab_size", int(tokenizer.vocab_size))
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, key, None)
        if value is not None:
            kwargs.setdefault(key, int(value))
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def check_reference_vocabulary(reference_model_path: str | None, tokenizer: Any) -> None:
    """One error line when a reference model (DoReMi's) has fewer token ids than the tokenizer
    produces, checked from its ``config.json`` before any model loads (a larger, padded embedding
    table is fine)."""
    if reference_model_path is None:
        return
    config = Path(reference_model_path) / "config.json"
    if not config.is_file():
        return  # the front door already checked the directory; the loader names other formats
    vocab = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else int(getattr(tokenizer, "vocab_size", 0))
    if isinstance(vocab, int) and vocab < size:
        raise ConfigError(
            f"reference_model_path: {reference_model_path} has a vocabulary of {vocab} tokens but the tokenizer "
            f"has {size}; the reference must use the proxy's tokenizer"
        )
