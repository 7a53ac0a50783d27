"""``mixflow search propose``: the mixture that minimises the fitted target, under constraints.

RegMix's simulation (Liu et al. 2024, arXiv 2407.01492, §3.3): predict the target on many random
mixtures and average the ``top_k`` best, which is steadier than the single best prediction. Every
candidate is first moved into the feasible set, which is convex, so the average of feasible
candidates is feasible too:

- ``fixed``: named domains get exactly their weight, the others share the rest;
- ``caps``: an upper bound per domain (a repetition cap: weight × tokens per run ≤ max epochs ×
  the domain's tokens, Olmix's repetition constraint); the excess of a capped domain goes to the
  others in proportion (water-filling);
- a trust region around the prior, ``kl`` (KL(w ‖ prior) ≤ ε) or ``l1`` (‖w − prior‖₁ ≤ ε): a
  candidate outside is pulled towards the prior along the segment until it is on the boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mixflow.config.errors import ConfigError, ConfigErrors


@dataclass
class Constraints:
    """What a proposed mixture must satisfy (all optional)."""

    fixed: dict[int, float] = field(default_factory=dict)
    """Domain index → its exact weight."""
    caps: dict[int, float] = field(default_factory=dict)
    """Domain index → the largest weight it may have."""
    prior: np.ndarray | None = None
    kl: float | None = None
    """Largest KL(w ‖ prior) (nats)."""
    l1: float | None = None
    """Largest ‖w − prior‖₁."""

    def check(self, k: int) -> None:
        """Whether any mixture satisfies them; every conflict in one go."""
        errors = []
        fixed = sum(self.fixed.values())
        if any(not 0 <= w <= 1 for w in self.fixed.values()) or fixed > 1 + 1e-9:
            errors.append(f"--fix: the fixed weights must be in [0, 1] and sum to at most 1, got {fixed:.4g}")
        free = [d for d in range(k) if d not in self.fixed]
        room = sum(min(self.caps.get(d, 1.0), 1.0) for d in free)
        if free and room < 1 - fixed - 1e-9:
            errors.append(
                f"caps: the free domains may hold at most {room:.4g} together, but {1 - fixed:.4g} is "
                "left after the fixed weights; raise --max-epochs or fix fewer domains"
            )
        if not free and abs(fixed - 1) > 1e-9:
            errors.append(f"--fix: every domain is fixed but the weights sum to {fixed:.4g}, expected 1")
        for d, w in self.fixed.items():
            if w > self.caps.get(d, 1.0) + 1e-12:
                errors.append(f"--fix: domain {d} is fixed at {w:.4g}, above its cap {self.caps.get(d, 1.0):.4g}")
        if self.kl is not None and self.l1 is not None:
            errors.append("--kl and --l1: give one trust region, not both")
        if any(r is not None and r < 0 for r in (self.kl, self.l1)):
            errors.append("--kl/--l1: expected a radius >= 0")
        if (self.kl is not None or self.l1 is not None) and self.prior is None:
            errors.append("--kl/--l1: a trust region needs a prior mixture")
        elif self.prior is not None and (self.kl is not None or self.l1 is not None) and not errors:
            start = self._center()
            if self._distance(start[None, :])[0] > (self.kl if self.kl is not None else self.l1) + 1e-12:  # type: ignore[operator]
                errors.append(
                    "--kl/--l1: the prior, once its fixed weights and caps are applied, is already "
                    "outside the trust region; widen it"
                )
        if errors:
            raise ConfigErrors(errors)

    def apply(self, w: np.ndarray) -> np.ndarray:
        """Candidates [n, K] moved into the feasible set."""
        out = _fix(w, self.fixed) if self.fixed else w / w.sum(axis=1, keepdims=True)
        if self.caps:
            out = _water_fill(out, self.caps, set(self.fixed))
        if self.prior is not None and (self.kl is not None or self.l1 is not None):
            out = self._trust_region(out)
        return out

    def _center(self) -> np.ndarray:
        """The prior with the fixed weights and caps applied: the trust region's feasible centre."""
        assert self.prior is not None
        center = self.prior[None, :]
        center = _fix(center, self.fixed) if self.fixed else center / center.sum()
        return (_water_fill(center, self.caps, set(self.fixed)) if self.caps else center)[0]

    def _distance(self, x: np.ndarray) -> np.ndarray:
        """KL(x ‖ prior) or ‖x − prior‖₁ per row."""
        assert self.prior is not None
        if self.kl is not None:
            safe = np.where(x > 0, x, 1.0)
            return np.sum(np.where(x > 0, x * np.log(safe / np.maximum(self.prior, 1e-300)), 0.0), axis=1)
        return np.sum(np.abs(x - self.prior), axis=1)

    def _trust_region(self, w: np.ndarray) -> np.ndarray:
        """Each candidate outside the region moved along the segment from the centre towards it, to the
        boundary (the distance is convex along the segment; both ends satisfy the fixed weights and
        caps, so every point between does)."""
        radius = self.kl if self.kl is not None else self.l1
        assert radius is not None
        center = self._center()
        lo, hi = np.zeros(len(w)), np.ones(len(w))
        inside = self._distance(w) <= radius
        for _ in range(40):
            mid = (lo + hi) / 2
            ok = self._distance(center + mid[:, None] * (w - center)) <= radius
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        t = np.where(inside, 1.0, lo)
        return center + t[:, None] * (w - center)


def _fix(w: np.ndarray, fixed: dict[int, float]) -> np.ndarray:
    out = w.copy()
    free = [d for d in range(w.shape[1]) if d not in fixed]
    rest = 1.0 - sum(fixed.values())
    share = out[:, free].sum(axis=1, keepdims=True)
    out[:, free] = np.where(share > 0, out[:, free] / np.where(share > 0, share, 1.0), 1.0 / max(len(free), 1)) * rest
    for d, v in fixed.items():
        out[:, d] = v
    return out


def _water_fill(w: np.ndarray, caps: dict[int, float], fixed: set[int]) -> np.ndarray:
    """Clip each capped domain and hand its excess to the domains still below their caps, in
    proportion to their weight (repeated until nothing exceeds; at most K rounds)."""
    out = w.copy()
    k = w.shape[1]
    cap = np.array([caps.get(d, 1.0) for d in range(k)])
    movable = np.array([d not in fixed for d in range(k)])
    for _ in range(k):
        over = np.maximum(out - cap, 0.0) * movable
        excess = over.sum(axis=1, keepdims=True)
        if not np.any(excess > 1e-15):
            break
        out = out - over
        room = (out < cap - 1e-15) & movable
        base = np.where(room, np.maximum(out, 1e-12), 0.0)
        out = out + excess * base / np.maximum(base.sum(axis=1, keepdims=True), 1e-300)
    return out


def repetition_caps(
    tokens: dict[str, float], domains: list[str], tokens_per_run: float, max_epochs: float
) -> dict[int, float]:
    """Per domain, the largest weight that reads its tokens at most ``max_epochs`` times in a run of
    ``tokens_per_run`` tokens."""
    missing = [d for d in domains if d not in tokens]
    if missing:
        raise ConfigError(f"--domain-tokens: no token count for {', '.join(missing)}")
    return {i: min(1.0, max_epochs * float(tokens[d]) / tokens_per_run) for i, d in enumerate(domains)}


def simulate(
    predict: Callable[[np.ndarray], np.ndarray],
    k: int,
    constraints: Constraints,
    prior: np.ndarray | None,
    candidates: int = 100_000,
    top_k: int = 128,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(the mean of the ``top_k`` feasible candidates with the lowest prediction, those candidates).
    Half the candidates are drawn around the prior (Dirichlet α = prior·K, RegMix's), half over the
    whole simplex (α = 1), so a good mixture far from the prior is not missed."""
    if candidates < 1 or top_k < 1:
        raise ConfigError(f"--candidates and --top-k: expected integers >= 1, got {candidates} and {top_k}")
    constraints.check(k)
    rng = np.random.default_rng(seed)
    center = prior if prior is not None else np.full(k, 1.0 / k)
    half = candidates // 2
    w = np.vstack(
        [rng.dirichlet(np.maximum(center * k, 1e-3), size=half), rng.dirichlet(np.ones(k), size=candidates - half)]
    )
    w = constraints.apply(w)
    predicted = predict(w)
    best = w[np.argsort(predicted, kind="stable")[: max(1, min(top_k, len(w)))]]
    mixture = best.mean(axis=0)
    return mixture / mixture.sum(), best
