"""Loss-based sample reweighting (Sow et al. 2025, arXiv 2502.06733, "Loss-based sample reweighting"): every Properties line."""

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mixflow.algorithms.base import DomainAlgorithm, SampleWeighter
from mixflow.algorithms.loss_reweighting import LossReweighting, LossReweightingParams
from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.registry import build_algorithm, build_weighter
from mixflow.algorithms.weights import Weights
from mixflow.config import ConfigError, load_config
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.loss.per_sample import sample_losses
from mixflow.testing import run_distributed

STRATEGIES = ("linupper", "upper", "quadratic", "extremes", "uniform")


def _weighter(**params) -> LossReweighting:
    return build_weighter("loss", ["a", "b", "c"], params, where="loss")


def _losses(n=64, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).gamma(2.0, 1.0, n), dtype=torch.float64)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("delta,r", [(1.0, 1.0), (0.5, 0.4), (2.0, 3.0)])
def test_probabilities_sum_to_one_and_weights_are_n_times_them(strategy, delta, r):
    w = _weighter(strategy=strategy, delta=delta, r=r)
    losses = _losses()
    s = w.probabilities(losses, step=0)
    assert torch.all(s > 0)
    assert math.isclose(float(s.sum()), 1.0, rel_tol=1e-12)
    assert torch.allclose(w.weights(losses, torch.zeros(64, dtype=torch.long), 0), losses.numel() * s, rtol=1e-12)


@pytest.mark.parametrize("delta,r", [(1.0, 1.0), (0.5, 0.4), (2.0, 3.0), (1.0, 0.1)])
def test_max_over_min_weight_is_bounded_by_exp_delta_over_r(delta, r):
    losses = _losses(seed=1)
    for strategy in ("linupper", "upper", "extremes"):  # f spans [0, δ]
        s = _weighter(strategy=strategy, delta=delta, r=r).probabilities(losses, 0)
        assert float(s.max() / s.min()) <= math.exp(delta / r) * (1 + 1e-9)
    # linupper reaches the bound: f(ℓmin) = 0 and f = δ from the mid-range up
    s = _weighter(strategy="linupper", delta=delta, r=r).probabilities(losses, 0)
    assert math.isclose(float(s.max() / s.min()), math.exp(delta / r), rel_tol=1e-9)
    # quadratic's f = 1 − ℓ̃²/δ² spans [0, 1] whatever δ: its bound is e^{1/r}, above e^{δ/r} when δ < 1
    s = _weighter(strategy="quadratic", delta=delta, r=r).probabilities(losses, 0)
    assert float(s.max() / s.min()) <= math.exp(1.0 / r) * (1 + 1e-9)
    if delta < 1:
        assert float(s.max() / s.min()) > math.exp(delta / r)


def test_upper_is_linear_in_the_loss_over_the_whole_range():
    losses = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    s = _weighter(strategy="upper", delta=2.0, r=0.5).probabilities(losses, 0)
    # f = 0.5·ℓ̃ + 0.5·δ: equal steps of the loss give equal log-weight steps, spanning δ/r
    assert torch.allclose(torch.diff(torch.log(s)), torch.full((4,), 1.0, dtype=torch.float64))
    assert math.isclose(float(s.max() / s.min()), math.exp(2.0 / 0.5), rel_tol=1e-12)


def test_language_model_preset_fills_what_the_config_does_not_set():
    p = _weighter(preset="language_model").params
    assert (p.strategy, p.r, p.burn_in_steps) == ("linupper", 0.4, 1000)
    short = _weighter(preset="language_model", burn_in_steps=30).params  # a key the config sets wins
    assert (short.r, short.burn_in_steps) == (0.4, 30)
    assert _weighter().params.r == 1.0  # no preset: the plain defaults


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_large_temperature_gives_uniform_weights(strategy):
    w = _weighter(strategy=strategy, r=1e9)
    assert torch.allclose(w.weights(_losses(), None, 0), torch.ones(64, dtype=torch.float64), atol=1e-8)
    # and a small temperature does not (the test above is not vacuous)
    if strategy != "uniform":
        assert not torch.allclose(
            _weighter(strategy=strategy, r=0.5).weights(_losses(), None, 0),
            torch.ones(64, dtype=torch.float64),
            atol=1e-2,
        )


def test_linupper_is_non_decreasing_in_loss_and_flat_above_the_mid_range():
    losses = _losses(n=200, seed=2)
    w = _weighter(strategy="linupper", r=0.5).weights(losses, None, 0)
    order = torch.argsort(losses)
    assert torch.all(torch.diff(w[order]) >= -1e-12)
    mid = (losses.min() + losses.max()) / 2
    above = w[losses >= mid]
    assert above.numel() > 3 and torch.allclose(above, above[0].expand_as(above), rtol=1e-12)
    assert float(w[losses < mid].min()) < float(above[0])  # the low-loss samples are down-weighted


def test_quadratic_and_extremes_shapes():
    losses = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    q = _weighter(strategy="quadratic").weights(losses, None, 0)
    e = _weighter(strategy="extremes").weights(losses, None, 0)
    assert int(torch.argmax(q)) == 2 and torch.isclose(q[0], q[4])  # mid-range up, both ends down
    assert int(torch.argmin(e)) == 2 and torch.isclose(e[0], e[4])  # both ends up


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_equal_losses_give_uniform_weights_without_nan(strategy):
    w = _weighter(strategy=strategy)
    for losses in (
        torch.full((8,), 2.5, dtype=torch.float64),
        torch.tensor([0.7], dtype=torch.float64),
        torch.zeros(5, dtype=torch.float64),
    ):
        out = w.weights(losses, None, 0)
        assert torch.equal(out, torch.ones_like(losses))
        assert torch.isclose(w.probabilities(losses, 0).sum(), torch.tensor(1.0, dtype=torch.float64))
    # a non-finite loss (skipped by the update guard) must not turn every weight into NaN
    out = w.weights(torch.tensor([1.0, float("nan"), 2.0], dtype=torch.float64), None, 0)
    assert torch.equal(out, torch.ones(3, dtype=torch.float64))


def test_burn_in_is_uniform_then_reweights():
    w = _weighter(strategy="linupper", burn_in_steps=3)
    losses = _losses(n=16)
    for step in range(3):
        assert torch.equal(w.weights(losses, None, step), torch.ones(16, dtype=torch.float64))
    assert w.num_reweighted == 0
    assert not torch.allclose(w.weights(losses, None, 3), torch.ones(16, dtype=torch.float64))
    assert w.num_reweighted == 1 and w.last_step == 3


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decreasing_temperature_schedule(schedule):
    w = _weighter(r=0.5, r_schedule=schedule, r_start=8.0, r_schedule_steps=10, burn_in_steps=2)
    rs = [w.temperature(t) for t in range(0, 16)]
    assert rs[0] == rs[2] == 8.0 and rs[12] == rs[15] == 0.5
    assert all(a >= b for a, b in zip(rs, rs[1:])) and rs[5] < 8.0
    if schedule == "linear":
        assert math.isclose(rs[7], 8.0 - 7.5 * 0.5)
    # the weights sharpen as r falls: the max/min ratio is e^{δ/r(t)} for linupper
    losses = _losses()
    early, late = w.probabilities(losses, 3), w.probabilities(losses, 14)
    assert float(early.max() / early.min()) < float(late.max() / late.min())
    assert math.isclose(float(late.max() / late.min()), math.exp(1 / 0.5), rel_tol=1e-9)


@pytest.mark.parametrize(
    "params,message",
    [
        ({"delta": 0}, "loss.params.delta: expected a number > 0"),
        ({"r": -1}, "loss.params.r: expected a number > 0"),
        ({"burn_in_steps": -2}, "loss.params.burn_in_steps"),
        ({"strategy": "linupr"}, "loss.params.strategy: expected one of"),
        ({"r_schedule": "linear", "r_start": 0.5}, "loss.params.r_start: expected a number > r"),
        ({"r_schedule": "cosine", "r_schedule_steps": 0}, "loss.params.r_schedule_steps"),
        ({"temperature": 1}, "loss.params.temperature: unknown parameter"),
        ({"preset": "language_modle"}, r"loss.params.preset: expected one of \['language_model'\] \(did you mean"),
    ],
)
def test_bad_params_are_one_line_errors_at_config_load(tmp_path, params, message):
    data = tmp_path / "a.jsonl"
    data.write_text('{"text": "hello"}\n')
    raw = {
        "domains": [{"name": "a", "path": str(data)}],
        "train_type": "dynamic_weight",
        "component": {"name": "loss", "params": params},
        "model_config": {"model_type": "llama"},
        "output_dir": str(tmp_path / "out"),
    }
    with pytest.raises(ConfigError, match=message) as err:
        load_config(raw=raw)
    assert "\n" not in str(err.value)


def _regression_test_error(strategy: str, seed: int, steps: int = 150, lr: float = 0.02, d: int = 20, n: int = 1000):
    """SGD on least squares where half the training set is a redundant near-zero-residual point,
    repeated; returns the test error after ``steps`` steps with the weighter applied per batch."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, generator=g)
    x_inf = torch.randn(n // 2, d, generator=g)
    y_inf = x_inf @ w_true + 0.1 * torch.randn(n // 2, generator=g)
    x_red = (0.01 * torch.randn(1, d, generator=g)).repeat(n // 2, 1)  # tiny features: residual ≈ 0 always
    x, y = torch.cat([x_inf, x_red]), torch.cat([y_inf, x_red @ w_true])
    x_test = torch.randn(1000, d, generator=g)
    weighter = build_weighter("loss", ["all"], {"strategy": strategy})
    w = torch.zeros(d, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    for step in range(steps):
        idx = torch.randint(0, n, (32,), generator=g)  # the same batches for both strategies
        loss = 0.5 * (x[idx] @ w - y[idx]) ** 2
        s = weighter.weights(loss.detach(), torch.zeros(32, dtype=torch.long), step)
        opt.zero_grad()
        (s * loss).mean().backward()
        opt.step()
    with torch.no_grad():
        return float((0.5 * (x_test @ (w - w_true)) ** 2).mean())


def test_linupper_beats_uniform_on_regression_with_redundant_samples():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny ops: a thread pool only adds synchronisation
    try:
        results = [(_regression_test_error("uniform", s), _regression_test_error("linupper", s)) for s in range(3)]
    finally:
        torch.set_num_threads(before)
    uniform, linupper = np.mean(results, axis=0)
    assert linupper < 0.5 * uniform, results
    assert all(lu < un for un, lu in results), results


@dataclass
class _P(AlgorithmParams):
    pass


class _LossWeighted(DomainAlgorithm):
    name = "test_loss_weighted_domains"
    description = "objective mode with domain loss weights [1, 2, 3]"
    Params = _P

    def setup(self):
        return Weights(loss=[1.0, 2.0, 3.0])

    def update(self, stats, step):
        return Weights()


class _ImportanceAlgo(_LossWeighted):
    name = "test_importance_domains"
    mode = "importance"


def _logits(ids, seed=0, t=5, v=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(ids), t, v, generator=g)
    labels = torch.randint(0, v, (len(ids), t), generator=g)
    return logits, labels


@pytest.mark.parametrize("algo_cls", [_LossWeighted, _ImportanceAlgo])
def test_composes_with_a_domain_algorithm_coefficient_is_the_product(algo_cls):
    algo = algo_cls(["a", "b", "c"], _P(), init_weights=[0.5, 0.25, 0.25])
    weighter = _weighter(strategy="linupper", r=0.5)
    engine = StepEngine(MixtureSampler([20, 20, 20], algo.sampling_weights, 6), algo, weighter=weighter)
    alone = StepEngine(MixtureSampler([20, 20, 20], algo.sampling_weights, 6), algo)
    next(engine.sampler.iter_batches())
    next(alone.sampler.iter_batches())
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    logits, labels = _logits(ids.tolist())
    losses = sample_losses(logits, labels)
    domain_part = alone.coefficients(losses, MicroBatch(ids, batch_index=0))
    s = _weighter(strategy="linupper", r=0.5).weights(losses.mean.detach().double(), ids, 0)
    combined = engine.coefficients(losses, MicroBatch(ids, batch_index=0))
    assert domain_part is not None and not torch.allclose(s, torch.ones_like(s))
    assert torch.allclose(combined, domain_part * s, rtol=1e-12)
    loss = engine.training_loss(logits, MicroBatch(ids, labels, batch_index=0))
    expected = (combined * losses.token_loss_sum.double()).sum() / losses.token_count.sum()
    assert torch.isclose(loss.double(), expected)


def test_the_weighters_statistics_reach_the_metrics_and_a_log_named_after_it(tmp_path):
    algo = build_algorithm("static", ["a", "b", "c"], {}, init_weights=[0.5, 0.25, 0.25])
    engine = StepEngine(
        MixtureSampler([20, 20, 20], algo.sampling_weights, 6),
        algo,
        log_dir=tmp_path,
        weighter=_weighter(strategy="linupper", r=0.5),
        schedule=UpdateSchedule(update_step=2),
    )
    batches = engine.sampler.iter_batches()
    seen = []
    for step in range(1, 5):
        ids = torch.as_tensor(engine.sampler.domain_ids(next(batches)))
        logits, labels = _logits(ids.tolist(), seed=step)
        losses = sample_losses(logits, labels)
        seen.append((_weighter(strategy="linupper", r=0.5).weights(losses.mean.detach().double(), ids, step - 1), ids))
        engine.training_loss(logits, MicroBatch(ids, labels, batch_index=step - 1))
        engine.end_step(step)
    metrics = engine.metrics()
    s = torch.cat([w for w, _ in seen])
    assert metrics["mix/sample_weight/max"] == pytest.approx(float(s.max()))
    assert metrics["mix/sample_weight/mean"] == pytest.approx(float(s.mean()))
    assert 0.1 < metrics["mix/sample_weight/top_decile_share"] < 1
    all_ids = torch.cat([i for _, i in seen])
    assert metrics["mix/sample_weight/a"] == pytest.approx(float(s[all_ids == 0].mean()))
    assert "mix/sample_weight/mean" not in engine.metrics()  # reset with the other metrics
    # the log is named after what it holds; each line says what the sample weights did since the previous one
    assert not (tmp_path / "static_weights.jsonl").exists()
    lines = [json.loads(x) for x in (tmp_path / "static+loss_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    last = torch.cat([w for w, _ in seen[2:]])
    assert lines[1]["sample_weights"]["max"] == pytest.approx(float(last.max()))
    assert set(lines[1]["sample_weights"]["per_domain"]) <= {"a", "b", "c"}


def test_uniform_weights_reproduce_the_plain_loss_exactly_with_grad_accumulation(tmp_path):
    from transformers import TrainerCallback

    from mixflow.data.dataset import DomainCollator, MixtureDataset
    from mixflow.integrations.hf_trainer import MixflowTrainer
    from tests.helpers import tiny_domains, tiny_llama, tiny_training_args

    class Grads(TrainerCallback):
        def __init__(self):
            self.grads = []

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            self.grads.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters() if p.grad is not None]))

    def run(weighter_params, out):
        train = MixtureDataset(tiny_domains(packed=False))
        args = tiny_training_args(out, max_steps=3)
        algo = build_algorithm("static", train.domain_names, {}, init_weights=np.ones(3) / 3)
        weighter = build_weighter("loss", train.domain_names, weighter_params) if weighter_params else None
        engine = StepEngine(
            MixtureSampler(train.domain_sizes, algo.sampling_weights, 8, seed=3), algo, weighter=weighter
        )
        rec = Grads()
        trainer = MixflowTrainer(
            model=tiny_llama(seed=1),
            args=args,
            train_dataset=train,
            data_collator=DomainCollator(0),
            engine=engine,
            callbacks=[rec],
        )
        trainer.train()
        return rec.grads, [h["loss"] for h in trainer.state.log_history if "loss" in h]

    plain_grads, plain_losses = run(None, tmp_path / "plain")
    # (linupper during its burn-in returns the same exact ones, tested above)
    grads, losses = run({"strategy": "uniform"}, tmp_path / "uniform")
    assert len(grads) == 3
    assert all(torch.equal(a, b) for a, b in zip(grads, plain_grads))
    assert losses == plain_losses
    # the same batches' losses are spread, so linupper after its burn-in would not be uniform
    train = MixtureDataset(tiny_domains(packed=False))
    batch = DomainCollator(0)([train[i] for i in range(8)])
    with torch.no_grad():
        logits = tiny_llama(seed=1)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    losses = sample_losses(logits, batch["labels"]).mean.double()
    assert not torch.allclose(
        _weighter(strategy="linupper").weights(losses, None, 0), torch.ones(8, dtype=torch.float64)
    )


class _Recorder(SampleWeighter):
    """Wraps a weighter and records the whole-batch weights each call returns."""

    name = "test_recorder"
    description = "test only"
    Params = LossReweightingParams

    def __init__(self, inner):
        super().__init__(inner.domain_names, inner.params)
        self.inner, self.seen = inner, []

    def weights(self, losses, domain_ids, step, sample_ids=None):
        out = self.inner.weights(losses, domain_ids, step, sample_ids)
        self.seen.append((losses.clone(), out.clone()))
        return out

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def _global_batch(step, batch=8, t=4, v=5):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(batch, t, v, generator=g) * (1 + step), torch.randint(0, v, (batch, t), generator=g)


def _rank_weights(rank, world, out):
    algo = build_algorithm("static", ["a", "b", "c"], {}, init_weights=np.ones(3) / 3)
    weighter = _Recorder(build_weighter("loss", ["a", "b", "c"], {"strategy": "linupper", "r": 0.5}))
    sampler = MixtureSampler([30, 30, 30], algo.sampling_weights, 8, seed=1, rank=rank, world_size=world)
    engine = StepEngine(sampler, algo, weighter=weighter, schedule=UpdateSchedule(update_step=1))
    it = sampler.iter_batches()
    local = []
    for step in range(1, 4):
        rows = next(it)
        logits, labels = _global_batch(step)
        n = 8 // world
        sl = slice(rank * n, (rank + 1) * n)
        ids = torch.as_tensor(sampler.domain_ids(rows))
        losses = sample_losses(logits[sl], labels[sl])
        local.append(engine.coefficients(losses, MicroBatch(ids, batch_index=step - 1)))
        engine.training_loss(logits[sl], MicroBatch(ids, labels[sl], batch_index=step - 1))
        engine.end_step(step)
    torch.save({"global": [w for _, w in weighter.seen[::2]], "local": local}, os.path.join(out, f"w{rank}.pt"))


@pytest.mark.distributed
def test_two_ranks_compute_identical_global_batch_weights_equal_to_one_process(tmp_path):
    run_distributed(_rank_weights, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"w{r}.pt") for r in (0, 1))
    single = _weighter(strategy="linupper", r=0.5)
    for step, (g0, g1) in enumerate(zip(r0["global"], r1["global"]), start=1):
        assert torch.equal(g0, g1)
        logits, labels = _global_batch(step)
        expected = single.weights(sample_losses(logits, labels).mean.double(), None, step - 1)
        assert torch.allclose(g0, expected, rtol=1e-12)
        # each rank keeps its own slice of the global weights
        assert torch.allclose(torch.cat([r0["local"][step - 1], r1["local"][step - 1]]), expected, rtol=1e-12)
    assert not torch.allclose(r0["global"][0], torch.ones(8, dtype=torch.float64))


def test_resume_restores_weighter_state_and_trajectory(tmp_path):
    params = {
        "strategy": "linupper",
        "r": 0.5,
        "burn_in_steps": 2,
        "r_schedule": "cosine",
        "r_start": 5.0,
        "r_schedule_steps": 4,
    }

    def engine():
        algo = build_algorithm("static", ["a", "b", "c"], {}, init_weights=np.ones(3) / 3)
        return StepEngine(
            MixtureSampler([30, 30, 30], algo.sampling_weights, 8, seed=1),
            algo,
            weighter=_Recorder(build_weighter("loss", ["a", "b", "c"], params)),
        )

    def steps(m, first, last):
        it = m.sampler.iter_batches()
        out = []
        for step in range(first, last + 1):
            rows = next(it)
            logits, labels = _global_batch(step)
            m.training_loss(
                logits, MicroBatch(torch.as_tensor(m.sampler.domain_ids(rows)), labels, batch_index=step - 1)
            )
            m.end_step(step)
            out.append(m.weighter.seen[-1][1])
        return out

    full = engine()
    full_weights = steps(full, 1, 7)
    cut = engine()
    steps(cut, 1, 4)
    cut.save(tmp_path / "ckpt")
    state = cut.state_dict()["weighter"]
    # burn-in over (steps 0, 1 uniform; 2, 3 reweighted) and the schedule's position at batch 3
    assert state == {"last_step": 3, "r_current": pytest.approx(cut.weighter.inner.temperature(3)), "num_reweighted": 2}
    assert 0.5 < state["r_current"] < 5.0
    resumed = engine()
    resumed.load(tmp_path / "ckpt")
    assert resumed.weighter.state_dict() == state
    after = steps(resumed, 5, 7)
    for a, b in zip(after, full_weights[4:]):
        assert torch.equal(a, b)
    assert resumed.weighter.inner.num_reweighted == full.weighter.inner.num_reweighted == 5
    assert resumed.weighter.inner.r_current == full.weighter.inner.r_current == 0.5
