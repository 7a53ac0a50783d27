"""Static mixture rules and weight validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixflow.data.proportions import resolve_proportions, validate_weights

SIZES = [100, 300, 600, 1000]


def test_mixture_normalises_given_proportions() -> None:
    p = resolve_proportions("mixture", SIZES, [1, 1, 2, 4])
    assert p.dtype == np.float64
    assert np.allclose(p, [0.125, 0.125, 0.25, 0.5])


def test_mixture_without_proportions_is_uniform() -> None:
    assert np.allclose(resolve_proportions("mixture", SIZES, None), 0.25)


def test_stratified_follows_sizes() -> None:
    assert np.allclose(resolve_proportions("stratified", SIZES), [0.05, 0.15, 0.3, 0.5])


def test_uniform() -> None:
    assert np.allclose(resolve_proportions("uniform", SIZES), 0.25)


def test_temperature() -> None:
    sizes = np.array(SIZES, dtype=float)
    assert np.allclose(resolve_proportions("temperature", SIZES, temperature=1.0), sizes / sizes.sum())
    p2 = resolve_proportions("temperature", SIZES, temperature=2.0)
    assert np.allclose(p2, np.sqrt(sizes) / np.sqrt(sizes).sum())
    # High temperature flattens towards uniform.
    assert np.allclose(resolve_proportions("temperature", SIZES, temperature=1e6), 0.25, atol=1e-5)
    # Low temperature with huge domains must not overflow.
    p = resolve_proportions("temperature", [10**12, 10**11], temperature=0.01)
    assert np.all(np.isfinite(p)) and p[0] == pytest.approx(1.0)


def test_proportions_validated_even_when_unused() -> None:
    with pytest.raises(ValueError, match=r"^proportions: expected 4 values \(one per domain\), got 3$"):
        resolve_proportions("uniform", SIZES, [0.2, 0.3, 0.5])


@pytest.mark.parametrize(
    ("proportions", "match"),
    [
        ([0.5, 0.5, 0.0], r"^proportions: expected 4 values \(one per domain\), got 3$"),
        ([0.5, -0.1, 0.3, 0.3], r"^proportions: expected non-negative values, got -0.1 at index 1$"),
        ([0.5, float("nan"), 0.3, 0.2], r"^proportions: expected finite values"),
        ([0.5, float("inf"), 0.3, 0.2], r"^proportions: expected finite values"),
        ([0, 0, 0, 0], r"^proportions: expected a positive sum"),
        ([0.5, "0.5", 0, 0], r"^proportions: expected numbers, got '0.5' at index 1$"),
        ([True, 0, 0, 0], r"^proportions: expected numbers"),
        ("0.25", r"^proportions: expected a list"),
    ],
)
def test_bad_proportions(proportions: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_proportions("mixture", SIZES, proportions)  # type: ignore[arg-type]


def test_bad_rule_temperature_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"^rule: expected one of mixture, stratified, uniform, temperature"):
        resolve_proportions("natural", SIZES)
    for tau in (0, -1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match=r"^temperature: expected a finite number > 0"):
            resolve_proportions("temperature", SIZES, temperature=tau)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^domain_sizes: expected positive integers, got 0 at index 1$"):
        resolve_proportions("uniform", [5, 0])
    with pytest.raises(ValueError, match=r"^domain_sizes: expected positive integers, got 2.5 at index 0$"):
        resolve_proportions("uniform", [2.5])
    with pytest.raises(ValueError, match=r"^domain_sizes: expected at least one domain"):
        resolve_proportions("uniform", [])


def test_validate_weights_accepts_arrays_and_tensors() -> None:
    expected = np.array([0.25, 0.75])
    for w in ([1, 3], np.array([1.0, 3.0]), np.array([1, 3], dtype=np.int32), torch.tensor([1.0, 3.0])):
        out = validate_weights(w, 2)
        assert out.dtype == np.float64
        assert np.array_equal(out, expected)
    source = np.array([1.0, 3.0])
    validate_weights(source, 2)
    assert source.tolist() == [1.0, 3.0]  # the input is not normalised in place


def test_validate_weights_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^sampling_weights: expected 3 values \(one per domain\), got 2$"):
        validate_weights([0.5, 0.5], 3, name="sampling_weights")
    with pytest.raises(ValueError, match=r"^weights: expected a flat list"):
        validate_weights(np.ones((2, 2)), 2)
    with pytest.raises(ValueError, match=r"^weights: expected values whose sum is finite"):
        validate_weights([1e308, 1e308], 2)


def test_unimax_spreads_the_budget_uniformly_under_an_epoch_cap():
    from mixflow.data.proportions import unimax_proportions

    # budget 400 over 4 domains: the 10-token domain takes its one epoch, the rest share 390 equally
    p = unimax_proportions([1000, 10, 500, 2000], budget=400, max_epochs=1)
    assert np.allclose(p * 400, [130, 10, 130, 130])
    # a budget larger than every cap: each domain at max_epochs epochs
    assert np.allclose(unimax_proportions([100, 10, 50], budget=1000, max_epochs=2), np.array([200, 20, 100]) / 320)
    assert np.allclose(unimax_proportions([5, 5], budget=4), [0.5, 0.5])
    with pytest.raises(ValueError, match="max_epochs: expected a finite number > 0"):
        unimax_proportions([5, 5], budget=4, max_epochs=0)


def test_the_unimax_rule_needs_the_budget_and_spreads_it() -> None:
    from mixflow.data.proportions import resolve_proportions

    with pytest.raises(ValueError, match="unimax needs the run's budget"):
        resolve_proportions("unimax", [10, 1000, 1000])
    # 300 rows, at most 2 epochs: the 10-row domain takes its 20, the others share the rest equally
    assert np.allclose(
        resolve_proportions("unimax", [10, 1000, 1000], budget=300, max_epochs=2.0), [20 / 300, 140 / 300, 140 / 300]
    )
