"""The heldout_loss provider: a bounded window of held-out rows that rotates over updates, one
batched forward for all domains, sums equal to a direct computation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mixflow.algorithms.base import ProviderSpec
from mixflow.algorithms.params import ValidationContext, build_params
from mixflow.algorithms.statistics import (
    HELDOUT_COUNT,
    HELDOUT_LOSS_SQ_SUM,
    HELDOUT_LOSS_SUM,
    HeldoutParams,
    heldout_rows,
)
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.packing import TokenizedDomain
from mixflow.loss.per_sample import sample_losses
from mixflow.providers.base import ProviderContext, UpdateContext, build_providers
from mixflow.providers.heldout_loss import HeldoutLoss
from tests.helpers import VOCAB, tiny_llama


def _heldout(sizes=(10, 6)):
    rng = np.random.default_rng(0)
    domains = [
        TokenizedDomain(
            f"d{d}", train=np.zeros((1, 8), np.int32), val=rng.integers(1, VOCAB, size=(n, 8)).astype(np.int32)
        )
        for d, n in enumerate(sizes)
    ]
    val = MixtureDataset(domains, split="val")
    return [val.single_domain(d) for d in range(len(sizes))]


def test_the_window_rotates_through_every_row():
    provider = HeldoutLoss(_heldout(), DomainCollator(0), rows_per_update=8)
    assert [provider.window(0, u) for u in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert provider.window(1, 1) == [4, 5, 0, 1]
    seen = {i for u in range(5) for i in provider.window(0, u)}
    assert seen == set(range(10))
    assert HeldoutLoss(_heldout(), DomainCollator(0), rows_per_update=None).window(0, 7) == list(range(10))
    assert HeldoutLoss(_heldout(), DomainCollator(0), rows_per_update=100).window(1, 3) == list(range(6))


def _direct(model, datasets, windows):
    """Per-domain (Σ loss, Σ loss², count) evaluated one domain at a time."""
    out = []
    with torch.no_grad():
        for dataset, rows in zip(datasets, windows):
            batch = DomainCollator(0)([dataset[i] for i in rows])
            losses = sample_losses(model(input_ids=batch["input_ids"]).logits, batch["labels"]).mean.double()
            out.append((losses.sum().item(), losses.square().sum().item(), len(rows)))
    return np.array(out)


@pytest.mark.parametrize("world", [1, 2])
def test_one_mixed_forward_gives_the_per_domain_sums_of_the_window(world):
    datasets, model = _heldout(), tiny_llama(seed=0)
    provider = HeldoutLoss(datasets, DomainCollator(0), batch_size=3, rows_per_update=8)
    total = None
    for rank in range(world):  # the ranks' shards add up to the window
        stats = provider.update_statistics(UpdateContext(model, 20, 2, rank, world, update_index=2))
        got = torch.stack([stats[HELDOUT_LOSS_SUM], stats[HELDOUT_LOSS_SQ_SUM], stats[HELDOUT_COUNT]], 1).numpy()
        total = got if total is None else total + got
    expected = _direct(model, datasets, [provider.window(d, 2) for d in range(2)])
    assert np.allclose(total, expected, rtol=1e-5)
    assert model.training  # the provider restores the mode it found


def test_rows_per_update_below_two_per_domain_is_a_config_error():
    with pytest.raises(
        ValueError, match=r"^fgls\.heldout_rows_per_update: expected 'batch', 'all' or an integer >= 2·K = 8"
    ):
        build_params(HeldoutParams, {"heldout_rows_per_update": 7}, "fgls", ValidationContext(4))
    with pytest.raises(
        ValueError, match=r"^fgls\.heldout_rows_per_update: expected one of \['batch', 'all'\]|an integer"
    ):
        build_params(HeldoutParams, {"heldout_rows_per_update": "every"}, "fgls", ValidationContext(4))


def test_the_default_window_is_one_training_batch_of_rows():
    assert heldout_rows("batch", 4, 64) == 64 and heldout_rows("batch", 4, 4) == 8  # at least 2 per domain
    assert heldout_rows("all", 4, 64) is None and heldout_rows(100, 4, 64) == 100
    engine_context = ProviderContext(
        ["d0", "d1"], heldout=dict(zip(["d0", "d1"], _heldout())), collator=DomainCollator(0)
    )
    provider = build_providers(
        [ProviderSpec("heldout_loss", HeldoutParams(), "FGLS")], replace(engine_context, batch_size=6)
    )[0]
    assert provider.rows_per_update == 6 and provider.window(0, 0) == [0, 1, 2]
