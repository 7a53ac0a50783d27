"""Per-domain training statistics: what the training step observes and algorithms consume.

A :class:`DomainStats` holds *sums* (never means) so that statistics from several
micro-batches, steps and data-parallel ranks combine by plain addition, which is
exactly what an all-reduce does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: The fixed fields, in the order they are packed into one tensor for a single all-reduce.
SUM_FIELDS = ("token_loss_sum", "token_count", "sample_count", "sample_loss_sum", "sample_loss_sq_sum")


@dataclass
class DomainStats:
    """Summed per-domain statistics over some set of samples (a micro-batch, a step, a window)."""

    token_loss_sum: torch.Tensor
    """Sum over the domain's non-ignored target tokens of the per-token loss, shape [K]."""
    token_count: torch.Tensor
    """Number of non-ignored target tokens of the domain, shape [K]."""
    sample_count: torch.Tensor
    """Number of samples of the domain, shape [K]."""
    sample_loss_sum: torch.Tensor
    """Sum over the domain's samples of the per-sample (token-mean) loss, shape [K]."""
    sample_loss_sq_sum: torch.Tensor
    """Sum over the domain's samples of the squared per-sample loss (for variances), shape [K]."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Additional summed statistics contributed by statistic providers (e.g. reference-model losses)."""

    @classmethod
    def zeros(cls, num_domains: int, device: torch.device | str = "cpu") -> "DomainStats":
        """Empty statistics for ``num_domains`` domains."""
        z = lambda: torch.zeros(num_domains, dtype=torch.float64, device=device)  # noqa: E731
        return cls(*(z() for _ in SUM_FIELDS))

    @classmethod
    def from_samples(
        cls,
        domain_ids: torch.Tensor,
        token_loss_sums: torch.Tensor,
        token_counts: torch.Tensor,
        num_domains: int,
    ) -> "DomainStats":
        """Statistics of one batch from per-sample token-loss sums and token counts (detached)."""
        device = token_loss_sums.device
        ids = domain_ids.to(device=device, dtype=torch.long)
        tls = token_loss_sums.detach().to(torch.float64)
        cnt = token_counts.detach().to(torch.float64)
        per_sample = tls / cnt.clamp_min(1.0)
        has_tokens = (cnt > 0).to(torch.float64)

        def per_domain(values: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(num_domains, dtype=torch.float64, device=device)
            return out.index_add_(0, ids, values)

        return cls(
            token_loss_sum=per_domain(tls),
            token_count=per_domain(cnt),
            # a sample whose labels are all ignored carries no loss; it must not dilute the means
            sample_count=per_domain(has_tokens),
            sample_loss_sum=per_domain(per_sample * has_tokens),
            sample_loss_sq_sum=per_domain(per_sample.square() * has_tokens),
        )

    @property
    def num_domains(self) -> int:
        return int(self.token_loss_sum.numel())

    def add_(self, other: "DomainStats") -> "DomainStats":
        """In-place sum; extras present in either side are kept."""
        for name in SUM_FIELDS:
            getattr(self, name).add_(getattr(other, name).to(getattr(self, name).device))
        for key, value in other.extras.items():
            if key in self.extras:
                self.extras[key] = self.extras[key] + value.to(self.extras[key].device)
            else:
                self.extras[key] = value.to(self.token_count.device, torch.float64).clone()
        return self

    def clone(self) -> "DomainStats":
        return DomainStats(
            *(getattr(self, n).clone() for n in SUM_FIELDS), extras={k: v.clone() for k, v in self.extras.items()}
        )

    def pack(self) -> tuple[torch.Tensor, list[tuple[str, int]]]:
        """All statistics as one flat float64 tensor (one collective instead of many) and its layout."""
        parts = [getattr(self, n) for n in SUM_FIELDS]
        layout = [(n, int(p.numel())) for n, p in zip(SUM_FIELDS, parts)]
        for key in sorted(self.extras):
            value = self.extras[key].to(torch.float64)
            parts.append(value.reshape(-1))
            layout.append((key, int(value.numel())))
        return torch.cat([p.reshape(-1).to(parts[0].device) for p in parts]), layout

    def unpack_(self, flat: torch.Tensor, layout: list[tuple[str, int]]) -> "DomainStats":
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

    @property
    def mean_sample_loss(self) -> torch.Tensor:
        """Mean of per-sample token-mean losses per domain (NaN where absent)."""
        has = self.sample_count > 0
        return torch.where(has, self.sample_loss_sum / self.sample_count.clamp_min(1), torch.nan)

    @property
    def sample_loss_var(self) -> torch.Tensor:
        """Unbiased variance of per-sample losses per domain (NaN with fewer than two samples)."""
        n = self.sample_count
        mean = self.sample_loss_sum / n.clamp_min(1)
        var = (self.sample_loss_sq_sum - n * mean.square()) / (n - 1).clamp_min(1)
        return torch.where(n > 1, var.clamp_min(0), torch.nan)

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
