"""Statistic providers under FSDP2 (``fully_shard``, gloo on CPU): the same weight trajectory as DDP.

Each case trains the tiny Llama for a few steps on 2 ranks, once wrapped in DDP and once sharded
with ``fully_shard`` (every decoder layer and the root), from the same initial weights, through the
plain-PyTorch loop (``StepEngine``, no Trainer). The providers see sharded parameters, an output head
that is sharded between forwards, and forwards that every rank must take part in.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.providers.base import ProviderContext
from mixflow.providers.reference_loss import ReferenceLoss
from mixflow.testing import run_distributed
from tests.helpers import tiny_domains, tiny_llama

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("this torch has no FSDP2 fully_shard", allow_module_level=True)

CASES = {
    # closed-form head statistics (activations), sharded head
    "pike": ("pike", {"min_samples": 1}),
    # the held-out forward on every rank
    "fgls": ("fgls", {}),
    # a frozen reference replicated on every rank, its forward on every rank
    "doremi": ("doremi", {"reference_model_path": None}),
}


def _wrap(model, mode: str):
    if mode == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    if mode == "fsdp_head":  # the head in its own group (torchtitan's layout): sharded again after its forward
        fully_shard(model.lm_head)
    return fully_shard(model)


def _train(
    rank: int,
    world: int,
    out: str,
    mode: str,
    case: str,
    steps: int = 4,
    params: dict | None = None,
    attach: bool = True,
) -> None:
    name, defaults = CASES[case]
    params = {**defaults, **(params or {})}
    domains = tiny_domains()
    train = MixtureDataset(domains)
    val = MixtureDataset(domains, split="val")
    heldout = {n: val.single_domain(i) for i, n in enumerate(train.domain_names)}
    context = ProviderContext(train.domain_names, heldout, DomainCollator(0), eval_batch_size=3)
    algorithm = build_algorithm(name, train.domain_names, params, init_weights=np.ones(3) / 3)
    sampler = MixtureSampler(train.domain_sizes, algorithm.sampling_weights, 8, seed=1, rank=rank, world_size=world)
    providers = [ReferenceLoss(None, model=tiny_llama(seed=9))] if name == "doremi" else None
    engine = StepEngine(
        sampler, algorithm, schedule=UpdateSchedule(update_step=1), providers=providers, provider_context=context
    )
    model = _wrap(tiny_llama(seed=3), mode)
    if attach:
        engine.attach_model(model)  # grad_stats keeps the head's inputs from the first forward on
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    collate = DomainCollator(0)
    batches = sampler.iter_batches()
    trajectory = [_weights(algorithm)]
    for step in range(steps):
        batch = collate([train[int(i)] for i in next(batches)])
        ids, labels = batch.pop("domain_ids"), batch.pop("labels")
        batch.pop("sample_ids", None)
        logits = model(**batch).logits
        loss = engine.training_loss(logits, MicroBatch(ids, labels, batch_index=step, model=model, inputs=batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        engine.end_step(step + 1, model=model)
        trajectory.append(_weights(algorithm))
    with open(os.path.join(out, f"{mode}-{case}-rank{rank}.json"), "w") as f:
        json.dump(trajectory, f)


def _weights(algorithm) -> list[float]:
    return [*algorithm.sampling_weights.tolist(), *algorithm.loss_weights.tolist()]


def _all_cases(rank: int, world: int, out: str) -> None:
    for case in CASES:  # one pair of processes for every case: spawning costs more than training
        for mode in ("ddp", "fsdp") + (("fsdp_head",) if case == "pike" else ()):
            _train(rank, world, out, mode, case)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, list]]:
    out = tmp_path_factory.mktemp("sharded")
    run_distributed(_all_cases, str(out))
    found: dict[str, dict[str, list]] = {}
    for path in sorted(out.glob("*-rank0.json")):
        mode, case, _ = path.name.split("-")
        other = json.loads((out / path.name.replace("rank0", "rank1")).read_text())
        found.setdefault(case, {})[mode] = [json.loads(path.read_text()), other]
    return found


@pytest.mark.distributed
@pytest.mark.parametrize("case", list(CASES))
def test_fsdp_gives_the_ddp_weight_trajectory(runs, case):
    ddp = np.asarray(runs[case]["ddp"][0])
    assert set(runs[case]) >= {"ddp", "fsdp"}
    for mode, (r0, r1) in runs[case].items():
        assert r0 == r1, mode  # ranks agree exactly
        assert np.allclose(np.asarray(r0), ddp, rtol=1e-4, atol=1e-5), mode
    assert not np.allclose(ddp[-1], ddp[0], atol=1e-3)  # the weights did move


def _sharded_subset(rank: int, world: int, out: str) -> None:
    with pytest.raises(ValueError, match=r"^grad_params: these parameters are sharded \(FSDP\)"):
        _train(rank, world, out, "fsdp", "pike", params={"grad_params": ["model.layers.1.mlp.*"]})


@pytest.mark.distributed
def test_gradient_statistics_of_sharded_layers_are_one_error():
    # FSDP2 differentiates a gathered copy of a layer's parameters, so the subset's gradients are
    # not reachable after the forward: one line instead of zeros.
    run_distributed(_sharded_subset, "")


def _unattached(rank: int, world: int, out: str) -> None:
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("mixflow.providers.grad_stats").addHandler(handler)
    _train(rank, world, out, "fsdp_head", "pike", attach=False)
    assert sum("no gradient statistics from the first micro-batch" in m for m in seen) == 1


@pytest.mark.distributed
def test_a_sharded_head_seen_late_skips_the_first_batch_and_says_so(tmp_path):
    # Without attach_model the head's input of the first forward is never kept; autograd cannot reach a
    # sharded head, so that batch contributes nothing (said once) rather than zeros.
    run_distributed(_unattached, str(tmp_path))
    r0, r1 = (json.loads((tmp_path / f"fsdp_head-pike-rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1 and not np.allclose(r0[-1], r0[0], atol=1e-3)
