"""MicroBatch: what a training loop tells the step engine about one micro-batch."""

import pytest
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch


def test_take_pops_mixflows_keys_and_leaves_the_models_inputs():
    ids, rows, labels, tokens = torch.tensor([0, 1]), torch.tensor([7, 9]), torch.ones(2, 3), torch.zeros(2, 3)
    batch = {"input_ids": tokens, "domain_ids": ids, "sample_ids": rows, "labels": labels}
    micro = MicroBatch.take(batch, batch_index=4, num_items_in_batch=6)
    assert set(micro.inputs) == {"input_ids"} and micro.inputs["input_ids"] is tokens
    assert micro.domain_ids is ids and micro.sample_ids is rows and micro.labels is labels
    assert (micro.batch_index, micro.num_items_in_batch) == (4, 6)


def test_take_without_domain_ids_names_the_key():
    with pytest.raises(ValueError, match="batch: expected 'domain_ids'"):
        MicroBatch.take({"input_ids": torch.zeros(1, 2), "labels": torch.zeros(1, 2)})


def test_training_loss_without_labels_names_them():
    algorithm = build_algorithm("static", ["a", "b"], {})
    engine = StepEngine(MixtureSampler([4, 4], algorithm.sampling_weights, 2), algorithm)
    with pytest.raises(ValueError, match="batch: expected 'labels'"):
        engine.training_loss(torch.zeros(2, 3, 5), MicroBatch(torch.tensor([0, 1]), batch_index=0))
