"""PiKE and Balanced-PiKE (Li et al. 2025, arXiv 2502.06244 "PiKE").

Mix batches: b_k ≈ B·w_k samples of task k (the sampler's largest-remainder rounding), so the step's
gradient is g = Σ_k (b_k/B) ḡ_k and w is the objective (``objective`` mode). Every update
(T0 = ``update_step``), from the ``grad_stats`` provider's estimates of ‖∇L_k‖² and σ_k²:

    Δ_k = ζ1·‖∇L_k‖² − (ζ2 / (2B))·σ_k²
    w_k ← w_k · exp(Δ_k);  w ← w / Σw                                   (PiKE's update)

Δ is proportional to minus the gradient, with respect to w_k, of the terms linear in w of the
descent-lemma bound on the next step's loss,
E L(θ − ηg) ≤ L − η Σ_k w_k ⟨∇L, ∇L_k⟩ + (Lη²/2)(‖Σ_k w_k ∇L_k‖² + Σ_k w_k σ_k²/B),
when task gradients do not conflict (⟨∇L, ∇L_k⟩ ≥ ‖∇L_k‖²): ζ2/ζ1 plays the role of L·η
(smoothness × learning rate).

Our choices, each a parameter:

- **Normalised exponent (ours, default).** Gradient scales differ by orders of magnitude between
  models and parameter subsets, so with ``normalize: true`` the exponent is divided by the mean
  over tasks of its terms, S = mean_k(ζ1‖∇L_k‖² + (ζ2/2B)σ_k²), and multiplied by ``step_size``:
  Δ_k ← step_size · Δ_k / S. One update then moves log-weights by O(step_size) whatever the
  model, only the ratio ζ2/ζ1 matters, and the fixed point (Δ_k equal for all k) is unchanged.
  ``normalize: false`` is the raw rule above with ζ1, ζ2 in the model's gradient units.
- A task without estimates this window (absent, or fewer than 2 groups: NaN) keeps its weight
  exactly; the others share the rest.
- Floors: every w_k >= max(``min_weight``, ``min_samples``/B) (the smallest change that restores
  it: floored tasks sit at the floor, the others keep their ratios). ``min_weight`` keeps every
  task alive; ``min_samples`` (ours, default 2) keeps ~2 samples of every task in each global
  batch, because a task with fewer has no variance estimate, would keep its weight, and could
  never come back.
- **Balanced-PiKE** (tilted objective (1/τ) log Σ_k exp(τ L_k)): y_k = τ·softmax(τ L)_k from the
  window's mean token losses, then the PiKE update on the y-weighted task losses y_k·L_k, i.e.
  ‖∇L_k‖² and σ_k² both scaled by y_k² (ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.grad_moments import smooth_gradient_sums, smoothed_moments
from mixflow.algorithms.params import ValidationContext, bounded
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats, GradStatsParams
from mixflow.algorithms.weights import Weights, floor_weights
from mixflow.errors import ConfigError


@dataclass
class PiKEParams(GradStatsParams):
    zeta1: float = bounded(1.0, ge=0, finite=True)
    """ζ1: weight of the squared gradient norm ‖∇L_k‖² in the exponent"""
    zeta2: float = bounded(1.0, ge=0, finite=True)
    """ζ2: weight of the noise term σ_k²/(2B); ζ2/ζ1 ~ smoothness × learning rate (0: ignore noise)"""
    normalize: bool = True
    """Divide the exponent by the mean over tasks of ζ1‖∇L_k‖² + ζ2σ_k²/(2B) and scale by step_size (ours)"""
    step_size: float = bounded(0.1, gt=0, finite=True)
    """With normalize: the size of one update in log-weight units (ours)"""
    min_weight: float = bounded(0.01, ge=0, lt=1)
    """Floor on every task's weight, so that no task dies (must be < 1/K)"""
    min_samples: int = bounded(2, ge=0)
    """Floor of min_samples/B on every weight, so each task keeps the 2 samples a variance needs (ours; 0: off)"""
    grad_smoothing: float = bounded(0.0, ge=0, lt=1)
    """β: pool the gradient groups of past updates with weights β^age (ours; 0: this window only, the paper's
    one-batch estimate); less variance, but a lag of about β/(1−β) updates while the model moves"""
    floor_norm: bool = False
    """Floor the ‖∇L_k‖² estimate at 0 (ours: false keeps it unbiased; the floor biases noisy tasks upward, while
    the multiplicative update averages an unbiased exponent's noise over updates)"""
    scale_smoothing: float = bounded(0.9, ge=0, lt=1)
    """With normalize: the normalising scale S is an average over updates with weights scale_smoothing^age (ours;
    0: this update's S), so a noisy S does not make the update size random"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        super().validate(where, context)
        if self.zeta1 == 0 and self.zeta2 == 0:
            raise ConfigError(f"{where}.zeta1: expected zeta1 or zeta2 > 0 (both 0 never changes the weights)")
        if context is None:
            return
        k = context.num_domains
        if self.min_weight * k >= 1:
            raise ConfigError(
                f"{where}.min_weight: expected a number < 1/K = {1 / k:.4g} ({k} domains), got {self.min_weight}"
            )
        b = context.batch_size
        if b is not None and self.min_samples > 0 and k * self.min_samples >= b:
            # every weight floored to min_samples/B ≥ 1/K: the mixture could never leave uniform
            raise ConfigError(
                f"{where}.min_samples: K·min_samples = {k}·{self.min_samples} ≥ the global batch B = {b}, so every "
                f"weight would stay at 1/K; use a global batch of at least {k * self.min_samples + 1} (larger leaves "
                "the algorithm more room) or lower min_samples"
            )


@dataclass
class BalancedPiKEParams(PiKEParams):
    tau: float = bounded(3.0, gt=0, finite=True)
    """τ of the tilted objective (1/τ)·log Σ_k exp(τ·L_k); the paper uses 1, 3 or 5"""
    tilt: Literal["gain", "both"] = "both"
    """both: ‖∇L_k‖² and σ_k² both scaled by y_k², y = τ·softmax(τL) (Li et al. 2025, arXiv 2502.06244; it can push a lagging but
    noisy task down); gain: K·softmax(τL)_k weighs ‖∇L_k‖² only, the first-order term of the tilted objective
    (ours; equal losses give PiKE exactly)"""


def pike_terms(
    norm_sq: np.ndarray, sigma2: np.ndarray, batch_size: int, params: PiKEParams
) -> tuple[np.ndarray, np.ndarray]:
    """(ζ1‖∇L_k‖², (ζ2/2B)σ_k²): the gain and the noise term of the exponent."""
    return params.zeta1 * norm_sq, params.zeta2 * sigma2 / (2.0 * batch_size)


def exponent_scale(gain: np.ndarray, noise: np.ndarray) -> float:
    """S = mean over tasks with estimates of |ζ1‖∇L_k‖²| + (ζ2/2B)σ_k² (0 when there are none)."""
    ok = np.isfinite(gain) & np.isfinite(noise)
    return float(np.mean((np.abs(gain) + noise)[ok])) if ok.any() else 0.0


def pike_exponent(
    norm_sq: np.ndarray, sigma2: np.ndarray, batch_size: int, params: PiKEParams, scale: float | None = None
) -> np.ndarray:
    """Δ_k = ζ1‖∇L_k‖² − (ζ2/2B)σ_k², times step_size/S when ``params.normalize`` (S: ``scale``, or this
    update's :func:`exponent_scale`); NaN where no estimate."""
    gain, noise = pike_terms(norm_sq, sigma2, batch_size, params)
    delta = gain - noise
    if params.normalize:
        ok = np.isfinite(delta)
        scale = exponent_scale(gain, noise) if scale is None else scale
        # All terms zero (a converged subset): nothing to prefer, so nothing moves.
        delta = params.step_size * delta / scale if scale > 0 else np.where(ok, 0.0, np.nan)
    return delta


#: PiKE's params type (Balanced-PiKE's adds τ and the tilt).
PP = TypeVar("PP", bound=PiKEParams)


@register_algorithm
class PiKE(DomainAlgorithm[PP]):
    """PiKE: exponentiated update of the task mixture from gradient norms and gradient noise."""

    name = "pike"
    description = "PiKE (Li et al. 2025): w_k ∝ w_k·exp(ζ1‖∇L_k‖² − ζ2σ_k²/(2B)) from grad_stats"
    Params = PiKEParams
    mode = "objective"
    scores_label = "update exponent Δ"
    providers = ("grad_stats",)
    state_attributes = ("grad_sums", "scale")

    def setup(self) -> Weights | None:
        #: The gradient sums pooled over past updates (:mod:`mixflow.algorithms.grad_moments`).
        self.grad_sums: dict[str, Any] = {}
        #: The normalising scale S averaged over updates (0 before the first).
        self.scale = 0.0
        return Weights(sampling=floor_weights(self.sampling_weights, self.params.min_weight))

    @property
    def floor(self) -> float:
        """max(min_weight, min_samples/B): the smallest weight a task can have."""
        per_sample = self.params.min_samples / self.batch_size if self.batch_size else 0.0
        return max(self.params.min_weight, per_sample)

    def on_bind(self) -> Weights | None:
        return Weights(sampling=floor_weights(self.sampling_weights, self.floor))

    def tilt(self, stats: DomainStats) -> tuple[np.ndarray, np.ndarray]:
        """Multipliers of (‖∇L_k‖², σ_k²) in the exponent: ones for PiKE (Balanced-PiKE's tilt)."""
        ones = np.ones(self.num_domains)
        return ones, ones

    def update(self, stats: DomainStats, step: int) -> Weights:
        self.grad_sums = smooth_gradient_sums(self.grad_sums, stats, self.params.grad_smoothing)
        norm_sq, sigma2 = smoothed_moments(self.grad_sums, floor=self.params.floor_norm)
        # The y-weighted task loss y_k·L_k has gradient y_k·∇L_k: both moments scale by y_k².
        gain_tilt, noise_tilt = self.tilt(stats)
        batch = self.batch_size
        if batch is None:  # not bound to a sampler: the samples the estimates came from
            batch = max(1, int(stats.extras["grad_samples"].sum()))
        norm_sq, sigma2 = gain_tilt * norm_sq, noise_tilt * sigma2
        current = exponent_scale(*pike_terms(norm_sq, sigma2, batch, self.params))
        if current > 0:
            beta = self.params.scale_smoothing if self.scale > 0 else 0.0
            self.scale = beta * self.scale + (1 - beta) * current
        delta = pike_exponent(norm_sq, sigma2, batch, self.params, scale=self.scale)
        ok = np.isfinite(delta)
        w = self.sampling_weights
        if ok.any():
            # Tasks without estimates keep their weight; the others share the rest (w ← w/Σw).
            z = np.log(np.maximum(w[ok], 1e-300)) + delta[ok]
            moved = np.exp(z - z.max())
            w[ok] = moved / moved.sum() * w[ok].sum()
        return Weights(sampling=floor_weights(w, self.floor), scores=np.where(ok, delta, np.nan))


@register_algorithm
class BalancedPiKE(PiKE[BalancedPiKEParams]):
    """Balanced-PiKE: PiKE on the tilted objective (1/τ)·log Σ_k exp(τ·L_k)."""

    name = "balanced_pike"
    description = "Balanced-PiKE: PiKE on the tilted objective (1/τ)·log Σ exp(τ·L_k), favouring lagging tasks"
    Params = BalancedPiKEParams

    def tilt(self, stats: DomainStats) -> tuple[np.ndarray, np.ndarray]:
        """With s = softmax(τL) over the tasks with a loss this window (the others get 1):
        ``tilt: gain`` → (K·s_k, 1), so equal losses give PiKE exactly; ``tilt: both`` → (y_k², y_k²), y = τ·s."""
        loss = stats.mean_token_loss.cpu().numpy()
        ok = np.isfinite(loss)
        ones = np.ones(self.num_domains)
        if not ok.any():
            return ones, ones
        z = self.params.tau * loss[ok]
        soft = np.exp(z - z.max())
        soft /= soft.sum()
        gain = ones.copy()
        if self.params.tilt == "gain":
            # ∇ of K·(1/τ)·log Σ exp(τL_k) is Σ_k K·s_k·∇L_k: the gain ‖∇L_k‖² is weighted by K·s_k,
            # while the noise of the step (its second-order term) is not.
            gain[ok] = ok.sum() * soft
            return gain, ones
        gain[ok] = (self.params.tau * soft) ** 2
        return gain, gain.copy()
