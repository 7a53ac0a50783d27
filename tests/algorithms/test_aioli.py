"""Aioli: its calendar and perturbed mixtures, the law recovered exactly from a synthetic linear mixing
law, p driven to that law's optimum, the released normalisation, resume and two ranks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import HELDOUT_COUNT, HELDOUT_LOSS_SQ_SUM, HELDOUT_LOSS_SUM, DomainStats
from mixflow.errors import ConfigError
from mixflow.testing import run_distributed
from tests.algorithms.test_fgls import _model, heldout_engine, train_steps

SMALL = {"round_steps": 10, "sweeps": 1, "sweep_steps": 2, "one_hot": 0.6}
#: A*_ij: how much a step on group j lowers group i's loss; column sums 0.6, 0.9, 0.3 (group 1 helps most)
LAW = np.array([[0.3, 0.2, 0.0], [0.1, 0.5, 0.1], [0.2, 0.2, 0.2]]) * 0.01


def _heldout(loss):
    stats = DomainStats.zeros(len(loss))
    stats.extras = {
        HELDOUT_LOSS_SUM: torch.as_tensor(loss * 4, dtype=torch.float64),
        HELDOUT_LOSS_SQ_SUM: torch.as_tensor(loss**2 * 4, dtype=torch.float64),
        HELDOUT_COUNT: torch.full((len(loss),), 4.0, dtype=torch.float64),
    }
    return stats


def _simulate(params, steps, law=LAW):
    """Train ``steps`` steps under the dynamic linear law L ← L − law·p (p the mixture drawn), as the
    engine drives the algorithm with a read-ahead of one batch; every step's p."""
    algo = build_algorithm("aioli", ["a", "b", "c"], {**SMALL, **params}, init_weights=np.ones(3) / 3)
    loss, current, drawn = np.full(3, 5.0), algo.sampling_weights, []
    for step in range(1, steps + 1):
        planned = algo.take_planned(step)
        current = planned if planned is not None else current
        drawn.append(current / current.sum())
        loss = loss - law @ (current / current.sum())
        if algo.update_due(step):
            weights = algo.apply_update(_heldout(loss), step)
            if weights.sampling is not None:
                current = np.asarray(weights.sampling)
    return algo, drawn


def test_the_calendar_and_the_perturbed_mixtures():
    algo, drawn = _simulate({}, 21)
    due = [s for s in range(1, 31) if algo.update_due(s)]
    # round 0 opens after step 1; evaluations at its start and after each 2-step phase; round 1 opens after 11
    assert due == [1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 25, 27]
    order = algo.order(0)
    assert sorted(order) == [0, 1, 2]
    for phase, group in enumerate(order):
        for step in (2 + 2 * phase, 3 + 2 * phase):
            expected = np.full(3, 0.2)
            expected[group] = 0.6
            assert np.allclose(drawn[step - 1], expected)


def test_the_law_is_recovered_exactly_from_a_linear_mixing_law():
    algo, _ = _simulate({}, 7)  # round 0's LearnParams ends with step 7
    assert np.allclose(algo.law(), 2 * LAW)  # each phase is 2 steps: B = 2·A*·W
    shifted = 2 * LAW - (2 * LAW).min()
    assert np.allclose(algo.gain, shifted / shifted.sum())  # released normalisation, first round: Ā = A
    p = np.exp(algo.gain.sum(axis=0))
    assert np.allclose(algo.sampling_weights, p / p.sum())


def test_exponentiated_gradient_drives_p_to_the_laws_optimum():
    algo, drawn = _simulate({"ema": None, "eta": 1.0}, 10 * 20)
    assert int(np.argmax(algo.round_p)) == 1 and algo.round_p[1] > 0.6  # group 1 lowers the total loss most
    with_ema, _ = _simulate({}, 10 * 20)  # the released EMA: bounded p_max/p_min ≤ e^η, same ranking
    assert list(np.argsort(with_ema.round_p)) == [2, 0, 1]


def test_the_restricted_setting_trains_on_the_given_weights_first():
    algo = build_algorithm("aioli", ["a", "b", "c"], {**SMALL, "prior_steps": 5}, init_weights=[0.6, 0.3, 0.1])
    assert [algo.update_due(s) for s in range(1, 8)] == [False, False, False, False, True, False, True]
    assert np.allclose(algo.take_planned(1), [0.6, 0.3, 0.1]) and algo.take_planned(5) is None


def _run(engine, train, first, last):
    model, head = _model()
    train_steps(engine, train, model, head, first, last)


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    params = {**SMALL, "sweep_steps": 1}
    train, whole = heldout_engine("aioli", params, log_dir=tmp_path / "whole")
    _run(whole, train, 1, 24)
    train, cut = heldout_engine("aioli", params, log_dir=tmp_path / "cut")
    _run(cut, train, 1, 13)  # inside round 1's LearnParams
    cut.save(tmp_path / "ckpt")
    train, resumed = heldout_engine("aioli", params, log_dir=tmp_path / "cut")
    resumed.load(tmp_path / "ckpt")
    _run(resumed, train, 14, 24)
    logs = [
        [json.loads(x) for x in (tmp_path / d / "aioli_weights.jsonl").read_text().splitlines()]
        for d in ("whole", "cut")
    ]
    assert [(r["step"], r["sampling_weights"]) for r in logs[0]] == [
        (r["step"], r["sampling_weights"]) for r in logs[1]
    ]
    assert not np.allclose(whole.algorithm.round_p, np.ones(3) / 3)


def _ranks(rank, world, out):
    train, engine = heldout_engine("aioli", {**SMALL, "sweep_steps": 1}, rank=rank, world=world)
    _run(engine, train, 1, 12)
    with open(os.path.join(out, f"a{rank}-{world}.json"), "w") as f:
        json.dump(engine.algorithm.round_p.tolist(), f)


@pytest.mark.distributed
def test_two_ranks_hold_the_weights_of_one_process(tmp_path):
    run_distributed(_ranks, str(tmp_path))
    _ranks(0, 1, str(tmp_path))
    r0, r1, single = (json.loads((tmp_path / f"a{r}.json").read_text()) for r in ("0-2", "1-2", "0-1"))
    assert r0 == r1 and np.allclose(r0, single, rtol=1e-9) and not np.allclose(single, 1 / 3)


def test_bad_params_are_named():
    with pytest.raises(ConfigError, match=r"round_steps: LearnParams takes sweeps × K × sweep_steps = 60 steps"):
        build_algorithm("aioli", ["a", "b", "c"], {"round_steps": 50}, init_weights=np.ones(3) / 3)
    with pytest.raises(ConfigError, match=r"one_hot: expected above 1/K"):
        build_algorithm("aioli", ["a", "b", "c"], {**SMALL, "one_hot": 0.3}, init_weights=np.ones(3) / 3)
