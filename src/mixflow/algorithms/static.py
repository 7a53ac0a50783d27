"""Static mixture (docs/design.md; README, `mixture_sample_rule`): fixed sampling weights, nothing learned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams, ValidationContext
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights, as_distribution
from mixflow.errors import ConfigError


@dataclass
class StaticParams(AlgorithmParams):
    proportions_field: ClassVar[str | None] = "proportions"

    proportions: list[float] | None = None
    """Sampling proportions, one per domain (normalised). null: use init_mixture_proportions / mixture_sample_rule."""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        if self.proportions is None:
            return
        as_distribution(self.proportions, f"{where}.proportions")
        if context is not None and len(self.proportions) != context.num_domains:
            raise ConfigError(
                f"{where}.proportions: expected {context.num_domains} values (one per domain), got {len(self.proportions)}"
            )


@register_algorithm
class StaticMixture(DomainAlgorithm[StaticParams]):
    """p is fixed for the whole run; the batch composition is the objective (c_j = s_j)."""

    name = "static"
    description = "Fixed sampling proportions (mixture, stratified, uniform or temperature rule)."
    Params = StaticParams
    mode = "objective"
    scores_label = "training loss (window mean)"

    @classmethod
    def needs_updates(cls, params: AlgorithmParams) -> bool:
        return False  # its updates only log per-domain losses

    def setup(self) -> Weights | None:
        if self.params.proportions is None:
            return None
        return Weights(sampling=as_distribution(self.params.proportions, "static.params.proportions"))

    def update(self, stats: DomainStats, step: int) -> Weights:
        # Nothing to learn; the scores are kept so logs and plots show per-domain losses over time.
        return Weights(scores=stats.mean_token_loss.cpu().numpy())
