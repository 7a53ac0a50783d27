"""objective_normalization: domain — every domain enters an importance-mode loss with exactly q_i,
whatever its rows' lengths, over micro-batches and ranks; token is the old, length-biased behaviour."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.packing import TokenizedDomain
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.loss.per_sample import SampleLosses, sample_losses
from mixflow.testing import run_distributed
from mixflow.utils import distributed

Q = np.array([0.3, 0.7])


@dataclass
class _FixedParams(AlgorithmParams):
    pass


class FixedImportance(DomainAlgorithm):
    """Importance mode with fixed loss weights q (no updates): the objective is Σ_i q_i L_i."""

    name = "test_fixed_importance"
    description = "test only"
    Params = _FixedParams
    mode = "importance"

    def setup(self) -> Weights:
        return Weights(loss=Q[: self.num_domains].copy())

    def update(self, stats: DomainStats, step: int) -> Weights:
        return Weights()


def _engine(sizes, normalization, batch=5, rank=0, world=1, row_target_tokens=None):
    algo = FixedImportance([f"d{i}" for i in range(len(sizes))], _FixedParams(), init_weights=np.ones(len(sizes)))
    sampler = MixtureSampler(sizes, algo.sampling_weights, batch, seed=3, rank=rank, world_size=world)
    return StepEngine(
        sampler, algo, providers=[], objective_normalization=normalization, row_target_tokens=row_target_tokens
    )


TARGETS, MEANS = np.array([2, 8]), np.array([1.0, 3.0])


def _monte_carlo(engine, steps, rng, pass_n=False):
    """Step losses over sampler draws: domain 0 rows have 2 target tokens, domain 1 rows 8, per-token
    losses exponential with means (1, 3). Returns (step losses, whether domain 1 was in each step)."""
    it = engine.sampler.iter_batches()
    values, present = [], []
    for step in range(1, steps + 1):
        ids = engine.sampler.domain_ids(next(it))
        counts = TARGETS[ids]
        tok = [rng.exponential(MEANS[d], size=n) for d, n in zip(ids, counts)]
        losses = SampleLosses(
            torch.tensor([t.sum() for t in tok]),
            torch.as_tensor(counts),
            torch.zeros(len(ids), 1),
            torch.ones(len(ids), 1, dtype=torch.bool),
        )
        n = int(counts.sum()) if pass_n else None
        values.append(
            engine.training_loss_from_samples(
                losses, MicroBatch(torch.as_tensor(ids), num_items_in_batch=n, batch_index=step - 1)
            ).item()
        )
        present.append(bool((ids == 1).any()))
        engine.end_step(step)
    return np.array(values), np.array(present)


def test_unbiased_with_unequal_row_lengths_monte_carlo():
    """Domain 0 rows have 2 target tokens, domain 1 rows 8; per-token losses have means (1, 3)."""
    rng = np.random.default_rng(0)
    out = {}
    for normalization in ("domain", "token"):
        values, _ = _monte_carlo(_engine([1000, 1000], normalization), 1500, rng)
        out[normalization] = np.mean(values), np.std(values) / np.sqrt(len(values))
    objective = float((Q * MEANS).sum())  # Σ_i q_i L_i = 2.4
    mean, se = out["domain"]
    assert abs(mean - objective) < 4 * se + 1e-3
    # the token normalisation weighs domains by q_i·n_i: Σ q n L / Σ p n = 17.4 / 5 = 3.48
    token_mean, token_se = out["token"]
    assert abs(token_mean - 3.48) < 4 * token_se + 1e-3 and token_mean - objective > 0.5


def test_a_domain_planned_less_than_once_per_step_still_counts_q():
    """p = (0.9, 0.1) at B = 5: domain 1 is in every other step; N counts the whole step."""
    algo = FixedImportance(["d0", "d1"], _FixedParams(), init_weights=[0.9, 0.1])
    sampler = MixtureSampler([1000, 1000], algo.sampling_weights, 5, seed=3)
    engine = StepEngine(sampler, algo, providers=[], row_target_tokens=lambda rows: TARGETS[sampler.domain_ids(rows)])
    values, present = _monte_carlo(engine, 2000, np.random.default_rng(2), pass_n=True)
    assert 0.4 < np.mean(present) < 0.6  # the rare domain really is missing from half the steps
    se = np.std(values) / np.sqrt(len(values))
    assert abs(np.mean(values) - float((Q * MEANS).sum())) < 4 * se + 1e-3


def _dataset():
    """Two unpacked domains: rows of 3 tokens (2 targets) and of 9 tokens (8 targets)."""
    rng = np.random.default_rng(1)
    short = [rng.integers(1, 20, size=3).astype(np.int32) for _ in range(40)]
    long = [rng.integers(1, 20, size=9).astype(np.int32) for _ in range(40)]
    return MixtureDataset([TokenizedDomain("short", short, []), TokenizedDomain("long", long, [])])


def _batch(dataset, rows, seed):
    batch = DomainCollator(0)([dataset[int(i)] for i in rows])
    logits = torch.randn(len(rows), batch["input_ids"].shape[1], 20, generator=torch.Generator().manual_seed(seed))
    return logits, batch["labels"], batch["domain_ids"]


def _objective(logits, labels, ids):
    """Σ_d q_d · (domain d's token sum) / (domain d's target tokens), from the whole global batch."""
    losses = sample_losses(logits, labels)
    return sum(Q[d] * losses.token_loss_sum[ids == d].sum() / losses.token_count[ids == d].sum() for d in range(2))


def test_dataset_target_tokens_match_what_the_loss_counts():
    dataset = _dataset()
    rows = np.array([0, 5, 41, 79])
    logits, labels, _ = _batch(dataset, rows, 0)
    assert dataset.target_tokens(rows).tolist() == sample_losses(logits, labels).token_count.tolist() == [2, 2, 8, 8]


def test_gradient_accumulation_sums_to_the_domain_objective():
    dataset = _dataset()
    engine = _engine(dataset.domain_sizes, "domain", batch=8, row_target_tokens=dataset.target_tokens)
    rows = next(engine.sampler.iter_batches())
    logits, labels, ids = _batch(dataset, rows, 0)
    n = int((labels[:, 1:] != -100).sum())  # the Trainer's num_items_in_batch: the whole step
    total = sum(
        engine.training_loss(logits[part], MicroBatch(ids[part], labels[part], num_items_in_batch=n, batch_index=0))
        for part in (slice(0, 4), slice(4, 8))
    )
    assert total.item() == pytest.approx(_objective(logits, labels, ids).item(), rel=1e-6)
    # without the rows' lengths a multi-micro-batch step is a one-line error, not a silent fallback
    bare = _engine(dataset.domain_sizes, "domain", batch=8)
    next(bare.sampler.iter_batches())
    with pytest.raises(ValueError, match="objective_normalization: domain needs the rows' target tokens"):
        bare.training_loss(logits[:4], MicroBatch(ids[:4], labels[:4], num_items_in_batch=n, batch_index=0))


def _ranks(rank, world, out):
    dataset = _dataset()
    engine = _engine(
        dataset.domain_sizes, "domain", batch=8, rank=rank, world=world, row_target_tokens=dataset.target_tokens
    )
    local = next(engine.sampler.iter_batches())
    rows = engine.sampler.planned_rows(0)
    logits, labels, ids = _batch(dataset, rows, 0)  # every rank builds the global batch, keeps its slice
    mine = slice(rank * 4, rank * 4 + 4) if world > 1 else slice(0, 8)
    assert np.array_equal(rows[mine], local)
    n = int((labels[:, 1:] != -100).sum())  # average_tokens_across_devices: N counts all ranks' tokens
    loss = engine.training_loss(logits[mine], MicroBatch(ids[mine], labels[mine], num_items_in_batch=n, batch_index=0))
    # DDP averages over ranks and the Trainer multiplies by the world size: the objective is the sum
    total = distributed.all_reduce_sum(loss.detach().reshape(1).double())
    with open(os.path.join(out, f"r{rank}-{world}.json"), "w") as f:
        json.dump({"total": total.item(), "objective": _objective(logits, labels, ids).item()}, f)


@pytest.mark.distributed
def test_two_ranks_sum_to_the_domain_objective(tmp_path):
    run_distributed(_ranks, str(tmp_path))
    _ranks(0, 1, str(tmp_path))
    results = [json.loads((tmp_path / name).read_text()) for name in ("r0-2.json", "r1-2.json", "r0-1.json")]
    for r in results:
        assert r["total"] == pytest.approx(r["objective"], rel=1e-6)
    assert results[0]["total"] == pytest.approx(results[2]["total"], rel=1e-6)


def test_equal_lengths_and_exact_counts_agree_with_the_token_normalisation():
    """With packed rows and p·B whole, the two normalisations are the same loss."""
    domain, token = _engine([50, 50], "domain", batch=4), _engine([50, 50], "token", batch=4)
    rows = next(domain.sampler.iter_batches())
    next(token.sampler.iter_batches())
    ids = torch.as_tensor(domain.sampler.domain_ids(rows))
    assert torch.bincount(ids).tolist() == [2, 2]
    logits, labels = torch.randn(4, 6, 9), torch.randint(0, 9, (4, 6))
    assert domain.training_loss(logits, MicroBatch(ids, labels, batch_index=0)).item() == pytest.approx(
        token.training_loss(logits, MicroBatch(ids, labels, batch_index=0)).item(), rel=1e-9
    )


def test_unknown_normalization_is_an_error():
    with pytest.raises(ValueError, match="objective_normalization: expected 'domain' or 'token'"):
        _engine([5, 5], "tokens")
