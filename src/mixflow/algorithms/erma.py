"""ERMA (Salmani et al. 2025, arXiv 2511.06913 "ERMA"): loss weights for general models.

The update from minimising the paper's generalisation bound:

    w_i^{t+1} ∝ w_i^t · exp(γ1 π_i G(t) L_i(θ_t) − γ2 π_i w_i^t Var_i(θ_t)),   Σ π_i w_i = 1

L_i is domain i's held-out loss and Var_i the variance of its per-sample held-out losses (ours:
held-out, as in FGLS). The loss term pulls weight towards domains that still have loss to give;
the variance term pushes it away from domains whose losses are erratic (noisy labels), and more so
the more weight they already have.

Which w sits in the variance term is a choice (ours, ``exponent_weights``):

- ``unnormalized`` (default): the multiplicative state u (what the update multiplies) is kept
  apart from the published w = u / Σ π u. Each u_i then has the fixed point
  u_i* = γ1 G L_i / (γ2 Var_i), so w_i ∝ L_i / Var_i whatever γ1, γ2 and the loss scale: for a
  squared loss with Gaussian noise at θ*, L_i = σ_i²/2 and Var_i = σ_i⁴/2, i.e. w_i ∝ 1/σ_i², GLS.
- ``normalized``: the published w (Σ π w = 1) sits in the exponent: mirror descent on the
  constrained problem. Its fixed point mixes 1/σ² and 1/σ⁴ terms and equals GLS only when
  γ1 G Σ_j π_j/σ_j² = γ2.

The state is kept as log u (no underflow to a weight that can never recover) and one update lowers
log u_i by at most ``max_log_decrease`` (ours): the variance term −γ2 π_i w_i Var_i is unbounded, so
one wild estimate could otherwise bury a domain for hundreds of updates. Increases are bounded by
the rule itself (γ1 π_i G L_i); near the fixed point log u_i moves like a Ricker map with rate
a_i = γ1 π_i G L_i, which converges for a_i < 2: keep γ1 below 2 / (π_i · L_i).
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
class ERMAParams(HeldoutParams):
    gamma1: float = bounded(0.5, ge=0)
    """γ1: step on the held-out loss term γ1·π_i·G(t)·L_i"""
    gamma2: float = bounded(0.5, ge=0)
    """γ2: step on the variance term γ2·π_i·w_i·Var_i"""
    schedule: Literal["constant", "inverse_sqrt"] = "constant"
    """G(t) (ours): constant = 1; inverse_sqrt = 1/sqrt(1 + t), t = updates done"""
    exponent_weights: Literal["unnormalized", "normalized"] = "unnormalized"
    """w in the variance term (ours): unnormalized = the multiplicative state u (fixed point w ∝ L/Var, 1/σ² for
    squared loss); normalized = w with Σπw = 1 (constrained mirror descent)"""
    max_log_decrease: float | None = bounded(1.0, gt=0)
    """Largest decrease of log u_i in one update (ours: one wild variance estimate cannot bury a domain); null: none"""
    var_floor: float = bounded(1e-8, gt=0)
    """Smallest Var_i used (a domain with identical held-out losses)"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        super().validate(where, context)


@register_algorithm
class ERMA(DomainAlgorithm[ERMAParams]):
    """Exponentiated update of loss weights from held-out loss (up) and loss variance (down)."""

    name = "erma"
    description = (
        "ERMA (Salmani et al. 2025): loss weights from held-out loss and per-sample loss variance; needs val_size."
    )
    Params = ERMAParams
    mode = "importance"
    scores_label = "held-out loss"
    providers = ("heldout_loss",)
    state_attributes = ("log_u",)

    def setup(self) -> None:
        #: log of the multiplicative state u (w = u / Σ π u); starts at w = 1
        self.log_u = np.zeros(self.num_domains)

    @property
    def domain_weights(self) -> np.ndarray:
        # The seed's log format names the weights the algorithm learns: here the loss weights.
        return self.loss_weights

    def schedule(self, t: int) -> float:
        """G(t) after t updates (ours; the paper leaves it open, default 1)."""
        if self.params.schedule == "inverse_sqrt":
            return 1.0 / np.sqrt(1.0 + t)
        return 1.0

    def update(self, stats: DomainStats, step: int) -> Weights:
        """w_i ∝ w_i · exp(γ1 π_i G(t) L_i − γ2 π_i w_i Var_i), then Σ π_i w_i = 1 (Salmani et al. 2025, arXiv 2511.06913, ERMA)."""
        p = self.params
        loss, var, _ = heldout_moments(stats)
        known = np.isfinite(loss) & np.isfinite(var)
        var = np.maximum(np.where(known, var, 0.0), p.var_floor)
        loss = np.where(known, loss, 0.0)
        w_in_exponent = np.exp(self.log_u) if p.exponent_weights == "unnormalized" else self.loss_weights
        g = self.schedule(self.num_updates)
        step_log = p.gamma1 * self.prior * g * loss - p.gamma2 * self.prior * w_in_exponent * var
        if p.max_log_decrease is not None:
            step_log = np.maximum(step_log, -p.max_log_decrease)
        log_u = self.log_u + np.where(known, step_log, 0.0)  # no held-out estimate: the domain's u stays
        if p.exponent_weights == "normalized":
            log_u = np.log(self._normalise(log_u))
        self.log_u = log_u
        return Weights(loss=self._normalise(log_u), scores=np.where(known, loss, np.nan))

    def _normalise(self, log_u: np.ndarray) -> np.ndarray:
        """w = u / Σ π u, computed from log u without overflow."""
        u = np.exp(log_u - np.max(log_u))
        return u / float(np.sum(self.prior * u))
