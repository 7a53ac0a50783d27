"""The held-out statistic for benchmark problems that compute held-out losses themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from mixflow.algorithms.statistics import heldout_stats
from mixflow.providers.base import StatisticProvider, UpdateContext


class HeldoutLosses(StatisticProvider):
    """The ``heldout_loss`` sums of ``losses()``: one array of per-sample held-out losses per domain,
    of the model as it is at the update (a regression's squared residuals, a classifier's CE)."""

    name = "heldout_loss"

    def __init__(self, losses: Callable[[], Sequence[np.ndarray]]) -> None:
        self.losses = losses

    def update_statistics(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return heldout_stats(self.losses())
