"""Epochs seen per domain, and the step at which a domain with ``max_epochs`` left the mixture."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixflow.data.sampler import MixtureSampler

logger = logging.getLogger(__name__)


class DomainEpochs:
    """How many times each domain's training rows have been seen, read off the sampler; when a
    capped domain gives its last row, one warning and the step it happened (kept in the state)."""

    def __init__(self, sampler: MixtureSampler, domain_names: Sequence[str]) -> None:
        self.sampler, self.domain_names = sampler, list(domain_names)
        self.sizes = np.asarray(sampler.domain_sizes, dtype=np.float64)
        #: domain -> the optimizer step whose batch took its last row under max_epochs
        self.left: dict[str, int] = {}

    def seen(self, step: int) -> np.ndarray:
        """Epochs per domain after ``step`` optimizer steps (rows given / training rows)."""
        return self.sampler.drawn_before(step) / self.sizes

    def after_step(self, step: int) -> None:
        """Note (once, with a warning) every domain whose cap step ``step`` reached."""
        caps = self.sampler.row_caps
        if caps is None:
            return
        drawn = self.sampler.drawn_before(step)
        for d in np.flatnonzero(drawn >= caps).tolist():
            name = self.domain_names[d]
            if name not in self.left:
                self.left[name] = step
                logger.warning(
                    "domain %r reached max_epochs (%.3g epochs, %d rows) at step %d: it leaves the "
                    "mixture and the other domains share its part of p",
                    name,
                    caps[d] / self.sizes[d],
                    int(caps[d]),
                    step,
                )

    def metrics(self, step: int) -> dict[str, float]:
        """``mix/epochs/<domain>`` after ``step`` steps."""
        return {f"mix/epochs/{n}": float(e) for n, e in zip(self.domain_names, self.seen(step))}

    def results(self, step: int) -> dict[str, Any]:
        """For ``mixflow_results.json``: ``epochs`` per domain and, where a cap was reached,
        ``left_the_mixture`` (the step, per domain)."""
        out: dict[str, Any] = {"epochs": dict(zip(self.domain_names, self.seen(step).tolist()))}
        if self.left:
            out["left_the_mixture"] = dict(self.left)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"left": dict(self.left)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.left = {str(k): int(v) for k, v in state.get("left", {}).items()}
