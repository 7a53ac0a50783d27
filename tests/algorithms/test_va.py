"""VA: b ∝ π·w·v on the seed's covariance example, lower batch-gradient variance than proportional
sampling, an unchanged expected gradient, the floor, composition with ERMA and FGLS, the config,
the step engine (2 ranks, resume, NaN skip) and `mixflow train`."""

import json
import logging
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats, heldout_stats
from mixflow.config import ConfigError, load_config
from mixflow.data.sampler import MixtureSampler
from mixflow.loss.objective import DomainVectors, domain_coefficients
from mixflow.loss.per_sample import SampleLosses
from mixflow.providers.base import BatchContext, build_providers
from mixflow.testing import run_distributed
from tests.algorithms.test_fgls import (  # shared harness (helpers only, no tests)
    _inline_config,
    _model,
    cli_config,
    demo_data,  # noqa: F401  (fixture)
    heldout_engine,
    train_steps,
)

GRAD = {"grad_params": ["weight"], "grad_groups": 1000, "grad_sketch_dim": 0}  # exact per-sample moments


class _Regression:
    """Two domains x ~ N(0, C_i), y = x·θ* + ε (ε ~ N(0, σ²)), finite populations, a linear model."""

    def __init__(self, scales=(1.0, 10.0), d=10, pop=400, sigma=1.0, seed=0):
        rng = np.random.default_rng(seed)
        self.theta_star = rng.normal(size=d)
        self.sizes = [pop] * len(scales)
        self.x = np.concatenate([rng.normal(size=(pop, d)) * s for s in scales])  # C_i = s_i²·I
        self.y = self.x @ self.theta_star + sigma * rng.normal(size=len(self.x))
        self.ids = np.repeat(np.arange(len(scales)), pop)

    def per_sample_grads(self, theta):
        """∇_θ ½(x·θ − y)² for every row."""
        return self.x * (self.x @ theta - self.y)[:, None]

    def grad_extras(self, provider, theta, rows):
        """The grad_stats provider's sums for a batch, through a torch linear model at θ."""
        # one model for the whole run: the provider binds to its parameters on first use
        if not hasattr(self, "model"):
            self.model = torch.nn.Linear(len(theta), 1, bias=False, dtype=torch.float64)
        model = self.model
        with torch.no_grad():
            model.weight.copy_(torch.as_tensor(theta)[None])
        x, y = torch.as_tensor(self.x[rows]), torch.as_tensor(self.y[rows])
        per = 0.5 * (model(x).squeeze(-1) - y) ** 2
        ones = torch.ones(len(rows))
        losses = SampleLosses(per, ones, per[:, None], ones[:, None].bool())
        ids = torch.as_tensor(self.ids[rows])
        ctx = BatchContext(model, {}, y, losses, ids, 2, batch_index=0, update_pending=True)
        return provider.batch_statistics(ctx)

    def fit_va(self, theta, updates=30, batch=64, params=None):
        """VA after `updates` updates at a fixed θ, each on one batch drawn with its current p."""
        va = build_algorithm("va", ["a", "b"], {**GRAD, **(params or {})})
        va.bind(batch)
        (provider,) = build_providers(va.provider_specs(va.params))
        sampler = MixtureSampler(self.sizes, va.sampling_weights, batch, seed=0)
        it = sampler.iter_batches()
        for t in range(1, updates + 1):
            stats = DomainStats.zeros(2)
            stats.extras.update(self.grad_extras(provider, theta, next(it)))
            va.apply_update(stats, t)
            sampler.set_weights(va.sampling_weights)
        return va

    def batch_gradients(self, p, theta, batches=300, batch=64, importance=True):
        """The step's gradient (1/B)·Σ_j c_j ∇ℓ_j over batches drawn with p; c from the step engine's rule."""
        grads = self.per_sample_grads(theta)
        sampler = MixtureSampler(self.sizes, p, batch, seed=1)
        it = sampler.iter_batches()
        prior = torch.full((2,), 0.5, dtype=torch.float64)
        out = []
        for _ in range(batches):
            rows = next(it)
            ids = torch.as_tensor(self.ids[rows])
            mode = "importance" if importance else "objective"
            c = domain_coefficients(
                ids, mode, DomainVectors(torch.as_tensor(p), torch.ones(2, dtype=torch.float64), prior)
            )
            c = np.ones(len(rows)) if c is None else c.numpy()
            out.append((c[:, None] * grads[rows]).sum(0) / batch)
        return np.array(out)

    def full_gradient(self, theta):
        """∇ Σ_i π_i L_i with π uniform, w = 1."""
        grads = self.per_sample_grads(theta)
        return 0.5 * grads[self.ids == 0].mean(0) + 0.5 * grads[self.ids == 1].mean(0)


def test_covariances_i_and_100i_with_equal_noise_give_b2_over_b1_near_10():
    problem = _Regression(scales=(1.0, 10.0))
    va = problem.fit_va(problem.theta_star)  # at θ*, v_i² = σ²·tr(C_i): v_2/v_1 = 10
    p = va.sampling_weights
    assert 8.0 < p[1] / p[0] < 12.5  # the finite populations put the exact ratio within ±15% of 10
    assert np.allclose(va.loss_weights, 1.0)
    assert np.isclose(va.scores[1] / va.scores[0], p[1] / p[0])  # perdomain_scores: v_i


def test_at_fixed_theta_va_has_lower_batch_gradient_variance_than_proportional_sampling():
    problem = _Regression(scales=(1.0, 10.0))
    theta = problem.theta_star + 0.05 * np.random.default_rng(3).normal(size=10)
    va = problem.fit_va(theta)
    full = problem.full_gradient(theta)
    mse = {}
    for name, p in (("va", va.sampling_weights), ("proportional", np.array([0.5, 0.5]))):
        g = problem.batch_gradients(p, theta)
        mse[name] = np.mean(np.sum((g - full) ** 2, axis=1))
    # theory (Σ π² v² / b): 0.25·(1 + 100)/(B/2) vs 0.25·(1 + 10)²/B, a ratio ≈ 0.6
    assert mse["va"] < 0.75 * mse["proportional"]


def test_va_does_not_change_the_expected_gradient():
    problem = _Regression(scales=(1.0, 10.0), pop=120)
    theta = problem.theta_star + 0.3
    va = problem.fit_va(theta, updates=10)
    p = va.sampling_weights
    assert p[1] > 0.8  # far from the objective's mixture π = (0.5, 0.5)
    full = problem.full_gradient(theta)
    corrected = problem.batch_gradients(p, theta, batches=600).mean(0)
    plain = problem.batch_gradients(p, theta, batches=600, importance=False).mean(0)
    assert np.linalg.norm(corrected - full) < 0.03 * np.linalg.norm(full)
    assert np.linalg.norm(plain - full) > 0.3 * np.linalg.norm(full)  # without q/p the objective would change


def test_floor_keeps_at_least_min_samples_per_domain():
    va = build_algorithm("va", ["a", "b", "c"], {})
    va.bind(16)
    p = va.floored(np.array([1.0, 1000.0, 1.0]))
    assert np.allclose(p, [2 / 16, 12 / 16, 2 / 16])
    assert np.allclose(va.floored(np.array([1.0, 2.0, 0.0])), [1 / 3, 2 / 3, 0.0])  # π·w = 0: never sampled
    with pytest.raises(ValueError, match=r"va.params.min_samples: K·min_samples = 3·6 ≥ the global batch B = 16"):
        build_algorithm("va", ["a", "b", "c"], {"min_samples": 6}, where="va", batch_size=16)
    # K·min_samples = B floors every weight to 1/K: VA could never move, so that is an error too
    with pytest.raises(ValueError, match=r"use a global batch of at least 9"):
        build_algorithm("va", ["a", "b", "c", "d"], {}, where="va", batch_size=8)


def _grad_sums(pairs):
    """grad_stats sums for 1-D gradients, one pair of single-sample groups per domain (None: absent)."""
    k = len(pairs)
    g = [np.array(x, dtype=float) if x is not None else np.zeros(0) for x in pairs]
    stats = DomainStats.zeros(k)
    stats.extras.update(
        {
            "grad_sum": torch.tensor([[x.sum()] for x in g], dtype=torch.float64),
            "grad_sq_sum": torch.tensor([np.square(x).sum() for x in g], dtype=torch.float64),
            "grad_groups": torch.tensor([float(x.size) for x in g], dtype=torch.float64),
            "grad_samples": torch.tensor([float(x.size) for x in g], dtype=torch.float64),
        }
    )
    return stats


def test_ema_starts_at_the_first_estimate_and_an_unseen_domain_counts_as_typical():
    va = build_algorithm("va", ["a", "b", "c"], {"beta": 0.5})
    va.apply_update(_grad_sums([(1.0, -1.0), (0.0, 4.0), None]), 1)  # σ̂² = sample variance: 2 and 8
    assert np.allclose(va.v2[:2], [2.0, 8.0]) and np.isnan(va.v2[2])
    v = np.sqrt([2.0, 8.0])
    v = np.append(v, v.mean())
    assert np.allclose(va.sampling_weights, v / v.sum())
    va.apply_update(_grad_sums([(2.0, -2.0), None, (0.0, 2.0)]), 2)  # σ̂² = 8, absent, 2
    assert np.allclose(va.v2, [0.5 * 2 + 0.5 * 8, 8.0, 2.0])


def test_composition_with_erma_and_fgls_gives_both_weight_kinds():
    rng = np.random.default_rng(0)
    problem = _Regression(scales=(1.0, 3.0))
    for inner in ("erma", "fgls"):
        va = build_algorithm("va", ["a", "b"], {**GRAD, "loss_weights_from": {"name": inner}})
        assert [spec.name for spec in va.provider_specs(va.params)] == ["grad_stats", "heldout_loss"]
        va.bind(64)
        grad_provider = build_providers(va.provider_specs(va.params)[:1])[0]  # heldout sums are given below
        sampler = MixtureSampler(problem.sizes, va.sampling_weights, 64, seed=0)
        it = sampler.iter_batches()
        for t in range(1, 11):
            stats = DomainStats.zeros(2)
            stats.extras.update(problem.grad_extras(grad_provider, problem.theta_star, next(it)))
            # held-out squared residuals: domain b has 4× the label noise
            stats.extras.update(heldout_stats([rng.normal(size=200) ** 2, (2 * rng.normal(size=200)) ** 2]))
            va.apply_update(stats, t)
            sampler.set_weights(va.sampling_weights)
        w, p, v = va.loss_weights, va.sampling_weights, va.scores
        assert np.allclose(w, va.inner.loss_weights) and w[1] < w[0]  # loss weights: the inner's
        assert np.allclose(p, 0.5 * w * v / np.sum(0.5 * w * v))  # sampling: b ∝ π·w·v
        assert not np.allclose(p, 0.5)
        assert np.allclose(va.domain_weights, p)
        state = va.state_dict()
        assert "inner" in state
        again = build_algorithm("va", ["a", "b"], {**GRAD, "loss_weights_from": {"name": inner}})
        again.load_state_dict(json.loads(json.dumps(state)))
        assert np.allclose(again.loss_weights, w) and np.allclose(again.sampling_weights, p)


def test_config_checks(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^val_size: VA \(loss_weights_from: erma\) needs a held-out split per domain; set val_size > 0$",
    ):
        load_config(raw=_inline_config(tmp_path, {"name": "va", "params": {"loss_weights_from": {"name": "erma"}}}, 0))
    assert load_config(raw=_inline_config(tmp_path, {"name": "va"}, 0)).mixing.component.name == "va"
    with pytest.raises(ConfigError, match=r"^va.params.loss_weights_from.name: expected a loss-weight algorithm"):
        load_config(raw=_inline_config(tmp_path, {"name": "va", "params": {"loss_weights_from": {"name": "va"}}}, 1))
    with pytest.raises(ConfigError, match=r"^va.params.loss_weights_from.params.beta: expected a number in \(0, 1\]"):
        load_config(
            raw=_inline_config(
                tmp_path, {"name": "va", "params": {"loss_weights_from": {"name": "fgls", "params": {"beta": 3}}}}, 1
            )
        )
    with pytest.raises(ConfigError, match=r"^va.params.beta: expected a number in \[0, 1\), got 1.0$"):
        load_config(raw=_inline_config(tmp_path, {"name": "va", "params": {"beta": 1}}, 1))


# ---- StepEngine level -----------------------------------------------------------------------------------
VA_FGLS = {"grad_groups": 1000, "grad_sketch_dim": 0, "loss_weights_from": {"name": "fgls", "params": {"beta": 0.5}}}


def _two_rank_va(rank, world, out):
    train, engine = heldout_engine("va", VA_FGLS, rank=rank, world=world, update_step=1, batch=12)
    model, head = _model()
    train_steps(engine, train, model, head, 1, 4)
    a = engine.algorithm
    torch.save(
        {"p": a.sampling_weights, "w": a.loss_weights, "bound": a.batch_size},
        os.path.join(out, f"r{rank}_of_{world}.pt"),
    )


@pytest.mark.distributed
def test_two_ranks_hold_identical_weights_equal_to_a_single_process(tmp_path):
    run_distributed(_two_rank_va, str(tmp_path))
    _two_rank_va(0, 1, str(tmp_path))
    r0, r1, single = (torch.load(tmp_path / f, weights_only=False) for f in ("r0_of_2.pt", "r1_of_2.pt", "r0_of_1.pt"))
    for key in ("p", "w"):
        assert np.array_equal(r0[key], r1[key])
        assert np.allclose(r0[key], single[key], rtol=1e-9)
    assert not np.allclose(single["p"], np.ones(3) / 3) and not np.allclose(single["w"], np.ones(3))
    assert r0["bound"] == single["bound"] == 12  # the step engine bound the global batch size


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    params = {"loss_weights_from": {"name": "erma", "params": {"gamma1": 2.0}}}
    train, full = heldout_engine("va", params, log_dir=tmp_path / "full", batch=12)
    model, head = _model()
    train_steps(full, train, model, head, 1, 8)

    train, cut = heldout_engine("va", params, log_dir=tmp_path / "cut", batch=12)
    train_steps(cut, train, model, head, 1, 5)
    cut.save(tmp_path / "ckpt")
    train, resumed = heldout_engine("va", params, log_dir=tmp_path / "cut", batch=12)
    resumed.load(tmp_path / "ckpt")
    train_steps(resumed, train, model, head, 6, 8)

    logs = [
        [json.loads(x) for x in (tmp_path / d / "va_weights.jsonl").read_text().splitlines()] for d in ("full", "cut")
    ]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [2, 4, 6, 8]
    for a, b in zip(*logs):
        assert np.allclose(a["sampling_weights"], b["sampling_weights"], rtol=1e-12)
        assert np.allclose(a["loss_weights"], b["loss_weights"], rtol=1e-12)
        assert a["domain_weights"] == a["sampling_weights"]
    assert not np.allclose(logs[0][-1]["sampling_weights"], np.ones(3) / 3)
    assert not np.allclose(logs[0][-1]["loss_weights"], np.ones(3))


def test_non_finite_statistics_skip_the_update_with_a_warning(caplog):
    train, engine = heldout_engine("va", {}, update_step=1, batch=12)
    model, head = _model()
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        assert train_steps(engine, train, model, head, 1, 3, nan_logits_at=2) == [True, False, True]
    assert "non-finite" in caplog.text
    assert np.isfinite(engine.algorithm.sampling_weights).all()
    train, composed = heldout_engine("va", VA_FGLS, update_step=1, batch=12)
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        assert train_steps(composed, train, model, head, 1, 2, nan_at=2) == [True, False]
    assert composed.algorithm.inner.num_updates == 1  # the inner algorithm's update was skipped too


def test_missing_gradient_statistics_are_a_clear_error():
    va = build_algorithm("va", ["a", "b"], {})
    with pytest.raises(ValueError, match="pass model= to StepEngine.training_loss"):
        va.apply_update(DomainStats.zeros(2), 1)


def test_mixflow_train_runs_erma_with_va_on_the_demo_corpus(tmp_path, demo_data):  # noqa: F811
    from mixflow.cli.main import main

    component = {"name": "va", "params": {"grad_groups": 2, "loss_weights_from": {"name": "erma"}}}
    cfg = cli_config(tmp_path, demo_data, component, per_device_train_batch_size=8)
    assert main(["train", str(cfg), "--quiet"]) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "va_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    p, w = np.array(records[-1]["sampling_weights"]), np.array(records[-1]["loss_weights"])
    assert np.isclose(p.sum(), 1.0) and not np.allclose(p, 0.25) and p.min() >= 2 / 16 - 1e-12
    assert np.isclose(w.mean(), 1.0) and not np.allclose(w, 1.0)
    assert records[-1]["domain_weights"] == records[-1]["sampling_weights"]
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "mixflow_state.json").read_text())
    assert set(state["algorithm"]) >= {"v2", "inner"} and "log_u" in state["algorithm"]["inner"]
