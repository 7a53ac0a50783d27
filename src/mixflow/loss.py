"""Per-sample losses from the logits of the training forward, and the weighted objective.

The per-token cross-entropy is computed in chunks of rows under activation checkpointing: each
chunk's float32 log-softmax exists only while that chunk is computed (in the forward and again in
the backward), so a large vocabulary never needs a second full float32 copy of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


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


def weighted_loss(
    losses: SampleLosses, coefficients: torch.Tensor | None, num_items_in_batch: torch.Tensor | int | None
) -> torch.Tensor:
    """Σ_j c_j · (Σ_tokens ℓ_j,t) / N, scaled exactly like the plain trainer's token-mean loss.

    N is ``num_items_in_batch`` (target tokens of the whole accumulated batch, as the Hugging Face
    Trainer passes it) or, without it, the target tokens of this micro-batch. With all c_j = 1 this
    *is* the plain loss, which is what makes uniform mixing equivalent to the plain Trainer.
    """
    per_sample = losses.token_loss_sum
    if coefficients is not None:
        per_sample = per_sample * coefficients.to(per_sample.dtype)
    total = per_sample.sum()
    if num_items_in_batch is None:
        denom = losses.token_count.sum().clamp_min(1).to(total.dtype)
    elif isinstance(num_items_in_batch, torch.Tensor):
        denom = num_items_in_batch.to(device=total.device, dtype=total.dtype)
    else:
        denom = torch.tensor(float(num_items_in_batch), device=total.device, dtype=total.dtype)
    return total / denom


def domain_coefficients(
    domain_ids: torch.Tensor,
    mode: str,
    sampling_weights: torch.Tensor,
    loss_weights: torch.Tensor,
    prior: torch.Tensor,
) -> torch.Tensor | None:
    """Domain part of c_j (DESIGN.md): w_d in ``objective`` mode, q_d / p_d in ``importance`` mode.

    In objective mode the batch composition is the weighting and w (all ones unless the algorithm
    sets loss weights) multiplies each sample's loss directly. In importance mode
    q = normalise(π ⊙ w) is the objective mixture and E_p[q_d/p_d · ℓ] = Σ_d q_d L_d, so the
    gradient is unbiased for Σ π_i w_i L_i whatever p the sampler used. Returns None when every
    coefficient is 1 (the plain loss, bit for bit).
    """
    if mode == "objective":
        if bool(torch.all(loss_weights == 1)):
            return None
        return loss_weights.to(domain_ids.device)[domain_ids.long()]
    if mode != "importance":
        raise ValueError(f"mode: expected 'objective' or 'importance', got {mode!r}")
    q = prior * loss_weights
    q = q / q.sum()
    ratio = torch.where(sampling_weights > 0, q / sampling_weights.clamp_min(1e-30), torch.zeros_like(q))
    return ratio.to(domain_ids.device)[domain_ids.long()]
