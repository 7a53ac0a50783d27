"""``objective_normalization: domain``: each domain's token sum divided by that domain's own tokens.

In importance mode the loss Σ_j (q_d/p_d)·(token sum of j)/N has expectation
Σ_i q_i·n_i·L_i / Σ_i p_i·n_i (n_i: domain i's mean tokens per row), not Σ_i q_i·L_i, unless all
rows have the same length. Dividing each domain's token sum by *its own* target tokens T_d instead
makes every domain enter with exactly q_d. The step engine keeps its arithmetic (Σ_j c_j·ℓ_j / N)
and passes T_d / Σ_e T_e where it would pass p_d: c_j = q_d · N / T_d.

T is counted over the same tokens as N, the Trainer's normaliser (``num_items_in_batch``): the whole
global batch (all ranks and micro-batches, the Hugging Face default), this rank's micro-batches, or
the micro-batch when no N is given. The sampler's plan (:meth:`MixtureSampler.planned_rows`) and
the rows' lengths give the first two before the step's first forward, as the Trainer precomputes N.

A domain planned for fewer than one row per step (p_d·B < 1) is in some steps only; in the global
population its share is divided by r_d / (p_d·B) (r_d: its rows in the step), so its expected
contribution is still q_d·L_d. The per-rank and per-micro-batch populations assume every domain is
in every one of them (true on average for p_d·B ≫ ranks × micro-batches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np
import torch

from mixflow.errors import ConfigError

Normalization = Literal["domain", "token"]
#: Target tokens of each global row (e.g. :meth:`MixtureDataset.target_tokens`).
RowTargetTokens = Callable[[np.ndarray], np.ndarray]


class BatchPlans(Protocol):
    """What :class:`DomainTokens` reads of a sampler: the plan of a global batch and how it is sliced
    over ranks (:class:`~mixflow.data.sampler.MixtureSampler` provides it; nothing else of it is read)."""

    @property
    def num_domains(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def local_batch_size(self) -> int: ...
    @property
    def rank(self) -> int: ...
    def planned_rows(self, batch_index: int) -> np.ndarray: ...
    def planned_weights(self, batch_index: int) -> np.ndarray: ...
    def domain_ids(self, indices: np.ndarray) -> np.ndarray: ...


class DomainTokens:
    """Per-domain target tokens of a step, in the population its loss normaliser counts."""

    def __init__(
        self,
        sampler: BatchPlans,
        normalization: Normalization = "domain",
        row_target_tokens: RowTargetTokens | None = None,
    ) -> None:
        if normalization not in ("domain", "token"):
            raise ConfigError(f"objective_normalization: expected 'domain' or 'token', got {normalization!r}")
        self.normalization = normalization
        self.sampler = sampler
        self.row_target_tokens = row_target_tokens
        self._cache: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def shares(
        self,
        domain_ids: torch.Tensor,
        token_count: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None,
        batch_index: int | None,
    ) -> np.ndarray:
        """T_d / Σ_e T_e for the population ``num_items_in_batch`` counts (K values; 0 for a domain
        with no tokens there, which then has no sample in this micro-batch either)."""
        if num_items_in_batch is None:
            return _share(self._micro(domain_ids, token_count))
        n = int(num_items_in_batch.item() if isinstance(num_items_in_batch, torch.Tensor) else num_items_in_batch)
        if self.row_target_tokens is not None and batch_index is not None:
            # the plan's counts need no device transfer: try them before the micro-batch's own
            global_tokens, weighted_tokens, local_tokens = self._planned(batch_index)
            if n == int(global_tokens.sum()):
                return weighted_tokens / n
            if n == int(local_tokens.sum()):
                return _share(local_tokens)
        micro = self._micro(domain_ids, token_count)
        if n == int(micro.sum()):
            return _share(micro)
        if self.row_target_tokens is None or batch_index is None:
            raise ConfigError(
                "objective_normalization: domain needs the rows' target tokens when a step has several "
                "micro-batches or ranks (pass row_target_tokens= to StepEngine and batch_index=), or use "
                "objective_normalization: token"
            )
        raise ConfigError(
            f"objective_normalization: domain: num_items_in_batch = {n} is neither the step's target tokens "
            f"({int(global_tokens.sum())} on all ranks, {int(local_tokens.sum())} on this one) nor the "
            f"micro-batch's ({int(micro.sum())}); use objective_normalization: token for this loop"
        )

    def _micro(self, domain_ids: torch.Tensor, token_count: torch.Tensor) -> np.ndarray:
        """Target tokens per domain of this micro-batch."""
        k = self.sampler.num_domains
        return np.bincount(domain_ids.cpu().numpy(), weights=token_count.cpu().numpy(), minlength=k)

    def _planned(self, batch_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Target tokens per domain of planned batch ``batch_index``: all ranks', the same with rare
        domains scaled to their expected rows, and this rank's."""
        if self._cache is not None and self._cache[0] == batch_index:
            return self._cache[1]
        assert self.row_target_tokens is not None
        rows = self.sampler.planned_rows(batch_index)
        k = self.sampler.num_domains
        tokens = np.asarray(self.row_target_tokens(rows), dtype=np.float64)
        domains = self.sampler.domain_ids(rows)
        lo = self.sampler.rank * self.sampler.local_batch_size
        mine = slice(lo, lo + self.sampler.local_batch_size)
        global_tokens = np.bincount(domains, weights=tokens, minlength=k)
        # A rarely planned domain stands for p_d·B rows per step on average, not for r_d.
        expected = self.sampler.planned_weights(batch_index) * self.sampler.batch_size
        rows = np.bincount(domains, minlength=k)
        rare = (expected < 1) & (rows > 0)
        weighted = global_tokens.astype(np.float64)
        weighted[rare] *= expected[rare] / rows[rare]
        counts = (global_tokens, weighted, np.bincount(domains[mine], weights=tokens[mine], minlength=k))
        self._cache = (batch_index, counts)
        return counts


def _share(tokens: np.ndarray) -> np.ndarray:
    total = tokens.sum()
    return tokens / total if total > 0 else np.zeros_like(tokens)
