"""Held-out per-domain losses: the ``heldout_loss`` statistic provider (One-shot FGLS, ERMA).

Just before each scheduled update, every rank evaluates the current model on its shard
``rows[rank::world_size]`` of each domain's held-out split (rows never trained on) and returns
per-domain *sums*:

- ``heldout_loss_sum`` [K]: Σ of per-sample losses (token-mean cross-entropy for a causal LM,
  per-example cross-entropy for a classifier);
- ``heldout_loss_sq_sum`` [K]: Σ of their squares (for the per-sample loss variance);
- ``heldout_count`` [K]: number of samples with at least one target token.

The step engine all-reduces them, so the algorithm sees sums over the whole held-out set whatever the
number of ranks. :func:`mixflow.algorithms.statistics.heldout_moments` turns them into per-domain mean and variance.

Cost per update: one forward pass (no backward) over the held-out rows of every domain, split
across ranks; the number of rows is what ``val_size`` set aside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mixflow.algorithms.statistics import HELDOUT_COUNT, HELDOUT_LOSS_SQ_SUM, HELDOUT_LOSS_SUM
from mixflow.data.keys import MIXFLOW_KEYS
from mixflow.loss.per_sample import sample_losses
from mixflow.providers.base import ProviderContext, StatisticProvider, UpdateContext, register_provider


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
            raise ValueError("heldout_loss: the model is needed at update time; pass model= to StepEngine.end_step")
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
        return {HELDOUT_LOSS_SUM: loss_sum, HELDOUT_LOSS_SQ_SUM: sq_sum, HELDOUT_COUNT: count}

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
