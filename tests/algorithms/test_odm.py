"""ODM: the properties the paper states ("ODM"), the schedule of t, and the plumbing (StepEngine, resume,
NaN statistics, 2 ranks, config errors)."""

import json
import logging
import math
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.odm import ODMParams, exp3_distribution, exploration_rate, smoothed_mean_distribution
from mixflow.algorithms.params import build_params
from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.testing import run_distributed

K = 4


def loss_stats(losses, tokens=10.0):
    """One step's statistics with the given mean token loss per domain (NaN: domain absent)."""
    losses = np.asarray(losses, dtype=np.float64)
    stats = DomainStats.zeros(len(losses))
    present = ~np.isnan(losses)
    stats.token_count[torch.as_tensor(present)] = tokens
    stats.token_loss_sum += torch.as_tensor(np.where(present, losses * tokens, 0.0))
    return stats


def _odm(k=K, init=None, **params):
    return build_algorithm(
        "odm", [f"d{i}" for i in range(k)], params, init_weights=init if init is not None else np.ones(k) / k
    )


def _run(algo, losses_at, steps):
    """Per-step Exp3 (update_step 1): observe then update, as the step engine calls them."""
    history = []
    for step in range(1, steps + 1):
        stats = loss_stats(losses_at(step))
        algo.observe(stats, step)
        algo.apply_update(stats, step)
        history.append(algo.sampling_weights)
    return np.array(history)


# ---- Properties --------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["smoothed_mean", "exp3"])
def test_p_is_on_the_simplex_with_every_p_at_least_epsilon_t(rule):
    rng = np.random.default_rng(0)
    algo = _odm(rule=rule)
    for step in range(1, 201):
        stats = loss_stats(rng.uniform(0.5, 6.0, K) * np.array([1, 1, 2, 3]))
        algo.observe(stats, step)
        algo.apply_update(stats, step)
        p = algo.sampling_weights
        assert np.isclose(p.sum(), 1.0) and np.all(np.isfinite(p))
        assert np.all(p >= exploration_rate(step, K) - 1e-12)
    assert algo.epsilon == exploration_rate(200, K) < 1 / K
    # and the formulas themselves, for extreme rewards
    for t in (1, 6, 50, 10_000):
        p = exp3_distribution(np.array([1e6, -1e6, 0.0, 3.0]), t)
        assert np.isclose(p.sum(), 1.0) and p.min() >= exploration_rate(t, K) - 1e-15
        p = smoothed_mean_distribution(np.array([1e6, -1e6, np.nan, 3.0]), np.ones(K) / K, t)
        assert np.isclose(p.sum(), 1.0) and p.min() >= exploration_rate(t, K) - 1e-15


def test_released_rule_follows_group_update_with_t_the_training_step():
    algo = _odm(k=2, alpha=0.9)
    for step in (1, 2, 3):
        algo.observe(loss_stats([3.0, 6.0]), step)
    algo.apply_update(loss_stats([3.0, 6.0]), 3)
    r = (1 - 0.9**3) * np.exp([3.0, 6.0])  # R̂ after three steps from R̂ = 0
    eps = min(0.5, math.sqrt(math.log(2) / (2 * 3)))  # t = 3: the step, not the update count
    assert np.allclose(algo.sampling_weights, (1 - 2 * eps) * r / r.sum() + eps)
    assert np.allclose(np.exp(algo.scores), r)


def test_constant_losses_raise_the_higher_loss_domain_monotonically():
    # the example: losses (3, 6), p of the higher-loss domain climbs towards e³/(1+e³) ≈ 0.95
    history = _run(_odm(k=2), lambda step: [3.0, 6.0], steps=2000)
    high = history[:, 1]
    assert np.all(np.diff(high) >= -1e-15) and high[-1] > high[9] > 0.75
    assert abs(high[9] - 0.785) < 0.01 and high[-1] > 0.93
    exp3 = _run(_odm(k=2, rule="exp3"), lambda step: [3.0, 6.0], steps=2000)[:, 1]
    # the printed rule's bounded rewards inside softmax(ε·R̂) drift back to uniform as ε_t → 0
    # (the reason to make the released rule the default)
    assert 0.5 < exp3[-1] < exp3[9] < 0.6


@pytest.mark.parametrize("rule", ["smoothed_mean", "exp3"])
def test_equal_losses_keep_p_where_it_is(rule):
    init = np.array([0.1, 0.2, 0.3, 0.4])
    history = _run(_odm(init=init, rule=rule), lambda step: [2.5] * K, steps=100)
    if rule == "smoothed_mean":
        # the initial mixture, not uniform, up to the exploration floor ε_t
        for step, p in enumerate(history, start=1):
            eps = exploration_rate(step, K)
            assert np.allclose(p, (1 - K * eps) * init + eps)
        assert history[-1][3] > 0.3  # not reset to uniform
    else:
        # the printed rule has no prior: equal rewards give the uniform softmax
        assert np.allclose(history[-1], 1 / K, atol=1e-9)
    uniform = _run(_odm(rule=rule), lambda step: [2.5] * K, steps=50)
    assert np.allclose(uniform, 1 / K)


def test_domain_with_persistently_higher_loss_gains_probability():
    for rule in ("smoothed_mean", "exp3"):
        history = _run(_odm(rule=rule), lambda step: [4.0, 2.0, 2.0, 2.0], steps=300)
        final = history[-1]
        assert final[0] > 1 / K + 0.02 and np.allclose(final[1:], final[1])
        # ODM does chase a high-but-irreducible-loss domain (the contrast with DoReMi is a benchmark)
        noisy = _run(_odm(rule=rule), lambda step: [5.5 + 0.1 * math.sin(step), 2.0, 2.0, 2.0], steps=300)
        assert noisy[-1][0] > 1 / K + 0.02


def test_exp3_follows_algorithm_1_with_t_the_training_step():
    assert exploration_rate(0, K) == 1 / K  # ε_0
    assert math.isclose(exploration_rate(100, K), math.sqrt(math.log(K) / (K * 100)))
    algo = _odm(alpha=0.5, rule="exp3")
    for step in range(1, 8):
        algo.observe(loss_stats([3.0, 1.0, 2.0, 1.0]), step)
    rewards = algo.rewards.copy()
    algo.apply_update(loss_stats([3.0, 1.0, 2.0, 1.0]), 7)  # one update, after 7 steps (e.g. a warmup)
    # t = 7 is the training step: ε_6 inside the softmax and ε_7 outside, although it is the first update
    eps7, eps6 = exploration_rate(7, K), exploration_rate(6, K)
    z = eps6 * rewards
    expected = (1 - K * eps7) * np.exp(z) / np.exp(z).sum() + eps7
    assert np.allclose(algo.sampling_weights, expected) and algo.num_updates == 1
    assert np.allclose(algo.scores, rewards)


def test_exp3_importance_weights_only_domains_that_can_be_missing():
    algo = _odm(init=[0.1, 0.2, 0.3, 0.4], alpha=0.9, rule="exp3")
    # without a batch size: one sample per step, the printed rule's L/p
    algo.observe(loss_stats([1.0, 2.0, float("nan"), 4.0]), 1)
    assert np.allclose(algo.rewards, [0.1 * 1.0 / 0.1, 0.1 * 2.0 / 0.2, 0.0, 0.1 * 4.0 / 0.4])
    algo.observe(loss_stats([1.0, 2.0, 3.0, 4.0]), 2)
    assert np.isclose(algo.rewards[0], 0.9 * 1.0 + 0.1 * 10.0) and np.isclose(algo.rewards[2], 0.1 * 3.0 / 0.3)
    # B = 8: domains 1-3 (p·B ≥ 1.6) are in every batch, domain 0 (p·B = 0.8) only sometimes
    batched = _odm(init=[0.1, 0.2, 0.3, 0.4], alpha=0.9, rule="exp3")
    batched.bind(8)
    batched.observe(loss_stats([1.0, 2.0, 3.0, 4.0]), 1)
    assert np.allclose(batched.rewards, [0.1 * 1.0 / 0.8, 0.1 * 2.0, 0.1 * 3.0, 0.1 * 4.0])


def test_smoothed_mean_rewards_survive_huge_losses():
    algo = _odm(k=2)
    algo.observe(loss_stats([2.0, 5000.0]), 1)  # e^5000 overflows a float, ln R̂ does not
    algo.apply_update(loss_stats([2.0, 5000.0]), 1)
    assert np.all(np.isfinite(algo.rewards)) and np.all(np.isfinite(algo.sampling_weights))


def test_non_finite_losses_leave_the_rewards_untouched_with_a_warning(caplog):
    algo = _odm()
    algo.observe(loss_stats([1.0, 2.0, 3.0, 4.0]), 1)
    before = algo.rewards.copy()
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        algo.observe(loss_stats([1.0, float("inf"), 3.0, 4.0]), 2)
    assert "non-finite" in caplog.text and np.array_equal(algo.rewards, before)


def test_state_of_another_rule_is_refused():
    algo = _odm()
    algo.observe(loss_stats([1.0, 2.0, 3.0, 4.0]), 1)
    other = _odm(rule="exp3")
    with pytest.raises(ValueError, match="rule 'smoothed_mean'.*'exp3'"):
        other.load_state_dict(algo.state_dict())


# ---- through the step engine -------------------------------------------------------------------------
def _logits_for(domain_ids, scales, vocab=5, length=4):
    # domain d's loss grows with scales[d] (a wrong logit of that size on token 0)
    ids = torch.as_tensor(domain_ids)
    logits = torch.zeros(len(ids), length, vocab)
    logits[:, :, 0] = torch.as_tensor(scales, dtype=torch.float32)[ids][:, None]
    return logits, torch.ones(len(ids), length, dtype=torch.long)


def _engine(rank=0, world=1, batch=8, **schedule):
    algo = _odm(k=3)
    sampler = MixtureSampler([50, 50, 50], algo.sampling_weights, batch, seed=1, rank=rank, world_size=world)
    return StepEngine(sampler, algo, schedule=UpdateSchedule(**schedule))


def _steps(engine, start, stop, scales=(3.0, 1.0, 1.0), nan_at=None):
    it = engine.sampler.iter_batches()
    out = []
    for step in range(start, stop):
        rows = next(it)
        ids = engine.sampler.domain_ids(rows)
        logits, labels = _logits_for(ids, scales)
        if step == nan_at:
            logits[0, 0, 0] = float("nan")
        engine.training_loss(logits, MicroBatch(torch.as_tensor(ids), labels, batch_index=step - 1))
        engine.end_step(step)
        out.append(engine.algorithm.sampling_weights.tolist())
    return out


def test_warmup_keeps_the_initial_proportions_and_rewards_learn_every_step():
    engine = _engine(warmup_step=4, update_step=1)
    weights = _steps(engine, 1, 4)
    assert np.allclose(weights, 1 / 3) and engine.algorithm.num_updates == 0
    assert np.all(np.isfinite(engine.algorithm.rewards))  # observe ran at every warmup step
    after = _steps(engine, 4, 5)[-1]
    # the first update uses t = 4 (the step) and the warmup's rewards: p moves, it is not reset
    assert engine.algorithm.num_updates == 1 and engine.algorithm.epsilon == exploration_rate(4, 3)
    assert after[0] > 1 / 3 + 0.02


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    full = _engine(update_step=2)
    first = _steps(full, 1, 8)
    full_rest = _steps(full, 8, 20)
    cut = _engine(update_step=2)
    assert _steps(cut, 1, 8) == first
    cut.save(tmp_path)  # mid-window: rewards moved since the last update
    resumed = _engine(update_step=2)
    resumed.load(tmp_path)
    assert np.array_equal(resumed.algorithm.rewards, cut.algorithm.rewards)
    assert _steps(resumed, 8, 20) == full_rest
    assert full_rest[-1][0] > 1 / 3 + 0.02  # the weights did move


def test_non_finite_step_skips_the_update_and_spares_the_rewards(caplog):
    engine = _engine(update_step=1)
    _steps(engine, 1, 3)
    rewards = engine.algorithm.rewards.copy()
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        _steps(engine, 3, 4, nan_at=3)
    assert "non-finite" in caplog.text
    assert np.array_equal(engine.algorithm.rewards, rewards) and engine.algorithm.num_updates == 2
    _steps(engine, 4, 5)
    assert engine.algorithm.num_updates == 3 and np.all(np.isfinite(engine.algorithm.sampling_weights))


def _ranks(rank, world, out):
    engine = _engine(rank=rank, world=world, update_step=1)
    weights = _steps(engine, 1, 12)
    with open(os.path.join(out, f"r{rank}.json"), "w") as f:
        json.dump({"weights": weights, "rewards": engine.algorithm.rewards.tolist()}, f)


@pytest.mark.distributed
def test_two_ranks_hold_identical_weights_equal_to_one_process(tmp_path):
    run_distributed(_ranks, str(tmp_path))
    r0, r1 = (json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    _ranks(0, 1, str(tmp_path))  # one process, the same global batches
    single = json.loads((tmp_path / "r0.json").read_text())
    assert np.allclose(single["weights"], r1["weights"], rtol=1e-12)
    assert np.allclose(single["rewards"], r1["rewards"], rtol=1e-12)


# ---- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, -0.1, 2])
def test_bad_alpha_is_a_one_line_error_naming_the_key(alpha):
    with pytest.raises(ValueError, match=r"^odm\.params\.alpha: expected a number in \[0, 1\)"):
        build_params(ODMParams, {"alpha": alpha}, "odm.params")
    with pytest.raises(ValueError, match=r"odm\.params\.alpha: expected a number, got 'x'"):
        build_params(ODMParams, {"alpha": "x"}, "odm.params")
