"""LoRA adapters through peft (``finetuning_type: lora``, LLaMA-Factory's keys).

The adapter is built once, on the model the run would otherwise train in full: every LoRA matrix
``B`` starts at zero, so step 0 is the base model's exactly, and ``A`` is drawn after the run's seed
is set, so a run is reproducible and resumes exactly (the Trainer saves and restores the adapter
weights in each checkpoint, mixflow its own state beside them).
"""

from __future__ import annotations

import logging
from typing import Any

from mixflow.config.schema import ModelConfig

logger = logging.getLogger(__name__)


def names(value: str | None) -> list[str]:
    """A comma-separated module list (LLaMA-Factory's form) as names."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def with_lora(model: Any, m: ModelConfig) -> Any:
    """``model`` wrapped in a peft LoRA adapter as ``m`` configures it; only the adapter (and the
    modules of ``additional_target``) train."""
    from peft import LoraConfig, get_peft_model

    # "all": every linear layer but the output head (LLaMA-Factory's meaning, peft's "all-linear")
    target: str | list[str] = "all-linear" if m.lora_target == "all" else names(m.lora_target)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=m.lora_rank,
        lora_alpha=m.lora_alpha if m.lora_alpha is not None else 2 * m.lora_rank,  # LLaMA-Factory's default
        lora_dropout=m.lora_dropout,
        target_modules=target,
        modules_to_save=names(m.additional_target) or None,
    )
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA (peft): rank %d, alpha %g, targets %s%s: %d of %d parameters train (%.2f%%)",
        config.r,
        config.lora_alpha,
        m.lora_target,
        f", also {m.additional_target}" if m.additional_target else "",
        trainable,
        total,
        100.0 * trainable / max(total, 1),
    )
    return model
