"""Static mixture (ALGORITHMS.md, "Static mixture"): fixed sampling weights, nothing learned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mixflow.algorithms.base import AlgorithmParams, DomainAlgorithm, _as_distribution, param
from mixflow.algorithms.registry import register_algorithm
from mixflow.stats import DomainStats


@dataclass
class StaticParams(AlgorithmParams):
    proportions: list[float] | None = param(
        None,
        "Sampling proportions, one per domain (normalised). null: use init_mixture_proportions / "
        "mixture_sample_rule.",
    )


@register_algorithm
class StaticMixture(DomainAlgorithm):
    """p is fixed for the whole run; the batch composition is the objective (c_j = s_j)."""

    name = "static"
    description = "Fixed sampling proportions (mixture, stratified, uniform or temperature rule)."
    Params = StaticParams
    mode = "objective"

    def __init__(
        self,
        domain_names: Sequence[str],
        params: StaticParams,
        init_weights: Sequence[float] | np.ndarray,
        prior: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        super().__init__(domain_names, params, init_weights, prior)
        if params.proportions is not None:
            given = _as_distribution(params.proportions, "static.params.proportions")
            if given.size != self.num_domains:
                raise ValueError(
                    f"static.params.proportions: expected {self.num_domains} values (one per domain), "
                    f"got {given.size}"
                )
            self._sampling = given

    def update(self, stats: DomainStats, step: int) -> None:
        # Nothing to learn; the scores are kept so logs and plots show per-domain losses over time.
        self._scores = stats.mean_token_loss.cpu().numpy()
        self.num_updates += 1
