"""ODM — Online Data Mixing (Albalak et al. 2023; ALGORITHMS.md "ODM").

An Exp3 bandit with one arm per domain, in ``objective`` mode (the sampling distribution *is* the
mixture). The paper's Algorithm 1, with our schedule:

    ε_t  = min(1/K, sqrt(ln K / (K·t)))                       (ε_0 = 1/K)
    p_i  = (1 − K·ε_t) · softmax(ε_{t−1} · R̂)_i + ε_t          at each scheduled update t
    R̂_i ← α·R̂_i + (1 − α) · L_i / p_i                          after every optimizer step, for
                                                                every domain i in the batch

**t (ours).** t counts this algorithm's scheduled updates: the first update after ``warmup_step``
is t = 1. With ``update_step: 1`` and ``warmup_step: 0`` that is the paper's per-step Exp3, where
t is the training step. During warmup p keeps the initial proportions while R̂ already learns.

**Rewards (ours, the paper uses one sample's domain).** A global batch holds every domain with
p_i·B ≳ 1, so every domain present in the step updates its reward from its mean token loss in
that step (all ranks' tokens, as the step engine all-reduces the statistics before ``observe``). p_i is
the sampling weight in force at the end of the step, i.e. the one the batch was drawn with unless
the data loader read ahead across an update.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams, ValidationContext
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats

logger = logging.getLogger(__name__)


@dataclass
class ODMParams(AlgorithmParams):
    alpha: float = 0.9
    """Reward smoothing: R̂_i ← α·R̂_i + (1−α)·L_i/p_i after every step (paper: 0.9)"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        if not 0 <= self.alpha < 1:
            raise ValueError(f"{where}.alpha: expected a number in [0, 1), got {self.alpha}")


def exploration_rate(t: int, num_domains: int) -> float:
    """ε_t = min(1/K, sqrt(ln K / (K·t))); ε_0 = 1/K (Algorithm 1's initialisation)."""
    k = num_domains
    if t <= 0 or k < 2:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))


def exp3_distribution(rewards: np.ndarray, t: int) -> np.ndarray:
    """p = (1 − K·ε_t) · softmax(ε_{t−1} · R̂) + ε_t (Algorithm 1, line 4)."""
    k = rewards.size
    eps, eps_prev = exploration_rate(t, k), exploration_rate(t - 1, k)
    z = eps_prev * rewards
    soft = np.exp(z - z.max())
    soft /= soft.sum()
    return (1.0 - k * eps) * soft + eps


@register_algorithm
class OnlineDataMixing(DomainAlgorithm):
    """Exp3 over domains with rewards from each domain's training loss (ODM)."""

    name = "odm"
    description = "ODM (Albalak et al. 2023): Exp3 bandit over domains, reward = loss / p, smoothed"
    Params = ODMParams
    mode = "objective"
    scores_label = "smoothed reward R̂"
    state_attributes = ("rewards",)

    def setup(self) -> None:
        # Algorithm 1: R̂_i = 0 for every arm.
        self.rewards = np.zeros(self.num_domains, dtype=np.float64)

    @property
    def epsilon(self) -> float:
        """ε_t of the most recent update (1/K before the first)."""
        return exploration_rate(self.num_updates, self.num_domains)

    def observe(self, stats: DomainStats, step: int) -> None:
        """R̂_i ← α·R̂_i + (1−α)·L_i/p_i for every domain in this step's batch (Algorithm 1, line 7)."""
        loss = stats.mean_token_loss.cpu().numpy()
        # Presence comes from token counts: a NaN loss of a present domain is an error, not absence.
        present = stats.present.cpu().numpy()
        if not np.all(np.isfinite(loss[present])):
            # A non-finite reward would poison R̂ for the rest of the run, not just one update.
            logger.warning("step %d: non-finite loss statistics; ODM rewards not updated", step)
            return
        p = self._sampling
        present &= p > 0
        alpha = self.params.alpha
        # Importance weighting by 1/p_i keeps rarely drawn domains' rewards comparable (Exp3).
        self.rewards[present] = alpha * self.rewards[present] + (1 - alpha) * loss[present] / p[present]

    def update(self, stats: DomainStats, step: int) -> None:
        t = self.num_updates + 1
        self._sampling = exp3_distribution(self.rewards, t)
        self._scores = self.rewards.copy()
        self.num_updates = t
