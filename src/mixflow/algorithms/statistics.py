"""The statistics contract between the training step and the algorithms.

A :class:`DomainStats` holds per-domain *sums* (never means) so that statistics from several
micro-batches, steps and data-parallel ranks combine by plain addition, which is exactly what an
all-reduce does. Statistics beyond the training loss live in ``DomainStats.extras`` under the
names declared here; the statistic providers (:mod:`mixflow.providers`) produce them and the
algorithms read them through the decoding helpers below, so both sides share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from mixflow.algorithms.params import AlgorithmParams, ValidationContext, bounded, required_param
from mixflow.errors import ConfigError


def per_domain_sum(domain_ids: torch.Tensor, values: torch.Tensor, num_domains: int) -> torch.Tensor:
    """Σ of ``values`` (leading dimension = samples) per domain, float64, shape [K, ...]."""
    values = values.to(torch.float64)
    out = torch.zeros((num_domains, *values.shape[1:]), dtype=torch.float64, device=values.device)
    return out.index_add_(0, domain_ids.to(values.device).long(), values)


#: The fixed fields, in the order they are packed into one tensor for a single all-reduce.
SUM_FIELDS = ("token_loss_sum", "token_count")


@dataclass
class DomainStats:
    """Summed per-domain statistics over some set of samples (a micro-batch, a step, a window)."""

    token_loss_sum: torch.Tensor
    """Sum over the domain's non-ignored target tokens of the per-token loss, shape [K]."""
    token_count: torch.Tensor
    """Number of non-ignored target tokens of the domain, shape [K]."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Additional summed statistics contributed by statistic providers (e.g. reference-model losses)."""

    @classmethod
    def zeros(cls, num_domains: int, device: torch.device | str = "cpu") -> DomainStats:
        """Empty statistics for ``num_domains`` domains."""
        z = lambda: torch.zeros(num_domains, dtype=torch.float64, device=device)  # noqa: E731
        return cls(token_loss_sum=z(), token_count=z())  # the SUM_FIELDS

    @classmethod
    def from_samples(
        cls,
        domain_ids: torch.Tensor,
        token_loss_sums: torch.Tensor,
        token_counts: torch.Tensor,
        num_domains: int,
    ) -> DomainStats:
        """Statistics of one batch from per-sample token-loss sums and token counts (detached)."""
        ids = domain_ids.to(device=token_loss_sums.device, dtype=torch.long)
        return cls(
            token_loss_sum=per_domain_sum(ids, token_loss_sums.detach(), num_domains),
            token_count=per_domain_sum(ids, token_counts.detach(), num_domains),
        )

    @property
    def num_domains(self) -> int:
        return int(self.token_loss_sum.numel())

    def add_(self, other: DomainStats) -> DomainStats:
        """In-place sum; extras present in either side are kept."""
        for name in SUM_FIELDS:
            getattr(self, name).add_(getattr(other, name).to(getattr(self, name).device))
        for key, value in other.extras.items():
            if key in self.extras:
                self.extras[key] = self.extras[key] + value.to(self.extras[key].device)
            else:
                self.extras[key] = value.to(self.token_count.device, torch.float64).clone()
        return self

    def pack(self) -> tuple[torch.Tensor, list[tuple[str, int]]]:
        """All statistics as one flat float64 tensor (one collective instead of many) and its layout."""
        parts = [getattr(self, n) for n in SUM_FIELDS]
        layout = [(n, int(p.numel())) for n, p in zip(SUM_FIELDS, parts)]
        for key in sorted(self.extras):
            value = self.extras[key].to(torch.float64)
            parts.append(value.reshape(-1))
            layout.append((key, int(value.numel())))
        return torch.cat([p.reshape(-1).to(parts[0].device) for p in parts]), layout

    def unpack_(self, flat: torch.Tensor, layout: list[tuple[str, int]]) -> DomainStats:
        """Inverse of :meth:`pack`, in place."""
        offset = 0
        for name, size in layout:
            chunk = flat[offset : offset + size]
            offset += size
            if name in SUM_FIELDS:
                getattr(self, name).copy_(chunk)
            else:
                self.extras[name] = chunk.reshape(self.extras[name].shape).clone()
        return self

    # Derived quantities. A domain absent from the statistics gets NaN, never 0: a silent 0 would
    # read as "perfectly learned" to an algorithm.
    @property
    def present(self) -> torch.Tensor:
        """Boolean mask of domains with at least one target token."""
        return self.token_count > 0

    @property
    def mean_token_loss(self) -> torch.Tensor:
        """Token-weighted mean loss per domain (NaN where absent)."""
        return torch.where(self.present, self.token_loss_sum / self.token_count.clamp_min(1), torch.nan)

    def state_dict(self) -> dict:
        """JSON-serialisable state."""
        out = {n: getattr(self, n).tolist() for n in SUM_FIELDS}
        out["extras"] = {k: {"shape": list(v.shape), "values": v.reshape(-1).tolist()} for k, v in self.extras.items()}
        return out

    def load_state_dict(self, state: dict) -> None:
        for n in SUM_FIELDS:
            values = torch.tensor(state[n], dtype=torch.float64, device=getattr(self, n).device)
            if values.shape != getattr(self, n).shape:
                raise ValueError(f"stats.{n}: expected {self.num_domains} values, got {values.numel()}")
            getattr(self, n).copy_(values)
        self.extras = {
            k: torch.tensor(v["values"], dtype=torch.float64, device=self.token_count.device).reshape(v["shape"])
            for k, v in state.get("extras", {}).items()
        }


# ---- the reference_loss statistic (DoReMi) --------------------------------------------------
#: Σ over the domain's target tokens of max(ℓ_proxy,tok − ℓ_ref,tok, 0) [K].
REF_EXCESS_SUM = "ref_excess_sum"
#: Number of those tokens [K].
REF_TOKEN_COUNT = "ref_token_count"
#: Σ of the reference's per-token losses [K] (logs and diagnostics).
REF_LOSS_SUM = "ref_loss_sum"


@dataclass
class ReferenceLossParams(AlgorithmParams):
    """The ``reference_loss`` provider's configuration (DoReMi's)."""

    reference_model_path: str | None = required_param(
        "a local model directory, or null to run without a reference",
        path="model_dir",
        hint="train the reference first, DoReMi step 1, or give null to run without one",
    )
    """Reference model directory (DoReMi step 1's output_dir or a checkpoint of it); null: no reference, λ = the
    proxy's loss (Group DRO, for debugging)."""


def excess_loss(stats: DomainStats) -> tuple[np.ndarray, np.ndarray]:
    """(λ_i = clipped excess-loss sum / token count, mask of domains with tokens) from the
    ``reference_loss`` sums (λ is 0 where a domain has no tokens)."""
    if REF_EXCESS_SUM not in stats.extras or REF_TOKEN_COUNT not in stats.extras:
        raise ValueError(
            "doremi: no reference-loss statistics in this window (is the reference_loss provider configured?)"
        )
    excess = stats.extras[REF_EXCESS_SUM].cpu().double().numpy()
    tokens = stats.extras[REF_TOKEN_COUNT].cpu().double().numpy()
    present = tokens > 0
    return np.where(present, excess / np.maximum(tokens, 1.0), 0.0), present


# ---- the heldout_loss statistic (FGLS, ERMA) ----------------------------------------------
#: Σ of per-sample held-out losses [K].
HELDOUT_LOSS_SUM = "heldout_loss_sum"
#: Σ of their squares [K].
HELDOUT_LOSS_SQ_SUM = "heldout_loss_sq_sum"
#: Number of held-out samples with at least one target token [K].
HELDOUT_COUNT = "heldout_count"


@dataclass
class HeldoutParams(AlgorithmParams):
    """The ``heldout_loss`` provider's configuration, shared by every algorithm that reads it."""

    heldout_rows_per_update: int | Literal["batch", "all"] = "batch"
    """heldout_loss: held-out rows evaluated per update, split evenly over the domains, a window that rotates
    through each domain's held-out split from update to update; batch: the global batch size B (at least 2 per
    domain), i.e. the cost of one forward of a training batch per update; all: every row at every update"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        rows = self.heldout_rows_per_update
        k = context.num_domains if context is not None else 1
        if isinstance(rows, int) and rows < 2 * k:
            raise ConfigError(
                f"{where}.heldout_rows_per_update: expected 'batch', 'all' or an integer >= 2·K = {2 * k} "
                f"(a variance needs two rows per domain), got {rows}"
            )


def heldout_rows(setting: int | str, num_domains: int, batch_size: int | None) -> int | None:
    """Rows per update for a ``heldout_rows_per_update`` setting (None: all of them)."""
    if setting == "all":
        return None
    if setting == "batch":
        return max(2 * num_domains, batch_size or 0)
    return int(setting)


def heldout_moments(stats: DomainStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean loss, unbiased per-sample loss variance, sample count) per domain from the
    ``heldout_loss`` sums; the mean is NaN without samples and the variance with fewer than two."""
    if HELDOUT_COUNT not in stats.extras:
        raise ValueError("heldout_loss: no held-out statistics in this window (is the provider configured?)")
    total = stats.extras[HELDOUT_LOSS_SUM].detach().cpu().double().numpy()
    sq = stats.extras[HELDOUT_LOSS_SQ_SUM].detach().cpu().double().numpy()
    n = stats.extras[HELDOUT_COUNT].detach().cpu().double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        var = np.where(n > 1, np.maximum(sq - n * mean**2, 0.0) / np.maximum(n - 1, 1), np.nan)
    return mean, var, n


def heldout_stats(losses_per_domain: Sequence[Sequence[float] | np.ndarray]) -> dict[str, torch.Tensor]:
    """The ``heldout_loss`` sums of given per-sample losses, one sequence per domain (for callers
    that compute held-out losses themselves, e.g. a linear model's squared residuals)."""
    arrays = [np.asarray(v, dtype=np.float64).reshape(-1) for v in losses_per_domain]
    return {
        HELDOUT_LOSS_SUM: torch.tensor([a.sum() for a in arrays], dtype=torch.float64),
        HELDOUT_LOSS_SQ_SUM: torch.tensor([np.square(a).sum() for a in arrays], dtype=torch.float64),
        HELDOUT_COUNT: torch.tensor([float(a.size) for a in arrays], dtype=torch.float64),
    }


# ---- the grad_stats statistic (PiKE, VA) ---------------------------------------------------
@dataclass
class GradStatsParams(AlgorithmParams):
    """The ``grad_stats`` provider's configuration, shared by every algorithm that reads it."""

    grad_params: list[str] | None = None
    """grad_stats: parameter-name globs whose gradients are measured (null: the output head)"""
    grad_groups: int = bounded(2, ge=2, why="a variance needs two groups")
    """grad_stats: groups per domain in the global batch of the group-split estimator (>= 2)"""
    grad_sketch_dim: int = bounded(4096, ge=0, why="0: exact")
    """grad_stats: count-sketch dimension of the gradients (0: exact)"""


#: What the ``grad_stats`` provider returns (sums that add exactly over micro-batches and ranks):
#: Σ of the per-sample gradients of each group of the *global* batch, count-sketched [K, G, d] ...
GRAD_GROUP_SUM = "grad_group_sum"
#: ... and the number of samples in each group [K, G].
GRAD_GROUP_SAMPLES = "grad_group_samples"

#: The moments' sufficient sums, derived from the two above after the all-reduce (or given directly,
#: as the benchmarks do with exact statistics). Σ over groups of the group-mean gradient [K, d].
GRAD_SUM = "grad_sum"
#: Σ over groups of the group-mean gradient's squared norm [K].
GRAD_SQ_SUM = "grad_sq_sum"
#: Number of groups that contributed [K].
GRAD_GROUPS = "grad_groups"
#: Number of samples that contributed [K].
GRAD_SAMPLES = "grad_samples"


def has_gradient_sums(stats: DomainStats) -> bool:
    """Whether gradient statistics (per-group or already summed) reached this window."""
    return GRAD_GROUP_SUM in stats.extras or GRAD_SUM in stats.extras


def gradient_sums(stats: DomainStats) -> dict[str, torch.Tensor]:
    """(``grad_sum``, ``grad_sq_sum``, ``grad_groups``, ``grad_samples``) of the window.

    From the provider's per-group sums: each non-empty group's mean gradient v = sum / count, then
    Σ v, Σ ‖v‖², the number of non-empty groups and of samples. The squared norms are taken only
    here, after the sums were all-reduced, so a group may span micro-batches and ranks and the world
    size does not change the estimate."""
    if GRAD_GROUP_SUM not in stats.extras:
        if GRAD_SUM not in stats.extras:
            raise ValueError("grad_stats: no gradient statistics in this window (is the provider configured?)")
        return {k: stats.extras[k].cpu().double() for k in (GRAD_SUM, GRAD_SQ_SUM, GRAD_GROUPS, GRAD_SAMPLES)}
    total = stats.extras[GRAD_GROUP_SUM].cpu().double()  # [K, G, d]
    count = stats.extras[GRAD_GROUP_SAMPLES].cpu().double()  # [K, G]
    means = total / count.clamp_min(1)[..., None]  # an empty group's sum is 0: its "mean" adds nothing
    return {
        GRAD_SUM: means.sum(dim=1),
        GRAD_SQ_SUM: means.square().sum(dim=(1, 2)),
        GRAD_GROUPS: (count > 0).double().sum(dim=1),
        GRAD_SAMPLES: count.sum(dim=1),
    }


def gradient_moments(stats: DomainStats) -> tuple[np.ndarray, np.ndarray]:
    """(‖∇L_k‖², σ_k²) per domain from ``grad_stats`` sums; NaN where fewer than two groups.

    ĝ_k = mean of the G group-mean gradients; s² = their sample variance (summed over coordinates);
    σ̂_k² = (b_k / G)·s² (a group mean of b_k/G samples has variance σ²·G/b_k);
    ‖∇L_k‖² ≈ ‖ĝ_k‖² − σ̂_k²/b_k, floored at 0 (E‖ĝ‖² = ‖∇L‖² + σ²/b).
    """
    sums = gradient_sums(stats)
    g_sum, sq, groups, n = sums[GRAD_SUM], sums[GRAD_SQ_SUM], sums[GRAD_GROUPS], sums[GRAD_SAMPLES]
    ok = groups >= 2
    g = groups.clamp_min(1)
    mean_sq = (g_sum / g[:, None]).square().sum(dim=1)
    s2 = ((sq - g * mean_sq) / (g - 1).clamp_min(1)).clamp_min(0)
    sigma2 = n / g * s2
    norm_sq = (mean_sq - sigma2 / n.clamp_min(1)).clamp_min(0)
    nan = torch.full_like(norm_sq, float("nan"))
    return torch.where(ok, norm_sq, nan).numpy(), torch.where(ok, sigma2, nan).numpy()
