"""DoReMi's reference_loss provider: the reference forward before the training forward."""

from __future__ import annotations

import torch

from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.loss.per_sample import sample_losses
from mixflow.providers.base import BatchContext
from mixflow.providers.reference_loss import ReferenceLoss
from tests.helpers import tiny_domains, tiny_llama


def _batch(rows):
    data = MixtureDataset(tiny_domains())
    batch = DomainCollator(0)([data[i] for i in rows])
    ids, labels = batch.pop("domain_ids"), batch.pop("labels")
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}, labels, ids


def _context(model, inputs, labels, ids):
    losses = sample_losses(model(**inputs).logits, labels, shift=True)
    return BatchContext(model, inputs, labels, losses, ids, 3)


class Counting(torch.nn.Module):
    """The reference, counting its forwards."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0
        self.config = model.config

    def forward(self, **inputs):
        self.calls += 1
        return self.model(**inputs)


def test_a_reference_run_before_the_forward_gives_the_same_sums_once():
    proxy = tiny_llama(seed=1)
    inputs, labels, ids = _batch([0, 1, 45, 70])
    plain = ReferenceLoss(None, model=Counting(tiny_llama(seed=2)))
    early = ReferenceLoss(None, model=Counting(tiny_llama(seed=2)))
    expected = plain.batch_statistics(_context(proxy, inputs, labels, ids))
    early.before_forward(inputs, labels, shift=True)
    got = early.batch_statistics(_context(proxy, inputs, labels, ids))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert expected["ref_excess_sum"].sum() > 0
    assert plain._model.calls == early._model.calls == 1  # the early result is used, not recomputed


def test_an_offered_batch_is_never_used_for_another():
    proxy = tiny_llama(seed=1)
    provider = ReferenceLoss(None, model=Counting(tiny_llama(seed=2)))
    first, other = _batch([0, 1, 45, 70]), _batch([2, 3, 46, 71])
    provider.before_forward(first[0], first[1], shift=True)
    got = provider.batch_statistics(_context(proxy, *other))
    expected = ReferenceLoss(None, model=tiny_llama(seed=2)).batch_statistics(_context(proxy, *other))
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert provider._model.calls == 2  # recomputed for the batch it was given
