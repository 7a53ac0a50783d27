"""Sampling proportions of a static mixture, and validation of weight vectors.

The rules (README, `mixture_sample_rule`, "Static mixture — sampling"):

- ``mixture``: the given proportions, normalised; ``None`` means uniform;
- ``stratified``: ``p_i ∝ n_i`` (domain sizes), i.e. every row equally likely;
- ``uniform``: ``p_i = 1/K``;
- ``temperature``: ``p_i ∝ n_i^(1/τ)``; τ = 1 is stratified, τ → ∞ uniform.

Every error is a ``ValueError`` whose message is one line naming the
argument and what was expected, so a config front end can pass it on as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixflow.errors import ConfigError

__all__ = ["SAMPLE_RULES", "resolve_proportions", "unimax_proportions", "validate_domain_sizes", "validate_weights"]

SAMPLE_RULES = ("mixture", "stratified", "uniform", "temperature", "unimax")


def validate_weights(weights: Any, k: int, name: str = "weights") -> np.ndarray:
    """Check a vector of ``k`` non-negative finite weights with a positive sum; return it normalised.

    Returns a new float64 array summing to 1. Raises ``ValueError`` naming
    ``name`` when the length is not ``k``, an entry is not a finite number,
    an entry is negative, or all entries are zero.
    """
    if hasattr(weights, "detach") and hasattr(weights, "cpu"):
        # A torch tensor (algorithms work in torch); duck-typed so this module needs no torch.
        weights = weights.detach().cpu().double().numpy()
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise ConfigError(f"{name}: expected a list of {k} numbers (one per domain), got {type(weights).__name__}")
    if isinstance(weights, np.ndarray) and (weights.ndim != 1 or weights.dtype.kind not in "iuf"):
        raise ConfigError(
            f"{name}: expected a flat list of {k} numbers, got an array of {weights.dtype} with shape {weights.shape}"
        )
    if len(weights) != k:
        raise ConfigError(f"{name}: expected {k} values (one per domain), got {len(weights)}")
    if not isinstance(weights, np.ndarray):
        for i, w in enumerate(weights):
            # bool is an int subclass and "0.5" would convert: both are config mistakes.
            if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)):
                raise ConfigError(f"{name}: expected numbers, got {w!r} at index {i}")
    arr = np.array(weights, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ConfigError(f"{name}: expected finite values, got {arr[bad[0]]} at index {bad[0]}")
    neg = np.flatnonzero(arr < 0)
    if neg.size:
        raise ConfigError(f"{name}: expected non-negative values, got {arr[neg[0]]} at index {neg[0]}")
    with np.errstate(over="ignore"):  # an overflowing sum is reported below
        total = float(arr.sum())
    if not total > 0:
        raise ConfigError(f"{name}: expected a positive sum, got all zeros")
    if not math.isfinite(total):
        raise ConfigError(f"{name}: expected values whose sum is finite, got a sum that overflows")
    return arr / total


def validate_domain_sizes(domain_sizes: Any, name: str = "domain_sizes") -> np.ndarray:
    """Check a non-empty sequence of positive integer sizes; return it as int64."""
    if isinstance(domain_sizes, (str, bytes)) or not hasattr(domain_sizes, "__len__"):
        raise ConfigError(f"{name}: expected a list of positive integers, got {type(domain_sizes).__name__}")
    if len(domain_sizes) == 0:
        raise ConfigError(f"{name}: expected at least one domain, got an empty list")
    sizes = []
    for i, n in enumerate(domain_sizes):
        # bool is an int subclass; True as a size is surely a mistake.
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise ConfigError(f"{name}: expected positive integers, got {n!r} at index {i}")
        if int(n) < 1:
            raise ConfigError(f"{name}: expected positive integers, got {int(n)} at index {i}")
        sizes.append(int(n))
    return np.array(sizes, dtype=np.int64)


def resolve_proportions(
    rule: str,
    domain_sizes: Sequence[int],
    proportions: Sequence[float] | None = None,
    temperature: float = 1.0,
    budget: float | None = None,
    max_epochs: float = 1.0,
) -> np.ndarray:
    """Sampling proportions for a static mixture rule; a float64 array summing to 1.

    ``rule`` is one of ``mixture``, ``stratified``, ``uniform``,
    ``temperature``, ``unimax``. ``proportions`` is only used by ``mixture`` (``None``
    means uniform); when given with another rule it is still validated, so a
    list of the wrong length never passes silently. ``temperature`` (τ > 0)
    is only used by ``temperature``; ``budget`` (the rows the run draws, in the units of
    ``domain_sizes``) and ``max_epochs`` by ``unimax`` (:func:`unimax_proportions`).
    """
    if rule not in SAMPLE_RULES:
        raise ConfigError(f"rule: expected one of {', '.join(SAMPLE_RULES)}, got {rule!r}")
    sizes = validate_domain_sizes(domain_sizes)
    k = sizes.size
    given = None if proportions is None else validate_weights(proportions, k, name="proportions")

    if rule == "mixture":
        return given if given is not None else np.full(k, 1.0 / k)
    if rule == "uniform":
        return np.full(k, 1.0 / k)
    if rule == "stratified":
        return sizes / sizes.sum(dtype=np.float64)
    if rule == "unimax":
        if budget is None:
            raise ConfigError("mixture_sample_rule: unimax needs the run's budget (max_steps × global batch rows)")
        return unimax_proportions(sizes.tolist(), budget, max_epochs)

    if (
        isinstance(temperature, (bool, np.bool_))
        or not isinstance(temperature, (int, float, np.integer, np.floating))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ConfigError(f"temperature: expected a finite number > 0, got {temperature!r}")
    # In log space: n_i^(1/τ) overflows for small τ and large domains.
    logits = np.log(sizes.astype(np.float64)) / float(temperature)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def unimax_proportions(domain_sizes: Sequence[int], budget: float, max_epochs: float = 1.0) -> np.ndarray:
    """UniMax (Chung et al. 2023, arXiv 2304.09151, Algorithm 1): spread a budget of ``budget``
    units (tokens) as uniformly as possible over the domains, no domain repeated more than
    ``max_epochs`` times; what a small domain cannot take goes to the larger ones.

    Domains are visited from the smallest; each takes min(its cap, an equal share of what is left).
    Returns proportions summing to 1 (when every domain is capped, each is at its cap).
    """
    sizes = validate_domain_sizes(domain_sizes).astype(np.float64)
    for name, value in (("budget", budget), ("max_epochs", max_epochs)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not value > 0
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{name}: expected a finite number > 0, got {value!r}")
    alloc = np.zeros_like(sizes)
    left = float(budget)
    order = np.argsort(sizes, kind="stable")
    for rank, i in enumerate(order):
        alloc[i] = min(max_epochs * sizes[i], left / (len(order) - rank))
        left -= alloc[i]
    return alloc / alloc.sum()
