"""Aioli (Chen et al. 2025, ICLR, arXiv 2411.05735; released code ``HazyResearch/aioli``, its
``AioliTrainer``): estimate a linear mixing law online, then exponentiated-gradient steps on it.

After ``prior_steps`` on the initial mixture p₀, training runs in rounds of ``round_steps`` steps.
Each round begins with LearnParams (the paper's Algorithm 2): ``sweeps`` random orders of the K
groups; for group j, ``sweep_steps`` steps on the smoothed one-hot mixture

    p⁽ʲ⁾_j = ε,  p⁽ʲ⁾_i = (1 − ε)/(K − 1)  (i ≠ j)                      ε = ``one_hot``

then the per-group held-out loss L; the drop since the previous evaluation is added to column j:
B[:, j] += L_before − L_after (the chain starts from the round's first evaluation). With W the
K×K matrix of those mixtures (row m = p⁽ᵐ⁾), the law's parameters are A_i = W⁻¹·(B_i / sweeps)
(B_i⁽ᵐ⁾ = Σ_j A_ij p⁽ᵐ⁾_j). As released, A is shifted by its minimum when negative and divided by
its sum, and averaged over rounds (Ā ← (1 − γ)·A + γ·Ā, γ = ``ema``; the first round Ā = A). Then
(the paper's update, Algorithm 1):

    p_t ∝ p₀ ⊙ exp(η · Σ_i Ā_ij)          with ``ema``  (the released code: from uniform, p₀ = uniform)
    p_t ∝ p_{t−1} ⊙ exp(η · Σ_i A_ij)      without ``ema`` (ema: null)

and the rest of the round trains on p_t. Every group's held-out loss is read from the
``heldout_loss`` provider (``heldout_rows_per_update: all``, the released full validation split),
at the round's start and after each LearnParams sweep step group: 1 + K·sweeps evaluations a round.
Defaults: the released full-SlimPajama run (K = 7): rounds of 200 steps, 2 sweeps of 10 steps,
ε = 0.75, η = 1, ema 0.1.

**Ours.** The restricted setting (``prior_steps`` on given weights, e.g. from ``mixflow search`` or
DoReMi) keeps p₀ as the base of the update; the released code resets it to uniform after the prior
steps. Round 0's first evaluation ends step ``max(prior_steps, 1)`` (a held-out loss needs a trained
step). The ``step − prior`` steps of a LearnParams mixture are drawn exactly (the engine plans them
ahead); the first ``lead − 1`` steps after LearnParams keep the previous round's p while the update
that computes the new one takes effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import ValidationContext, bounded
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats, HeldoutParams, heldout_moments
from mixflow.algorithms.weights import Weights
from mixflow.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class AioliParams(HeldoutParams):
    heldout_rows_per_update: int | Literal["batch", "all"] = "all"
    """Held-out rows per evaluation (released: the whole validation split, 'all')"""
    round_steps: int = bounded(200, ge=2)
    """Steps per round: LearnParams, then training on the round's p (released 200)"""
    sweeps: int = bounded(2, ge=1)
    """LearnParams sweeps over the K groups per round (released lp_rounds 2)"""
    sweep_steps: int = bounded(10, ge=1)
    """Steps on each group's perturbed mixture (released lp_steps 10)"""
    one_hot: float = bounded(0.75, gt=0, le=1)
    """ε: the perturbed mixture's weight on its group (released one_hot_factor 0.75)"""
    eta: float = bounded(1.0, gt=0, finite=True)
    """η of the exponentiated-gradient step (released 1 for K = 7; 0.1–0.2 for K = 2–3)"""
    ema: float | None = bounded(0.1, ge=0, lt=1)
    """γ: Ā ← (1 − γ)·A + γ·Ā and p from p₀ (released 0.1); null: p ∝ p_prev·exp(η·ΣA)"""
    prior_steps: int = bounded(0, ge=0)
    """Steps on the initial mixture before the first round (the restricted setting)"""
    seed: int = 0
    """Seeds each round's random order of the groups"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        super().validate(where, context)
        k = context.num_domains if context is not None else 2
        if self.sweeps * k * self.sweep_steps >= self.round_steps:
            raise ConfigError(
                f"{where}.round_steps: LearnParams takes sweeps × K × sweep_steps = "
                f"{self.sweeps * k * self.sweep_steps} steps; expected more steps a round, got {self.round_steps}"
            )
        if k > 1 and self.one_hot <= 1.0 / k:
            raise ConfigError(
                f"{where}.one_hot: expected above 1/K = {1 / k:.4g} (the mixtures must be independent), "
                f"got {self.one_hot}"
            )


@register_algorithm
class Aioli(DomainAlgorithm[AioliParams]):
    """Rounds of LearnParams (perturbed mixtures, held-out loss drops → A) and exponentiated-gradient p."""

    name = "aioli"
    description = "Aioli (Chen et al. 2025): a linear mixing law estimated online from perturbed mixtures; p by exponentiated gradient."
    Params = AioliParams
    mode = "objective"
    scores_label = "Σ_i Ā_ij (the law's gain per unit of p_j)"
    providers = ("heldout_loss",)
    state_attributes = ("base", "gain", "drops", "last_loss", "round_p")

    def setup(self) -> Weights | None:
        k = self.num_domains
        self.base = self.sampling_weights  # p₀
        self.round_p = self.base.copy()  # the p of the round under way
        self.gain = np.full((k, k), np.nan)  # Ā (NaN before the first round's estimate)
        self.drops = np.zeros((k, k))  # B of the round under way
        self.last_loss = np.full(k, np.nan)
        return None

    def on_bind(self) -> Weights | None:
        if self.max_steps is not None and self.max_steps < self._start + self._learn_steps:
            logger.warning(
                "aioli: the run's %d steps end before the first LearnParams (%d steps after step %d) "
                "finishes; p stays the initial mixture",
                self.max_steps,
                self._learn_steps,
                self._start,
            )
        return None

    # ---- the calendar -----------------------------------------------------------------------
    @property
    def _start(self) -> int:
        return max(self.params.prior_steps, 1)  # round 0 begins after this step

    @property
    def _learn_steps(self) -> int:
        return self.params.sweeps * self.num_domains * self.params.sweep_steps

    def _position(self, step: int) -> tuple[int, int] | None:
        """(round, 0-based position in it) of step ``step``; None before the first round."""
        u = step - self._start - 1
        return None if u < 0 else divmod(u, self.params.round_steps)

    def order(self, round_index: int) -> list[int]:
        """The groups of round ``round_index``'s LearnParams, in order (``sweeps`` random permutations)."""
        rng = np.random.default_rng([self.params.seed, round_index])
        return [int(g) for _ in range(self.params.sweeps) for g in rng.permutation(self.num_domains)]

    def perturbed(self, group: int) -> np.ndarray:
        """The smoothed one-hot mixture of ``group``."""
        k, eps = self.num_domains, self.params.one_hot
        p = np.full(k, (1 - eps) / (k - 1) if k > 1 else 0.0)
        p[group] = eps
        return p

    def update_due(self, step: int) -> bool | None:
        """The round's first evaluation (after its previous step) and one after each perturbed phase."""
        pos = self._position(step + 1)  # the step after this one opens a round, or this one ends a phase
        if pos is not None and pos[1] == 0:
            return True
        here = self._position(step)
        return here is not None and here[1] < self._learn_steps and (here[1] + 1) % self.params.sweep_steps == 0

    def planned_sampling(self, step: int) -> np.ndarray | None:
        pos = self._position(step)
        if pos is None:
            return self.base if step == 1 else None
        r, at = pos
        if at < self._learn_steps:
            return self.perturbed(self.order(r)[at // self.params.sweep_steps])
        return self.round_p if at == self._learn_steps else None  # until the new p lands (update)

    # ---- the update ---------------------------------------------------------------------------
    def update(self, stats: DomainStats, step: int) -> Weights:
        loss, _, _ = heldout_moments(stats)
        if not np.isfinite(loss).all():
            raise ValueError(f"aioli: a group has no held-out loss at step {step} (every group needs held-out rows)")
        pos = self._position(step)
        after = self._position(step + 1)
        if after is not None and after[1] == 0:  # the round's first evaluation: the chain starts here
            self.drops, self.last_loss = np.zeros_like(self.drops), loss
            return Weights()
        assert pos is not None, "update_due only asks for updates inside rounds"
        r, at = pos
        group = self.order(r)[at // self.params.sweep_steps]
        self.drops[:, group] += self.last_loss - loss  # Algorithm 2: B[:, j] += L_before − L_after
        self.last_loss = loss
        if at + 1 < self._learn_steps:
            return Weights()
        return self._step_p()

    def law(self) -> np.ndarray:
        """A from this round's loss drops: A_i = W⁻¹·B_i / sweeps, W's rows the perturbed mixtures."""
        w = np.stack([self.perturbed(m) for m in range(self.num_domains)])
        return np.linalg.solve(w, (self.drops / self.params.sweeps).T).T

    def _step_p(self) -> Weights:
        a = self.law()
        if a.min() < 0:  # released normalisation: shift, then scale to sum 1
            a = a - a.min()
        a = a / a.sum() if a.sum() > 0 else np.full_like(a, 1.0 / a.size)
        ema = self.params.ema
        if ema is None:
            gain = a
            p = self.round_p * np.exp(self.params.eta * gain.sum(axis=0))
        else:
            gain = a if not np.isfinite(self.gain).all() else (1 - ema) * a + ema * self.gain
            p = self.base * np.exp(self.params.eta * gain.sum(axis=0))
        self.gain = gain
        self.round_p = p / p.sum()
        return Weights(sampling=self.round_p, scores=gain.sum(axis=0))

    def summary(self) -> dict[str, Any] | None:
        """The law's current estimate Ā and the round's p."""
        return {
            "gain": None if not np.isfinite(self.gain).all() else self.gain.tolist(),
            "p": dict(zip(self.domain_names, self.round_p.tolist())),
        }
