"""The model's checks at load: the model keys, and whether the model can take the data (its positions,
its vocabulary, its sizes) — read from ``config.json`` or ``model_config``, before any model loads."""

from __future__ import annotations

import importlib.util
import json
import typing
from pathlib import Path

from mixflow.algorithms.params import bounds_errors, suggest
from mixflow.config.errors import ConfigError, ConfigErrors
from mixflow.config.schema import ModelConfig, RunConfig


def check_model(run: RunConfig) -> None:
    """The model keys, every problem at once."""
    m = run.model
    if (m.model_name_or_path is None) == (m.model_config is None):
        raise ConfigError(
            "model_name_or_path: expected exactly one of 'model_name_or_path' (a local directory) or 'model_config'"
        )
    errors = []
    if m.model_name_or_path is not None and not Path(m.model_name_or_path).is_dir():
        errors.append(f"model_name_or_path: expected a local model directory, not found: {m.model_name_or_path}")
    if m.train_from_scratch and m.model_name_or_path is None:
        errors.append(
            "train_from_scratch: expected model_name_or_path (the config to start from); "
            "with model_config the model is from scratch already"
        )
    if m.model_config is not None and "model_type" not in m.model_config:
        errors.append("model_config.model_type: required (e.g. llama)")
    elif m.model_config is not None:
        from transformers import CONFIG_MAPPING

        if m.model_config["model_type"] not in CONFIG_MAPPING:
            mt = str(m.model_config["model_type"])
            errors.append(
                f"model_config.model_type: unknown model type {mt!r}{suggest(mt, list(CONFIG_MAPPING.keys()))}"
            )
    errors += adapter_errors(run)
    tok = run.data.tokenizer
    if tok not in (None, "byte") and not Path(tok).is_dir():
        errors.append(f"tokenizer: expected 'byte' or a local tokenizer directory, not found: {tok}")
    if errors:
        raise ConfigErrors(errors) if len(errors) > 1 else ConfigError(errors[0])


#: LoRA's keys (meaningful only with finetuning_type: lora).
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "additional_target")


def adapter_errors(run: RunConfig) -> list[str]:
    """``finetuning_type`` and the LoRA keys: values in range, LoRA keys only with LoRA, peft present."""
    m = run.model
    if m.finetuning_type not in ("full", "lora"):
        return [f"finetuning_type: expected 'full' or 'lora', got {m.finetuning_type!r}"]
    if m.finetuning_type == "full":
        default = ModelConfig()
        return [
            f"{key}: a LoRA key, but finetuning_type is full (every weight trains); set finetuning_type: lora or remove it"
            for key in LORA_KEYS
            if getattr(m, key) != getattr(default, key)
        ]
    errors = bounds_errors(m)  # lora_rank, lora_alpha, lora_dropout: their declared ranges
    if not m.lora_target.strip(" ,"):
        errors.append("lora_target: expected 'all' or module names, comma-separated (e.g. q_proj,v_proj)")
    if run.data.task == "classification":
        errors.append("finetuning_type: lora trains causal language models here; task: classification trains in full")
    if importlib.util.find_spec("peft") is None:
        errors.append(
            "finetuning_type: lora builds its adapters with peft, which is not installed: pip install 'mixflow[lora]'"
        )
    return errors


#: Files that make a model directory carry its own tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "mixflow_tokenizer.json")
#: Keys under which model configs give their longest sequence.
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len")


def check_model_fits_data(run: RunConfig) -> None:
    """From the model's config.json (or model_config) and the tokenizer, before the model loads: a
    model directory without a tokenizer needs ``tokenizer:``; ``cutoff_len`` within the model's
    positions; the tokenizer's ids within the model's vocabulary (else an embedding IndexError, or a
    device-side assert on a GPU, after loading — or silent garbage past a RoPE model's length)."""
    m, d = run.model, run.data
    errors: list[str] = []
    config: dict[str, typing.Any] | None = dict(m.model_config) if m.model_config is not None else None
    own_tokenizer = False
    if m.model_name_or_path is not None:
        path = Path(m.model_name_or_path)
        own_tokenizer = any((path / f).is_file() for f in TOKENIZER_FILES)
        if d.tokenizer is None and not own_tokenizer:
            errors.append(
                f"tokenizer: {path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); set tokenizer: "
                "to a tokenizer directory, or 'byte' for the byte-level one"
            )
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None  # the model's own loading reports a missing or broken config
    if m.model_config is not None:
        errors += _shape_errors(dict(m.model_config))
    if config:
        for key in POSITION_KEYS:
            limit = config.get(key)
            if isinstance(limit, int) and d.cutoff_len > limit:
                errors.append(
                    f"cutoff_len: {d.cutoff_len} is longer than the model's {key} {limit}; expected at most {limit}"
                )
                break
        vocab = config.get("vocab_size")
        tokenizer = d.tokenizer if d.tokenizer is not None else (m.model_name_or_path if own_tokenizer else None)
        if isinstance(vocab, int) and d.task == "causal_lm" and (tokenizer is not None or m.model_config is not None):
            from mixflow.data.tokenizer import load_tokenizer

            try:
                size = load_tokenizer(tokenizer).vocab_size
            except (OSError, ValueError) as err:
                errors.append(f"tokenizer: {err}")
            else:
                if size > vocab:
                    errors.append(
                        f"tokenizer: its vocabulary has {size} tokens, more than the model's vocab_size {vocab} "
                        f"(ids ≥ {vocab} have no embedding); use the model's tokenizer or a larger model"
                    )
    if errors:
        raise ConfigErrors(errors)


#: model_config keys that are sizes: positive integers.
SIZE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "n_embd",
    "n_layer",
    "n_head",
    "n_positions",
    "head_dim",
)


def _shape_errors(cfg: dict[str, typing.Any]) -> list[str]:
    """Sizes a from-scratch model cannot be built with (else a traceback from deep in transformers)."""
    errors = [
        f"model_config.{k}: expected a positive integer, got {cfg[k]!r}"
        for k in SIZE_KEYS
        if k in cfg and (isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < 1)
    ]
    if errors:
        return errors
    hidden, heads = cfg.get("hidden_size", cfg.get("n_embd")), cfg.get("num_attention_heads", cfg.get("n_head"))
    if hidden and heads and "head_dim" not in cfg and hidden % heads:
        errors.append(f"model_config.num_attention_heads: {heads} does not divide hidden_size {hidden}")
    kv = cfg.get("num_key_value_heads")
    if heads and kv and heads % kv:
        errors.append(f"model_config.num_key_value_heads: {kv} does not divide num_attention_heads {heads}")
    return errors
