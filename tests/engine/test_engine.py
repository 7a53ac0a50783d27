"""The step engine: schedule, logs, NaN handling, coefficients, weighters, providers, ranks, state."""

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mixflow.algorithms.base import DomainAlgorithm, SampleWeighter
from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.weights import Weights
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.checkpoint import supersede_log_lines
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.loss.per_sample import sample_losses
from mixflow.providers.base import StatisticProvider
from mixflow.testing import run_distributed
from tests.helpers import FollowLoss  # registers test_follow_loss

K = 3


def _engine(algorithm="test_follow_loss", batch=6, rank=0, world=1, **kw):
    algo = build_algorithm(algorithm, ["a", "b", "c"], {}, init_weights=np.ones(K) / K)
    sampler = MixtureSampler([30, 30, 30], algo.sampling_weights, batch, seed=1, rank=rank, world_size=world)
    return StepEngine(sampler, algo, **kw)


def _logits_for(domain_ids, scale=1.0, vocab=5, length=4):
    # Deterministic logits whose loss differs by domain: domain d gets logits d*scale on token 0.
    b = len(domain_ids)
    logits = torch.zeros(b, length, vocab)
    logits[:, :, 0] = torch.as_tensor(domain_ids, dtype=torch.float32)[:, None] * scale
    labels = torch.ones(b, length, dtype=torch.long)
    return logits, labels


def _feed(engine, domain_ids, step, scale=1.0):
    # As in training, the sampler plans global batch `step` before it is trained on; the test then
    # chooses the batch's domain ids itself to control the statistics.
    while engine.sampler.planned_batches <= step:
        next(engine.sampler.iter_batches())
    logits, labels = _logits_for(domain_ids, scale)
    return engine.training_loss(logits, MicroBatch(torch.as_tensor(domain_ids), labels, batch_index=step))


def test_importance_coefficients_use_the_plan_the_batch_was_drawn_with():
    algo = build_algorithm("static", ["a", "b", "c"], {}, init_weights=[0.5, 0.25, 0.25])

    class Importance(type(algo)):
        mode = "importance"

    algo.__class__ = Importance
    sampler = MixtureSampler([30, 30, 30], algo.sampling_weights, 6, seed=1)
    # the token normalisation divides by p (the domain one by the batch's own token shares)
    engine = StepEngine(sampler, algo, objective_normalization="token")
    ids = [0, 0, 0, 1, 2, 2]
    logits, labels = _logits_for(ids)
    next(engine.sampler.iter_batches())  # batch 0 planned with p = (0.5, 0.25, 0.25)
    engine.sampler.set_weights([0.2, 0.4, 0.4])  # the sampler has moved on; batch 0's plan has not
    with_plan = engine.training_loss(logits, MicroBatch(torch.tensor(ids), labels, batch_index=0))
    engine._step_stats = type(engine._step_stats).zeros(3)
    # q = π (uniform) over batch 0's p: coefficients 2/3, 4/3, 4/3 by domain
    c = torch.tensor([2 / 3, 2 / 3, 2 / 3, 4 / 3, 4 / 3, 4 / 3], dtype=torch.float64)
    losses = sample_losses(logits, labels)
    expected = (losses.token_loss_sum * c).sum() / losses.token_count.sum()
    assert torch.allclose(with_plan.double(), expected)


def test_schedule_follows_the_seed_semantics():
    s = UpdateSchedule(warmup_step=100, update_step=200, update_times=3)
    done, updates = 0, []
    for step in range(1, 1001):
        if s.is_update(step, done):
            updates.append(step)
            done += 1
    assert updates == [100, 300, 500]
    assert [t for t in range(1, 31) if UpdateSchedule(0, 10, -1).is_update(t, 0)] == [10, 20, 30]
    with pytest.raises(ValueError, match="update_step"):
        UpdateSchedule(update_step=0)


def test_updates_change_sampler_weights_and_log_whole_lines(tmp_path):
    engine = _engine(schedule=UpdateSchedule(update_step=2), log_dir=tmp_path)
    for step in range(1, 5):
        _feed(engine, [0, 1, 2, 2, 1, 0], step - 1)
        engine.end_step(step)
    lines = (tmp_path / "test_follow_loss_weights.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert set(r) >= {
            "step",
            "timestamp",
            "domain_names",
            "domain_weights",
            "perdomain_scores",
            "sampling_weights",
            "loss_weights",
        }
        assert np.isclose(sum(r["domain_weights"]), 1.0)
    # domain c has the highest loss here (largest wrong logit), so the follow-loss rule upweights it
    assert records[-1]["sampling_weights"][2] > records[-1]["sampling_weights"][0]
    assert np.allclose(engine.sampler.weights, records[-1]["sampling_weights"])


def test_non_finite_statistics_skip_the_update_with_a_warning(caplog):
    engine = _engine(schedule=UpdateSchedule(update_step=1))
    logits, labels = _logits_for([0, 1, 2, 0, 1, 2])
    logits[0, 0, 0] = float("nan")
    next(engine.sampler.iter_batches())
    engine.training_loss(logits, MicroBatch(torch.tensor([0, 1, 2, 0, 1, 2]), labels, batch_index=0))
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        assert engine.end_step(1) is False
    assert "non-finite" in caplog.text
    assert np.allclose(engine.algorithm.sampling_weights, np.ones(K) / K)
    # the next (finite) update goes through
    _feed(engine, [0, 1, 2, 0, 1, 2], 1)
    assert engine.end_step(2) is True


@dataclass
class _P(AlgorithmParams):
    pass


class _Broken(DomainAlgorithm):
    name = "test_broken"
    description = "produces NaN weights"
    Params = _P

    def update(self, stats, step):
        return Weights(sampling=np.full(self.num_domains, np.nan))


def test_invalid_weights_from_an_algorithm_are_rejected(caplog):
    algo = _Broken(["a", "b", "c"], _P(), init_weights=[0.2, 0.3, 0.5])
    engine = StepEngine(
        MixtureSampler([10, 10, 10], algo.sampling_weights, 6), algo, schedule=UpdateSchedule(update_step=1)
    )
    _feed(engine, [0, 1, 2, 0, 1, 2], 0)
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        assert engine.end_step(1) is False
    assert "invalid weights" in caplog.text
    assert np.allclose(engine.algorithm.sampling_weights, [0.2, 0.3, 0.5])
    assert algo.num_updates == 0  # state restored whole


class _Observing(DomainAlgorithm):
    name = "test_observing"
    description = "changes p and w between updates: new ones after step 3, unusable ones after step 5"
    Params = _P

    def observe(self, stats, step):
        if step == 3:
            return Weights(sampling=[0.6, 0.3, 0.1], loss=[1.0, 0.5, 2.0])
        if step == 5:
            return Weights(sampling=[-1.0, 1.0, 1.0])
        return None

    def update(self, stats, step):
        return Weights()


def test_weights_changed_between_updates_take_the_updates_road(tmp_path, caplog):
    algo = _Observing(["a", "b", "c"], _P(), init_weights=[0.2, 0.3, 0.5])
    sampler = MixtureSampler([40, 40, 40], algo.sampling_weights, 10)
    engine = StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1000), plan_horizon=2, log_dir=tmp_path)
    p, w = {}, {}
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        for step in range(1, 9):
            while sampler.planned_batches < step + 2:  # the loader reads as far ahead as the horizon allows
                next(sampler.iter_batches())
            p[step], w[step] = sampler.planned_weights(step - 1).tolist(), algo.loss_weights.tolist()
            _feed(engine, [0, 1, 2] * 3 + [0], step - 1)
            engine.end_step(step)
    # p decided after step 3 is drawn from step 3 + lead (1 + horizon), w counts from the next step
    assert all(np.allclose(p[s], [0.2, 0.3, 0.5]) for s in range(1, 6)) and all(
        np.allclose(p[s], [0.6, 0.3, 0.1]) for s in (6, 7, 8)
    )
    assert w[3] == [1.0, 1.0, 1.0] and w[4] == [1.0, 0.5, 2.0]
    assert "test_observing.observe: sampling weights [-1.0, 1.0, 1.0] are not finite" in caplog.text
    assert np.allclose(algo.sampling_weights, [0.6, 0.3, 0.1])  # the unusable ones were never applied
    log = [json.loads(x) for x in (tmp_path / "test_observing_weights.jsonl").read_text().splitlines()]
    assert [(r["step"], r["from_step"], r["sampling_weights"]) for r in log] == [(3, 6, [0.6, 0.3, 0.1])]


def test_the_logged_p_is_the_one_the_next_step_is_drawn_with_not_one_decided_ahead(tmp_path):
    algo = _Observing(["a", "b", "c"], _P(), init_weights=[0.2, 0.3, 0.5])
    sampler = MixtureSampler([40, 40, 40], algo.sampling_weights, 10)
    engine = StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1000), plan_horizon=2, log_dir=tmp_path)
    logged = {}
    for step in range(1, 8):
        while sampler.planned_batches < step + 2:
            next(sampler.iter_batches())
        _feed(engine, [0, 1, 2] * 3 + [0], step - 1)
        engine.end_step(step)
        metrics = engine.metrics()
        logged[step] = [metrics[f"mix/weight/{d}"] for d in "abc"]
    # p decided after step 3 is drawn from step 6: the line after step 5 is the first to show it
    # (before, it showed the algorithm's latest p from step 3 on, steps its batches never had)
    assert all(np.allclose(logged[s], [0.2, 0.3, 0.5]) for s in (1, 2, 3, 4))
    assert all(np.allclose(logged[s], [0.6, 0.3, 0.1]) for s in (5, 6, 7))
    assert np.allclose(algo.sampling_weights, [0.6, 0.3, 0.1])


class _Importance(DomainAlgorithm):
    name = "test_importance"
    description = "uniform sampling, loss weights [1, 2, 3] (normalised), importance mode"
    Params = _P
    mode = "importance"

    def setup(self):
        return Weights(loss=[1.0, 2.0, 3.0])

    def update(self, stats, step):
        return Weights()


def test_importance_mode_uses_the_weights_the_batch_was_drawn_with():
    algo = _Importance(["a", "b", "c"], _P(), init_weights=[0.5, 0.25, 0.25])
    engine = StepEngine(MixtureSampler([40, 40, 40], algo.sampling_weights, 8), algo)
    batch0 = next(engine.sampler.iter_batches())  # plan batch 0 with p = (0.5, .25, .25)
    engine.sampler.set_weights([0.1, 0.1, 0.8])  # read-ahead: a later batch will use other weights
    ids = torch.as_tensor(engine.sampler.domain_ids(batch0))
    logits, labels = _logits_for(ids.tolist())
    loss = engine.training_loss(logits, MicroBatch(ids, labels, batch_index=0))
    q = np.array([1, 2, 3]) / 6
    c = (q / np.array([0.5, 0.25, 0.25]))[ids.numpy()]
    from mixflow.loss.per_sample import sample_losses

    sl = sample_losses(logits, labels)
    expected = (torch.as_tensor(c) * sl.token_loss_sum.double()).sum() / sl.token_count.sum()
    assert torch.isclose(loss.double(), expected)


class _Halves(SampleWeighter):
    name = "test_halves"
    description = "weight 2 for the higher-loss half of the batch, 0 for the rest"
    Params = _P

    def weights(self, losses, domain_ids, step, sample_ids=None):
        return (losses >= losses.median()).double() * 2.0


def test_sample_weights_multiply_the_coefficients():
    engine = _engine(weighter=_Halves(["a", "b", "c"], _P()))
    ids = [0, 1, 2, 0, 1, 2]
    logits, labels = _logits_for(ids, scale=2.0)
    loss = engine.training_loss(logits, MicroBatch(torch.tensor(ids), labels, batch_index=0))
    from mixflow.loss.per_sample import sample_losses

    sl = sample_losses(logits, labels)
    s = (sl.mean >= sl.mean.median()).double() * 2
    assert torch.isclose(loss.double(), (s * sl.token_loss_sum.double()).sum() / sl.token_count.sum())


class _CountTokens(StatisticProvider):
    name = "test_count"

    def batch_statistics(self, ctx):
        out = torch.zeros(ctx.num_domains, dtype=torch.float64)
        return {"tokens_again": out.index_add_(0, ctx.domain_ids, ctx.losses.token_count.double())}


class _SeesExtras(DomainAlgorithm):
    name = "test_sees_extras"
    description = "records the provider's statistic"
    Params = _P

    def update(self, stats, step):
        self.seen = stats.extras["tokens_again"].tolist()
        return Weights()


def test_provider_statistics_reach_the_algorithm_summed_over_the_window():
    algo = _SeesExtras(["a", "b", "c"], _P(), init_weights=np.ones(3) / 3)
    engine = StepEngine(
        MixtureSampler([9, 9, 9], algo.sampling_weights, 6),
        algo,
        schedule=UpdateSchedule(update_step=2),
        providers=[_CountTokens()],
    )
    for step in (1, 2):
        _feed(engine, [0, 0, 1, 2, 2, 2], step - 1)
        engine.end_step(step)
    assert algo.seen == [2 * 2 * 3, 1 * 2 * 3, 3 * 2 * 3]  # samples × steps × 3 target tokens


def test_state_roundtrip_and_mid_step_guard(tmp_path):
    engine = _engine(schedule=UpdateSchedule(update_step=2), log_dir=tmp_path)
    for step in (1, 2, 3):
        _feed(engine, [0, 1, 2, 0, 1, 2], step - 1)
        engine.end_step(step)
    engine.save(tmp_path / "ckpt")
    other = _engine(schedule=UpdateSchedule(update_step=2), log_dir=tmp_path)
    other.load(tmp_path / "ckpt")
    assert other.last_step == 3
    assert np.allclose(other.algorithm.sampling_weights, engine.algorithm.sampling_weights)
    assert other._window_stats.token_count.tolist() == engine._window_stats.token_count.tolist()
    _feed(engine, [0, 1, 2, 0, 1, 2], 3)
    with pytest.raises(RuntimeError, match="middle of an optimizer step"):
        engine.state_dict()
    wrong = _engine(algorithm="static")
    with pytest.raises(ValueError, match="algorithm_name"):
        wrong.load(tmp_path / "ckpt")


def test_superseded_log_lines_are_moved_not_lost(tmp_path):
    log = tmp_path / "x_weights.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (2, 4, 6)))
    assert supersede_log_lines(log, 4) == 1
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [2, 4]
    moved = tmp_path / "x_weights.superseded.jsonl"
    assert [json.loads(x)["step"] for x in moved.read_text().splitlines()] == [6]


def _global_batches(steps, batch=8):
    sampler = MixtureSampler([30, 30, 30], np.ones(K) / K, batch, seed=1)
    it = sampler.iter_batches()
    return [next(it) for _ in range(steps)]


def _run_ranks(rank, world, out):
    engine = _engine(batch=8, rank=rank, world=world, schedule=UpdateSchedule(update_step=1))
    it = engine.sampler.iter_batches()
    for step in range(1, 5):
        rows = next(it)
        ids = engine.sampler.domain_ids(rows)
        _feed(engine, ids.tolist(), step - 1, scale=float(step))
        engine.end_step(step)
    torch.save({"weights": engine.algorithm.sampling_weights, "rows": rows}, os.path.join(out, f"r{rank}.pt"))


class _Early(FollowLoss):
    """FollowLoss updating inside the step, before its loss, as DoReMi does (Algorithm 1)."""

    update_before_loss = True


def _early_ranks(rank, world, out):
    # the Trainer's layout: one global sampler (world size 1); each rank trains on its half of every batch
    algo = _Early(["a", "b", "c"], FollowLoss.Params(), init_weights=np.ones(K) / K)
    engine = StepEngine(
        MixtureSampler([30, 30, 30], algo.sampling_weights, 8, seed=1), algo, schedule=UpdateSchedule(update_step=1)
    )
    it, within = engine.sampler.iter_batches(), []
    for step in range(1, 4):
        rows = next(it)
        mine = np.array_split(rows, world)[rank]
        logits, labels = _logits_for(engine.sampler.domain_ids(mine).tolist(), scale=float(step))
        engine.training_loss(
            logits, MicroBatch(torch.as_tensor(engine.sampler.domain_ids(mine)), labels, batch_index=step - 1)
        )
        within.append(algo.num_updates)  # updated before the loss: counted already
        engine.end_step(step)
    torch.save({"within": within, "weights": algo.sampling_weights}, os.path.join(out, f"e{rank}-{world}.pt"))


@pytest.mark.distributed
def test_an_update_before_the_loss_happens_on_two_ranks_as_on_one(tmp_path):
    run_distributed(_early_ranks, str(tmp_path))
    _early_ranks(0, 1, str(tmp_path))
    r0, r1, single = (torch.load(tmp_path / name, weights_only=False) for name in ("e0-2.pt", "e1-2.pt", "e0-1.pt"))
    assert single["within"] == r0["within"] == r1["within"] == [1, 2, 3]
    assert np.allclose(r0["weights"], single["weights"], rtol=1e-12) and np.array_equal(r0["weights"], r1["weights"])


@pytest.mark.distributed
def test_two_ranks_reduce_statistics_and_match_a_single_process(tmp_path):
    run_distributed(_run_ranks, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    assert np.array_equal(r0["weights"], r1["weights"])
    assert not set(r0["rows"].tolist()) & set(r1["rows"].tolist())
    # the same global batches in one process give the same weights
    _run_ranks(0, 1, str(tmp_path))
    single = torch.load(tmp_path / "r0.pt", weights_only=False)
    assert np.allclose(single["weights"], r0["weights"], rtol=1e-12)
    assert not np.allclose(single["weights"], np.ones(K) / K)


def test_providers_stop_once_no_update_remains():
    algo = _SeesExtras(["a", "b", "c"], _P(), init_weights=np.ones(3) / 3)
    calls = []

    class _Counting(_CountTokens):
        def batch_statistics(self, ctx):
            calls.append(ctx.batch_index)
            return super().batch_statistics(ctx)

    engine = StepEngine(
        MixtureSampler([9, 9, 9], algo.sampling_weights, 6),
        algo,
        schedule=UpdateSchedule(update_step=2, update_times=1),
        providers=[_Counting()],
    )
    for step in (1, 2, 3, 4):
        _feed(engine, [0, 0, 1, 2, 2, 2], step - 1)
        engine.end_step(step)
    assert algo.num_updates == 1
    assert calls == [0, 1]  # the micro-batches of steps 1 and 2 only; after the update none is needed


def test_uniform_sample_weights_have_a_top_decile_share_of_one_tenth():
    from mixflow.engine.sample_weights import SampleWeightStats

    for n in (8, 10, 64):
        stats = SampleWeightStats(2)
        stats.add(torch.ones(n), torch.zeros(n, dtype=torch.long))
        assert stats.summary(["a", "b"])["top_decile_share"] == pytest.approx(0.1)
    stats = SampleWeightStats(2)
    stats.add(torch.tensor([10.0] + [0.0] * 9), torch.tensor([1] + [0] * 9))
    summary = stats.summary(["a", "b"])
    assert summary["per_domain"] == {"a": 0.0, "b": 10.0}
    assert (summary["mean"], summary["max"], summary["top_decile_share"]) == pytest.approx((1.0, 10.0, 1.0))
