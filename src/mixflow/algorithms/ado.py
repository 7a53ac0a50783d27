"""ADO — Adaptive Data Optimization (Jiang et al. 2025, ICLR, arXiv 2410.11820), as released
(``yidingjiang/ado``, its ``AdoSelector``).

Every ``fit_every`` steps from ``start_step``, each domain's training loss is fitted by a scaling law
in n, the samples trained so far (all domains': the released ``use_same_step_size``), on the
smoothed history after ``ignore_steps`` (Eq. 1; :mod:`mixflow.algorithms.power_law`):

    L̂_k(n) = ε_k + β_k·n^(−α_k)

Then at every update (every step: ``update_step: 1``), with n = B·t after t steps:

    slope_k = max(α_k, min_alpha)·(L̂_k(n) − ε_k)/n        how fast k's loss still falls (−dL̂_k/dn)
    h_k    ← γ₁·h_k + (1 − γ₁)·share_k   after every step  how much k was trained on (h starts at μ)
    ρ_k    = μ_k·h_k^s·slope_k / Σ_j μ_j·h_j^s·slope_j      (Eqs. 2–3), then max(ρ, δ_min), renormalised
    p      = (1 − γ₂)·p̄ + γ₂·ρ                               (Eq. 4)
    p̄     ← (1 − 1/(t+1))·p̄ + ρ/(t+1)                       (Eq. 5; p̄ starts at μ)

μ is the initial mixture (``mixture_sample_rule``; the paper's natural distribution is
``stratified``); until the first fit p stays μ. Released values: γ₁ = 0.9, s = 0.5, γ₂ = 0.1,
δ_min = 0.01, α floor 0.05, ``fit_every`` = ``start_step`` = ``ignore_steps`` = 1000.

**Ours.** ``share_k`` is k's share of the step's target tokens (the released code: of its rows; the
same for packed rows). The history is kept as means over blocks of ``block`` steps (a domain absent
from a block keeps its last value) and smoothed by Savitzky–Golay of order 3 over ``smooth_window``
blocks — the released code smooths every step over 101 steps, then keeps every 10th point; blocks
keep the checkpoint small. A fit needs ``min_points`` blocks after ``ignore_steps`` (the released
first fit, at step 1000 with 1000 ignored, has one point). The irreducible loss's lower bound
``eps_min`` is a parameter (released: e^0.5 ≈ 1.65, for a 50k-token vocabulary; lower it for a
small one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, bounded
from mixflow.algorithms.power_law import PowerLaw, fit_power_law, savgol_smooth
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights
from mixflow.errors import ConfigError


@dataclass
class ADOParams(AlgorithmParams):
    fit_every: int = bounded(1000, ge=1)
    """Steps between two fits of the scaling laws (released update_interval 1000)"""
    start_step: int = bounded(1000, ge=0)
    """No fit before this step; p stays μ until the first (released 1000)"""
    ignore_steps: int = bounded(1000, ge=0)
    """The first steps' losses are left out of every fit (released 1000)"""
    credit_decay: float = bounded(0.9, ge=0, lt=1)
    """γ₁ of the credit h ← γ₁·h + (1 − γ₁)·share (released 0.9)"""
    credit_power: float = bounded(0.5, ge=0)
    """s in ρ ∝ μ·h^s·slope (released 0.5)"""
    mix: float = bounded(0.1, ge=0, le=1)
    """γ₂ in p = (1 − γ₂)·p̄ + γ₂·ρ (released 0.1)"""
    min_probability: float = bounded(0.01, ge=0, lt=1)
    """δ_min: ρ floored at it, then renormalised (released 0.01; K·δ_min must stay below 1)"""
    min_alpha: float = bounded(0.05, ge=0)
    """α floor in the slope (released 0.05)"""
    eps_min: float = bounded(float(np.exp(0.5)), gt=0)
    """Lower bound of the fitted irreducible loss ε (released e^0.5 ≈ 1.65)"""
    block: int = bounded(10, ge=1)
    """Steps per point of the kept loss history (ours; the released fit keeps every 10th step)"""
    smooth_window: int = bounded(11, ge=5)
    """Savitzky–Golay window, in blocks, odd (11 blocks of 10 ≈ the released 101 steps)"""
    min_points: int = bounded(5, ge=3)
    """Blocks after ignore_steps a fit needs (ours)"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        if self.smooth_window % 2 == 0:
            raise ConfigError(f"{where}.smooth_window: expected an odd number of blocks, got {self.smooth_window}")
        if context is not None and context.num_domains * self.min_probability >= 1:
            raise ConfigError(
                f"{where}.min_probability: expected below 1/K = {1 / context.num_domains:.4g} with "
                f"{context.num_domains} domains, got {self.min_probability}"
            )


@register_algorithm
class ADO(DomainAlgorithm[ADOParams]):
    """Per-domain scaling laws fitted online; sample where the loss still falls fastest, credit-weighted."""

    name = "ado"
    description = (
        "ADO (Jiang et al. 2025): per-domain scaling laws of the training loss fitted online; p from their slopes."
    )
    Params = ADOParams
    mode = "objective"
    scores_label = "fitted slope −dL̂/dn (relative)"
    state_attributes = ("credit", "average", "laws", "history", "block_sum", "block_count", "last_loss", "steps")

    def setup(self) -> Weights | None:
        k = self.num_domains
        self.mu = self.sampling_weights  # the initial mixture, the paper's μ
        self.credit = self.mu.copy()
        self.average = self.mu.copy()  # p̄
        self.laws = np.full((k, 3), np.nan)  # (ε, β, α) per domain; NaN before the first fit
        self.history: list[list[float]] = []  # block means of each domain's training loss
        self.block_sum, self.block_count = np.zeros(k), np.zeros(k)
        self.last_loss = np.full(k, np.nan)
        self.steps = 0
        return None

    def observe(self, stats: DomainStats, step: int) -> Weights | None:
        """Credit and loss history after every step (the released ``update``)."""
        tokens = stats.token_count.cpu().numpy()
        share = tokens / tokens.sum() if tokens.sum() > 0 else np.zeros_like(tokens)
        self.credit = self.params.credit_decay * self.credit + (1 - self.params.credit_decay) * share
        loss = stats.mean_token_loss.cpu().numpy()
        present = tokens > 0
        self.block_sum[present] += loss[present]
        self.block_count[present] += 1
        self.steps = step
        if step % self.params.block == 0:
            seen = self.block_count > 0
            mean = np.where(seen, self.block_sum / np.maximum(self.block_count, 1), self.last_loss)
            self.last_loss = np.where(np.isfinite(mean), mean, self.last_loss)
            self.history.append(self.last_loss.tolist())
            self.block_sum, self.block_count = np.zeros(self.num_domains), np.zeros(self.num_domains)
        return None

    def update(self, stats: DomainStats, step: int) -> Weights:
        p = self.params
        if step >= p.start_step and step % p.fit_every == 0:
            self.fit(step)
        if not np.isfinite(self.laws).all():
            return Weights()  # p stays μ until every domain has a law
        n = float(self.batch_size or 1) * step  # samples trained so far, all domains
        eps, beta, alpha = self.laws.T
        slope = np.maximum(alpha, p.min_alpha) * beta * np.power(n, -alpha) / n  # (L̂ − ε)/n·α′ (Eq. 3's speed)
        rho = self.mu * np.power(self.credit, p.credit_power) * slope
        rho = np.maximum(rho / rho.sum(), p.min_probability)
        rho /= rho.sum()
        sampling = (1 - p.mix) * self.average + p.mix * rho  # Eq. 4, with the p̄ before this step
        self.average = (1 - 1 / (step + 1)) * self.average + rho / (step + 1)  # Eq. 5
        return Weights(sampling=sampling, scores=slope / slope.sum())

    def fit(self, step: int) -> None:
        """Refit every domain's law on the smoothed block history after ``ignore_steps``; a domain
        whose history is too short or not finite keeps its previous law."""
        p = self.params
        first = -(-p.ignore_steps // p.block)  # the first block that ends after ignore_steps
        history = np.asarray(self.history[first:], dtype=np.float64).reshape(-1, self.num_domains)
        if history.shape[0] < p.min_points:
            return
        n = float(self.batch_size or 1) * p.block * np.arange(first + 1, first + 1 + history.shape[0])
        for d in range(self.num_domains):
            y = history[:, d]
            if np.isfinite(y).all() and (y > 0).all():
                smooth = savgol_smooth(y, p.smooth_window)
                law = fit_power_law(n, np.maximum(smooth, 1e-6), eps_min=p.eps_min)
                self.laws[d] = law

    def fitted(self) -> list[PowerLaw | None]:
        """Each domain's current law (None before its first fit)."""
        return [PowerLaw(*row) if np.isfinite(row).all() else None for row in self.laws]

    def summary(self) -> dict[str, Any] | None:
        """The fitted laws, per domain."""
        return {
            "laws": {
                name: None if law is None else law._asdict() for name, law in zip(self.domain_names, self.fitted())
            }
        }
