"""Held-out per-domain losses: the ``heldout_loss`` statistic provider (One-shot FGLS, ERMA).

Just before each scheduled update, every rank evaluates the current model on its shard
``rows[rank::world_size]`` of each domain's held-out split (rows never trained on) and returns
per-domain *sums*:

- ``heldout_loss_sum`` [K]: Σ of per-sample losses (token-mean cross-entropy for a causal LM,
  per-example cross-entropy for a classifier);
- ``heldout_loss_sq_sum`` [K]: Σ of their squares (for the per-sample loss variance);
- ``heldout_count`` [K]: number of samples with at least one target token.

The Mixer all-reduces them, so the algorithm sees sums over the whole held-out set whatever the
number of ranks. :func:`heldout_moments` turns them into per-domain mean and variance.

Cost per update: one forward pass (no backward) over the held-out rows of every domain, split
across ranks; the number of rows is what ``val_size`` set aside.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mixflow.data.dataset import MIXFLOW_KEYS
from mixflow.loss import sample_losses
from mixflow.providers import ProviderContext, StatisticProvider, UpdateContext, register_provider
from mixflow.stats import DomainStats

HELDOUT_KEYS = ("heldout_loss_sum", "heldout_loss_sq_sum", "heldout_count")


class HeldoutLoss(StatisticProvider):
    """Evaluates the model on each domain's held-out rows at update time (forward only, eval mode)."""

    name = "heldout_loss"

    def __init__(
        self,
        datasets: Sequence[Any],
        collator: Callable[[list], dict] | None = None,
        batch_size: int = 8,
        task: str = "causal_lm",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"per_device_eval_batch_size: expected an integer >= 1, got {batch_size}")
        if task not in ("causal_lm", "classification"):
            raise ValueError(f"task: expected 'causal_lm' or 'classification', got {task!r}")
        self.datasets = list(datasets)
        self.collator = collator or torch.utils.data.default_collate
        self.batch_size = batch_size
        self.task = task

    def update_statistics(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        if ctx.model is None:
            raise ValueError("heldout_loss: the model is needed at update time; pass model= to Mixer.end_step")
        # DDP-style wrappers synchronise in forward; the held-out pass is local to each rank.
        model = getattr(ctx.model, "module", ctx.model)
        device = next(model.parameters()).device
        k = ctx.num_domains
        loss_sum = torch.zeros(k, dtype=torch.float64)
        sq_sum = torch.zeros(k, dtype=torch.float64)
        count = torch.zeros(k, dtype=torch.float64)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for d, dataset in enumerate(self.datasets):
                    rows = range(ctx.rank, len(dataset), ctx.world_size)
                    for start in range(0, len(rows), self.batch_size):
                        batch = self.collator([dataset[i] for i in rows[start : start + self.batch_size]])
                        losses = self._sample_losses(model, batch, device)
                        loss_sum[d] += losses.sum()
                        sq_sum[d] += losses.square().sum()
                        count[d] += losses.numel()
        finally:
            model.train(was_training)
        return {"heldout_loss_sum": loss_sum, "heldout_loss_sq_sum": sq_sum, "heldout_count": count}

    def _sample_losses(self, model: Any, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """Per-sample losses (float64, CPU) of the samples that carry a loss."""
        inputs = {k: v for k, v in batch.items() if k not in MIXFLOW_KEYS and k != "labels"}
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        labels = batch["labels"].to(device)
        out = model(**inputs)
        logits = out if isinstance(out, torch.Tensor) else (out["logits"] if isinstance(out, dict) else out[0])
        if self.task == "classification":
            return F.cross_entropy(logits.float(), labels, reduction="none").double().cpu()
        sl = sample_losses(logits, labels, shift=True)
        # a row whose labels are all ignored has no loss; counting it as 0 would read as "learned"
        return sl.mean[sl.token_count > 0].double().cpu()


@register_provider("heldout_loss")
def _build(params: Any, context: ProviderContext | None) -> HeldoutLoss:
    if context is None or not context.heldout:
        raise ValueError("val_size: the heldout_loss provider needs a held-out split per domain; set val_size > 0")
    missing = [n for n in context.domain_names if n not in context.heldout or len(context.heldout[n]) == 0]
    if missing:
        raise ValueError(f"val_size: domain(s) {missing} have no held-out rows; raise val_size")
    return HeldoutLoss(
        [context.heldout[n] for n in context.domain_names], context.collator, context.eval_batch_size, context.task
    )


def heldout_moments(stats: DomainStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean loss, unbiased per-sample loss variance, sample count) per domain from the
    ``heldout_loss`` sums; the mean is NaN without samples and the variance with fewer than two."""
    if "heldout_count" not in stats.extras:
        raise ValueError("heldout_loss: no held-out statistics in this window (is the provider configured?)")
    total = stats.extras["heldout_loss_sum"].detach().cpu().double().numpy()
    sq = stats.extras["heldout_loss_sq_sum"].detach().cpu().double().numpy()
    n = stats.extras["heldout_count"].detach().cpu().double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        var = np.where(n > 1, np.maximum(sq - n * mean**2, 0.0) / np.maximum(n - 1, 1), np.nan)
    return mean, var, n


def heldout_stats(losses_per_domain: Sequence[Sequence[float] | np.ndarray]) -> dict[str, torch.Tensor]:
    """The ``heldout_loss`` sums of given per-sample losses, one sequence per domain (for callers
    that compute held-out losses themselves, e.g. a linear model's squared residuals)."""
    arrays = [np.asarray(v, dtype=np.float64).reshape(-1) for v in losses_per_domain]
    return {
        "heldout_loss_sum": torch.tensor([a.sum() for a in arrays], dtype=torch.float64),
        "heldout_loss_sq_sum": torch.tensor([np.square(a).sum() for a in arrays], dtype=torch.float64),
        "heldout_count": torch.tensor([float(a.size) for a in arrays], dtype=torch.float64),
    }
