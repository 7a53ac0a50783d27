"""The weighted objective of one micro-batch: the step's arithmetic, in one place.

docs/design.md: the coefficient of sample j is c_j = (domain part) · s_j, and the loss is
Σ_j c_j · (Σ_tokens ℓ_j,t) / N, scaled exactly like the plain trainer's token-mean loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mixflow.algorithms.base import Mode
from mixflow.loss.per_sample import SampleLosses


class DomainVectors(NamedTuple):
    """The per-domain vectors of one micro-batch's objective (each [K], float64)."""

    sampling: torch.Tensor
    """p: what importance weights divide by (the plan the batch was drawn with, or each domain's
    token share: :mod:`mixflow.engine.normalization`)."""
    loss: torch.Tensor
    """w: the domain loss weights."""
    prior: torch.Tensor
    """π: the prior over domains."""


def step_loss(
    losses: SampleLosses,
    domain_ids: torch.Tensor,
    mode: Mode,
    vectors: DomainVectors,
    sample_weights: torch.Tensor | None,
    num_items_in_batch: torch.Tensor | int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weighted loss, coefficients or None when all are 1) of one micro-batch; ``sample_weights``
    s [B] or None."""
    c = coefficients(domain_ids, mode, vectors, sample_weights)
    return weighted_loss(losses, c, num_items_in_batch), c


def coefficients(
    domain_ids: torch.Tensor, mode: Mode, vectors: DomainVectors, sample_weights: torch.Tensor | None = None
) -> torch.Tensor | None:
    """c_j = (domain part of sample j's domain) · s_j; None when every coefficient is 1."""
    c = domain_coefficients(domain_ids, mode, vectors)
    if sample_weights is not None:
        c = sample_weights if c is None else c * sample_weights
    return c


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


def domain_coefficients(domain_ids: torch.Tensor, mode: Mode, vectors: DomainVectors) -> torch.Tensor | None:
    """Domain part of c_j (docs/design.md): w_d in ``objective`` mode, q_d / p_d in ``importance`` mode.

    In objective mode the batch composition is the weighting and w (all ones unless the algorithm
    sets loss weights) multiplies each sample's loss directly. In importance mode
    q = normalise(π ⊙ w) is the objective mixture and E_p[q_d/p_d · ℓ] = Σ_d q_d L_d, so the
    gradient is unbiased for Σ π_i w_i L_i whatever p the sampler used. Returns None when every
    coefficient is 1 (the plain loss, bit for bit).
    """
    sampling_weights, loss_weights, prior = vectors
    if mode == "objective":
        if bool(torch.all(loss_weights == 1)):
            return None
        return loss_weights.to(domain_ids.device)[domain_ids.long()]
    if mode != "importance":
        raise ValueError(f"mode: expected 'objective' or 'importance', got {mode!r}")
    q = prior * loss_weights
    q = (q / q.sum()).to(domain_ids.device)[domain_ids.long()]
    p = sampling_weights.to(device=q.device, dtype=q.dtype)[domain_ids.long()]
    return torch.where(p > 0, q / p.clamp_min(1e-30), torch.zeros_like(q))
