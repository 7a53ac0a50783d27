"""Held-out per-domain losses: the ``heldout_loss`` statistic provider (One-shot FGLS, ERMA).

Just before each scheduled update, every rank evaluates the current model on its shard
``rows[rank::world_size]`` of a window of each domain's held-out split (rows never trained on):
``heldout_rows_per_update`` rows in all (default: the global batch size B, so an update costs one
forward of a training batch), split evenly over the domains, the window moving on by its own
length at every update (so successive updates see different rows and, over updates, all of them;
``all``: every row every time). All domains' rows go through one batched forward, without
autograd. It returns per-domain *sums*:

- ``heldout_loss_sum`` [K]: Σ of per-sample losses (token-mean cross-entropy for a causal LM,
  per-example cross-entropy for a classifier);
- ``heldout_loss_sq_sum`` [K]: Σ of their squares (for the per-sample loss variance);
- ``heldout_count`` [K]: number of samples with at least one target token.

The step engine all-reduces them, so the algorithm sees sums over the whole held-out set whatever the
number of ranks. :func:`mixflow.algorithms.statistics.heldout_moments` turns them into per-domain mean and variance.

Cost per update: one forward pass (no backward) over at most ``heldout_rows_per_update`` rows,
split across ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mixflow.algorithms.statistics import HELDOUT_COUNT, HELDOUT_LOSS_SQ_SUM, HELDOUT_LOSS_SUM, heldout_rows
from mixflow.data.keys import MIXFLOW_KEYS
from mixflow.errors import ConfigError
from mixflow.loss.per_sample import sample_losses
from mixflow.providers.base import ProviderContext, ProviderNeeds, StatisticProvider, UpdateContext, register_provider
from mixflow.utils.distributed import is_sharded


class HeldoutLoss(StatisticProvider):
    """Evaluates the model on each domain's held-out rows at update time (forward only, eval mode)."""

    name = "heldout_loss"

    def __init__(
        self,
        datasets: Sequence[Any],
        collator: Callable[[list], dict] | None = None,
        batch_size: int = 8,
        task: str = "causal_lm",
        rows_per_update: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"per_device_eval_batch_size: expected an integer >= 1, got {batch_size}")
        if task not in ("causal_lm", "classification"):
            raise ValueError(f"task: expected 'causal_lm' or 'classification', got {task!r}")
        self.datasets = list(datasets)
        self.collator = collator or torch.utils.data.default_collate
        self.batch_size = batch_size
        self.task = task
        self.rows_per_update = rows_per_update

    def window(self, d: int, update_index: int) -> list[int]:
        """Domain ``d``'s held-out rows evaluated at update ``update_index`` (all ranks)."""
        size = len(self.datasets[d])
        if self.rows_per_update is None:
            return list(range(size))
        n = min(size, -(-self.rows_per_update // len(self.datasets)))
        start = update_index * n % size
        return [(start + j) % size for j in range(n)]

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
        # this rank's share of every domain's window, evaluated in batches that mix domains
        windows = [self.window(d, ctx.update_index) for d in range(k)]
        work = [(d, i) for d in range(k) for i in windows[d][ctx.rank :: ctx.world_size]]
        batches = list(range(0, len(work), self.batch_size))
        idle = 0
        if is_sharded(model):
            # A sharded forward is a collective: every rank runs as many as the busiest one, the
            # extra ones on a row it then discards.
            busiest = max(sum(len(w[r :: ctx.world_size]) for w in windows) for r in range(ctx.world_size))
            idle = -(-busiest // self.batch_size) - len(batches)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for _ in range(idle):
                    d = next(d for d in range(k) if windows[d])
                    self._sample_losses(model, self.collator([self.datasets[d][windows[d][0]]]), device)
                for start in batches:
                    part = work[start : start + self.batch_size]
                    batch = self.collator([self.datasets[d][i] for d, i in part])
                    losses, valid = self._sample_losses(model, batch, device)
                    ids = torch.tensor([d for d, _ in part])[valid]
                    loss_sum.index_add_(0, ids, losses)
                    sq_sum.index_add_(0, ids, losses.square())
                    count.index_add_(0, ids, torch.ones_like(losses))
        finally:
            model.train(was_training)
        return {HELDOUT_LOSS_SUM: loss_sum, HELDOUT_LOSS_SQ_SUM: sq_sum, HELDOUT_COUNT: count}

    def _sample_losses(
        self, model: Any, batch: dict[str, Any], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample losses (float64, CPU) of the samples that carry a loss, which samples those are)."""
        inputs = {k: v for k, v in batch.items() if k not in MIXFLOW_KEYS and k != "labels"}
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        labels = batch["labels"].to(device)
        out = model(**inputs)
        logits = out if isinstance(out, torch.Tensor) else (out["logits"] if isinstance(out, dict) else out[0])
        if self.task == "classification":
            losses = F.cross_entropy(logits.float(), labels, reduction="none").double().cpu()
            return losses, torch.ones(losses.shape[0], dtype=torch.bool)
        sl = sample_losses(logits, labels, shift=True)
        # a row whose labels are all ignored has no loss; counting it as 0 would read as "learned"
        valid = (sl.token_count > 0).cpu()
        return sl.mean.double().cpu()[valid], valid


@register_provider("heldout_loss", ProviderNeeds(heldout_rows=2))  # a variance needs two rows
def _build(params: Any, context: ProviderContext | None) -> HeldoutLoss:
    if context is None or not context.heldout:
        raise ConfigError("val_size: the heldout_loss provider needs a held-out split per domain; set val_size > 0")
    missing = [n for n in context.domain_names if n not in context.heldout or len(context.heldout[n]) == 0]
    if missing:
        raise ConfigError(f"val_size: domain(s) {missing} have no held-out rows; raise val_size")
    rows = heldout_rows(
        getattr(params, "heldout_rows_per_update", "all"), len(context.domain_names), context.batch_size
    )
    return HeldoutLoss(
        [context.heldout[n] for n in context.domain_names],
        context.collator,
        context.eval_batch_size,
        context.task,
        rows_per_update=rows,
    )
