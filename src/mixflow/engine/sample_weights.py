"""Per-sample weights over the global batch: gather every rank's losses, weigh, keep this rank's slice."""

from __future__ import annotations

import torch

from mixflow.algorithms.base import SampleWeighter
from mixflow.loss.per_sample import SampleLosses
from mixflow.utils import distributed


def global_sample_weights(
    weighter: SampleWeighter,
    sample_losses: SampleLosses,
    domain_ids: torch.Tensor,
    step: int,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """s for this rank's samples. The weights are a function of the whole (all ranks') batch, so
    every rank computes the same vector from the all-gathered losses and keeps its own slice."""
    losses = sample_losses.mean.detach()
    all_losses = distributed.all_gather_cat(losses.to(torch.float64))
    all_ids = distributed.all_gather_cat(domain_ids)
    all_samples = None
    if sample_ids is not None:
        all_samples = distributed.all_gather_cat(sample_ids.to(domain_ids.device).long())
    s = weighter.weights(all_losses, all_ids, step, sample_ids=all_samples)
    n = losses.numel()
    start = distributed.rank() * n
    return s[start : start + n].to(device=losses.device, dtype=torch.float64)
