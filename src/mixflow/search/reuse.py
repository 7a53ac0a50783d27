"""Mixture reuse when the domains change (Olmix, Chen et al. 2026, arXiv 2602.12237, mixture reuse):
the earlier proposal's ratios among the domains that stay are frozen into one virtual domain, so a new
swarm only varies that domain's total and the added domains — K' = 1 + added instead of K. Removed
domains cost nothing: the earlier mixture is renormalised over the rest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.config.errors import ConfigError

#: The column of the virtual domain in a reuse plan's tables.
VIRTUAL = "reused"


@dataclass(frozen=True)
class Reuse:
    """How a reduced mixture (virtual domain, added domains) expands to the config's domains."""

    domains: list[str]
    """The config's domains, in its order."""
    ratios: dict[str, float]
    """The kept domains' frozen shares of the virtual domain (they sum to 1)."""
    added: list[str]
    removed: list[str]

    @property
    def columns(self) -> list[str]:
        """The swarm's mixture columns: the virtual domain, then the added ones."""
        return [VIRTUAL, *self.added]

    def expand(self, reduced: np.ndarray) -> np.ndarray:
        """Mixtures [n, 1 + added] → [n, K] in the config's domain order."""
        reduced = np.atleast_2d(reduced)
        out = np.zeros((len(reduced), len(self.domains)))
        for j, d in enumerate(self.domains):
            out[:, j] = reduced[:, 0] * self.ratios[d] if d in self.ratios else reduced[:, 1 + self.added.index(d)]
        return out

    def reduce(self, full: np.ndarray) -> np.ndarray:
        """A prior over the config's domains → over (virtual, added)."""
        kept = sum(full[self.domains.index(d)] for d in self.ratios)
        reduced = np.array([kept, *(full[self.domains.index(d)] for d in self.added)])
        return reduced / reduced.sum()

    def as_dict(self) -> dict[str, Any]:
        return {"virtual": VIRTUAL, "ratios": self.ratios, "added": self.added, "removed": self.removed}


def earlier_proposal(path: str | Path) -> dict[str, float]:
    """The mixture of an earlier ``mixflow search propose`` (its proposal.json, or the folder holding it)."""
    p = Path(path)
    file = p / "proposal.json" if p.is_dir() else p
    try:
        mixture = json.loads(file.read_text(encoding="utf-8"))["mixture"]
        return {str(d): float(w) for d, w in mixture.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"--reuse: {file}: not a mixflow search proposal ({err}); give the folder of an earlier "
            "mixflow search propose"
        ) from None


def plan_reuse(earlier: dict[str, float], domains: list[str]) -> Reuse:
    """The reuse of ``earlier`` for ``domains``: kept, added and removed domains."""
    kept = [d for d in domains if d in earlier]
    total = sum(earlier[d] for d in kept)
    if not kept or total <= 0:
        raise ConfigError(
            f"--reuse: no domain of the earlier mixture ({', '.join(earlier)}) is in this config "
            f"({', '.join(domains)}), or they had no weight: nothing to reuse; plan without --reuse"
        )
    return Reuse(
        list(domains),
        {d: earlier[d] / total for d in kept},
        [d for d in domains if d not in earlier],
        [d for d in earlier if d not in domains],
    )


def runs_saved(runs: int, reuse: Reuse) -> int:
    """How many more runs a full plan would need at the same runs per mixture dimension."""
    full = math.ceil(runs * len(reuse.domains) / len(reuse.columns))
    return max(0, full - runs)
