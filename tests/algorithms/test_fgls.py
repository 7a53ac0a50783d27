"""One-shot FGLS: GLS-level error on the seed's 2-domain regression, the held-out provider, the
config check, the step engine (2 ranks, resume, NaN skip) and `mixflow train`.

The engine-level helpers here (``heldout_engine``, ``train_steps``) are shared with test_erma/test_va.
"""

import json
import logging
import os

import numpy as np
import pytest
import torch
import yaml

from mixflow.algorithms.base import ProviderSpec
from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats, heldout_moments, heldout_stats
from mixflow.config import ConfigError, load_config
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.providers.base import ProviderContext, UpdateContext, build_providers
from mixflow.providers.heldout_loss import HeldoutLoss
from mixflow.testing import run_distributed
from tests.helpers import TINY_MODEL, tiny_domains, tiny_llama


# ---- the property of the paper: 2 domains, d = 10, C = I, equal n, σ² = (1, 10) ------------
def _regression(seed, mode, d=10, n=200, m=100, sigma2=(1.0, 10.0), steps=200, lr=0.2):
    """Full-batch gradient descent on Σ π_i w_i mean_i (x·θ − y)²; with FGLS, w is updated after every
    step from the held-out squared residuals (σ̂_i² = their mean). Returns (‖θ − θ*‖², w)."""
    rng = np.random.default_rng(seed)
    theta_star = rng.normal(size=d)
    train = [
        (x, x @ theta_star + rng.normal(scale=np.sqrt(s), size=n)) for s in sigma2 for x in [rng.normal(size=(n, d))]
    ]
    held = [
        (x, x @ theta_star + rng.normal(scale=np.sqrt(s), size=m)) for s in sigma2 for x in [rng.normal(size=(m, d))]
    ]
    algo = build_algorithm("fgls", ["low_noise", "high_noise"], {})
    theta = np.zeros(d)
    for t in range(steps):
        w = algo.loss_weights if mode == "fgls" else np.ones(2)
        theta -= lr * sum(0.5 * wi * 2 * x.T @ (x @ theta - y) / n for wi, (x, y) in zip(w, train))
        if mode == "fgls":
            stats = DomainStats.zeros(2)
            stats.extras.update(heldout_stats([(x @ theta - y) ** 2 for x, y in held]))
            algo.apply_update(stats, t + 1)
    return float(np.sum((theta - theta_star) ** 2)), algo.loss_weights


def test_one_shot_fgls_reaches_gls_error_on_the_two_domain_regression():
    d, n, seeds = 10, 200, range(50)  # one seed's error is a noisy, skewed draw: average many
    uniform = np.mean([_regression(s, "uniform")[0] for s in seeds])
    runs = [_regression(s, "fgls") for s in seeds]
    fgls = np.mean([e for e, _ in runs])
    ratio = np.mean([w[0] / w[1] for _, w in runs])
    # closed forms: uniform OLS 2.75·d/n, GLS 0.91·d/n (finite n adds ~d/N to both)
    assert 2.75 * 0.8 < uniform / (d / n) < 2.75 * 1.25
    assert 0.91 * 0.85 < fgls / (d / n) < 0.91 * 1.25
    assert uniform / fgls > 2.3  # ≈3× below uniform
    assert 8.0 < ratio < 12.0  # w_1/w_2 → σ_2²/σ_1² = 10
    for _, w in runs:
        assert np.isclose(0.5 * w.sum(), 1.0)  # Σ π_i w_i = 1


def test_smoothing_moves_a_fraction_beta_towards_the_target_whatever_the_loss_scale():
    for scale in (1e-3, 1.0, 1e3):
        algo = build_algorithm("fgls", ["a", "b"], {"beta": 0.25})
        stats = DomainStats.zeros(2)
        stats.extras.update(heldout_stats([[1.0 * scale] * 3, [4.0 * scale] * 3]))
        algo.apply_update(stats, 1)
        target = np.array([1.0, 0.25]) / (0.5 * 1.25)  # ∝ 1/σ̂², Σ π t = 1
        assert np.allclose(algo.loss_weights, 0.75 * 1 + 0.25 * target)
        assert np.allclose(algo.scores, [1.0 * scale, 4.0 * scale])
    raw = build_algorithm("fgls", ["a", "b"], {"beta": 0.25, "target_scale": "raw"})
    stats = DomainStats.zeros(2)
    stats.extras.update(heldout_stats([[0.01] * 3, [0.04] * 3]))
    raw.apply_update(stats, 1)
    expected = 0.75 + 0.25 / np.array([0.01, 0.04])
    assert np.allclose(raw.loss_weights, expected / (0.5 * expected.sum()))


def test_a_domain_without_heldout_rows_keeps_its_weight_and_params_are_checked():
    algo = build_algorithm("fgls", ["a", "b", "c"], {"beta": 1.0})
    stats = DomainStats.zeros(3)
    stats.extras.update(heldout_stats([[1.0, 1.0], [2.0, 2.0], []]))
    algo.apply_update(stats, 1)
    w = algo.loss_weights
    assert np.isfinite(w).all() and np.isclose(w.mean(), 1.0)
    assert np.isclose(w[0] / w[1], 2.0)
    with pytest.raises(ValueError, match=r"component.params.beta: expected a number in \(0, 1\]"):
        build_algorithm("fgls", ["a", "b"], {"beta": 1.5})


# ---- the heldout_loss provider ------------------------------------------------------------------
def heldout_context(domains=None, batch_size=3):
    domains = domains or tiny_domains()
    train = MixtureDataset(domains)
    val = MixtureDataset(domains, split="val")
    heldout = {name: val.single_domain(i) for i, name in enumerate(train.domain_names)}
    return train, ProviderContext(train.domain_names, heldout, DomainCollator(0), eval_batch_size=batch_size)


def test_heldout_provider_matches_a_direct_evaluation_and_restores_train_mode():
    train, ctx = heldout_context()
    model = tiny_llama(seed=3)
    model.train()
    (provider,) = build_providers([ProviderSpec("heldout_loss", None, "FGLS")], ctx)
    sums = provider.update_statistics(UpdateContext(model, 1, 3))
    assert model.training
    stats = DomainStats.zeros(3)
    stats.extras.update(sums)
    mean, var, count = heldout_moments(stats)
    model.eval()
    with torch.no_grad():
        for d, name in enumerate(train.domain_names):
            rows = torch.stack([ctx.heldout[name][i]["input_ids"] for i in range(len(ctx.heldout[name]))])
            logits = model(input_ids=rows).logits[:, :-1]
            per = (
                torch.nn.functional.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="none")
                .mean(1)
                .double()
            )
            assert count[d] == len(rows)
            assert np.isclose(mean[d], per.mean().item(), rtol=1e-5)
            assert np.isclose(var[d], per.var(unbiased=True).item(), rtol=1e-4)


def test_rank_shards_sum_to_the_whole_heldout_set():
    _, ctx = heldout_context(batch_size=2)
    model = tiny_llama(seed=4)
    (provider,) = build_providers([ProviderSpec("heldout_loss", None, "FGLS")], ctx)
    whole = provider.update_statistics(UpdateContext(model, 1, 3))
    parts = [provider.update_statistics(UpdateContext(model, 1, 3, rank=r, world_size=3)) for r in range(3)]
    for key in whole:
        assert torch.allclose(sum(p[key] for p in parts), whole[key], rtol=1e-6)


def test_heldout_provider_needs_a_split_and_the_model():
    with pytest.raises(ValueError, match="val_size: the heldout_loss provider needs a held-out split"):
        build_providers([ProviderSpec("heldout_loss", None, "FGLS")], ProviderContext(["a", "b"]))
    train, ctx = heldout_context()
    ctx.heldout = dict(list(ctx.heldout.items())[:2])
    with pytest.raises(ValueError, match=r"val_size: domain\(s\) \['d2'\] have no held-out rows"):
        build_providers([ProviderSpec("heldout_loss", None, "FGLS")], ctx)
    with pytest.raises(ValueError, match="pass model= to StepEngine.end_step"):
        HeldoutLoss([]).update_statistics(UpdateContext(None, 1, 0))


def test_classification_task_uses_per_example_cross_entropy():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0, 1])
    data = [{"input_ids": x[i], "labels": y[i]} for i in range(5)]
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))

    class Wrapped(torch.nn.Module):  # takes input_ids like a collated batch
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids):
            return self.inner(input_ids)

    provider = HeldoutLoss([data], batch_size=2, task="classification")
    sums = provider.update_statistics(UpdateContext(Wrapped(), 1, 1))
    expected = torch.nn.functional.cross_entropy(model(x), y, reduction="none").double()
    assert torch.isclose(sums["heldout_loss_sum"][0], expected.sum())
    assert sums["heldout_count"].tolist() == [5.0]


# ---- the config check --------------------------------------------------------------------------
def _inline_config(tmp_path, component, val_size):
    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.txt"
        path.write_text("some text\nmore text\n")
        files.append({"name": name, "path": str(path)})
    return {
        "domains": files,
        "val_size": val_size,
        "component": component,
        "output_dir": str(tmp_path / "out"),
        "model_config": {"model_type": "llama"},
    }


def test_config_without_a_heldout_split_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^val_size: FGLS needs a held-out split per domain; set val_size > 0$"):
        load_config(raw=_inline_config(tmp_path, {"name": "fgls"}, 0))
    with pytest.raises(ConfigError, match=r"^fgls.params.beta: expected a number in \(0, 1\], got 0.0$"):
        load_config(raw=_inline_config(tmp_path, {"name": "fgls", "params": {"beta": 0}}, 1))
    run = load_config(raw=_inline_config(tmp_path, {"name": "fgls"}, 1))
    assert run.mixing.component.name == "fgls"


# ---- StepEngine level: shared harness ---------------------------------------------------------------
def heldout_engine(algorithm, params, rank=0, world=1, update_step=2, log_dir=None, batch=6):
    """A StepEngine over tiny_domains() with the held-out provider context (3 domains, 4 held-out rows each)."""
    train, ctx = heldout_context()
    algo = build_algorithm(algorithm, train.domain_names, params, init_weights=np.ones(3) / 3)
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, batch, seed=1, rank=rank, world_size=world)
    engine = StepEngine(
        sampler, algo, schedule=UpdateSchedule(update_step=update_step), log_dir=log_dir, provider_context=ctx
    )
    return train, engine


def set_model_to_step(model, base_head, step):
    """The model 'after step `step`': a deterministic function of the step, identical on every rank and
    after a resume (the test's stand-in for training)."""
    with torch.no_grad():
        model.lm_head.weight.copy_(base_head * (1.0 + 0.4 * step))


def train_steps(engine, train, model, base_head, first, last, nan_at=None, nan_logits_at=None):
    """Run optimizer steps first..last: forward the rank's slice, the step engine's loss and end_step(model=...).
    ``nan_at``: the model turns NaN before that step's update (held-out losses are NaN);
    ``nan_logits_at``: that step's training logits are NaN."""
    collate = DomainCollator(0)
    it = engine.sampler.iter_batches()
    updated = []
    for step in range(first, last + 1):
        rows = next(it)
        batch = collate([train[int(i)] for i in rows])
        set_model_to_step(model, base_head, step - 1)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if step == nan_logits_at:
            logits = logits * float("nan")
        loss = engine.training_loss(
            logits, MicroBatch(batch["domain_ids"], batch["labels"], batch_index=step - 1, model=model)
        )
        loss.backward()
        model.zero_grad()
        set_model_to_step(model, base_head, step)
        if step == nan_at:
            with torch.no_grad():
                model.lm_head.weight.fill_(float("nan"))
        updated.append(engine.end_step(step, model=model))
    return updated


def _model():
    model = tiny_llama(seed=7)
    return model, model.lm_head.weight.detach().clone()


def _two_rank_fgls(rank, world, out):
    train, engine = heldout_engine("fgls", {"beta": 0.5}, rank=rank, world=world, update_step=1)
    model, head = _model()
    train_steps(engine, train, model, head, 1, 4)
    torch.save(
        {"w": engine.algorithm.loss_weights, "p": engine.algorithm.sampling_weights},
        os.path.join(out, f"r{rank}_of_{world}.pt"),
    )


@pytest.mark.distributed
def test_two_ranks_hold_identical_weights_equal_to_a_single_process(tmp_path):
    run_distributed(_two_rank_fgls, str(tmp_path))
    _two_rank_fgls(0, 1, str(tmp_path))
    r0, r1, single = (torch.load(tmp_path / f, weights_only=False) for f in ("r0_of_2.pt", "r1_of_2.pt", "r0_of_1.pt"))
    assert np.array_equal(r0["w"], r1["w"])
    assert np.allclose(r0["w"], single["w"], rtol=1e-9)
    assert not np.allclose(single["w"], np.ones(3))
    assert np.allclose(single["p"], np.ones(3) / 3)  # FGLS leaves sampling alone


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    train, full = heldout_engine("fgls", {}, log_dir=tmp_path / "full")
    model, head = _model()
    train_steps(full, train, model, head, 1, 6)

    train, cut = heldout_engine("fgls", {}, log_dir=tmp_path / "cut")
    train_steps(cut, train, model, head, 1, 3)
    cut.save(tmp_path / "ckpt")
    train, resumed = heldout_engine("fgls", {}, log_dir=tmp_path / "cut")
    resumed.load(tmp_path / "ckpt")
    train_steps(resumed, train, model, head, 4, 6)

    logs = [
        [json.loads(x) for x in (tmp_path / d / "fgls_weights.jsonl").read_text().splitlines()] for d in ("full", "cut")
    ]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [2, 4, 6]
    for a, b in zip(*logs):
        assert np.allclose(a["loss_weights"], b["loss_weights"], rtol=1e-12)
        assert a["domain_weights"] == a["loss_weights"]
    assert not np.allclose(logs[0][-1]["loss_weights"], np.ones(3))


def test_non_finite_heldout_losses_skip_the_update_with_a_warning(caplog):
    train, engine = heldout_engine("fgls", {}, update_step=1)
    model, head = _model()
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        assert train_steps(engine, train, model, head, 1, 2, nan_at=2) == [True, False]
    assert "non-finite" in caplog.text
    before = engine.algorithm.loss_weights
    assert np.isfinite(before).all() and engine.algorithm.num_updates == 1
    assert train_steps(engine, train, model, head, 3, 3) == [True]


# ---- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from mixflow.cli.main import main

    out = tmp_path_factory.mktemp("demo") / "data"
    assert main(["data", "demo", str(out), "--max-bytes", "30000", "--quiet"]) == 0
    return out


def cli_config(tmp_path, demo_data, component, **extra):
    """A `mixflow train` YAML on the demo corpus with a tiny model (shared with test_erma/test_va)."""
    cfg = {
        "dataset": "code,prose,arithmetic,random",
        "dataset_dir": str(demo_data),
        "cutoff_len": 32,
        "val_size": 4,
        "train_type": "dynamic_mix",
        "component": component,
        "update_step": 2,
        "model_config": TINY_MODEL,
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "max_steps": 4,
        "logging_steps": 2,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "disable_tqdm": True,
        **extra,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_mixflow_train_runs_fgls_on_the_demo_corpus(tmp_path, demo_data):
    from mixflow.cli.main import main

    assert (
        main(["train", str(cli_config(tmp_path, demo_data, {"name": "fgls", "params": {"beta": 0.5}})), "--quiet"]) == 0
    )
    records = [json.loads(x) for x in (tmp_path / "run" / "fgls_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    w = np.array(records[-1]["loss_weights"])
    assert np.isclose(w.mean(), 1.0) and not np.allclose(w, 1.0)
    # the random-byte domain has the highest held-out loss, hence the lowest weight
    assert int(np.argmin(w)) == records[-1]["domain_names"].index("random")
    assert records[-1]["sampling_weights"] == pytest.approx([0.25] * 4)
