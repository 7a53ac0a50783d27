"""What the step engine is told about one training micro-batch, besides its logits or losses.

One object instead of a row of optional parameters: a training loop builds it once per micro-batch
(:meth:`MicroBatch.take` pops mixflow's keys out of a collated batch) and hands the same object to
:meth:`~mixflow.engine.engine.StepEngine.before_forward` and
:meth:`~mixflow.engine.engine.StepEngine.training_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mixflow.data.keys import DOMAIN_KEY, SAMPLE_KEY


@dataclass(frozen=True)
class MicroBatch:
    """One training micro-batch as the engine sees it (this rank's rows)."""

    domain_ids: torch.Tensor
    """Domain index of each row, shape [B]."""
    labels: torch.Tensor | None = None
    """Target ids, shape [B, T]; providers that run another model (DoReMi's reference) need them."""
    batch_index: int | None = None
    """Global batch the rows were drawn in, 0-based (optimizer step − 1): importance weights read the
    p that batch was planned with from the sampler. None: the engine's last step, for a batch built
    by hand without a sampler index."""
    num_items_in_batch: torch.Tensor | int | None = None
    """Target tokens of the whole accumulated batch (all micro-batches, all ranks), as the Hugging
    Face Trainer passes it; the loss is divided by it. None: this micro-batch's own target tokens."""
    sample_ids: torch.Tensor | None = None
    """Global row index of each row, for per-example weighters (IMP); None without one."""
    model: Any = None
    """The model being trained, for providers that read its gradients or head (grad_stats)."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """The model's own inputs (input_ids, attention_mask, ...), for providers that run a forward."""

    @classmethod
    def take(
        cls,
        batch: MutableMapping[str, Any],
        batch_index: int | None = None,
        model: Any = None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> MicroBatch:
        """Pop ``domain_ids``, ``sample_ids`` and ``labels`` out of a collated ``batch`` (what is left
        are the model's inputs, ``MicroBatch.inputs``) and wrap them; ``domain_ids`` is required."""
        if DOMAIN_KEY not in batch:
            raise ValueError(f"batch: expected '{DOMAIN_KEY}' in every training batch (use MixtureDataset)")
        domain_ids = batch.pop(DOMAIN_KEY)
        sample_ids = batch.pop(SAMPLE_KEY, None)
        labels = batch.pop("labels", None)
        return cls(domain_ids, labels, batch_index, num_items_in_batch, sample_ids, model, batch)
