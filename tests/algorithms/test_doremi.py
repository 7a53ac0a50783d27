"""DoReMi (Xie et al. 2023, arXiv 2305.10429 "DoReMi"): the update rule and its Properties, the reference_loss provider with
real tiny models, the weights reaching the gradient, config errors, 2 ranks, resume, NaN skip."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mixflow.algorithms.doremi import DoReMi, DoReMiParams
from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import REF_EXCESS_SUM as EXCESS_KEY
from mixflow.algorithms.statistics import REF_TOKEN_COUNT as TOKENS_KEY
from mixflow.algorithms.statistics import DomainStats
from mixflow.config import ConfigError, load_config
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.providers.base import StatisticProvider
from mixflow.providers.reference_loss import ReferenceLoss
from mixflow.testing import run_distributed
from tests.helpers import tiny_domains, tiny_llama, tiny_training_args

NAMES = ["a", "b", "c"]


def _doremi(names=NAMES, reference="ref", **params) -> DoReMi:
    """DoReMi on closed-form statistics: ``reference`` is only a name here (the extras stand in for the
    provider), so the params are built directly instead of through the config check of the path."""
    return DoReMi(names, DoReMiParams(reference_model_path=reference, **params), init_weights=np.ones(len(names)))


def _stats(excess_mean, tokens, proxy_loss=None) -> DomainStats:
    """Window statistics with the given per-domain mean clipped excess and token counts."""
    tokens = np.asarray(tokens, dtype=np.float64)
    k = tokens.size
    s = DomainStats.zeros(k)
    s.token_count = torch.as_tensor(tokens)
    loss = np.full(k, 3.0) if proxy_loss is None else np.asarray(proxy_loss, dtype=np.float64)
    s.token_loss_sum = torch.as_tensor(loss * tokens)
    s.extras = {
        EXCESS_KEY: torch.as_tensor(np.asarray(excess_mean, dtype=np.float64) * tokens),
        TOKENS_KEY: torch.as_tensor(tokens),
    }
    return s


# ---- the update rule (closed-form statistics) ------------------------------------------------------


def test_one_update_is_the_exponentiated_gradient_step_with_smoothing():
    algo = _doremi(reweight_eta=0.7, reweight_eps=0.05)
    lam = np.array([0.2, 0.9, 0.4])
    algo.apply_update(_stats(lam, [10, 20, 30]), step=1)
    a = np.full(3, 1 / 3) * np.exp(0.7 * lam)
    expected = 0.95 * a / a.sum() + 0.05 / 3
    assert np.allclose(algo.loss_weights, expected, rtol=1e-13)
    assert np.allclose(algo.domain_weights, expected) and np.allclose(algo.scores, lam)
    assert np.allclose(algo.sampling_weights, 1 / 3)  # sampling stays as initialised
    # the next update starts from the smoothed α_1 (not from α′)
    algo.apply_update(_stats(lam, [10, 20, 30]), step=2)
    b = expected * np.exp(0.7 * lam)
    assert np.allclose(algo.loss_weights, 0.95 * b / b.sum() + 0.05 / 3, rtol=1e-13)


def test_proxy_equal_to_reference_keeps_alpha_uniform():
    algo = _doremi()
    for step in range(1, 51):
        algo.apply_update(_stats([0.0, 0.0, 0.0], [7, 3, 11]), step)
    alpha = algo.loss_weights
    assert alpha[0] == alpha[1] == alpha[2] and alpha.sum() == pytest.approx(1.0, abs=1e-15)
    assert np.allclose(algo.average_weights, 1 / 3, rtol=1e-14)


def test_weights_stay_on_the_simplex_above_the_floor_whatever_the_excess():
    rng = np.random.default_rng(0)
    k, eps = 5, 0.02
    algo = _doremi(names=list("vwxyz"), reweight_eta=3.0, reweight_eps=eps)
    for step in range(1, 201):
        lam = rng.exponential(2.0, size=k) * rng.choice([1e-3, 1.0, 1e3], size=k)  # up to huge η·λ
        tokens = rng.integers(0, 4, size=k) * 8  # some domains absent from some windows
        algo.apply_update(_stats(lam, tokens), step)
        for alpha in (algo.loss_weights, algo.average_weights):
            assert np.all(np.isfinite(alpha))
            assert alpha.sum() == pytest.approx(1.0, abs=1e-12)
            assert alpha.min() >= eps / k * (1 - 1e-12)


def test_random_token_domain_is_not_upweighted_but_group_dro_chases_it():
    # "random": the highest proxy loss but irreducible, so the reference is just as bad (excess 0).
    proxy_loss = [2.1, 2.6, 1.4, 4.6]
    excess = [0.30, 0.25, 0.20, 0.0]
    names = ["code", "prose", "arithmetic", "random"]
    doremi = _doremi(names=names)
    dro = _doremi(names=names, reference=None)  # no reference: λ = the proxy's loss
    previous = doremi.loss_weights[3]
    for step in range(1, 21):
        doremi.apply_update(_stats(excess, [64] * 4, proxy_loss), step)
        dro.apply_update(_stats(excess, [64] * 4, proxy_loss), step)
        assert doremi.loss_weights[3] <= previous
        previous = doremi.loss_weights[3]
    assert doremi.loss_weights[3] < 0.25 and doremi.average_weights[3] < 0.25
    assert np.argmax(dro.loss_weights) == 3  # what DoReMi's reference protects against
    assert np.allclose(dro.scores, proxy_loss)


def test_a_domain_where_the_proxy_lags_is_upweighted():
    algo = _doremi()
    history = []
    for step in range(1, 6):
        algo.apply_update(_stats([0.1, 0.6, 0.1], [50, 50, 50]), step)
        history.append(algo.loss_weights[1])
    assert np.all(np.diff(history) > 0) and history[0] > 1 / 3
    assert algo.loss_weights[0] == pytest.approx(algo.loss_weights[2])
    assert algo.loss_weights[0] < 1 / 3


def test_an_absent_domain_keeps_its_previous_excess():
    algo = _doremi(reweight_eta=1.0, reweight_eps=0.0)
    algo.apply_update(_stats([0.2, 0.4, 0.1], [10, 10, 10]), 1)
    alpha1 = algo.loss_weights
    algo.apply_update(_stats([0.3, 99.0, 0.1], [10, 0, 10]), 2)  # b absent: its 99 must not be read
    assert np.allclose(algo.scores, [0.3, 0.4, 0.1])
    a = alpha1 * np.exp([0.3, 0.4, 0.1])
    assert np.allclose(algo.loss_weights, a / a.sum(), rtol=1e-13)


def test_average_last_and_summary():
    algo = _doremi(output_weights="last")
    seen = []
    for step, lam in enumerate(([0.5, 0.0, 0.0], [0.0, 0.0, 0.9], [0.1, 0.2, 0.3]), start=1):
        algo.apply_update(_stats(lam, [5, 5, 5]), step)
        seen.append(algo.loss_weights)
    assert np.allclose(algo.average_weights, np.mean(seen, axis=0), rtol=1e-13)
    s = algo.summary()
    assert s["domain_names"] == NAMES and s["num_updates"] == 3 and s["output_weights"] == "last"
    assert np.allclose(s["last"], seen[-1]) and np.allclose(s["weights"], seen[-1])
    assert np.allclose(s["average"], np.mean(seen, axis=0))
    algo.params.output_weights = "average"
    assert np.allclose(algo.summary()["weights"], np.mean(seen, axis=0))


def test_missing_reference_statistics_are_a_clear_error():
    algo = _doremi()
    stats = _stats([0.1, 0.1, 0.1], [4, 4, 4])
    stats.extras = {}
    with pytest.raises(ValueError, match="reference_loss provider"):
        algo.apply_update(stats, 1)


def test_group_dro_without_reference_warns_and_uses_the_proxy_loss(caplog):
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        algo = _doremi(reference=None)
    assert "reference_model_path is null" in caplog.text and "Group DRO" in caplog.text
    stats = _stats([0, 0, 0], [10, 0, 10], proxy_loss=[1.0, 5.0, 2.0])
    stats.extras = {}
    algo.apply_update(stats, 1)
    assert np.allclose(algo.scores, [1.0, 0.0, 2.0])  # b absent: keeps its initial λ = 0


# ---- config errors at load time --------------------------------------------------------------------


def _config(tmp_path, params, **extra):
    for name in NAMES:
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"text": f"{name} text"}) + "\n")
    cfg = {
        "domains": [{"name": n, "path": str(tmp_path / f"{n}.jsonl")} for n in NAMES],
        "train_type": "dynamic_mix",
        "component": {"name": "doremi", "params": params},
        "model_config": {
            "model_type": "llama",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
        },
        "output_dir": str(tmp_path / "run"),
        **extra,
    }
    return cfg


def test_reference_path_missing_vs_null_vs_nonexistent(tmp_path, caplog):
    with pytest.raises(ConfigError) as err:
        load_config(raw=_config(tmp_path, {"reweight_eta": 0.1}))
    assert str(err.value) == (
        "doremi.params.reference_model_path: required (a local model directory, or null to run without a reference)"
    )
    with pytest.raises(
        ConfigError,
        match=r"^doremi\.params\.reference_model_path: expected a local model directory, "
        r"not found: .*nope",
    ):
        load_config(raw=_config(tmp_path, {"reference_model_path": str(tmp_path / "nope")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        load_config(raw=_config(tmp_path, {"reference_model_path": str(tmp_path / "empty")}))
    with pytest.raises(ConfigError, match=r"^doremi\.params\.reweight_eps: expected a number in \[0, 1\]"):
        load_config(raw=_config(tmp_path, {"reference_model_path": None, "reweight_eps": 1.5}))
    with pytest.raises(ConfigError, match="output_weights: expected one of"):
        load_config(raw=_config(tmp_path, {"reference_model_path": None, "output_weights": "mean"}))
    run = load_config(raw=_config(tmp_path, {"reference_model_path": None}))
    assert run.mixing.component.params == {"reference_model_path": None}
    from mixflow.recipes.build import build_engine

    train = MixtureDataset(tiny_domains())
    run.data.domains = run.data.domains[:3]
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        engine = build_engine(run, train, batch_size=6, seed=0)
    assert "Group DRO" in caplog.text
    assert engine.algorithm.params.reference_model_path is None


def test_cli_reports_a_missing_reference_path_in_one_line(tmp_path, capsys):
    from mixflow.cli.main import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, {})))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "mixflow: error: doremi.params.reference_model_path: required "
        "(a local model directory, or null to run without a reference)"
    )
    assert not (tmp_path / "run").exists()  # nothing was prepared or trained


# ---- with real tiny models ---------------------------------------------------------------------------


def _save(model, path):
    model.save_pretrained(path)
    return str(path)


def _batches(train, sampler, steps):
    """Collated global batches (and their domain ids) in the order the sampler plans them."""
    collate = DomainCollator(0)
    it = sampler.iter_batches()
    for _ in range(steps):
        rows = next(it)
        yield collate([train[int(i)] for i in rows])


def _drive(engine, proxy, train, steps, optimizer=None):
    """A minimal training loop: the training forward, the step engine's loss and statistics, end_step."""
    for step, batch in enumerate(_batches(train, engine.sampler, steps), start=engine.last_step + 1):
        domain_ids, labels = batch.pop("domain_ids"), batch.pop("labels")
        batch.pop("sample_ids", None)
        logits = proxy(**batch).logits
        loss = engine.training_loss(
            logits, MicroBatch(domain_ids, labels, batch_index=step - 1, model=proxy, inputs=batch)
        )
        if optimizer is not None:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        engine.end_step(step, model=proxy)


def _doremi_engine(train, reference, batch=6, update_step=1, log_dir=None, **params):
    algo = build_algorithm("doremi", train.domain_names, {"reference_model_path": reference, **params})
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, batch, seed=4)
    return StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=update_step), log_dir=log_dir)


def test_real_models_proxy_equal_to_reference_keeps_alpha_uniform(tmp_path):
    train = MixtureDataset(tiny_domains())
    reference = _save(tiny_llama(seed=1), tmp_path / "ref")
    engine = _doremi_engine(train, reference)
    assert isinstance(engine.providers[0], ReferenceLoss)
    _drive(engine, tiny_llama(seed=1), train, steps=3)
    assert engine.algorithm.num_updates == 3
    assert np.all(np.abs(engine.algorithm.scores) < 1e-5)
    assert np.allclose(engine.algorithm.loss_weights, 1 / 3, atol=1e-5)


def test_real_models_domain_where_the_proxy_lags_is_upweighted(tmp_path):
    domains = tiny_domains()
    train = MixtureDataset(domains)
    # The reference has learned domain d1 (its token band); the proxy starts from the same init.
    ref_model = tiny_llama(seed=1)
    opt = torch.optim.Adam(ref_model.parameters(), lr=3e-2)
    rows = torch.as_tensor(np.stack([domains[1].train[i] for i in range(len(domains[1].train))]), dtype=torch.long)
    for _ in range(8):
        out = ref_model(input_ids=rows, labels=rows)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    engine = _doremi_engine(train, _save(ref_model, tmp_path / "ref"))
    _drive(engine, tiny_llama(seed=1), train, steps=3)
    alpha, lam = engine.algorithm.loss_weights, engine.algorithm.scores
    assert np.argmax(lam) == 1 and lam[1] > 0.5
    assert np.argmax(alpha) == 1 and alpha[1] > 0.5
    assert alpha.sum() == pytest.approx(1.0) and alpha.min() >= 1e-3 / 3


def test_provider_sums_equal_a_direct_computation(tmp_path):
    train = MixtureDataset(tiny_domains(packed=False))  # padding: ignored tokens must not count
    reference = tiny_llama(seed=2)
    proxy = tiny_llama(seed=3)
    batch = next(iter(_batches(train, MixtureSampler(train.domain_sizes, np.ones(3) / 3, 6, seed=0), 1)))
    ids, labels = batch.pop("domain_ids"), batch.pop("labels")
    batch.pop("sample_ids", None)
    from mixflow.loss.per_sample import sample_losses
    from mixflow.providers.base import BatchContext

    losses = sample_losses(proxy(**batch).logits, labels)
    out = ReferenceLoss(None, model=reference).batch_statistics(BatchContext(None, batch, labels, losses, ids, 3))
    with torch.no_grad():
        lp = F.cross_entropy(proxy(**batch).logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
        lr = F.cross_entropy(reference(**batch).logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    mask = labels[:, 1:] != -100
    per_sample = ((lp - lr).clamp_min(0) * mask).sum(1)
    for d in range(3):
        assert out[EXCESS_KEY][d].item() == pytest.approx(per_sample[ids == d].sum().item(), rel=1e-5)
        assert out[TOKENS_KEY][d].item() == mask[ids == d].sum().item()
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())


# ---- the weights reach the gradient ---------------------------------------------------------------


def _grads(model):
    return torch.cat([p.grad.reshape(-1).clone() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("alpha", [[0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
def test_proxy_loss_is_the_alpha_weighted_domain_loss(alpha):
    train = MixtureDataset(tiny_domains())
    algo = _doremi(names=train.domain_names)
    algo.load_state_dict({"_loss_weights": alpha})
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, 6, seed=0)
    engine = StepEngine(sampler, algo, providers=[])
    batch = next(iter(_batches(train, sampler, 1)))
    ids, labels = batch.pop("domain_ids"), batch.pop("labels")
    batch.pop("sample_ids", None)
    assert torch.bincount(ids, minlength=3).tolist() == [2, 2, 2]  # uniform sampling, B = 6

    model = tiny_llama(seed=0)
    loss = engine.training_loss(model(**batch).logits, MicroBatch(ids, labels, batch_index=0))
    loss.backward()
    g_mix = _grads(model)
    model.zero_grad()
    tok = F.cross_entropy(model(**batch).logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    domain_loss = torch.stack([tok[ids == d].mean() for d in range(3)])
    target = (torch.as_tensor(alpha, dtype=torch.float32) * domain_loss).sum()  # Σ_i α_i L_i
    assert loss.item() == pytest.approx(target.item(), rel=1e-5)
    target.backward()
    assert torch.allclose(g_mix, _grads(model), rtol=1e-4, atol=1e-7)
    model.zero_grad()
    plain = F.cross_entropy(model(**batch).logits[:, :-1].transpose(1, 2), labels[:, 1:])  # the unweighted mean
    plain.backward()
    g_plain = _grads(model)
    if np.allclose(alpha, 1 / 3):
        assert torch.allclose(g_mix, g_plain, rtol=1e-4, atol=1e-7)
    else:
        assert not torch.allclose(g_mix, g_plain, rtol=1e-2, atol=1e-5)


def _group_dro_step(rows_per_micro_batch):
    """One step of DoReMi (Group DRO λ: the proxy's own loss, so no reference model is needed) with
    update_step 1; returns (the micro-batch losses, α before, the engine)."""
    train = MixtureDataset(tiny_domains())
    algo = DoReMi(train.domain_names, DoReMiParams(reference_model_path=None), init_weights=np.ones(3))
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, 6, seed=0)
    engine = StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1), providers=[])
    batch = next(iter(_batches(train, sampler, 1)))
    ids, labels = batch.pop("domain_ids"), batch.pop("labels")
    batch.pop("sample_ids", None)
    model = tiny_llama(seed=0)
    before = algo.loss_weights
    losses = []
    for part in torch.split(torch.arange(6), rows_per_micro_batch):
        logits = model(**{k: v[part] for k, v in batch.items()}).logits
        losses.append(engine.training_loss(logits, MicroBatch(ids[part], labels[part], batch_index=0)))
    with torch.no_grad():
        tok = F.cross_entropy(model(**batch).logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    domain_loss = np.array([tok[ids == d].mean().item() for d in range(3)])
    return losses, before, engine, domain_loss


def test_without_accumulation_the_step_trains_on_the_alpha_of_its_own_batch():
    losses, before, engine, domain_loss = _group_dro_step(rows_per_micro_batch=6)
    algo = engine.algorithm
    # Algorithm 1: α_t from this batch's λ (here the domain losses), then the loss Σ α_t,i L_i
    assert algo.num_updates == 1
    expected = before * np.exp(domain_loss)
    expected = (1 - 1e-3) * expected / expected.sum() + 1e-3 / 3
    assert np.allclose(algo.loss_weights, expected, rtol=1e-5)
    assert losses[0].item() == pytest.approx(float((expected * domain_loss).sum()), rel=1e-5)
    assert engine.end_step(1) is True and algo.num_updates == 1  # end_step does not update twice
    engine.state_dict()  # between steps again


def test_with_gradient_accumulation_the_update_follows_the_step():
    losses, before, engine, domain_loss = _group_dro_step(rows_per_micro_batch=3)
    assert engine.algorithm.num_updates == 0  # no micro-batch saw the whole step
    assert np.allclose(before, 1 / 3)
    assert engine.end_step(1) is True and engine.algorithm.num_updates == 1
    expected = np.exp(domain_loss)
    expected = (1 - 1e-3) * expected / expected.sum() + 1e-3 / 3
    assert np.allclose(engine.algorithm.loss_weights, expected, rtol=1e-5)


# ---- StepEngine integration: NaN skip, 2 ranks, resume -----------------------------------------------------


class _Canned(StatisticProvider):
    """Reference-loss sums chosen by the test (NaN at the chosen steps)."""

    name = "test_canned_reference"

    def __init__(self, excess, nan_steps=()):
        self.excess, self.nan_steps = excess, set(nan_steps)

    def batch_statistics(self, ctx):
        tokens = torch.zeros(ctx.num_domains, dtype=torch.float64).index_add_(
            0, ctx.domain_ids, ctx.losses.token_count.double()
        )
        value = float("nan") if ctx.batch_index in self.nan_steps else 1.0
        return {EXCESS_KEY: tokens * torch.as_tensor(self.excess) * value, TOKENS_KEY: tokens}


def test_non_finite_statistics_skip_the_doremi_update(tmp_path, caplog):
    train = MixtureDataset(tiny_domains())
    algo = _doremi(names=train.domain_names)
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, 6, seed=0)
    engine = StepEngine(
        sampler,
        algo,
        schedule=UpdateSchedule(update_step=1),
        log_dir=tmp_path,
        providers=[_Canned([0.1, 0.5, 0.2], nan_steps={0})],
    )
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        _drive(engine, tiny_llama(), train, steps=1)
    assert "non-finite" in caplog.text
    assert np.allclose(algo.loss_weights, 1 / 3) and algo.num_updates == 0
    assert not (tmp_path / "doremi_summary.json").exists()
    _drive(engine, tiny_llama(), train, steps=1)  # a finite window goes through
    assert algo.num_updates == 1 and algo.loss_weights[1] > 1 / 3
    assert json.loads((tmp_path / "doremi_summary.json").read_text())["num_updates"] == 1


def _rank_run(rank, world, out, reference):
    train = MixtureDataset(tiny_domains())
    algo = build_algorithm("doremi", train.domain_names, {"reference_model_path": reference})
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, 8, seed=4, rank=rank, world_size=world)
    engine = StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1), log_dir=os.path.join(out, f"log{world}"))
    _drive(engine, tiny_llama(seed=0), train, steps=4)
    torch.save(
        {"alpha": algo.loss_weights, "lam": algo.scores, "avg": algo.average_weights},
        os.path.join(out, f"w{world}_r{rank}.pt"),
    )


@pytest.mark.distributed
def test_two_ranks_hold_identical_alpha_equal_to_one_process(tmp_path):
    reference = _save(tiny_llama(seed=7), tmp_path / "ref")
    run_distributed(_rank_run, str(tmp_path), reference)
    r0, r1 = (torch.load(tmp_path / f"w2_r{r}.pt", weights_only=False) for r in (0, 1))
    assert np.array_equal(r0["alpha"], r1["alpha"]) and np.array_equal(r0["avg"], r1["avg"])
    _rank_run(0, 1, str(tmp_path), reference)
    single = torch.load(tmp_path / "w1_r0.pt", weights_only=False)
    assert np.allclose(single["alpha"], r0["alpha"], rtol=1e-9)
    assert np.allclose(single["lam"], r0["lam"], rtol=1e-6)
    assert not np.allclose(r0["alpha"], 1 / 3, atol=1e-3)  # the weights did move
    assert (tmp_path / "log2" / "doremi_summary.json").is_file()  # written by the main process


def _trainer_run(out, reference, max_steps, resume=None):

    from mixflow.integrations.hf_trainer import MixflowTrainer

    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(
        out,
        per_device_train_batch_size=6,
        gradient_accumulation_steps=1,
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=3,
    )
    engine = _doremi_engine(train, reference, batch=6, update_step=2, log_dir=out, reweight_eta=2.0)
    trainer = MixflowTrainer(
        model=tiny_llama(seed=5), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=engine
    )
    trainer.train(resume_from_checkpoint=resume)
    return engine


def test_resume_reproduces_the_alpha_trajectory_and_summary(tmp_path):
    reference = _save(tiny_llama(seed=8), tmp_path / "ref")
    full = _trainer_run(tmp_path / "full", reference, max_steps=6)
    _trainer_run(tmp_path / "cut", reference, max_steps=3)
    resumed = _trainer_run(tmp_path / "cut", reference, max_steps=6, resume=str(tmp_path / "cut" / "checkpoint-3"))

    def log(run):
        return [json.loads(x) for x in (tmp_path / run / "doremi_weights.jsonl").read_text().splitlines()]

    full_log, cut_log = log("full"), log("cut")
    assert [r["step"] for r in full_log] == [r["step"] for r in cut_log] == [2, 4, 6]
    for a, b in zip(full_log, cut_log):
        assert np.allclose(a["domain_weights"], b["domain_weights"], rtol=1e-6)
        assert np.allclose(a["perdomain_scores"], b["perdomain_scores"], rtol=1e-5)
        assert a["domain_weights"] == a["loss_weights"] and np.allclose(a["sampling_weights"], 1 / 3)
    assert np.allclose(full.algorithm.average_weights, resumed.algorithm.average_weights, rtol=1e-6)
    assert not np.allclose(full_log[-1]["domain_weights"], 1 / 3, atol=1e-3)
    summary = json.loads((tmp_path / "cut" / "doremi_summary.json").read_text())
    assert summary["step"] == 6 and summary["num_updates"] == 3
    assert np.allclose(summary["average"], np.mean([r["domain_weights"] for r in cut_log], axis=0), rtol=1e-6)
    assert np.allclose(summary["last"], cut_log[-1]["domain_weights"]) and summary["weights"] == summary["average"]


def test_a_reference_with_a_smaller_vocabulary_stops_before_any_model_loads(tmp_path, capsys, monkeypatch):
    from mixflow.cli.main import main
    from mixflow.recipes import train as train_recipe

    reference = _save(tiny_llama(seed=1), tmp_path / "ref")  # 48 token ids; the byte tokenizer has 259
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, {"reference_model_path": reference}, cutoff_len=16)))
    for name in NAMES:  # enough text for a few rows per domain
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"text": f"{name} text " * 40}) + "\n")
    loaded = []
    monkeypatch.setattr(train_recipe, "build_model", lambda *a, **k: loaded.append(1))
    capsys.readouterr()  # the reference's save progress
    assert main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mixflow: error: reference_model_path:")
    assert "vocabulary of 48 tokens but the tokenizer has 259" in err and not loaded
