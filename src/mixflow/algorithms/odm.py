"""ODM — Online Data Mixing (Albalak et al. 2023, arXiv 2312.02406 "ODM", corrected by the released code).

A bandit with one arm per domain, in ``objective`` mode (the sampling distribution *is* the
mixture). Two rules; t is the training iteration (the optimizer step, warmup included):

    ε_t = min(1/K, sqrt(ln K / (K·t)))                                          (ε_0 = 1/K)

``rule: smoothed_mean`` (default) — the released code's ``SmoothedMeanWeightUpdater.group_update``,
the update its README names as the paper's method for mixed minibatches:

    R̂_i ← α·R̂_i + (1 − α)·exp(L_i)            after every step, for every domain in the batch
    p_i  = (1 − K·ε_t)·π⁰_i·R̂_i / Σ_j π⁰_j·R̂_j + ε_t                            at each update

``rule: exp3`` — Algorithm 1 of the paper as printed:

    R̂_i ← α·R̂_i + (1 − α)·L_i / P_i            P_i = min(1, p_i·B): the chance domain i is in a batch
    p_i  = (1 − K·ε_t)·softmax(ε_{t−1}·R̂)_i + ε_t

**π⁰ (ours).** The normalised part is weighted by the initial proportions π⁰ (``mixture_sample_rule``
/ ``init_mixture_proportions``), so equal rewards keep the initial mixture (up to the exploration
floor) instead of resetting it to uniform; with a uniform start this is the released rule exactly.

**P_i (ours).** The printed rule's 1/p_i makes the reward of a *single* drawn sample unbiased. In a
global batch of B rows every domain with p_i·B ≥ 1 is always drawn (the sampler allocates rows by
largest remainder), so only a domain that can be missing is importance-weighted, by the chance it
is present; B = 1 (no sampler bound) is the printed rule.

In both rules the rewards of the warmup steps count, and the first update does not reset p.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams, bounded
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights
from mixflow.errors import ResumeError

logger = logging.getLogger(__name__)

Rule = Literal["smoothed_mean", "exp3"]


@dataclass
class ODMParams(AlgorithmParams):
    rule: Rule = "smoothed_mean"
    """smoothed_mean: the released code's rule (EMA of exp(L), linear normalisation); exp3: the
    paper's Algorithm 1 as printed (EMA of L/p inside a softmax)"""
    alpha: float = bounded(0.9, ge=0, lt=1)
    """Reward smoothing R̂_i ← α·R̂_i + (1−α)·reward after every step (released default 0.9; the
    paper's 1B run used 0.5)"""


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


def smoothed_mean_distribution(log_rewards: np.ndarray, prior: np.ndarray, t: int) -> np.ndarray:
    """p = (1 − K·ε_t) · π⁰ ⊙ R̂ / Σ π⁰ ⊙ R̂ + ε_t (released ``group_update``, with the prior π⁰),
    from ln R̂ (NaN: no reward yet, R̂ = 0; no reward at all keeps π⁰)."""
    k = log_rewards.size
    eps = exploration_rate(t, k)
    z = np.log(np.maximum(prior, 1e-300)) + np.where(np.isnan(log_rewards), -np.inf, log_rewards)
    if not np.any(np.isfinite(z)):
        share = prior / prior.sum()
    else:
        share = np.exp(z - z[np.isfinite(z)].max())
        share /= share.sum()
    return (1.0 - k * eps) * share + eps


@register_algorithm
class OnlineDataMixing(DomainAlgorithm[ODMParams]):
    """A bandit over domains with rewards from each domain's training loss (ODM)."""

    name = "odm"
    description = "ODM (Albalak et al. 2023): bandit over domains, reward from the training loss (released rule)"
    Params = ODMParams
    mode = "objective"
    scores_label = "smoothed reward (ln R̂ for smoothed_mean, R̂ for exp3)"
    #: ``rewards`` holds ln R̂ under smoothed_mean (exp(L) never overflows there; NaN while R̂ = 0)
    #: and R̂ under exp3.
    state_attributes = ("rewards", "rule", "_last_t", "_initial")

    def setup(self) -> None:
        self.rule: str = self.params.rule
        #: t of the most recent update (0 before the first).
        self._last_t = 0
        # Algorithm 1 and the released code: R̂_i = 0 for every arm. ln 0 is kept as NaN, which
        # survives a JSON checkpoint (as null) where −inf would not.
        start = np.nan if self.rule == "smoothed_mean" else 0.0
        self.rewards = np.full(self.num_domains, start, dtype=np.float64)
        self._initial = self.sampling_weights
        if self.rule == "smoothed_mean":
            self.scores_label = "ln R̂ (smoothed exp(loss))"
        else:
            self.scores_label = "smoothed reward R̂"

    @property
    def epsilon(self) -> float:
        """ε_t at the step of the most recent update (1/K before the first)."""
        return exploration_rate(self._last_t, self.num_domains)

    def observe(self, stats: DomainStats, step: int) -> None:
        """Smooth the reward of every domain in this step's batch (released ``group_update``; Algorithm 1, line 7)."""
        loss = stats.mean_token_loss.cpu().numpy()
        # Presence comes from token counts: a NaN loss of a present domain is an error, not absence.
        present = stats.present.cpu().numpy()
        if not np.all(np.isfinite(loss[present])):
            # A non-finite reward would poison R̂ for the rest of the run, not just one update.
            logger.warning("step %d: non-finite loss statistics; ODM rewards not updated", step)
            return
        alpha = self.params.alpha
        if self.rule == "smoothed_mean":
            # ln(α·R̂ + (1−α)·e^L), in log space so a large loss cannot overflow.
            old = np.where(np.isnan(self.rewards), -np.inf, self.rewards)[present]
            old = old + (math.log(alpha) if alpha > 0 else -np.inf)
            self.rewards[present] = np.logaddexp(old, math.log1p(-alpha) + loss[present])
            return
        chance = np.minimum(1.0, self.sampling_weights * (self.batch_size or 1))
        present &= chance > 0
        self.rewards[present] = alpha * self.rewards[present] + (1 - alpha) * loss[present] / chance[present]

    def update(self, stats: DomainStats, step: int) -> Weights:
        t = max(int(step), 1)  # the training iteration, warmup included
        self._last_t = t
        if self.rule == "smoothed_mean":
            return Weights(
                sampling=smoothed_mean_distribution(self.rewards, self._initial, t), scores=self.rewards.copy()
            )
        return Weights(sampling=exp3_distribution(self.rewards, t), scores=self.rewards.copy())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rule = state.get("rule", "exp3")  # states written before the rule existed hold exp3 rewards
        if rule != self.rule:
            raise ResumeError(f"odm state: the checkpoint used rule {rule!r} but this run uses {self.rule!r}")
        super().load_state_dict(state)
