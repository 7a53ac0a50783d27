"""ERMA: the update rule, the GLS fixed point for squared loss, noisy domains lose weight, clean test
accuracy on a label-noise classification domain, the step engine (2 ranks, resume, NaN skip) and `mixflow train`."""

import json
import logging
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats, heldout_stats
from mixflow.config import ConfigError, load_config
from mixflow.testing import run_distributed
from tests.algorithms.test_fgls import (  # shared harness (helpers only, no tests)
    _inline_config,
    _model,
    cli_config,
    demo_data,  # noqa: F401  (fixture)
    heldout_engine,
    train_steps,
)


def _stats(losses_per_domain):
    stats = DomainStats.zeros(len(losses_per_domain))
    stats.extras.update(heldout_stats(losses_per_domain))
    return stats


def test_one_update_is_the_exponentiated_rule_normalised_to_sum_pi_w_1():
    algo = build_algorithm(
        "erma", ["a", "b", "c"], {"gamma1": 0.3, "gamma2": 0.2, "max_log_decrease": None}, prior=[0.5, 0.3, 0.2]
    )
    losses = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.6], [4.0, 1.0, 2.5]]
    algo.apply_update(_stats(losses), 1)
    pi = np.array([0.5, 0.3, 0.2])
    mean = np.array([np.mean(x) for x in losses])
    var = np.array([np.var(x, ddof=1) for x in losses])
    w = np.exp(0.3 * pi * mean - 0.2 * pi * 1.0 * var)  # w⁰ = 1, G = 1
    assert np.allclose(algo.loss_weights, w / np.sum(pi * w))
    assert np.isclose(np.sum(pi * algo.loss_weights), 1.0)
    assert np.allclose(algo.scores, mean)


def test_noisier_domain_gets_the_lower_weight():
    rng = np.random.default_rng(0)
    eps = [rng.normal(scale=s, size=500) for s in (1.0, 3.0)]  # same model, label noise σ = 1 vs 3
    algo = build_algorithm("erma", ["clean", "noisy"], {})
    for t in range(1, 4):
        algo.apply_update(_stats([0.5 * e**2 for e in eps]), t)
        w = algo.loss_weights
        assert w[1] < w[0]


def test_fixed_point_for_squared_loss_recovers_inverse_noise_ratios():
    # at θ*, the per-sample loss ½ε² with ε ~ N(0, σ_i²): L_i = σ_i²/2, Var_i = σ_i⁴/2 ⇒ w_i ∝ 1/σ_i²
    rng = np.random.default_rng(1)
    sigma2 = np.array([1.0, 10.0, 4.0])
    eps = [rng.normal(scale=np.sqrt(s), size=40000) for s in sigma2]
    losses = [0.5 * e**2 for e in eps]
    algo = build_algorithm("erma", ["a", "b", "c"], {"gamma1": 1.0, "gamma2": 1.0})
    for t in range(1, 101):
        algo.apply_update(_stats(losses), t)
    w = algo.loss_weights
    # the exact fixed point of the sampled statistics is w ∝ L/Var; it is GLS up to sampling error
    mean = np.array([x.mean() for x in losses])
    var = np.array([x.var(ddof=1) for x in losses])
    assert np.allclose(w / w[0], (mean / var) / (mean[0] / var[0]), rtol=1e-6)
    assert np.allclose(w / w[0], sigma2[0] / sigma2, rtol=0.1)


def test_inverse_sqrt_schedule_scales_the_loss_term():
    losses = [[1.0, 2.0], [3.0, 5.0]]
    algo = build_algorithm("erma", ["a", "b"], {"schedule": "inverse_sqrt", "max_log_decrease": None})
    algo.apply_update(_stats(losses), 1)
    u1 = np.exp(algo.log_u)
    algo.apply_update(_stats(losses), 2)
    mean, var = np.array([1.5, 4.0]), np.array([0.5, 2.0])
    step = 0.5 * 0.5 * mean / np.sqrt(2.0) - 0.5 * 0.5 * u1 * var  # G(1) = 1/sqrt(2) at the second update
    assert np.allclose(algo.log_u, np.log(u1) + step)


def test_normalized_exponent_variant_is_constrained_mirror_descent():
    # with Σπw = 1 inside the exponent, the fixed point solves γ1·G·L_i − γ2·w_i·Var_i = const:
    # ∝ 1/σ² only when γ1·G·Σπ/σ² = γ2 (module docstring); here γ1 = γ2, Σπ/σ² = 0.55 ⇒ not GLS
    L, V = np.array([0.5, 5.0]), np.array([0.5, 50.0])
    algo = build_algorithm("erma", ["a", "b"], {"gamma1": 0.5, "gamma2": 0.5, "exponent_weights": "normalized"})
    stats = DomainStats.zeros(2)
    n = 1000.0
    stats.extras.update(
        {
            "heldout_loss_sum": torch.tensor(n * L, dtype=torch.float64),
            "heldout_loss_sq_sum": torch.tensor(n * L**2 + (n - 1) * V, dtype=torch.float64),
            "heldout_count": torch.tensor([n, n], dtype=torch.float64),
        }
    )
    for t in range(1, 301):
        algo.apply_update(stats, t)
    w = algo.loss_weights
    spread = 0.5 * (L - w * V)  # π_i(γ1 L_i − γ2 w_i Var_i) equal across domains at the fixed point
    assert np.isclose(spread[0], spread[1], atol=1e-6)
    assert w[0] / w[1] > 15  # stronger than 1/σ² = 10


def test_one_wild_estimate_lowers_a_log_weight_by_at_most_max_log_decrease():
    algo = build_algorithm("erma", ["a", "b"], {"max_log_decrease": 0.5})
    a, b = [0.1, 0.1, 0.2], [1000.0, 0.0, 3000.0]  # b: a wild estimate (huge variance)
    algo.apply_update(_stats([a, b]), 1)
    # a's step is within the bound: γ1·π·L − γ2·π·w·Var with γ1 = γ2 = 0.5, π = 0.5, w = 1
    assert algo.log_u[0] == pytest.approx(0.25 * np.mean(a) - 0.25 * np.var(a, ddof=1))
    assert algo.log_u[1] == pytest.approx(-0.5)
    assert np.isclose(np.log(algo.loss_weights[0] / algo.loss_weights[1]), algo.log_u[0] + 0.5)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _classification(seed, use_erma, d=20, n=100, m=100, flip=0.4, steps=300, lr=0.5):
    """Logistic regression on a clean domain and a domain with 40% flipped labels (same inputs and
    true classifier); ERMA updates the loss weights every 5 steps from held-out log-losses. Returns the
    accuracy on clean test labels and the final weights."""
    rng = np.random.default_rng(seed)
    theta_star = rng.normal(size=d)

    def draw(k, noisy):
        x = rng.normal(size=(k, d))
        y = (x @ theta_star > 0).astype(float)
        if noisy:
            flipped = rng.random(k) < flip
            y[flipped] = 1 - y[flipped]
        return x, y

    train, held = [draw(n, False), draw(n, True)], [draw(m, False), draw(m, True)]
    x_test, y_test = draw(4000, False)
    algo = build_algorithm("erma", ["clean", "noisy"], {})
    theta = np.zeros(d)
    for t in range(1, steps + 1):
        w = algo.loss_weights if use_erma else np.ones(2)
        theta -= lr * sum(0.5 * wi * x.T @ (_sigmoid(x @ theta) - y) / n for wi, (x, y) in zip(w, train))
        if use_erma and t % 5 == 0:
            algo.apply_update(_stats([np.logaddexp(0, -(x @ theta) * (2 * y - 1)) for x, y in held]), t)
    return float(np.mean((x_test @ theta > 0) == (y_test > 0.5))), algo.loss_weights


def test_erma_beats_uniform_on_clean_accuracy_with_a_label_noise_domain():
    seeds = range(8)
    uniform = np.array([_classification(s, False)[0] for s in seeds])
    runs = [_classification(s, True) for s in seeds]
    erma = np.array([a for a, _ in runs])
    assert erma.mean() > uniform.mean() + 0.02
    assert (erma > uniform).sum() >= 6
    assert all(w[1] < w[0] for _, w in runs)


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"^val_size: ERMA needs a held-out split per domain; set val_size > 0$"):
        load_config(raw=_inline_config(tmp_path, {"name": "erma"}, 0))
    with pytest.raises(ConfigError, match=r"^erma.params.schedule: expected one of \['constant', 'inverse_sqrt'\]"):
        load_config(raw=_inline_config(tmp_path, {"name": "erma", "params": {"schedule": "cosine"}}, 1))
    with pytest.raises(ConfigError, match=r"^erma.params.gamma2: expected a number >= 0, got -1.0$"):
        load_config(raw=_inline_config(tmp_path, {"name": "erma", "params": {"gamma2": -1}}, 1))


# ---- StepEngine level ---------------------------------------------------------------------------------
def _two_rank_erma(rank, world, out):
    train, engine = heldout_engine("erma", {"gamma1": 2.0, "gamma2": 2.0}, rank=rank, world=world, update_step=1)
    model, head = _model()
    train_steps(engine, train, model, head, 1, 4)
    torch.save(
        {"w": engine.algorithm.loss_weights, "state": engine.algorithm.state_dict()},
        os.path.join(out, f"r{rank}_of_{world}.pt"),
    )


@pytest.mark.distributed
def test_two_ranks_hold_identical_weights_equal_to_a_single_process(tmp_path):
    run_distributed(_two_rank_erma, str(tmp_path))
    _two_rank_erma(0, 1, str(tmp_path))
    r0, r1, single = (torch.load(tmp_path / f, weights_only=False) for f in ("r0_of_2.pt", "r1_of_2.pt", "r0_of_1.pt"))
    assert np.array_equal(r0["w"], r1["w"])
    assert np.allclose(r0["w"], single["w"], rtol=1e-9)
    assert not np.allclose(single["w"], np.ones(3))


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    params = {"gamma1": 2.0, "gamma2": 2.0, "schedule": "inverse_sqrt"}
    train, full = heldout_engine("erma", params, log_dir=tmp_path / "full")
    model, head = _model()
    train_steps(full, train, model, head, 1, 8)

    train, cut = heldout_engine("erma", params, log_dir=tmp_path / "cut")
    train_steps(cut, train, model, head, 1, 5)
    cut.save(tmp_path / "ckpt")
    train, resumed = heldout_engine("erma", params, log_dir=tmp_path / "cut")
    resumed.load(tmp_path / "ckpt")
    assert np.array_equal(resumed.algorithm.log_u, cut.algorithm.log_u)
    train_steps(resumed, train, model, head, 6, 8)

    logs = [
        [json.loads(x) for x in (tmp_path / d / "erma_weights.jsonl").read_text().splitlines()] for d in ("full", "cut")
    ]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [2, 4, 6, 8]
    for a, b in zip(*logs):
        assert np.allclose(a["loss_weights"], b["loss_weights"], rtol=1e-12)
    assert not np.allclose(logs[0][-1]["loss_weights"], np.ones(3))


def test_non_finite_heldout_losses_skip_the_update_with_a_warning(caplog):
    train, engine = heldout_engine("erma", {}, update_step=1)
    model, head = _model()
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        assert train_steps(engine, train, model, head, 1, 3, nan_at=2) == [True, False, True]
    assert "non-finite" in caplog.text
    assert engine.algorithm.num_updates == 2 and engine.skipped_updates == 1
    assert np.isfinite(engine.algorithm.loss_weights).all()


def test_mixflow_train_runs_erma_on_the_demo_corpus(tmp_path, demo_data):  # noqa: F811
    from mixflow.cli.main import main

    cfg = cli_config(tmp_path, demo_data, {"name": "erma", "params": {"gamma1": 1.0}}, max_steps=6, save_steps=3)
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "run"
    records = [json.loads(x) for x in (run / "erma_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    w = np.array(records[-1]["loss_weights"])
    assert np.isclose(w.mean(), 1.0) and not np.allclose(w, 1.0)
    assert all(s is not None for s in records[-1]["perdomain_scores"])  # held-out losses were evaluated
    state = json.loads((run / "checkpoint-3" / "mixflow_state.json").read_text())
    assert len(state["algorithm"]["log_u"]) == 4
    # resuming from step 3 writes the same weight trajectory again
    assert main(["train", str(cfg), f"resume_from_checkpoint={run / 'checkpoint-3'}", "--quiet"]) == 0
    again = [json.loads(x) for x in (run / "erma_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [2, 4, 6]
    for a, b in zip(records, again):
        assert np.allclose(a["loss_weights"], b["loss_weights"], rtol=1e-6)
