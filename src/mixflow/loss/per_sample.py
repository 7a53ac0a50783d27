"""Per-sample losses from the logits of the training forward.

The per-token cross-entropy is computed in chunks of rows under activation checkpointing: each
chunk's float32 log-softmax exists only while that chunk is computed (in the forward and again in
the backward), so a large vocabulary never needs a second full float32 copy of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mixflow.data.keys import IGNORE_INDEX


@dataclass
class SampleLosses:
    """Per-sample loss sums and token counts of one batch; ``token_loss_sum`` carries the graph."""

    token_loss_sum: torch.Tensor
    """Σ over the sample's target tokens of the per-token loss, shape [B] (differentiable)."""
    token_count: torch.Tensor
    """Number of target tokens (labels != -100) per sample, shape [B]."""
    token_losses: torch.Tensor
    """Per-token losses, shape [B, T'] (0 where ignored), for statistics that need tokens (DoReMi)."""
    token_mask: torch.Tensor
    """Boolean mask of target tokens, shape [B, T']."""

    @property
    def mean(self) -> torch.Tensor:
        """Per-sample token-mean loss ℓ_j (0 for a sample without target tokens)."""
        return self.token_loss_sum / self.token_count.clamp_min(1).to(self.token_loss_sum.dtype)


def _chunk_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Upcast per chunk, as the Hugging Face causal-LM loss upcasts the whole tensor.
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")


def per_token_losses(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Cross-entropy per row of ``logits`` [N, V] against ``labels`` [N] (0 where ignored), float32."""
    n = logits.shape[0]
    if n <= chunk_rows or not torch.is_grad_enabled():
        if n <= chunk_rows:
            return _chunk_cross_entropy(logits, labels)
        return torch.cat([_chunk_cross_entropy(logits[i : i + chunk_rows], labels[i : i + chunk_rows])
                          for i in range(0, n, chunk_rows)])
    parts = [
        checkpoint(_chunk_cross_entropy, logits[i : i + chunk_rows], labels[i : i + chunk_rows], use_reentrant=False)
        for i in range(0, n, chunk_rows)
    ]
    return torch.cat(parts)


def sample_losses(
    logits: torch.Tensor, labels: torch.Tensor, shift: bool = True, chunk_rows: int = 4096
) -> SampleLosses:
    """Per-sample losses of a causal LM (``shift=True``: position t predicts label t+1).

    ``logits`` [B, T, V], ``labels`` [B, T] with -100 for ignored positions (padding, prompts).
    A classifier's ``logits`` [B, C] with ``labels`` [B] give one cross-entropy per sample with a
    token count of 1 (0 where the label is -100); ``shift`` does not apply to them.
    """
    if logits.dim() == 2:
        return classification_losses(logits, labels)
    if shift:
        logits = logits[:, :-1, :]
        labels = labels[:, 1:]
    b, t, v = logits.shape
    labels = labels.to(logits.device)
    mask = labels != IGNORE_INDEX
    tok = per_token_losses(logits.reshape(b * t, v), labels.reshape(b * t), chunk_rows).reshape(b, t)
    tok = tok * mask  # cross_entropy already gives 0 at ignored positions; this keeps the intent explicit
    return SampleLosses(token_loss_sum=tok.sum(dim=1), token_count=mask.sum(dim=1), token_losses=tok, token_mask=mask)


def classification_losses(logits: torch.Tensor, labels: torch.Tensor) -> SampleLosses:
    """Per-sample cross-entropy of a classifier: ``logits`` [B, C], ``labels`` [B] (-100: ignored).

    Each sample is one "token", so ℓ_j = −log P_θ(y_j|x_j) and the token-mean machinery (statistics,
    ``num_items_in_batch`` = number of labelled samples) applies unchanged.
    """
    labels = labels.to(logits.device).reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels: expected one label per row of logits ({logits.shape[0]}), got shape {tuple(labels.shape)}")
    mask = labels != IGNORE_INDEX
    loss = _chunk_cross_entropy(logits, labels) * mask
    return SampleLosses(
        token_loss_sum=loss, token_count=mask.long(), token_losses=loss[:, None], token_mask=mask[:, None]
    )
