"""VA: variance-aware sampling (Salmani et al. 2025, arXiv 2511.06913 "VA").

For the objective Σ_i π_i w_i L_i, the stratified gradient g = Σ_i π_i w_i (1/b_i) Σ_{j≤b_i} ∇ℓ_ij
is unbiased for any per-domain counts b, and its variance is Σ_i π_i² w_i² v_i² / b_i (v_i²: the
within-domain per-sample gradient variance). Minimising it under Σ b_i = B gives

    b_i ∝ π_i w_i v_i.

VA keeps v_i² as an EMA (β = 0.9, ours) of the ``grad_stats`` provider's estimate σ̂_i², sets
p ∝ π ⊙ w ⊙ v with a floor of ``min_samples`` rows per global batch (so v_i stays estimable), and
runs in ``importance`` mode: a sample of domain d has loss coefficient q_d / p_d with q ∝ π ⊙ w,
so the expected gradient is that of Σ π_i w_i L_i whatever p is.

The loss weights w are 1, or come from an inner loss-weight algorithm (``loss_weights_from``,
e.g. erma or fgls) that VA builds through the registry and drives: it forwards ``observe``,
``update`` and checkpoint state to it, and its statistic providers are the union of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm, ProviderSpec, split_inner, with_inner
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, bounded, build_params
from mixflow.algorithms.registry import available_algorithms, build_algorithm, register_algorithm
from mixflow.algorithms.statistics import DomainStats, GradStatsParams, gradient_moments, has_gradient_sums
from mixflow.algorithms.weights import Weights, floor_weights
from mixflow.errors import ConfigError, ResumeError


@dataclass
class VAParams(GradStatsParams):
    beta: float = bounded(0.9, ge=0, lt=1)
    """EMA factor of v_i² ← β·v_i² + (1−β)·σ̂_i² (ours); the first estimate is taken as is"""
    min_samples: int = bounded(2, ge=2, why="a variance needs two samples")
    """Floor: at least this many rows of every domain (with π_i·w_i > 0) per global batch"""
    loss_weights_from: dict[str, Any] | None = None
    """Inner loss-weight algorithm {name, params} (e.g. erma, fgls) supplying w; null: w = 1"""
    # VA's variance estimate wants more groups than PiKE's default (only the default differs).
    grad_groups: int = bounded(4, ge=2, why="a variance needs two groups")
    """grad_stats: groups per domain in the global batch of the group-split variance estimator"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        super().validate(where, context)
        k, b = (context.num_domains, context.batch_size) if context is not None else (None, None)
        if k is not None and b is not None and k * self.min_samples >= b:
            # every weight floored to min_samples/B ≥ 1/K: the mixture could never leave uniform
            raise ConfigError(
                f"{where}.min_samples: K·min_samples = {k}·{self.min_samples} ≥ the global batch B = {b}, so every "
                f"weight would stay at 1/K; use a global batch of at least {k * self.min_samples + 1} (larger leaves "
                "the algorithm more room) or lower min_samples"
            )
        spec = self.loss_weights_from
        if spec is None:
            return
        key = f"{where}.loss_weights_from"
        unknown = sorted(set(spec) - {"name", "params"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key; expected 'name' and 'params'")
        name = spec.get("name")
        table = available_algorithms()
        if not isinstance(name, str) or name not in table or name == "va":
            choices = sorted(n for n in table if n != "va")
            raise ConfigError(f"{key}.name: expected a loss-weight algorithm, one of {choices}, got {name!r}")
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{key}.params: expected a mapping, got {params!r}")
        build_params(table[name].Params, params, f"{key}.params", context)

    def inner(self) -> tuple[type[DomainAlgorithm], AlgorithmParams] | None:
        """The inner loss-weight algorithm's class and typed params (None without one)."""
        spec = self.loss_weights_from
        if not spec:
            return None
        cls = available_algorithms()[spec["name"]]
        return cls, build_params(cls.Params, spec.get("params") or {}, "va.params.loss_weights_from.params")


@register_algorithm
class VarianceAwareSampling(DomainAlgorithm[VAParams]):
    """Sampling b_i ∝ π_i w_i v_i with importance coefficients; optional inner loss weights."""

    name = "va"
    description = "VA (Salmani et al. 2025): sampling ∝ π·w·(per-sample gradient std), importance-corrected; loss weights from an inner algorithm."
    Params = VAParams
    mode = "importance"
    scores_label = "per-sample gradient spread v"
    providers = ("grad_stats",)
    state_attributes = ("v2",)

    @classmethod
    def provider_specs(cls, params: AlgorithmParams) -> list[ProviderSpec]:
        """VA's grad_stats plus whatever the inner loss-weight algorithm needs (e.g. heldout_loss)."""
        own = super().provider_specs(params)
        inner = params.inner()  # type: ignore[attr-defined]
        if inner is None:
            return own
        inner_cls, inner_params = inner
        who = f"VA (loss_weights_from: {inner_cls.name})"
        extra = [ProviderSpec(s.name, s.params, who) for s in inner_cls.provider_specs(inner_params)]
        return own + [s for s in extra if s.name not in {o.name for o in own}]

    def setup(self) -> Weights | None:
        self.inner: DomainAlgorithm[Any] | None = None
        inner = self.params.inner()
        if inner is not None:
            inner_cls, inner_params = inner
            self.inner = build_algorithm(
                inner_cls.name,
                self.domain_names,
                inner_params,
                init_weights=self.sampling_weights,
                prior=self.prior,
                where="va.params.loss_weights_from",
            )
        #: EMA of the per-sample gradient variance v_i² (NaN until a domain's first estimate)
        self.v2 = np.full(self.num_domains, np.nan)
        return None if self.inner is None else Weights(loss=self.inner.loss_weights)

    def on_bind(self) -> Weights | None:
        if self.inner is not None and self.batch_size is not None:
            self.inner.bind(self.batch_size, self.max_steps, self.tokens_per_step, self.lead)
        return None

    def observe(self, stats: DomainStats, step: int) -> Weights | None:
        if self.inner is not None:
            changed = self.inner.apply_observe(stats, step)
            if changed is not None and changed.loss is not None:
                return Weights(loss=self.inner.loss_weights)  # the inner's w, changed between updates
        return None

    def update(self, stats: DomainStats, step: int) -> Weights:
        """Inner loss weights first, then v² ← EMA(σ̂²) and p ∝ π ⊙ w ⊙ v with the floor (Salmani et al. 2025, arXiv 2511.06913, VA)."""
        w = self.loss_weights
        if self.inner is not None:
            self.inner.apply_update(stats, step)
            w = self.inner.loss_weights
        if not has_gradient_sums(stats):
            raise ValueError(
                "va: no gradient statistics reached the update; pass model= to StepEngine.training_loss "
                "(the grad_stats provider differentiates the training loss)"
            )
        _, sigma2 = gradient_moments(stats)
        beta = float(self.params.beta)
        known = np.isfinite(sigma2)
        seen = np.isfinite(self.v2)
        # The first estimate initialises the EMA: an EMA started at 0 would under-sample that domain.
        ema = np.where(seen, beta * np.nan_to_num(self.v2) + (1 - beta) * np.nan_to_num(sigma2), sigma2)
        self.v2 = np.where(known, ema, self.v2)
        v = np.sqrt(self.v2)
        if not np.isfinite(v).any():
            return Weights(loss=w)  # nothing estimable yet: keep p
        # A domain never estimated (absent so far) is treated as typical until it is.
        v = np.where(np.isfinite(v), v, float(np.mean(v[np.isfinite(v)])))
        return Weights(sampling=self.floored(self.prior * w * v), loss=w, scores=np.sqrt(self.v2))

    def floored(self, target: np.ndarray) -> np.ndarray:
        """target / Σ target, with every domain of positive target raised to ≥ min_samples / B and
        the rest rescaled (water-filling); no floor before :meth:`bind`."""
        target = np.asarray(target, dtype=np.float64)
        if target.sum() <= 0:
            return self.sampling_weights
        floor = int(self.params.min_samples) / self.batch_size if self.batch_size else 0.0
        return floor_weights(target, floor, keep_zeros=True)

    # ---- checkpoint state: VA's own plus the inner algorithm's --------------------------------
    def state_dict(self) -> dict[str, Any]:
        return with_inner(super().state_dict(), self.inner)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state, inner = split_inner(state)
        if (inner is None) != (self.inner is None):
            raise ResumeError("va state: the checkpoint and this run disagree on loss_weights_from")
        super().load_state_dict(state)
        if self.inner is not None and inner is not None:
            self.inner.load_state_dict(inner)
