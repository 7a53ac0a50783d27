"""One-shot FGLS (Salmani et al. 2025, arXiv 2511.06913 "One-shot FGLS"): loss weights.

Aitken's theorem: for a linear model with per-domain label-noise variance σ_i², the best linear
unbiased estimator weights domain i's squared loss by w_i ∝ 1/σ_i² (GLS). Feasible GLS needs σ_i²,
classically from a first OLS fit and a second weighted fit; the one-shot variant estimates it
*during* the single run from a held-out split per domain and smooths the weights:

    σ̂_i² = mean over V_i of (y − f_θ(x))²           (held-out loss of domain i)
    w_i  ← (1 − β) w_i + β · t_i,   t ∝ 1/σ̂²
    w    ← w / Σ_j π_j w_j                          (Σ π_i w_i = 1)

For a squared-error model the held-out loss *is* the mean squared residual, σ² plus the model's
remaining excess error, which vanishes as θ → θ*. For a language model the held-out loss is the
token-mean cross-entropy: the domain's entropy rate (its irreducible "noise") plus the excess loss,
so 1/σ̂² down-weights high-entropy (noisy, hard-to-predict) domains.

Sampling is untouched (p stays the initial mixture); the mode is ``importance``, so the loss
coefficient of a sample of domain d is q_d / p_d with q ∝ π ⊙ w: the objective Σ π_i w_i L_i
whatever p is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import ValidationContext, bounded
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats, HeldoutParams, heldout_moments
from mixflow.algorithms.weights import Weights


@dataclass
class FGLSParams(HeldoutParams):
    beta: float = bounded(0.1, gt=0, le=1)
    """Smoothing β of w ← (1−β)·w + β·t, t ∝ 1/σ̂² (ours; 1 = no smoothing)"""
    target_scale: Literal["normalized", "raw"] = "normalized"
    """normalized: t = (1/σ̂²)/Σπ(1/σ̂²), so β is the step whatever the loss's units (ours); raw: t = 1/σ̂² literally,
    then renormalise (the step then depends on the loss scale)"""
    noise_floor: float = bounded(1e-8, gt=0)
    """Smallest σ̂² used (a domain with zero held-out loss would get infinite weight)"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        super().validate(where, context)


@register_algorithm
class OneShotFGLS(DomainAlgorithm[FGLSParams]):
    """Loss weights w_i ∝ 1/σ̂_i² from held-out losses, smoothed over updates (one run, no refit)."""

    name = "fgls"
    description = "One-shot FGLS (Salmani et al. 2025): loss weights ∝ 1/held-out loss, smoothed; needs val_size."
    Params = FGLSParams
    mode = "importance"
    scores_label = "held-out loss σ̂²"
    providers = ("heldout_loss",)

    @property
    def domain_weights(self) -> np.ndarray:
        # The seed's log format names the weights the algorithm learns: here the loss weights.
        return self.loss_weights

    def update(self, stats: DomainStats, step: int) -> Weights:
        """One smoothing step towards t ∝ 1/σ̂² (Salmani et al. 2025, arXiv 2511.06913, One-shot FGLS)."""
        p = self.params
        sigma2, _, _ = heldout_moments(stats)
        known = np.isfinite(sigma2)
        inv = 1.0 / np.maximum(np.where(known, sigma2, 1.0), p.noise_floor)
        w = self.loss_weights
        if p.target_scale == "normalized":
            # Σ π t = 1 over the domains with an estimate (their current share of Σ π w): β is then a
            # true step size, independent of whether losses are ~0.01 or ~10.
            share = float(np.sum(self.prior[known] * w[known]))
            target = inv * share / max(float(np.sum(self.prior[known] * inv[known])), 1e-300)
        else:
            target = inv
        target = np.where(known, target, w)  # no held-out estimate: keep the domain's weight
        w = (1 - p.beta) * w + p.beta * target
        return Weights(loss=w / float(np.sum(self.prior * w)), scores=sigma2)
