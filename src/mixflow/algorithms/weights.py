"""Operations on weight vectors that several algorithms share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixflow.errors import ConfigError


def as_distribution(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` normalised to sum 1; an error naming ``name`` unless finite, non-negative, positive sum."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise ConfigError(f"{name}: expected finite non-negative values with a positive sum, got {arr.tolist()}")
    return arr / arr.sum()


def floor_weights(target: np.ndarray, floor: float, keep_zeros: bool = False) -> np.ndarray:
    """The distribution closest to ``target`` with every entry >= ``floor``: floored entries sit at
    the floor and the others keep their ratios (water-filling). ``keep_zeros``: entries whose target
    is 0 stay 0 and are not floored (a domain the objective does not contain)."""
    target = np.asarray(target, dtype=np.float64)
    active = target > 0 if keep_zeros else np.ones(target.size, dtype=bool)
    w = np.where(active, target, 0.0)
    w = w / w.sum()
    if floor <= 0:
        return w
    if floor * active.sum() >= 1:
        return active / active.sum()
    fixed = np.zeros(w.size, dtype=bool)
    while True:
        free = active & ~fixed
        scale = (1.0 - floor * fixed.sum()) / w[free].sum()
        below = free & (w * scale < floor)
        if not below.any():
            return np.where(fixed, floor, w * scale)
        fixed |= below


@dataclass(frozen=True)
class Weights:
    """What a hook of an algorithm returns: the new value of each vector it changes (None: unchanged).

    The base class applies it (:meth:`mixflow.algorithms.base.DomainAlgorithm.apply_update`); an
    algorithm never writes its weights itself."""

    sampling: np.ndarray | Sequence[float] | None = None
    """p, the distribution the sampler draws domains from."""
    loss: np.ndarray | Sequence[float] | None = None
    """w, the per-domain loss weights."""
    scores: np.ndarray | Sequence[float] | None = None
    """The per-domain scores this update computed (logged as ``perdomain_scores``)."""


def invalid_weights(weights: Weights) -> str | None:
    """Why ``weights`` cannot be used (p not finite, negative or summing to 0; w not finite or
    negative), or None when they can."""
    if weights.sampling is not None:
        p = np.asarray(weights.sampling, dtype=np.float64)
        if not (np.all(np.isfinite(p)) and np.all(p >= 0) and p.sum() > 0):
            return f"sampling weights {p.tolist()} are not finite and non-negative with a positive sum"
    if weights.loss is not None:
        w = np.asarray(weights.loss, dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
            return f"loss weights {w.tolist()} are not finite and non-negative"
    return None
