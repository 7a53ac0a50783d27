"""Loss-based sample reweighting (Sow et al. 2025, arXiv 2502.06733, "Loss-based sample
reweighting"): per-sample weights from each sample's loss, over the global batch.

For the losses ℓ of a batch (all ranks' samples, in rank order):

    ℓ̃_j = 2δ (ℓ_j − ℓmin) / (ℓmax − ℓmin) − δ          normalised to [−δ, δ]
    f(ℓ̃) = min(ℓ̃ + δ, δ)          linupper   (low losses down-weighted; all above mid-range equal)
           0.5·ℓ̃ + 0.5·δ           upper      (the released code's: linear in the loss over the whole range)
           1 − ℓ̃² / δ²              quadratic  (mid-range up-weighted, both extremes down)
           |ℓ̃|                      extremes   (both extremes up-weighted)
           0                        uniform
    s = softmax(f / r)                (r: the KL-regularisation temperature; Σ s = 1)
    weights = N · s                   (uniform weights are all 1: the loss is the plain mean loss)

With gradient accumulation the "global batch" is one micro-batch across all ranks: the losses of
the later micro-batches of a step are not known when an earlier micro-batch's backward runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from mixflow.algorithms.base import SampleWeighter
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, bounded
from mixflow.algorithms.registry import register_weighter
from mixflow.errors import ConfigError

Strategy = Literal["linupper", "upper", "quadratic", "extremes", "uniform"]

#: The paper's recipe for language-model pretraining: linupper at r = 0.4 after a 1000-step burn-in
#: (its larger runs). Keys a config sets win (e.g. a shorter burn_in_steps for a short run).
LANGUAGE_MODEL = {"strategy": "linupper", "r": 0.4, "burn_in_steps": 1000}
Schedule = Literal["constant", "linear", "cosine"]


@dataclass
class LossReweightingParams(AlgorithmParams):
    presets: ClassVar[dict[str, dict[str, Any]]] = {"language_model": LANGUAGE_MODEL}

    preset: str | None = None
    """A documented recipe filling every key not set: language_model = linupper, r 0.4, burn_in_steps 1000 (the
    paper's larger runs)."""
    strategy: Strategy = "linupper"
    """f of the normalised loss: linupper, upper (the released code's), quadratic, extremes or uniform."""
    delta: float = bounded(1.0, gt=0)
    """δ: normalised losses span [-δ, δ] (> 0)."""
    r: float = bounded(1.0, gt=0)
    """Temperature of softmax(f / r) (> 0); with a decreasing schedule, its final value."""
    burn_in_steps: int = bounded(0, ge=0)
    """Optimizer steps of uniform weighting before reweighting starts (paper: 1000)."""
    r_schedule: Schedule = "constant"
    """(ours) constant: r throughout; linear or cosine: r decreases from r_start to r over r_schedule_steps steps after
    the burn-in (large r is nearly uniform, so the weighting fades in)."""
    r_start: float = 10.0
    """Temperature at the start of a linear/cosine schedule (> r)."""
    r_schedule_steps: int = bounded(1000, ge=1)
    """Length of the linear/cosine schedule in optimizer steps (>= 1)."""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        """One-line errors naming the key (run at config load)."""
        if self.r_schedule != "constant" and not self.r_start > self.r:
            raise ConfigError(
                f"{where}.r_start: expected a number > r ({self.r}) for a decreasing schedule, got {self.r_start}"
            )


def normalised_losses(losses: torch.Tensor, delta: float) -> torch.Tensor | None:
    """ℓ̃ = 2δ(ℓ − ℓmin)/(ℓmax − ℓmin) − δ, or None when the losses do not spread (all equal)."""
    lo, hi = losses.min(), losses.max()
    spread = hi - lo
    # Equal losses carry no ranking: uniform weights instead of 0/0.
    if not spread > 1e-12 * max(1.0, float(hi.abs())):
        return None
    return 2.0 * delta * (losses - lo) / spread - delta


def strategy_scores(normalised: torch.Tensor, strategy: Strategy, delta: float) -> torch.Tensor:
    """f(ℓ̃) of Sow et al. 2025, arXiv 2502.06733 for one strategy."""
    if strategy == "linupper":
        return torch.clamp(normalised + delta, max=delta)
    if strategy == "upper":
        return 0.5 * normalised + 0.5 * delta  # released code: ℓ̃ mapped linearly onto [0, δ]
    if strategy == "quadratic":
        return 1.0 - normalised.square() / delta**2
    if strategy == "extremes":
        return normalised.abs()
    if strategy == "uniform":
        return torch.zeros_like(normalised)
    raise ConfigError(f"loss.params.strategy: unknown strategy {strategy!r}")


@register_weighter
class LossReweighting(SampleWeighter[LossReweightingParams]):
    """Per-sample weights N · softmax(f(ℓ̃) / r) over the global batch (linupper by default)."""

    name = "loss"
    description = "Loss-based sample reweighting (Sow et al. 2025): linupper, upper, quadratic, extremes, uniform."
    Params = LossReweightingParams
    #: last_step: the step the latest weights were computed at; r_current: the temperature used then
    #: (where the burn-in and the schedule stand); num_reweighted: batches weighted after the burn-in.
    state_attributes = ("last_step", "r_current", "num_reweighted")

    def setup(self) -> None:
        params = self.params
        self.last_step = -1
        self.r_current = float(params.r_start if params.r_schedule != "constant" else params.r)
        self.num_reweighted = 0

    def temperature(self, step: int) -> float:
        """r at ``step`` (0-based index of the global batch): constant, or the decreasing schedule (ours)."""
        p = self.params
        if p.r_schedule == "constant":
            return p.r
        u = min(1.0, max(0.0, (step - p.burn_in_steps) / p.r_schedule_steps))
        fade = 1.0 - u if p.r_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * u))
        return p.r + (p.r_start - p.r) * fade

    def _logits(self, losses: torch.Tensor, step: int) -> torch.Tensor | None:
        """f(ℓ̃) / r, or None where the weights are uniform (burn-in, strategy uniform, equal losses)."""
        if losses.numel() == 0 or step < self.params.burn_in_steps or self.params.strategy == "uniform":
            return None
        values = losses.detach().to(torch.float64)
        # A non-finite loss would turn every weight into NaN; the step engine's update guard handles the loss.
        if not bool(torch.isfinite(values).all()):
            return None
        normalised = normalised_losses(values, self.params.delta)
        if normalised is None:
            return None
        return strategy_scores(normalised, self.params.strategy, self.params.delta) / self.temperature(step)

    def probabilities(self, losses: torch.Tensor, step: int) -> torch.Tensor:
        """s = softmax(f(ℓ̃) / r) over the batch (Σ s = 1); uniform during the burn-in."""
        logits = self._logits(losses, step)
        if logits is None:
            n = losses.numel()
            return torch.full((n,), 1.0 / max(n, 1), dtype=torch.float64, device=losses.device)
        return torch.softmax(logits, dim=0)

    def weights(
        self, losses: torch.Tensor, domain_ids: torch.Tensor, step: int, sample_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """N · s, so that uniform weights are exactly 1 (the plain mean loss)."""
        n = losses.numel()
        self.last_step = int(step)
        self.r_current = float(self.temperature(step))
        logits = self._logits(losses, step)
        if logits is None:
            # Exactly 1 (not N · (1/N)), so the loss is the plain loss bit for bit.
            return torch.ones(n, dtype=torch.float64, device=losses.device)
        self.num_reweighted += 1
        return n * torch.softmax(logits, dim=0)
