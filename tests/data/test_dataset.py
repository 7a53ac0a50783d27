"""MixtureDataset index mapping and DomainCollator batching."""

import numpy as np
import pytest
import torch

from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.packing import TokenizedDomain


def _domains():
    a = TokenizedDomain("a", train=np.arange(6, dtype=np.int32).reshape(3, 2), val=np.zeros((1, 2), np.int32))
    empty = TokenizedDomain("empty", train=np.empty((0, 2), np.int32), val=np.empty((0, 2), np.int32))
    b = TokenizedDomain("b", train=np.full((2, 2), 7, np.int32), val=np.array([[8, 9], [10, 11]], np.int32))
    return [a, empty, b]


def test_global_index_mapping_and_domain_ids():
    ds = MixtureDataset(_domains(), split="train")
    assert ds.domain_names == ["a", "empty", "b"]
    assert ds.domain_sizes == [3, 0, 2]
    assert ds.domain_offsets == [0, 3, 3]
    assert len(ds) == 5
    assert [ds[i]["domain_ids"] for i in range(5)] == [0, 0, 0, 2, 2]
    assert ds[2]["input_ids"].tolist() == [4, 5]
    assert ds[3]["input_ids"].tolist() == [7, 7]
    assert ds[np.int64(1)]["input_ids"].tolist() == [2, 3]
    assert ds.locate(4) == (2, 1)


def test_item_types_and_labels_are_a_copy():
    item = MixtureDataset(_domains())[0]
    assert item["input_ids"].dtype == torch.long
    assert torch.equal(item["labels"], item["input_ids"])
    item["labels"][0] = -100
    assert item["input_ids"][0] == 0


def test_val_split_and_out_of_range():
    ds = MixtureDataset(_domains(), split="val")
    assert ds.domain_sizes == [1, 0, 2]
    assert ds[2]["input_ids"].tolist() == [10, 11]
    with pytest.raises(IndexError):
        ds[3]


def test_single_domain_keeps_domain_id():
    sub = MixtureDataset(_domains(), split="val").single_domain(2)
    assert len(sub) == 2
    assert sub.domain_names == ["b"]
    assert [sub[i]["domain_ids"] for i in range(2)] == [2, 2]
    assert sub[0]["input_ids"].tolist() == [8, 9]
    with pytest.raises(ValueError, match="d:"):
        MixtureDataset(_domains()).single_domain(3)


def test_unpacked_rows():
    dom = TokenizedDomain("u", train=[np.array([1, 2, 3], np.int32), np.array([4], np.int32)], val=[])
    ds = MixtureDataset([dom])
    assert ds[1]["input_ids"].tolist() == [4]


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        MixtureDataset(_domains(), split="test")


def test_collator_pads_right_with_mask_and_ignored_labels():
    features = [
        {"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([1, 2, 3]), "domain_ids": 0},
        {"input_ids": [4], "labels": [4], "domain_ids": torch.tensor(2)},
        {"input_ids": [5, 6], "domain_ids": 1},
    ]
    batch = DomainCollator(pad_token_id=256)(features)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 256, 256], [5, 6, 256]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, -100, -100], [5, 6, -100]]
    assert batch["domain_ids"].tolist() == [0, 2, 1]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collator_with_dataset_items():
    ds = MixtureDataset(_domains())
    batch = DomainCollator(pad_token_id=0)([ds[0], ds[4]])
    assert batch["input_ids"].shape == (2, 2)
    assert batch["domain_ids"].tolist() == [0, 2]


def test_collator_rejects_mismatched_labels():
    with pytest.raises(ValueError, match=r"features\[0\]"):
        DomainCollator(0)([{"input_ids": [1, 2], "labels": [1], "domain_ids": 0}])


def test_the_sampler_keeps_the_plan_of_every_batch_a_dataloader_read_ahead():
    from torch.utils.data import DataLoader

    from mixflow.data.sampler import MixtureSampler

    a, _, b = _domains()
    ds = MixtureDataset([a, b], split="train")
    sampler = MixtureSampler(ds.domain_sizes, [0.5, 0.5], batch_size=4, seed=0)
    # one worker process: the main process reads indices ahead (prefetch) and pickles them across
    loader = iter(DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=DomainCollator(0), num_workers=1))
    first = next(loader)
    assert set(first) == {"input_ids", "attention_mask", "labels", "domain_ids", "sample_ids"}  # no per-row p
    # the DataLoader has read the next batch's indices already; new weights apply to later plans
    second_planned = sampler.planned_batches
    assert second_planned > 1  # batches after the first were planned before the change
    sampler.set_weights([0.25, 0.75])
    batches = [first] + [next(loader) for _ in range(3)]
    for g, batch in enumerate(batches):
        expected = [0.5, 0.5] if g < second_planned else [0.25, 0.75]
        assert sampler.planned_weights(g).tolist() == expected  # what importance weights divide by
        counts = np.bincount(batch["domain_ids"].numpy(), minlength=2)
        assert counts.tolist() == [round(4 * expected[0]), round(4 * expected[1])]  # drawn with that plan


def test_document_attention_lets_each_packed_document_see_itself_only():
    from mixflow.data.dataset import DomainCollator, document_positions
    from tests.helpers import tiny_llama

    eos = 2
    first, second = [5, 9, 11, 7, eos], [13, 6, 8, 4, 10, 12]
    assert document_positions(torch.tensor([first + second]), eos).tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]]
    model = tiny_llama(seed=3).eval()
    row = {"input_ids": first + second, "domain_ids": 0}
    per_doc = DomainCollator(0, document_eos=eos)([row])
    assert "attention_mask" not in per_doc
    with torch.no_grad():
        # no KV cache (training needs none): with one, transformers skips the packed-sequence mask
        packed = model(input_ids=per_doc["input_ids"], position_ids=per_doc["position_ids"], use_cache=False).logits[
            0, len(first) :
        ]
        alone = model(input_ids=torch.tensor([second])).logits[0]
        causal = DomainCollator(0)([row])
        seen = model(input_ids=causal["input_ids"], attention_mask=causal["attention_mask"]).logits[0, len(first) :]
    assert torch.allclose(packed, alone, atol=1e-5)  # the second document never saw the first
    assert not torch.allclose(seen, alone, atol=1e-3)  # with plain causal packing it did
