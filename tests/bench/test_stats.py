"""Paired comparisons: Student-t intervals, verdicts against a minimum effect, claims judged by the whole
interval, failed seeds never dropped."""

import math

import pytest

from mixflow.bench.base import BenchResult, Row
from mixflow.bench.stats import (
    against_value,
    bootstrap_comparison,
    bootstrap_interval,
    compare,
    mean_interval,
    ratio_interval,
    t_cdf,
    t_quantile,
)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 200])
def test_t_quantile_matches_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.9, 0.975, 0.995):
        assert math.isclose(t_quantile(p, df), stats.t.ppf(p, df), rel_tol=1e-8)
        assert math.isclose(t_cdf(-1.3, df), stats.t.cdf(-1.3, df), rel_tol=1e-9)


def test_mean_interval_is_the_t_interval():
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) · sd / √n with sd = 1
    assert mean == 2.0 and math.isclose(lo, 2.0 - half) and math.isclose(hi, 2.0 + half)
    assert mean_interval([5.0]) == (5.0, -math.inf, math.inf)


def test_a_failed_seed_is_never_dropped():
    assert all(math.isnan(x) for x in mean_interval([1.0, math.nan, 2.0]))
    row = Row("uniform", "steps", [125.0, math.nan, math.nan]).as_dict()
    assert math.isnan(row["mean"]) and math.isnan(row["sd"]) and row["values"][0] == 125.0


def test_verdicts_need_the_whole_interval_beyond_the_margin():
    lower_loss = compare("m", [1.0, 1.1, 0.9, 1.0], "b", [2.0, 2.05, 1.95, 2.0], "loss", "lower")
    assert lower_loss.verdict == "better" and lower_loss.interval[2] < 0
    assert compare("m", [1.0, 1.1, 0.9, 1.0], "b", [2.0, 2.05, 1.95, 2.0], "acc", "higher").verdict == "worse"
    noisy = compare("m", [1.0, 3.0, 0.0, 2.5], "b", [1.5, 1.0, 1.2, 1.1], "loss", "lower")
    assert noisy.verdict == "no different"
    # a clear but small difference is "no different" under a larger minimum effect
    small = compare("m", [1.00, 1.01, 0.99, 1.00], "b", [1.10, 1.11, 1.09, 1.10], "loss", "lower", min_effect=0.5)
    assert small.verdict == "no different"


def test_ratio_scale_reports_geometric_mean_ratios():
    c = compare("fast", [2.0, 2.3, 1.75], "slow", [1.0, 1.1, 0.9], "samples/s", "higher", scale="ratio")
    mean, lo, hi = c.interval
    assert math.isclose(mean, (2.0 * 2.3 / 1.1 * 1.75 / 0.9) ** (1 / 3)) and lo < mean < hi and c.verdict == "better"
    assert c.as_dict()["scale"] == "ratio" and c.as_dict()["n_seeds"] == 3


def test_a_claim_holds_only_when_the_whole_interval_is_in_its_range():
    inside = compare("m", [1.0, 1.02, 0.98], "b", [0.0, 0.0, 0.0], "gain", "higher", claim_range=(0.5, None))
    crossing = compare("m", [1.0, 0.2, 1.9], "b", [0.0, 0.0, 0.0], "gain", "higher", claim_range=(0.5, None))
    assert inside.passes is True and crossing.passes is False
    assert crossing.interval[0] > 0.5  # its mean alone would have said "holds"
    band = against_value("FGLS", [9.5, 10.2, 10.1, 9.9], 10.0, "w1/w2", "higher", claim_range=(-2.0, 2.0))
    assert band.passes is True and band.baseline == "10"
    result = BenchResult(setting={}, rows=[], holds=None, verdict="", comparisons=[inside, crossing])
    assert result.judge() is False


def test_bootstrap_interval_is_deterministic_and_brackets_the_statistic():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    first = bootstrap_interval(values, median, resamples=2000, seed=1)
    assert first == bootstrap_interval(values, median, resamples=2000, seed=1)
    assert first[1] <= first[0] <= first[2]


def test_fieller_ratio_interval_covers_at_its_level_with_three_seeds_where_a_bootstrap_does_not():
    import random

    rng = random.Random(5)
    theta, trials, fieller_hits, bootstrap_hits = 0.6, 1500, 0, 0
    for _ in range(trials):
        seed_effect = [rng.gauss(0, 0.05) for _ in range(3)]  # shared by a and b: paired seeds
        b = [0.2 + e + rng.gauss(0, 0.02) for e in seed_effect]
        a = [theta * 0.2 + 0.8 * e + rng.gauss(0, 0.02) for e in seed_effect]
        value, lo, hi = ratio_interval(a, b)
        fieller_hits += lo <= theta <= hi
        ratio = lambda idx, a=a, b=b: sum(a[i] for i in idx) / sum(b[i] for i in idx)  # noqa: E731
        _, blo, bhi = bootstrap_interval([0, 1, 2], ratio, resamples=200, seed=1)
        bootstrap_hits += blo <= theta <= bhi
    assert 0.93 <= fieller_hits / trials <= 0.97
    assert bootstrap_hits / trials < 0.85  # 10 distinct resamples of 3 seeds: far too narrow


def test_fieller_ratio_interval_edge_cases():
    assert ratio_interval([0.3, 0.2, 0.25], [0.3, 0.2, 0.25]) == pytest.approx((1.0, 1.0, 1.0))
    # a denominator inside its own noise: the ratio is not determined
    value, lo, hi = ratio_interval([0.1, 0.2, 0.15], [0.1, -0.1, 0.02])
    assert lo == -math.inf and hi == math.inf
    assert all(math.isnan(x) for x in ratio_interval([0.1], [0.2]))
    with pytest.raises(ValueError, match="3 numerators for 2 denominators"):
        ratio_interval([1, 2, 3], [1, 2])


def test_a_censored_seed_reads_more_than_the_limit_and_keeps_the_mean_undefined():
    row = Row("odm", "steps to target", [100.0, None, 150.0], censored_at=300).as_dict()
    assert row["values"] == [100.0, "> 300", 150.0] and math.isnan(row["mean"]) and row["median"] == 150.0
    assert Row("odm", "steps to target", [None, None, 90.0], censored_at=300).as_dict()["median"] == "> 300"


def test_a_bootstrap_comparison_reports_its_own_interval_and_sample_size():
    values = [0.1, 0.3, 0.2, 0.4, 0.25, 0.35]
    mean = lambda idx: sum(values[i] for i in idx) / len(idx)  # noqa: E731
    c = bootstrap_comparison(
        "a", "b", "rho", mean, len(values), "higher", "runs", claim_range=(0.1, None), resamples=500, seed=3
    )
    estimate, lo, hi = c.interval
    assert estimate == pytest.approx(sum(values) / 6) and lo < estimate < hi
    assert (lo, hi) == bootstrap_interval(list(range(6)), mean, resamples=500, seed=3)[1:]
    record = c.as_dict()
    assert record["n_seeds"] == 6 and record["interval"] == "percentile bootstrap over 6 runs" and record["passes"]
    assert c.verdict == "better"
