"""The arena's measures of a set of runs: the fraction of the natural → best-static gap a method closes,
the arena's calibration (its power to tell mixtures apart), and the steps a method needs to reach a loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixflow.bench.stats import ratio_interval

TARGET = "target loss"


def steps_to(curve: dict[str, Any], clean: list[str], target: float) -> float | None:
    """The first evaluation step whose mean clean validation loss is ≤ ``target``; None: never (censored)."""
    losses = [curve["losses"][d] for d in clean if d in curve["losses"]]
    for i, step in enumerate(curve["steps"]):
        if losses and np.mean([dl[i] for dl in losses]) <= target:
            return float(step)
    return None


def mean_curve(curve: dict[str, Any], clean: list[str]) -> list[float]:
    return [float(np.mean([curve["losses"][d][i] for d in clean])) for i in range(len(curve["steps"]))]


def gap_closed(runs: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[float, float, float]]:
    """Per method: the fraction of the natural → best-static gap in mean target loss it closes, with
    Fieller's 95% interval over the seeds' paired differences (1: as good as the best static
    mixture; < 0: worse than natural; bounds ±∞ when the gap itself is inside the seed noise)."""
    nat = [r[TARGET] for r in runs["natural"]]
    gap = [n - r[TARGET] for n, r in zip(nat, runs["best static"])]
    return {
        method: ratio_interval([n - r[TARGET] for n, r in zip(nat, results)], gap) for method, results in runs.items()
    }


def bound_text(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else ("−∞" if x < 0 else "∞")


def calibration(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The arena's power: the seed sd of the best static mixture's target loss over the natural →
    best-static gap (target ≤ 0.25), and |natural − uniform| in those seed sd (target > 4)."""
    best = np.array([r[TARGET] for r in runs["best static"]])
    nat = np.array([r[TARGET] for r in runs["natural"]])
    uni = np.array([r[TARGET] for r in runs["uniform"]])
    sd = float(np.std(best, ddof=1)) if len(best) > 1 else math.nan
    gap = float(nat.mean() - best.mean())
    # what the paired intervals see: the spread of the seeds' differences, not of the runs themselves
    paired = float(np.std(nat - best, ddof=1)) if len(best) > 1 else math.nan
    return {
        "seed sd of best static": sd,
        "natural − best static": gap,
        "sd / gap": sd / gap if gap > 0 else math.inf,
        "|natural − uniform| / sd": abs(float(nat.mean() - uni.mean())) / sd if sd > 0 else math.inf,
        "paired sd of natural − best static": paired,
    }
