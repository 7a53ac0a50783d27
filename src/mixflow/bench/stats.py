"""Paired comparisons with 95% intervals: what every benchmark verdict rests on.

A benchmark runs each method and its baseline on the same seeds, so each seed gives one paired
difference (method − baseline), or one log ratio for metrics that scale (time, throughput, error
ratios). The comparison reports the mean difference with a Student-t interval over the seeds and
a verdict: ``better`` or ``worse`` only when the whole interval lies beyond the stated minimum effect
on that side, ``no different`` otherwise, which is a verdict of its own. A claim that a benchmark
tests is a range the whole interval must fall in (``claim_range``): a mean on the right side of a
threshold is not enough.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

LEVEL = 0.95
#: What a bootstrap resamples: measured values, or the indices of units (``bootstrap_comparison``).
_T = TypeVar("_T")


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the regularized incomplete beta function, evaluated by the modified
    # Lentz method (Press et al., Numerical Recipes, §6.4).
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`, to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: expected a probability in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lower, upper): the Student-t interval of the mean; (mean, −∞, ∞) from one value, all
    NaN when a value is not finite (a failed run is never dropped to make an interval)."""
    xs = [float(v) for v in values]
    if not xs or not all(math.isfinite(v) for v in xs):
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, -math.inf, math.inf
    half = t_quantile(0.5 + level / 2.0, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def ratio_interval(
    numerators: Sequence[float], denominators: Sequence[float], level: float = LEVEL
) -> tuple[float, float, float]:
    """(mean(a) / mean(b), lower, upper) for paired per-seed values a, b: Fieller's interval (Fieller
    1954), exact for normal errors at any number of seeds, where a bootstrap over 3–5 seeds has only a
    handful of distinct resamples and is too narrow. The set {θ : (ā − θ b̄)² ≤ t² Var(ā − θ b̄)} is an
    interval when b̄ is clearly non-zero; when the interval for b̄ itself contains 0 the ratio is not
    determined and the bounds are (−∞, ∞). NaN when a value is not finite or fewer than two pairs."""
    a, b = [float(v) for v in numerators], [float(v) for v in denominators]
    if len(a) != len(b):
        raise ValueError(f"ratio_interval: {len(a)} numerators for {len(b)} denominators")
    if len(a) < 2 or not all(math.isfinite(v) for v in a + b):
        return math.nan, math.nan, math.nan
    n = len(a)
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    value = ma / mb if mb != 0 else math.nan
    vaa = statistics.variance(a) / n
    vbb = statistics.variance(b) / n
    vab = sum((x - ma) * (y - mb) for x, y in zip(a, b)) / (n - 1) / n
    t2 = t_quantile(0.5 + level / 2.0, n - 1) ** 2
    qa, qb, qc = mb * mb - t2 * vbb, ma * mb - t2 * vab, ma * ma - t2 * vaa
    disc = qb * qb - qa * qc
    if qa <= 0 or disc < 0:
        return value, -math.inf, math.inf
    root = math.sqrt(disc)
    return value, (qb - root) / qa, (qb + root) / qa


def bootstrap_interval(
    values: Sequence[_T],
    statistic: Callable[[Sequence[_T]], float],
    level: float = LEVEL,
    resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic, lower, upper): a percentile bootstrap interval, for statistics that are not a mean
    (a median, a censored quantity). Deterministic for a given ``seed``."""
    xs = list(values)
    if not xs:
        return math.nan, math.nan, math.nan
    rng = random.Random(seed)
    stats = sorted(statistic([xs[rng.randrange(len(xs))] for _ in xs]) for _ in range(resamples))
    k = (1.0 - level) / 2.0
    lo = stats[min(resamples - 1, int(math.floor(k * resamples)))]
    hi = stats[min(resamples - 1, int(math.ceil((1.0 - k) * resamples)) - 1)]
    return statistic(xs), lo, hi


@dataclass(frozen=True)
class Comparison:
    """A method against a baseline on one metric, paired by seed.

    ``scale="difference"``: the per-seed value is method − baseline. ``scale="ratio"``: it is
    log(method / baseline), and the mean and interval are reported as ratios (the geometric mean),
    so 1.0 means no difference.
    """

    method: str
    baseline: str
    metric: str
    values: tuple[float, ...]
    """Per-seed paired differences, or log ratios."""
    better: str
    """"lower" or "higher": which side of no difference is good for the method."""
    scale: str = "difference"
    min_effect: float = 0.0
    """The smallest difference that counts (a ratio scale's relative margin, 0.05 = 5%); smaller is "no different"."""
    claim_range: tuple[float | None, float | None] | None = None
    """Where the whole interval must lie for the benchmark's claim to hold (on the reported scale;
    None: open); None when this comparison is reported, not judged."""
    bootstrap: tuple[float, float, float] | None = None
    """(estimate, lower, upper) of a percentile bootstrap over ``bootstrap_units``, for a metric that
    is not a mean over seeds (a rank correlation over runs); None: the t-interval over ``values``."""
    bootstrap_units: str = ""
    """What the bootstrap resampled ("runs")."""
    bootstrap_n: int = 0
    """How many of them (reported as ``n_seeds``: the interval's sample size)."""

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher"):
            raise ValueError(f"better: expected 'lower' or 'higher', got {self.better!r}")
        if self.scale not in ("difference", "ratio"):
            raise ValueError(f"scale: expected 'difference' or 'ratio', got {self.scale!r}")

    @property
    def interval(self) -> tuple[float, float, float]:
        """(mean, lower, upper) on the reported scale."""
        if self.bootstrap is not None:
            return self.bootstrap
        mean, lo, hi = mean_interval(self.values)
        if self.scale == "ratio":
            return math.exp(mean), math.exp(lo), math.exp(hi)
        return mean, lo, hi

    @property
    def verdict(self) -> str:
        """ "better", "worse" or "no different" (the interval reaches the margin or is undefined)."""
        _, lo, hi = self.interval
        if math.isnan(lo):
            return "no different"
        if self.scale == "ratio":
            up, down = 1.0 + self.min_effect, 1.0 / (1.0 + self.min_effect)
        else:
            up, down = self.min_effect, -self.min_effect
        if lo > up:
            return "better" if self.better == "higher" else "worse"
        if hi < down:
            return "better" if self.better == "lower" else "worse"
        return "no different"

    @property
    def passes(self) -> bool | None:
        """Whether the whole interval lies inside ``claim_range`` (None when not judged)."""
        if self.claim_range is None:
            return None
        _, lo, hi = self.interval
        low, high = self.claim_range
        if math.isnan(lo):
            return False
        return (low is None or lo > low) and (high is None or hi < high)

    def as_dict(self) -> dict[str, Any]:
        mean, lo, hi = self.interval
        out: dict[str, Any] = {
            "method": self.method,
            "baseline": self.baseline,
            "metric": self.metric,
            "scale": self.scale,
            "diff_mean": mean,
            "ci95": [lo, hi],
            "verdict": self.verdict,
            "n_seeds": self.bootstrap_n if self.bootstrap is not None else len(self.values),
            "better_when": self.better,
            "min_effect": self.min_effect,
            "values": list(self.values),
        }
        if self.claim_range is not None:
            out["claim_range"] = list(self.claim_range)
            out["passes"] = self.passes
        if self.bootstrap is not None:
            out["interval"] = f"percentile bootstrap over {self.bootstrap_n} {self.bootstrap_units}"
        return out

    def describe(self) -> str:
        """One phrase: "PiKE vs best static, final loss: −0.012 [−0.020, −0.004], better"."""
        mean, lo, hi = self.interval
        unit = "×" if self.scale == "ratio" else ""
        return (
            f"{self.method} vs {self.baseline}, {self.metric}: {_num(mean)}{unit} "
            f"[{_num(lo)}, {_num(hi)}]{unit}, {self.verdict}"
        )


def _num(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else ("–" if math.isnan(x) else ("∞" if x > 0 else "−∞"))


def compare(
    method: str,
    method_values: Sequence[float],
    baseline: str,
    baseline_values: Sequence[float],
    metric: str,
    better: str,
    scale: str = "difference",
    min_effect: float = 0.0,
    claim_range: tuple[float | None, float | None] | None = None,
) -> Comparison:
    """A :class:`Comparison` from two lists of per-seed values in seed order."""
    if len(method_values) != len(baseline_values):
        raise ValueError(f"{metric}: {method} has {len(method_values)} seeds, {baseline} {len(baseline_values)}")
    pairs = zip(method_values, baseline_values)
    if scale == "ratio":
        values = tuple(math.log(m / b) if m > 0 and b > 0 else math.nan for m, b in pairs)
    else:
        values = tuple(float(m) - float(b) for m, b in pairs)
    return Comparison(method, baseline, metric, values, better, scale, min_effect, claim_range)


def against_value(
    method: str,
    values: Sequence[float],
    value: float,
    metric: str,
    better: str,
    claim_range: tuple[float | None, float | None] | None = None,
    min_effect: float = 0.0,
) -> Comparison:
    """One method's values against a fixed value (a claimed ratio, a bound), as a difference."""
    return compare(
        method,
        values,
        f"{value:g}",
        [value] * len(values),
        metric,
        better,
        min_effect=min_effect,
        claim_range=claim_range,
    )


def bootstrap_comparison(
    method: str,
    baseline: str,
    metric: str,
    statistic: Callable[[Sequence[int]], float],
    units: int,
    better: str,
    what: str,
    claim_range: tuple[float | None, float | None] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """``statistic`` (a function of the indices of ``units`` measured units, e.g. runs: a difference of
    rank correlations on the same runs) with its percentile bootstrap interval over those units."""
    estimate, lo, hi = bootstrap_interval(list(range(units)), statistic, resamples=resamples, seed=seed)
    return Comparison(
        method,
        baseline,
        metric,
        (estimate,),
        better,
        claim_range=claim_range,
        bootstrap=(estimate, lo, hi),
        bootstrap_units=what,
        bootstrap_n=units,
    )


def interval_text(c: Comparison) -> str:
    """ "1.04× [1.01, 1.07]": a comparison's mean and interval, for verdict sentences."""
    mean, lo, hi = c.interval
    unit = "×" if c.scale == "ratio" else ""
    return f"{_num(mean)}{unit} [{_num(lo)}, {_num(hi)}]"
