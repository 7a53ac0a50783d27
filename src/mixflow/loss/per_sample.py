"""Per-sample losses from the logits of the training forward.

The per-token cross-entropy is one autograd function (:class:`ChunkedCrossEntropy`) that works in
chunks of rows sized by bytes (``chunk_bytes``): the forward saves only the logits themselves, the
backward recomputes the softmax one chunk at a time. So no full float32 log-softmax of the logits
is ever held (``F.cross_entropy`` saves one for its backward), and a causal LM's shift moves the
labels, not the logits (slicing ``logits[:, :-1]`` would copy them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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
    logits: torch.Tensor | None = None
    """The logits the losses came from, [B, T, V] (causal LM; position t of ``token_losses`` is
    position t of the logits), for statistics computed in closed form from them; None otherwise."""

    @property
    def mean(self) -> torch.Tensor:
        """Per-sample token-mean loss ℓ_j (0 for a sample without target tokens)."""
        return self.token_loss_sum / self.token_count.clamp_min(1).to(self.token_loss_sum.dtype)


#: Bytes of float32 logits one chunk of the cross-entropy may hold (its rows = chunk_bytes / (4·V)).
CHUNK_BYTES = 64 * 2**20


def _chunk_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Upcast per chunk, as the Hugging Face causal-LM loss upcasts the whole tensor.
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")


def chunk_rows_for(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk so one chunk's float32 logits take at most ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * max(1, vocab)))


class ChunkedCrossEntropy(torch.autograd.Function):
    """Cross-entropy per row of ``logits`` [N, V] against ``labels`` [N] (0 where ignored), float32,
    saving nothing of the logits' size for the backward (it recomputes the softmax per chunk)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor, rows: int) -> torch.Tensor:  # type: ignore[override]
        n = logits.shape[0]
        keep = labels != IGNORE_INDEX
        out = torch.empty(n, dtype=torch.float32, device=logits.device)
        for i in range(0, n, rows):
            # the fused log-softmax kernel: on one CPU thread twice as fast as log-sum-exp minus the
            # label's logit, for the same value to float32 rounding
            out[i : i + rows] = _chunk_cross_entropy(logits[i : i + rows], labels[i : i + rows])
        ctx.save_for_backward(logits, torch.where(keep, labels, 0), keep)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        logits, target, keep = ctx.saved_tensors
        n, rows = logits.shape[0], ctx.rows
        scale = (grad_out.float() * keep).unsqueeze(1)
        if n <= rows:  # one chunk: its gradient is the whole one
            return _softmax_minus_onehot(logits, target, scale).to(logits.dtype), None, None
        grad = torch.empty_like(logits)
        for i in range(0, n, rows):
            grad[i : i + rows] = _softmax_minus_onehot(logits[i : i + rows], target[i : i + rows], scale[i : i + rows])
        return grad, None, None


def _softmax_minus_onehot(logits: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """d/dx (lse − x_y) = softmax(x) − onehot(y), times each row's ``scale``, in float32. The fused
    softmax recomputes lse faster than exp(x − lse) from a saved one would."""
    p = torch.softmax(logits.float(), dim=1)
    p.scatter_add_(1, target[:, None], torch.full_like(p[:, :1], -1.0))
    return p.mul_(scale)


def per_token_losses(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """Cross-entropy per row of ``logits`` [N, V] against ``labels`` [N] (0 where ignored), float32.
    ``chunk_rows``: rows per chunk (default: :func:`chunk_rows_for` the vocabulary)."""
    rows = chunk_rows or chunk_rows_for(logits.shape[-1])
    return ChunkedCrossEntropy.apply(logits, labels, rows)


def sample_losses(
    logits: torch.Tensor, labels: torch.Tensor, shift: bool = True, chunk_rows: int | None = None
) -> SampleLosses:
    """Per-sample losses of a causal LM (``shift=True``: position t predicts label t+1).

    ``logits`` [B, T, V], ``labels`` [B, T] with -100 for ignored positions (padding, prompts).
    A classifier's ``logits`` [B, C] with ``labels`` [B] give one cross-entropy per sample with a
    token count of 1 (0 where the label is -100); ``shift`` does not apply to them.
    """
    if logits.dim() == 2:
        return classification_losses(logits, labels)
    b, t, v = logits.shape
    labels = labels.to(logits.device)
    if shift:  # position t predicts label t+1: move the labels (a view of the logits stays a view)
        labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    tok = per_token_losses(logits.reshape(b * t, v), labels.reshape(b * t), chunk_rows).reshape(b, t)
    mask = labels != IGNORE_INDEX
    if shift:  # the last position has no target: keep the [B, T−1] layout readers expect
        tok, mask = tok[:, :-1], mask[:, :-1]
    return SampleLosses(
        token_loss_sum=tok.sum(dim=1), token_count=mask.sum(dim=1), token_losses=tok, token_mask=mask, logits=logits
    )


def classification_losses(logits: torch.Tensor, labels: torch.Tensor) -> SampleLosses:
    """Per-sample cross-entropy of a classifier: ``logits`` [B, C], ``labels`` [B] (-100: ignored).

    Each sample is one "token", so ℓ_j = −log P_θ(y_j|x_j) and the token-mean machinery (statistics,
    ``num_items_in_batch`` = number of labelled samples) applies unchanged.
    """
    labels = labels.to(logits.device).reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels: expected one label per row of logits ({logits.shape[0]}), got shape {tuple(labels.shape)}"
        )
    mask = labels != IGNORE_INDEX
    loss = _chunk_cross_entropy(logits, labels) * mask
    return SampleLosses(
        token_loss_sum=loss, token_count=mask.long(), token_losses=loss[:, None], token_mask=mask[:, None]
    )
