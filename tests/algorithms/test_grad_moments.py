"""The gradient moments PiKE reads (algorithms/grad_moments.py): equal to the one-window estimator at
β = 0, and their error against the exact statistics of the PiKE paper's Example 2.1 when they come
from the real grad_stats provider on mixed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixflow.algorithms.grad_moments import smooth_gradient_sums, smoothed_moments
from mixflow.algorithms.statistics import DomainStats, gradient_moments
from mixflow.loss.per_sample import SampleLosses
from mixflow.providers.base import BatchContext
from mixflow.providers.grad_stats import GradientStatistics


def _random_stats(rng, k=3, d=5):
    stats = DomainStats.zeros(k)
    groups = torch.as_tensor(rng.integers(2, 5, k), dtype=torch.float64)
    g = torch.as_tensor(rng.normal(size=(k, d)))
    stats.extras.update(
        grad_sum=g * groups[:, None],
        grad_sq_sum=(g.square().sum(1) + 0.5) * groups + 1.0,
        grad_groups=groups,
        grad_samples=groups * 4,
    )
    return stats


def test_beta_zero_is_the_one_window_estimator():
    rng = np.random.default_rng(0)
    state = None
    for _ in range(3):
        stats = _random_stats(rng)
        state = smooth_gradient_sums(state, stats, beta=0.0)
        for got, want in zip(smoothed_moments(state), gradient_moments(stats)):
            assert np.allclose(got, want, rtol=1e-12)


class Quadratic(torch.nn.Module):
    """Example 2.1: ℓ_k(θ; x) = ½θ_k² + xᵀθ, x ~ N(0, σ_k² I); ‖∇L_k‖² = θ_k², σ_k² (summed) = 2σ_k²."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.as_tensor(theta, dtype=torch.float64))


def _window(model, provider, sigmas, gen, per_task=8):
    tasks = torch.arange(2).repeat_interleave(per_task)
    noise = torch.randn(len(tasks), 2, generator=gen, dtype=torch.float64) * torch.as_tensor(sigmas)[tasks][:, None]
    per_sample = 0.5 * model.theta[tasks] ** 2 + noise @ model.theta
    losses = SampleLosses(
        per_sample, torch.ones_like(tasks), per_sample[:, None], torch.ones(len(tasks), 1, dtype=torch.bool)
    )
    ctx = BatchContext(model, {}, None, losses, tasks, 2, 0, True)
    stats = DomainStats.zeros(2)
    stats.extras.update(provider.batch_statistics(ctx))
    return stats


@pytest.mark.parametrize("theta", [(1.0, 1.0), (0.2, 0.3)])
def test_estimator_error_against_exact_statistics_of_example_2_1(theta):
    sigmas, windows = (0.5, 3.0), 3000
    exact_norm, exact_sigma2 = np.square(theta), 2 * np.square(sigmas)
    model, provider = Quadratic(theta), GradientStatistics(patterns=["theta"], groups=2, sketch_dim=0)
    gen = torch.Generator().manual_seed(0)
    one, floored, pooled, state = [], [], [], None
    for _ in range(windows):
        stats = _window(model, provider, sigmas, gen)
        one.append(smoothed_moments(smooth_gradient_sums(None, stats, 0.0), floor=False))
        floored.append(smoothed_moments(smooth_gradient_sums(None, stats, 0.0), floor=True))
        state = smooth_gradient_sums(state, stats, 0.9)
        pooled.append(smoothed_moments(state, floor=False))
    one, floored, pooled = (np.array(x) for x in (one, floored, pooled))  # [windows, 2 (norm, σ²), K]
    se = one[:, 0].std(0) / np.sqrt(windows)
    # the unfloored one-window estimate is unbiased for ‖∇L_k‖² and σ_k² ...
    assert np.all(np.abs(one[:, 0].mean(0) - exact_norm) < 4 * se)
    assert np.allclose(one[:, 1].mean(0), exact_sigma2, rtol=0.05)
    # ... the floor at 0 biases the noisy task upward (the reason floor_norm is off by default) ...
    bias = floored[:, 0].mean(0) - exact_norm
    assert bias[1] > 4 * se[1] and bias[1] > bias[0]
    # ... and near the optimum one batch is mostly noise: its error dwarfs the signal
    rmse = np.sqrt(np.mean(np.square(one[:, 0] - exact_norm), axis=0))
    if max(theta) < 0.5:
        assert rmse[1] > 10 * exact_norm[1]
    # pooling windows (β = 0.9, θ fixed here) cuts the error by about (1 − β)/(1 + β) in variance
    pooled_rmse = np.sqrt(np.mean(np.square(pooled[100:, 0] - exact_norm), axis=0))
    assert np.all(pooled_rmse < 0.45 * rmse)
