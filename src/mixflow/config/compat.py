"""Keys of LLaMA-Factory / DataFlex configs, which users bring along: mapped, accepted or refused.

- A key with a meaning here is mapped to ours (``warmup_ratio`` → ``warmup_steps`` as a fraction,
  which TrainingArguments reads as a ratio of the total steps).
- A key that only matters to LLaMA-Factory is accepted with one warning naming it.
- A key whose value would silently change what trains (an adapter variant mixflow does not build:
  DoRA, PiSSA, freeze tuning) is an error.
  (``stage`` is a data key of ours: it is checked against the domains' formatting.)
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

#: Keys that only matter to LLaMA-Factory's own pipeline (templates, its plots, its reporting).
IGNORED = ("template", "plot_loss", "do_train", "ddp_timeout", "flash_attn", "trust_remote_code", "cache_dir")
#: key: the values that keep the run's meaning (anything else is refused).
ALLOWED_VALUES: dict[str, tuple[Any, ...]] = {}


#: Prefixes of LLaMA-Factory's keys of adapter variants mixflow does not build (its LoRA keys,
#: ``lora_rank`` ... ``additional_target``, are ours): refused as a family, so a config meets one
#: error per key at once and never a "did you mean" of another meaning.
ADAPTER_PREFIXES = ("lora_", "pissa_", "use_dora", "use_rslora", "loraplus_", "freeze_")


def translate(data: dict[str, Any], known: set[str]) -> tuple[dict[str, Any], list[str]]:
    """(``data`` with LLaMA-Factory keys mapped and the harmless ones dropped (one warning), the errors
    of the keys that are refused — every one of them, so a config is fixed in one attempt).

    Keys that are ours or TrainingArguments' (``known``) pass through untouched.
    """
    out = dict(data)
    dropped, errors = [], []
    for key in list(out):
        if key in known:
            continue
        if key in ALLOWED_VALUES:
            if out[key] not in ALLOWED_VALUES[key]:
                errors.append(
                    f"{key}: {out[key]!r} is not supported (mixflow trains every weight of a causal LM); "
                    f"expected one of {list(ALLOWED_VALUES[key])} or remove it"
                )
            dropped.append(key)
            out.pop(key)
        elif key.startswith(ADAPTER_PREFIXES):
            errors.append(
                f"{key}: an adapter variant of LLaMA-Factory that mixflow does not build; it trains every "
                "weight (finetuning_type: full) or plain LoRA (finetuning_type: lora, lora_rank, lora_alpha, "
                "lora_dropout, lora_target, additional_target): remove it"
            )
            out.pop(key)
        elif key in IGNORED:
            dropped.append(key)
            out.pop(key)
        elif key == "warmup_ratio":
            ratio = out.pop(key)
            if "warmup_steps" in out:
                errors.append("warmup_ratio: give warmup_ratio or warmup_steps (the learning-rate warmup), not both")
            elif not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio < 1:
                errors.append(f"warmup_ratio: expected a number in [0, 1), got {ratio!r}")
            else:
                out["warmup_steps"] = float(ratio)  # TrainingArguments reads a float below 1 as a ratio
    if dropped:
        logger.warning("LLaMA-Factory key(s) %s accepted without effect here", ", ".join(sorted(dropped)))
    return out, errors
