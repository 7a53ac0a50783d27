"""Regressions on a synthetic mixing law with a known optimum: the log-linear law recovers it, every
model ranks held-out mixtures, cross-validation scores what it never saw."""

import numpy as np
import pytest

from mixflow.config.errors import ConfigError
from mixflow.search.fit import cross_validate, ranks, spearman
from mixflow.search.regression import available_models, build_model


def law(x, c=2.0, b=0.3, t=(-1.5, -0.5, 0.4, -2.0)):
    """Ye et al.'s mixing law L = c + exp(b + t·r)."""
    return c + np.exp(b + x @ np.asarray(t))


def swarm(n, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.ones(4), size=n)
    return x, law(x) + noise * rng.standard_normal(n)


def test_loglinear_recovers_the_law_it_is():
    x, y = swarm(60)
    model = build_model("loglinear").fit(x, y)
    grid, _ = swarm(500, seed=1)
    assert np.allclose(model.predict(grid), law(grid), rtol=1e-6, atol=1e-6)
    assert model.c == pytest.approx(2.0, abs=1e-5)


def test_every_model_ranks_mixtures_it_never_saw():
    x, y = swarm(80, noise=0.01)
    held, truth = swarm(200, seed=3)
    for name in ("linear", "loglinear"):
        assert spearman(truth, build_model(name).fit(x, y).predict(held)) > 0.9, name
    assert set(available_models()) >= {"linear", "loglinear", "lightgbm", "gp"}


def test_cross_validation_scores_held_out_folds_and_refuses_too_few_runs():
    x, y = swarm(40, noise=0.01)
    cv = cross_validate("loglinear", x, y, folds=5)
    assert cv["spearman"] > 0.95 and cv["mae"] < 0.05
    noise = np.random.default_rng(9).standard_normal(40)
    assert abs(cross_validate("linear", x, noise, folds=5)["spearman"]) < 0.5  # no signal: no rank correlation
    with pytest.raises(ConfigError, match="8 runs are too few for 5-fold cross-validation"):
        cross_validate("linear", x[:8], y[:8])


def test_ranks_average_ties_and_unknown_models_are_errors():
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    with pytest.raises(ConfigError, match="--model: unknown model 'xgb'; expected one of gp, lightgbm, linear"):
        build_model("xgb")


@pytest.mark.parametrize("name", ["lightgbm", "gp"])
def test_the_optional_models_rank_held_out_mixtures(name):
    x, y = swarm(120, noise=0.01)
    held, truth = swarm(200, seed=3)
    assert spearman(truth, build_model(name).fit(x, y).predict(held)) > 0.9


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # what an environment without it gives
    with pytest.raises(
        ConfigError,
        match=r"^--model lightgbm: needs the lightgbm package; install it with pip install 'mixflow\[search\]'$",
    ):
        build_model("lightgbm")


def test_loglinear_on_losses_a_few_ulps_apart_stays_finite_and_folds_must_be_two_or_more():
    x, _ = swarm(12)
    y = np.full(12, 3.0) + np.arange(12) * 4e-16
    assert np.all(np.isfinite(build_model("loglinear").fit(x, y).predict(x)))
    with pytest.raises(ConfigError, match="--folds: expected an integer >= 2, got 1"):
        cross_validate("linear", x, y, folds=1)


def test_loglinear_damps_more_where_its_refining_system_is_singular(monkeypatch):
    # The refining system is singular by construction (the weights sum to 1) and only its damping
    # keeps it solvable; a fold of the arena's 23-run swarm once shrank the damping until numpy
    # refused it. Here the first refining solves refuse: the fit damps more and still converges.
    x, y = swarm(60)
    solve, refused = np.linalg.solve, []

    def refusing(a, b):
        if a.shape[0] == x.shape[1] + 2 and len(refused) < 3:  # (c, b, t_1..t_K): the refining system
            refused.append(a)
            raise np.linalg.LinAlgError("Singular matrix")
        return solve(a, b)

    monkeypatch.setattr(np.linalg, "solve", refusing)
    model = build_model("loglinear").fit(x, y)
    assert len(refused) == 3
    grid, _ = swarm(200, seed=1)
    assert np.allclose(model.predict(grid), law(grid), rtol=1e-6, atol=1e-6)
