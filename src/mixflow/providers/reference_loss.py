"""The ``reference_loss`` statistic provider: DoReMi's per-domain excess loss over a reference model.

On every training micro-batch it runs one extra forward of a frozen reference model on the same
inputs (under ``torch.no_grad()``: no graph, no backward) and compares per-token losses with the
proxy's, which come from the training forward itself (``ctx.losses.token_losses``; the proxy is
never run twice). It returns per-domain sums, which the step engine adds over micro-batches and steps
and all-reduces over ranks:

- ``ref_excess_sum`` [K]: Σ over the domain's target tokens of max(ℓ_proxy,tok − ℓ_ref,tok, 0);
- ``ref_token_count`` [K]: the number of those tokens;
- ``ref_loss_sum`` [K]: Σ of the reference's per-token losses (for logs and diagnostics).

λ_i = ref_excess_sum_i / ref_token_count_i is then exactly DoReMi (Xie et al. 2023, arXiv 2305.10429, Algorithm 1): "clip per token, then
average over the domain's tokens" over the update window, however the window was split across
micro-batches and ranks.

The reference is loaded lazily with ``AutoModelForCausalLM.from_pretrained(path,
local_files_only=True)`` onto the device of the first batch, in eval mode with gradients off; a
directory holding a LoRA adapter (``adapter_config.json``, a reference trained with
``finetuning_type: lora``) loads its base model with the adapter merged in (peft).
Cost: one forward of the reference per micro-batch and its logits' memory for that forward. Where
the caller offers the batch before the training forward (``StepEngine.before_forward``; the Trainer
integration does), the reference runs then, while no training graph holds memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mixflow.algorithms.statistics import (
    REF_EXCESS_SUM,
    REF_LOSS_SUM,
    REF_TOKEN_COUNT,
    ReferenceLossParams,
    per_domain_sum,
)
from mixflow.errors import ConfigError
from mixflow.loss.per_sample import SampleLosses, sample_losses
from mixflow.providers.base import BatchContext, ProviderContext, ProviderNeeds, StatisticProvider, register_provider

logger = logging.getLogger(__name__)


class ReferenceLoss(StatisticProvider):
    """Per-domain clipped excess loss of the model being trained over a frozen reference model."""

    name = "reference_loss"

    def __init__(self, path: str | None, model: Any = None) -> None:
        """``path``: a local model directory (None: the provider contributes nothing, Group DRO).
        ``model``: an already loaded reference (tests, or callers that own the model)."""
        self.path = path
        self._model = model
        if model is not None:
            self._freeze(model)
        self._checked_vocab = False
        #: (the batch's input_ids, the reference's losses) computed before the training forward.
        self._before_forward_losses: tuple[Any, SampleLosses] | None = None

    @staticmethod
    def _freeze(model: Any) -> None:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    def reference(self, device: torch.device) -> Any:
        """The reference model on ``device`` (loaded on first use)."""
        if self._model is None:
            from transformers import AutoModelForCausalLM

            if self.path is None:
                raise ValueError("reference_loss: no reference_model_path to load (Group DRO reads no reference)")
            logger.info("reference_loss: loading the reference model from %s", self.path)
            base = adapter_base(self.path)
            if base is None:
                self._model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True)
            else:  # a reference trained with LoRA: its base model with the adapter merged in
                from peft import PeftModel

                model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
                self._model = PeftModel.from_pretrained(model, self.path, local_files_only=True).merge_and_unload()
            self._freeze(self._model)
        first = next(self._model.parameters(), None)
        if first is not None and first.device != device:
            self._model.to(device)
        return self._model

    def before_forward(self, inputs: Mapping[str, Any], labels: torch.Tensor | None, shift: bool) -> None:
        # The same forward costs ~20% more CPU time while the training graph holds memory, so the
        # reference runs here when the caller offers the batch first; batch_statistics checks it.
        self._before_forward_losses = None
        if (self.path is not None or self._model is not None) and labels is not None and labels.dim() == 2:
            self._before_forward_losses = (inputs.get("input_ids"), self._reference_losses(inputs, labels, shift))

    def _reference_losses(self, inputs: Mapping[str, Any], labels: torch.Tensor, shift: bool) -> SampleLosses:
        device = labels.device
        model = self.reference(device)
        if not self._checked_vocab:
            self._check_vocab(model, labels)
        with torch.no_grad():
            outputs = model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            return sample_losses(logits, labels, shift=shift)

    def batch_statistics(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        before, self._before_forward_losses = self._before_forward_losses, None
        if self.path is None and self._model is None:
            return {}
        proxy = ctx.losses
        if ctx.labels is None or ctx.labels.dim() != 2:
            raise ConfigError(
                "reference_loss: expected a causal LM batch (labels [B, T]); DoReMi's reference is a language model"
            )
        device = proxy.token_losses.device
        labels = ctx.labels.to(device)
        # The training forward's token losses tell whether labels were shifted (causal LM: one
        # position fewer than the labels), so the reference is scored on exactly the same targets.
        shift = proxy.token_losses.shape[1] != labels.shape[1]
        if (
            before is not None
            and before[0] is ctx.inputs.get("input_ids")
            and before[1].token_losses.shape == proxy.token_losses.shape
        ):
            ref = before[1]
        else:
            ref = self._reference_losses(ctx.inputs, labels, shift)
        with torch.no_grad():
            mask = proxy.token_mask
            # DoReMi (Xie et al. 2023, arXiv 2305.10429, Algorithm 1), DoReMi step 2: clip per token, then sum (the mean is taken per window).
            excess = (proxy.token_losses.detach().float() - ref.token_losses).clamp_min(0) * mask
            ids, k = ctx.domain_ids.to(device), ctx.num_domains
            return {
                REF_EXCESS_SUM: per_domain_sum(ids, excess.sum(dim=1), k),
                REF_TOKEN_COUNT: per_domain_sum(ids, mask.sum(dim=1), k),
                REF_LOSS_SUM: per_domain_sum(ids, ref.token_loss_sum, k),
            }

    def _check_vocab(self, model: Any, labels: torch.Tensor) -> None:
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        valid = labels[labels >= 0]
        if vocab is not None and valid.numel() and int(valid.max()) >= int(vocab):
            raise ConfigError(
                f"reference_model_path: the reference's vocabulary has {vocab} tokens but the batch has token id "
                f"{int(valid.max())}; the reference must use the proxy's tokenizer"
            )
        self._checked_vocab = True


def check_reference_vocabulary(params: Any, tokenizer: Any) -> None:
    """One error line when the reference model has fewer token ids than the tokenizer produces,
    checked from its ``config.json`` before any model loads (a larger, padded embedding table is fine)."""
    path = _params(params).reference_model_path
    if path is None:
        return
    config = Path(adapter_base(path) or path) / "config.json"
    if not config.is_file():
        return  # the front door already checked the directory; the loader names other formats
    vocab = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else int(getattr(tokenizer, "vocab_size", 0))
    if isinstance(vocab, int) and vocab < size:
        raise ConfigError(
            f"reference_model_path: {path} has a vocabulary of {vocab} tokens but the tokenizer has "
            f"{size}; the reference must use the proxy's tokenizer"
        )


def adapter_base(path: str | Path) -> str | None:
    """The base model a peft adapter directory was trained on (its ``adapter_config.json``), None
    for a directory holding a full model."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise ConfigError(
            f"reference_model_path: {path} holds a LoRA adapter whose base model {base!r} is not a local "
            "directory; give the adapter's base model as a local directory (nothing is downloaded)"
        )
    return str(base)


def _params(params: Any) -> ReferenceLossParams:
    if not isinstance(params, ReferenceLossParams):
        raise TypeError(
            f"reference_loss: expected params deriving from ReferenceLossParams, got {type(params).__name__}"
        )
    return params


@register_provider("reference_loss", ProviderNeeds(preflight=check_reference_vocabulary))
def _build(params: Any, context: ProviderContext | None) -> ReferenceLoss:
    return ReferenceLoss(_params(params).reference_model_path)
