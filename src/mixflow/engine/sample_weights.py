"""Per-sample weights over the global batch: gather every rank's losses, weigh, keep this rank's slice."""

from __future__ import annotations

from typing import Any

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
    stats: list[SampleWeightStats] | tuple[SampleWeightStats, ...] = (),
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
    for accumulator in stats:  # the metrics' and the weights log's figures
        accumulator.add(s, all_ids)
    n = losses.numel()
    start = distributed.rank() * n
    return s[start : start + n].to(device=losses.device, dtype=torch.float64)


class SampleWeightStats:
    """What the per-sample weights did since the last reset: their mean, their largest value, the share
    of the total weight held by the top tenth of samples (1/10 when uniform, 1 when a tenth takes all),
    and the mean weight per domain. Every rank sees the same global batch weights, so every rank
    computes the same figures."""

    def __init__(self, num_domains: int) -> None:
        self.num_domains = num_domains
        self.reset()

    def reset(self) -> None:
        self.count, self.total, self.largest, self.top_share, self.batches = 0, 0.0, 0.0, 0.0, 0
        self.domain_total = torch.zeros(self.num_domains, dtype=torch.float64)
        self.domain_count = torch.zeros(self.num_domains, dtype=torch.float64)

    def add(self, weights: torch.Tensor, domain_ids: torch.Tensor) -> None:
        """One global batch's weights and their samples' domains."""
        s = weights.detach().to(torch.float64).cpu()
        ids = domain_ids.detach().cpu().long()
        if s.numel() == 0:
            return
        self.count += s.numel()
        self.total += float(s.sum())
        self.largest = max(self.largest, float(s.max()))
        # the top tenth of the samples by weight, fractional at the boundary, so uniform weights give 1/10
        ordered = s.sort(descending=True).values
        k = s.numel() / 10
        whole = int(k)
        top = ordered[:whole].sum() + (k - whole) * (ordered[whole] if whole < s.numel() else 0.0)
        self.top_share += float(top / s.sum()) if float(s.sum()) > 0 else 0.0
        self.batches += 1
        self.domain_total.index_add_(0, ids, s)
        self.domain_count.index_add_(0, ids, torch.ones_like(s))

    def summary(self, domain_names: list[str]) -> dict[str, Any]:
        """{"mean", "max", "top_decile_share", "per_domain": {name: mean}} (None where nothing was seen)."""
        if not self.count:
            return {"mean": None, "max": None, "top_decile_share": None, "per_domain": {}}
        per_domain = {
            name: float(t / c) for name, t, c in zip(domain_names, self.domain_total, self.domain_count) if c > 0
        }
        return {
            "mean": self.total / self.count,
            "max": self.largest,
            "top_decile_share": self.top_share / self.batches,
            "per_domain": per_domain,
        }

    def metrics(self, domain_names: list[str]) -> dict[str, float]:
        """``mix/sample_weight/{mean,max,top_decile_share}`` and ``mix/sample_weight/<domain>``."""
        summary = self.summary(domain_names)
        if summary["mean"] is None:
            return {}
        out = {f"mix/sample_weight/{k}": float(summary[k]) for k in ("mean", "max", "top_decile_share")}
        out.update({f"mix/sample_weight/{name}": value for name, value in summary["per_domain"].items()})
        return out
