"""The FGLS benchmark's full-batch loop applies each update (an update's weights are returned, the
base class applies them: calling ``update`` directly would leave w at 1 and the benchmark would
measure uniform least squares under FGLS's name)."""

from __future__ import annotations

from mixflow.bench.fgls_regression import SIGMA2, Problem, fgls_full_batch


def test_full_batch_fgls_learns_the_noise_ratio():
    _, w = fgls_full_batch(Problem(0, d=10, n=200, m=100), steps=40)
    assert SIGMA2[1] > SIGMA2[0] and w[0] / w[1] > 2.0  # towards σ2²/σ1²; uniform least squares keeps 1
