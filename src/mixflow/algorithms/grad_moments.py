"""Gradient moments smoothed across updates (ours; PiKE's estimator, issue "PiKE on its own estimates").

One window's group-split estimate of ‖∇L_k‖² is ‖ĝ_k‖² − σ̂_k²/b_k: near an optimum ‖∇L_k‖² is small
next to σ²/b and the difference is mostly noise (2–13 samples per task per batch). Pooling the
groups of the last updates with exponentially decaying weights a = β^age lowers that variance by
about (1 − β)/(1 + β), at the price of a lag of about β/(1 − β) updates while θ moves.

With weights a_j on the group-mean gradients v_j (V1 = Σ a_j, V2 = Σ a_j²):

    ĝ   = Σ a_j v_j / V1                                  weighted mean gradient
    s²  = (Σ a_j ‖v_j‖² − V1 ‖ĝ‖²) / (V1 − V2/V1)           unbiased weighted variance of a group mean
    ‖∇L‖² ≈ ‖ĝ‖² − s²·V2/V1²   (floored at 0)               E‖ĝ‖² = ‖∇L‖² + Var(ĝ), Var(ĝ) = s²·V2/V1²
    σ²  = s² · (samples per group)                        per-sample variance

With β = 0 this is exactly :func:`mixflow.algorithms.statistics.gradient_moments`. All sums decay by
β (V2 by β²) before each window's sums are added, so the state is five arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixflow.algorithms.statistics import GRAD_GROUPS, GRAD_SAMPLES, GRAD_SQ_SUM, GRAD_SUM, DomainStats, gradient_sums

#: Names of the smoothed sums, in state order.
FIELDS = ("grad_sum", "grad_sq_sum", "groups", "groups_sq", "samples")


def smooth_gradient_sums(state: dict[str, Any] | None, stats: DomainStats, beta: float) -> dict[str, np.ndarray]:
    """The sums after decaying ``state`` by β and adding this window's ``grad_stats`` sums."""
    sums = gradient_sums(stats)
    new = {
        "grad_sum": sums[GRAD_SUM].numpy(),
        "grad_sq_sum": sums[GRAD_SQ_SUM].numpy(),
        "groups": sums[GRAD_GROUPS].numpy(),
        "samples": sums[GRAD_SAMPLES].numpy(),
    }
    new["groups_sq"] = new["groups"].copy()  # each new group has weight 1
    if not state:
        return {k: new[k].copy() for k in FIELDS}
    old = {k: np.asarray(state[k], dtype=np.float64) for k in FIELDS}
    if old["grad_sum"].shape != new["grad_sum"].shape:
        raise ValueError(
            f"grad_stats: gradient sketch shape changed from {old['grad_sum'].shape} to {new['grad_sum'].shape}"
        )
    decay = {"groups_sq": beta * beta}
    return {k: decay.get(k, beta) * old[k] + new[k] for k in FIELDS}


def smoothed_moments(sums: dict[str, np.ndarray], floor: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(‖∇L_k‖², σ_k²) from smoothed sums; NaN where fewer than two groups' worth of weight.
    ``floor: false`` keeps the unbiased ‖∇L_k‖² estimate, which can be negative."""
    v1, v2 = sums["groups"], sums["groups_sq"]
    ok = (v1 > 0) & (v1 * v1 > v2 * (1 + 1e-12))  # effective groups V1²/V2 > 1
    safe_v1 = np.where(ok, v1, 1.0)
    mean = sums["grad_sum"] / safe_v1[:, None]
    mean_sq = np.square(mean).sum(axis=1)
    denom = np.where(ok, safe_v1 - v2 / safe_v1, 1.0)
    s2 = np.maximum((sums["grad_sq_sum"] - safe_v1 * mean_sq) / denom, 0.0)
    norm_sq = mean_sq - s2 * v2 / safe_v1**2
    if floor:
        norm_sq = np.maximum(norm_sq, 0.0)
    sigma2 = s2 * sums["samples"] / safe_v1
    return np.where(ok, norm_sq, np.nan), np.where(ok, sigma2, np.nan)
