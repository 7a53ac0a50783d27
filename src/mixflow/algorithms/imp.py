"""IMP-Loss and DIMP-Loss (Kuo et al. 2025, ICLR, "IMP-Loss and DIMP-Loss").

Training on a synthetic (LLM-generated) set Q with a small real set P′. A quality checker P̂′ is a
classifier fine-tuned on P′, a diversity checker Q̂ one fine-tuned on Q (``mixflow checkers``
trains both and caches P̂′(y_j|x_j) and Q̂(y_j|x_j) for every training example j):

    IMP-Loss   −(1/N) Σ_j  P̂′(y_j|x_j) / Q̂(y_j|x_j)      · log P_θ(y_j|x_j)     (seed eq. 3; fixed weights)
    DIMP-Loss  −(1/N) Σ_j  P̂′(y_j|x_j) / P_θt(y_j|x_j)    · log P_θ(y_j|x_j)     (seed eq. 4)

The DIMP denominator comes from the current training forward, detached: for classification the
per-sample loss is ℓ_j = −log P_θt(y_j|x_j), so P_θt = exp(−ℓ_j) and no extra forward is needed.

The weights are returned raw, not renormalised, so the loss is exactly the paper's −(1/N) Σ w_j log P:
P̂′ = Q̂ gives weights of exactly 1 and IMP-Loss is the plain cross-entropy. Both probabilities of a
ratio are floored at ``min_prob`` (ours): a near-zero denominator cannot explode a weight, weights
stay in [min_prob, 1/min_prob], and equal probabilities still give exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixflow.algorithms.base import SampleWeighter
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, bounded, required_param
from mixflow.algorithms.registry import register_weighter
from mixflow.errors import ConfigError, DataError


@dataclass
class ImpParams(AlgorithmParams):
    weights_cache: str = required_param(
        "the cache written by `mixflow checkers CONFIG`",
        path="file",
        hint="run `mixflow checkers CONFIG` first",
    )
    """Path of the checker cache written by `mixflow checkers` (P̂′(y|x) and Q̂(y|x) per training example)."""
    min_prob: float = bounded(1e-3, gt=0, lt=1)
    """(ours) Floor on both probabilities of a weight ratio, in (0, 1)."""
    max_weight: float | None = bounded(None, gt=0)
    """(ours) Upper bound on a weight; null: no bound beyond 1 / min_prob."""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        """One-line errors naming the key (run at config load, before any data or model loads)."""
        if not self.weights_cache:
            raise ConfigError(f"{where}.weights_cache: required (the cache written by `mixflow checkers CONFIG`)")


class CheckerWeighter(SampleWeighter[ImpParams]):
    """Shared part: the per-example checker probabilities, looked up by the samples' global row index."""

    Params = ImpParams
    #: The checkers' probabilities and exp(−ℓ) are class probabilities: classification only.
    required_task = "classification"

    def setup(self) -> None:
        self._quality: torch.Tensor | None = None
        self._diversity: torch.Tensor | None = None

    def input_files(self) -> dict[str, str]:
        """The checker cache (``mixflow checkers`` writes it)."""
        return {"weights_cache": str(self.params.weights_cache)}

    def load_inputs(self, inputs: dict[str, Any]) -> None:
        table = inputs["weights_cache"]
        self.set_table(table.quality, table.diversity)

    def set_table(self, quality: np.ndarray | torch.Tensor, diversity: np.ndarray | torch.Tensor) -> None:
        """P̂′(y_j|x_j) and Q̂(y_j|x_j) for every training row j (indexed like ``sample_ids``)."""
        q = torch.as_tensor(np.asarray(quality), dtype=torch.float64).reshape(-1)
        d = torch.as_tensor(np.asarray(diversity), dtype=torch.float64).reshape(-1)
        for name, values in (("quality", q), ("diversity", d)):
            if values.numel() and not bool(((values >= 0) & (values <= 1)).all()):
                raise DataError(f"{self.name}.params.weights_cache: {name} probabilities must lie in [0, 1]")
        if q.shape != d.shape:
            raise DataError(f"{self.name}.params.weights_cache: quality and diversity tables differ in length")
        self._quality, self._diversity = q, d

    def _lookup(self, sample_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._quality is None or self._diversity is None:
            # Reading the cache is the run builder's job (input_files / load_inputs).
            raise ValueError(f"{self.name}: no checker probabilities; call set_table() with the weights cache's tables")
        if sample_ids is None:
            raise ValueError(f"{self.name}: the batch has no 'sample_ids' (the dataset must yield global row indices)")
        ids = sample_ids.detach().to("cpu", torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self._quality.numel()):
            raise DataError(
                f"{self.name}.params.weights_cache: sample id {int(ids.max())} is outside the cache's "
                f"{self._quality.numel()} rows (was it computed for this training set?)"
            )
        return self._quality[ids], self._diversity[ids]

    def _ratio(self, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        floor = self.params.min_prob
        w = numerator.clamp_min(floor) / denominator.clamp_min(floor)
        if self.params.max_weight is not None:
            w = w.clamp_max(self.params.max_weight)
        return w


@register_weighter
class ImpWeighter(CheckerWeighter):
    """IMP-Loss: fixed weights P̂′(y|x) / Q̂(y|x) from the checker cache."""

    name = "imp"
    description = "IMP-Loss (Kuo et al. 2025): weights P'(y|x)/Q(y|x) from quality/diversity checkers (classification)."
    Params = ImpParams

    def weights(
        self, losses: torch.Tensor, domain_ids: torch.Tensor, step: int, sample_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """P̂′(y_j|x_j) / Q̂(y_j|x_j) for every sample (raw, not renormalised; seed eq. 3)."""
        quality, diversity = self._lookup(sample_ids)
        return self._ratio(quality, diversity).to(losses.device)


@register_weighter
class DimpWeighter(CheckerWeighter):
    """DIMP-Loss: weights P̂′(y|x) / P_θt(y|x) with P_θt = exp(−ℓ) from the current forward."""

    name = "dimp"
    description = (
        "DIMP-Loss (Kuo et al. 2025): weights P'(y|x)/P_theta_t(y|x), the denominator from the training forward."
    )
    Params = ImpParams

    def weights(
        self, losses: torch.Tensor, domain_ids: torch.Tensor, step: int, sample_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """P̂′(y_j|x_j) / exp(−ℓ_j) for every sample (raw; seed eq. 4 with P̂′ from the quality checker)."""
        quality, _ = self._lookup(sample_ids)
        # ℓ_j = −log P_θt(y_j|x_j) for a classifier; detached, so the weight is a constant of the step.
        current = torch.exp(-losses.detach().to(torch.float64)).cpu()
        return self._ratio(quality, current).to(losses.device)
