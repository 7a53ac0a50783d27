"""ADO: the fit recovers known power laws, the sampling follows the released rule step by step,
p stays μ until the first fit and then favours the domain whose loss still falls, resume and two
ranks give the same trajectory."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.power_law import PowerLaw, fit_power_law, savgol_smooth
from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.errors import ConfigError
from mixflow.testing import run_distributed

SMALL = {
    "fit_every": 20,
    "start_step": 20,
    "ignore_steps": 0,
    "block": 2,
    "smooth_window": 5,
    "min_points": 5,
    "eps_min": 1.0,
}
#: each domain's loss at step t: domain 0 still falls fast, domain 1 slowly, domain 2 not at all
CURVES = (lambda t: 1.7 + 3.0 * t**-0.5, lambda t: 2.2 + 0.4 * t**-0.1, lambda t: 2.6 + 0.0 * t)


@pytest.mark.parametrize(("eps", "beta", "alpha"), [(2.0, 40.0, 0.3), (1.7, 8.0, 0.15), (3.1, 200.0, 0.55)])
def test_the_fit_recovers_a_known_power_law_from_noisy_losses(eps, beta, alpha):
    n = np.linspace(1_000, 200_000, 150)
    truth = PowerLaw(eps, beta, alpha)
    noisy = truth(n) * np.exp(np.random.default_rng(0).normal(0, 0.005, n.size))
    law = fit_power_law(n, noisy, eps_min=1.0)
    assert abs(law.alpha - alpha) <= 0.02 and abs(law.eps - eps) / eps < 0.1
    assert np.max(np.abs(law(n) / truth(n) - 1)) < 0.01


def test_the_fit_holds_its_bounds():
    n = np.linspace(100, 10_000, 50)
    law = fit_power_law(n, 1.2 + 5 * n**-0.3, eps_min=1.65)  # a loss below the released ε floor
    assert law.eps == pytest.approx(1.65) and 0 <= law.alpha <= 0.8 and law.beta >= 0


def test_savitzky_golay_keeps_a_cubic_and_halves_noise():
    x = np.arange(60, dtype=float)
    cubic = 0.001 * x**3 - 0.05 * x**2 + x + 3
    assert np.allclose(savgol_smooth(cubic, 11), cubic, atol=1e-8)  # a cubic is its own least-squares fit
    noise = np.random.default_rng(1).normal(0, 1, 400)
    assert np.std(savgol_smooth(noise, 21)) < 0.5 * np.std(noise)


def _logits(ids, step):
    # cross-entropy of a wrong logit c on token 0 over 5 tokens is log(e^c + 4): c from the wanted loss
    losses = torch.tensor([CURVES[d](step) for d in ids.tolist()])
    logits = torch.zeros(len(ids), 4, 5)
    logits[:, :, 0] = torch.log(torch.exp(losses) - 4)[:, None]
    return logits, torch.ones(len(ids), 4, dtype=torch.long)


def _engine(rank=0, world=1, **params):
    algo = build_algorithm("ado", ["fast", "slow", "flat"], {**SMALL, **params}, init_weights=[0.3, 0.3, 0.4])
    sampler = MixtureSampler([400, 400, 400], algo.sampling_weights, 12, seed=2, rank=rank, world_size=world)
    return StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1))


def _steps(engine, start, stop):
    it, out = engine.sampler.iter_batches(), []
    for step in range(start, stop):
        ids = torch.as_tensor(engine.sampler.domain_ids(next(it)))
        logits, labels = _logits(ids, step)
        engine.training_loss(logits, MicroBatch(ids, labels, batch_index=step - 1))
        engine.end_step(step)
        out.append(engine.algorithm.sampling_weights.tolist())
    return out


def test_p_stays_mu_until_the_first_fit_then_favours_the_domain_still_learning():
    engine = _engine()
    weights = _steps(engine, 1, 61)
    assert all(np.allclose(w, [0.3, 0.3, 0.4]) for w in weights[:19])  # no fit before step 20
    laws = engine.algorithm.fitted()
    assert laws[0] is not None and laws[0].alpha == pytest.approx(0.5, abs=0.1)  # 1.7 + 3·t^−0.5, t = n/B
    assert laws[2] is not None and laws[2].beta * 1000 ** -laws[2].alpha < 0.01  # the flat domain: no slope left
    assert weights[-1][0] > 0.45 and weights[-1][2] < 0.35  # towards the domain whose loss still falls
    assert all(math.isclose(sum(w), 1.0) and min(w) > 0 for w in weights)


def test_an_update_follows_the_released_rule():
    algo = build_algorithm("ado", ["a", "b"], {**SMALL, "fit_every": 10**6}, init_weights=[0.25, 0.75])
    algo.bind(8)
    algo.laws = np.array([[2.0, 30.0, 0.4], [1.8, 5.0, 0.02]])  # b's α below the 0.05 floor
    algo.credit, algo.average = np.array([0.2, 0.8]), np.array([0.3, 0.7])
    step, n = 50, 8 * 50
    weights = algo.apply_update(DomainStats.zeros(2), step)
    slope = np.array([0.4 * 30 * n**-0.4, 0.05 * 5 * n**-0.02]) / n
    rho = np.array([0.25, 0.75]) * np.sqrt([0.2, 0.8]) * slope
    rho = np.maximum(rho / rho.sum(), 0.01)
    rho /= rho.sum()
    assert np.allclose(weights.sampling, 0.9 * np.array([0.3, 0.7]) + 0.1 * rho)
    assert np.allclose(algo.average, (1 - 1 / 51) * np.array([0.3, 0.7]) + rho / 51)


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    whole = _steps(_engine(), 1, 50)
    cut = _engine()
    first = _steps(cut, 1, 27)  # mid-block, after the first fit
    cut.save(tmp_path)
    resumed = _engine()
    resumed.load(tmp_path)
    assert first + _steps(resumed, 27, 50) == whole
    assert not np.allclose(whole[-1], whole[0])


def _ranks(rank, world, out):
    engine = _engine(rank=rank, world=world)
    with open(os.path.join(out, f"a{rank}-{world}.json"), "w") as f:
        json.dump(_steps(engine, 1, 30), f)


@pytest.mark.distributed
def test_two_ranks_hold_the_weights_of_one_process(tmp_path):
    run_distributed(_ranks, str(tmp_path))
    _ranks(0, 1, str(tmp_path))
    r0, r1, single = (json.loads((tmp_path / f"a{r}.json").read_text()) for r in ("0-2", "1-2", "0-1"))
    assert r0 == r1 and np.allclose(r0, single, rtol=1e-9)


def test_bad_params_are_named():
    with pytest.raises(ConfigError, match=r"ado.params.min_probability: expected below 1/K = 0.005 with 200 domains"):
        build_algorithm("ado", [f"d{i}" for i in range(200)], {}, init_weights=np.ones(200) / 200, where="ado")
    with pytest.raises(ConfigError, match=r"smooth_window: expected an odd number"):
        build_algorithm("ado", ["a", "b"], {"smooth_window": 10}, init_weights=[0.5, 0.5])
