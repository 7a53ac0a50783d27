"""From-scratch model configs shared by the language-model and classification paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
