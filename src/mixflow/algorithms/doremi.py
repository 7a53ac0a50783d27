"""DoReMi step 2 (Xie et al. 2023, arXiv 2305.10429, Algorithm 1 "DoReMi"): domain loss weights α learned on
a proxy model by exponentiated-gradient ascent on the excess loss over a reference model.

Sampling stays as initialised (uniform by default, as in the seed and the paper's Algorithm 1); α
is the *loss* weight. The algorithm runs in ``importance`` mode, so a sample of domain d gets the
coefficient q_d / p_d with q ∝ π ⊙ α (= α for the default uniform prior): the proxy's loss is an
unbiased Σ_i α_i L_i, and exactly Σ_i α_i · (token-mean loss of domain i) when the batch holds
p_i·B equal-length samples of each domain. With α uniform and p uniform every coefficient is 1.

Per update window (``update_step`` steps; the paper updates every step, ``update_step: 1``):

    λ_i = Σ_{x∈B_i} Σ_tok max(ℓ_proxy,tok − ℓ_ref,tok, 0) / Σ_{x∈B_i} |x|     (domain absent: previous λ_i)
    α′  = α_{t−1} ⊙ exp(η λ)
    α_t = (1 − c) · α′ / Σα′ + c / K

**Order (Algorithm 1).** With one micro-batch per step (no gradient accumulation) the update due at a
step runs inside it, from that batch's statistics, before its loss: the step trains on the new α_t.
With gradient accumulation the later micro-batches are not seen when the first one's backward runs,
so the update runs after the step and the next step trains on it (a one-step lag).

The result is ᾱ = mean over updates of α_t (the paper's choice) or the last α_t
(``output_weights``). The per-token sums come from the ``reference_loss`` provider
(:mod:`mixflow.providers.reference_loss`). ``reference_model_path: null`` drops the reference: λ is the
proxy's own token-mean loss (Group DRO), which the seed allows for debugging only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import bounded
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats, ReferenceLossParams, excess_loss
from mixflow.algorithms.weights import Weights

logger = logging.getLogger(__name__)


@dataclass
class DoReMiParams(ReferenceLossParams):
    reweight_eta: float = bounded(1.0, ge=0, finite=True)
    """η: step size of the exponentiated-gradient update of α (seed example: 0.1)."""
    reweight_eps: float = bounded(1e-3, ge=0, le=1)
    """c: smoothing towards uniform; every α_i >= c/K (seed example: 0.01)."""
    output_weights: Literal["average", "last"] = "average"
    """Weights for step 3: 'average' = mean of α over updates (the paper's ᾱ), 'last' = the final α."""


@register_algorithm
class DoReMi(DomainAlgorithm[DoReMiParams]):
    """DoReMi's proxy run: α (loss weights) by exponentiated-gradient ascent on clipped excess loss."""

    name = "doremi"
    description = "DoReMi step 2: domain loss weights from the proxy's excess loss over a reference model."
    Params = DoReMiParams
    mode = "importance"
    scores_label = "excess loss λ over the reference (clipped, per token)"
    providers = ("reference_loss",)
    state_attributes = ("_lambda", "_average")
    # Algorithm 1 updates α from the current batch, then takes the proxy's step on the new α.
    update_before_loss = True

    def setup(self) -> Weights | None:
        k = self.num_domains
        # α_0 uniform (the paper's defaults); the sampling weights stay at init_weights.
        alpha0 = np.full(k, 1.0 / k)
        # λ of the last update per domain: an absent domain keeps it; before any update it is 0, so an
        # absent domain's α only moves through the normalisation.
        self._lambda = np.zeros(k)
        self._average = alpha0.copy()
        if self.params.reference_model_path is None:
            logger.warning(
                "doremi: reference_model_path is null: λ is the proxy's own loss (Group DRO), not DoReMi's "
                "excess loss; use this for debugging only"
            )
        return Weights(loss=alpha0)

    @property
    def domain_weights(self) -> np.ndarray:
        """α_t, the weights DoReMi learns (logged as ``domain_weights``, as the DoReMi pipeline's log does)."""
        return self.loss_weights

    @property
    def average_weights(self) -> np.ndarray:
        """ᾱ: mean of α_t over the updates so far (α_0 before the first update)."""
        return self._average.copy()

    @property
    def output(self) -> np.ndarray:
        """The weights step 3 should use (``output_weights``)."""
        return self.average_weights if self.params.output_weights == "average" else self.loss_weights

    def excess_loss(self, stats: DomainStats) -> tuple[np.ndarray, np.ndarray]:
        """(λ of the domains present in the window, mask of those domains)."""
        if self.params.reference_model_path is None:
            # Group DRO: no reference, the excess is the proxy's token-mean loss itself.
            present = stats.present.cpu().numpy()
            return np.nan_to_num(stats.mean_token_loss.cpu().numpy()), present
        # Xie et al. 2023, arXiv 2305.10429, Algorithm 1 step 2: per-token clipped excess summed over the domain, / its token count.
        return excess_loss(stats)

    def update(self, stats: DomainStats, step: int) -> Weights:
        lam, present = self.excess_loss(stats)
        # A domain absent from the window keeps its previous λ.
        self._lambda = np.where(present, lam, self._lambda)
        k = self.num_domains
        c = self.params.reweight_eps
        # α′ = α ⊙ exp(η λ), in log space so a large η·λ cannot overflow.
        log_alpha = np.log(self.loss_weights) + self.params.reweight_eta * self._lambda
        alpha = np.exp(log_alpha - log_alpha.max())
        # α_t = (1 − c) α′/Σα′ + c/K: the floor c/K keeps every domain in the objective.
        alpha = (1.0 - c) * alpha / alpha.sum() + c / k
        # ᾱ = (1/T) Σ_t α_t as a running mean (exact to rounding, and resumable from the state); this is
        # update number num_updates + 1
        self._average = self._average + (alpha - self._average) / (self.num_updates + 1)
        return Weights(loss=alpha, scores=self._lambda.copy())

    def summary(self) -> dict[str, Any]:
        """What step 3 reads (``<output_dir>/doremi_summary.json``)."""
        return {
            "algorithm": self.name,
            "domain_names": list(self.domain_names),
            "average": self.average_weights.tolist(),
            "last": self.loss_weights.tolist(),
            "output_weights": self.params.output_weights,
            "weights": self.output.tolist(),
            "num_updates": self.num_updates,
            "perdomain_scores": self.scores.tolist(),
            "reference_model_path": self.params.reference_model_path,
        }
