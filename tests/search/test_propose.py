"""The proposer finds a known optimum; constraints hold exactly (fixed weights, repetition caps, trust
regions); impossible constraints are one error listing every conflict."""

import numpy as np
import pytest

from mixflow.config.errors import ConfigError, ConfigErrors
from mixflow.search.propose import Constraints, repetition_caps, simulate

OPTIMUM = np.array([0.1, 0.2, 0.3, 0.4])


def bowl(w):
    return np.sum((w - OPTIMUM) ** 2, axis=1)


def test_the_simulation_finds_an_interior_optimum():
    mixture, best = simulate(bowl, 4, Constraints(), None, candidates=50_000, top_k=32)
    assert np.allclose(mixture, [0.1, 0.2, 0.3, 0.4], atol=0.03) and np.isclose(mixture.sum(), 1.0)
    assert best.shape == (32, 4)


def test_caps_and_fixed_weights_hold_exactly_on_every_candidate():
    caps = {0: 0.05, 3: 0.2}
    c = Constraints(fixed={1: 0.25}, caps=caps)
    w = c.apply(np.random.default_rng(0).dirichlet(np.ones(4), size=2000))
    assert np.allclose(w.sum(axis=1), 1.0) and np.allclose(w[:, 1], 0.25)
    assert np.all(w[:, 0] <= 0.05 + 1e-12) and np.all(w[:, 3] <= 0.2 + 1e-12)
    mixture, _ = simulate(bowl, 4, c, None, candidates=20_000, top_k=32)
    assert mixture[0] <= 0.05 + 1e-12 and mixture[3] <= 0.2 + 1e-12 and np.isclose(mixture[1], 0.25)


def test_repetition_caps_from_tokens():
    caps = repetition_caps({"a": 100.0, "b": 1e6}, ["a", "b"], tokens_per_run=1000.0, max_epochs=4.0)
    assert caps == {0: 0.4, 1: 1.0}


@pytest.mark.parametrize("kind", ["kl", "l1"])
def test_a_trust_region_keeps_every_candidate_within_its_radius(kind):
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    c = Constraints(prior=prior, **{kind: 0.05})
    w = c.apply(np.random.default_rng(1).dirichlet(np.ones(4), size=1000))
    if kind == "kl":
        distance = np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1) / prior), 0), axis=1)
    else:
        distance = np.abs(w - prior).sum(axis=1)
    assert np.all(distance <= 0.05 + 1e-9) and np.isclose(distance.max(), 0.05, atol=1e-6)


def test_impossible_constraints_are_every_conflict_at_once():
    c = Constraints(fixed={0: 0.9}, caps={0: 0.5, 1: 0.01, 2: 0.01})
    with pytest.raises(ConfigErrors) as err:
        c.check(3)
    assert len(err.value.messages) == 2
    assert any("the free domains may hold at most 0.02" in m for m in err.value.messages)
    assert any("fixed at 0.9, above its cap 0.5" in m for m in err.value.messages)


def test_more_impossible_constraints_are_errors_not_crashes():
    with pytest.raises(ConfigErrors, match="fixed weights must be in"):
        Constraints(fixed={0: 1.5}).check(3)  # no caps: named without a KeyError
    with pytest.raises(ConfigErrors, match="give one trust region, not both"):
        Constraints(prior=np.ones(3) / 3, kl=0.1, l1=0.1).check(3)
    with pytest.raises(ConfigError, match="--candidates and --top-k"):
        simulate(bowl, 4, Constraints(), None, candidates=0)
