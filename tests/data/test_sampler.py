"""MixtureSampler: one global plan on every rank, without-replacement domains, exact resume."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from mixflow.data.permutation import derive_key, permute
from mixflow.data.sampler import _TAG_DOMAIN, MixtureSampler
from mixflow.errors import ResumeError

SIZES = [500, 3000, 40, 10000]
WEIGHTS = [0.3, 0.4, 0.1, 0.2]


def global_batches(sampler: MixtureSampler, count: int) -> list[np.ndarray]:
    """The next ``count`` batches of ``sampler`` (its rank slice; the whole batch when W=1)."""
    return [b.copy() for b in itertools.islice(sampler.iter_batches(), count)]


def domain_counts(sampler: MixtureSampler, batch: np.ndarray) -> np.ndarray:
    return np.bincount(sampler.domain_ids(batch), minlength=sampler.num_domains)


# ----------------------------------------------------------------- ranks


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_the_same_global_batch(world_size: int) -> None:
    reference = global_batches(MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=3), 20)
    ranks = [
        global_batches(MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=3, rank=r, world_size=world_size), 20)
        for r in range(world_size)
    ]
    for g, full in enumerate(reference):
        slices = [ranks[r][g] for r in range(world_size)]
        assert all(s.size == 64 // world_size for s in slices)
        # Contiguous slices of the one shuffled global batch, in rank order.
        assert np.array_equal(np.concatenate(slices), full)
        # Domains are big enough that a batch has no repeated row.
        assert np.unique(full).size == full.size


def test_iter_yields_plain_python_ints_of_the_rank_slices() -> None:
    a = MixtureSampler(SIZES, WEIGHTS, batch_size=32, seed=1, rank=1, world_size=2)
    b = MixtureSampler(SIZES, WEIGHTS, batch_size=32, seed=1, rank=1, world_size=2)
    indices = list(itertools.islice(iter(a), 16 * 5))
    assert all(type(i) is int for i in indices)  # the plan stays with the sampler (planned_weights)
    assert indices == np.concatenate(global_batches(b, 5)).tolist()
    with pytest.raises(TypeError):
        len(a)  # type: ignore[arg-type]  # infinite stream: no __len__


def test_fresh_iter_continues_the_stream() -> None:
    a = MixtureSampler(SIZES, WEIGHTS, batch_size=16, seed=2)
    reference = global_batches(MixtureSampler(SIZES, WEIGHTS, batch_size=16, seed=2), 3)
    first = list(itertools.islice(iter(a), 16))
    # Planned lazily: the second batch is not planned until its first index is asked for.
    assert a.planned_batches == 1
    second = list(itertools.islice(iter(a), 16))
    third = next(a.iter_batches())
    assert first == reference[0].tolist()
    assert second == reference[1].tolist()
    assert np.array_equal(third, reference[2])


# ----------------------------------------------------------- domain rows


def test_rows_follow_the_keyed_domain_permutations() -> None:
    # Domain d's rows are its epoch permutations, keyed by (seed, d, epoch),
    # read in order; sizes on both sides of the small-n path and crossing
    # epochs inside one batch.
    sizes, seed = [3, 50, 1000, 300], 7
    s = MixtureSampler(sizes, [0.3, 0.3, 0.3, 0.1], batch_size=64, seed=seed)
    offsets = s.domain_offsets
    drawn = np.zeros(len(sizes), dtype=np.int64)
    for batch in global_batches(s, 60):
        ids = s.domain_ids(batch)
        for d, n in enumerate(sizes):
            got = np.sort(batch[ids == d] - offsets[d])
            stream = np.arange(drawn[d], drawn[d] + got.size)
            expected = [int(permute(np.array([t % n]), n, derive_key(seed, _TAG_DOMAIN, d, t // n))[0]) for t in stream]
            assert got.tolist() == sorted(expected)
            drawn[d] += got.size


def test_no_repeats_within_a_domain_epoch() -> None:
    # 10 and 40 rows per batch: both domains end an epoch exactly every 30 batches.
    s = MixtureSampler([300, 1200], [0.2, 0.8], batch_size=50, seed=4)
    batches = global_batches(s, 60)
    offsets = s.domain_offsets
    epoch_rows = []
    for epoch in range(2):
        rows = np.concatenate(batches[30 * epoch : 30 * (epoch + 1)])
        ids = s.domain_ids(rows)
        for d, n in enumerate([300, 1200]):
            local = rows[ids == d] - offsets[d]
            assert np.array_equal(np.sort(local), np.arange(n))
        epoch_rows.append(rows[ids == 0])
    # A new epoch has a new order.
    assert not np.array_equal(np.sort(epoch_rows[0][:10]), np.sort(epoch_rows[1][:10]))


def test_rows_are_balanced_at_any_point() -> None:
    # Without replacement: after t draws from a domain of n rows, every row
    # was drawn t // n or t // n + 1 times.
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=128, seed=9)
    rows = np.concatenate(global_batches(s, 150))
    ids = s.domain_ids(rows)
    for d, n in enumerate(SIZES):
        counts = np.bincount(rows[ids == d] - s.domain_offsets[d], minlength=n)
        t = int(counts.sum())
        assert counts.min() >= t // n and counts.max() <= t // n + 1


def test_huge_domains_need_no_table() -> None:
    s = MixtureSampler([10**12, 3 * 10**11], [0.5, 0.5], batch_size=256, seed=0)
    batch = np.concatenate(global_batches(s, 3))
    assert batch.min() >= 0 and batch.max() < 13 * 10**11
    assert s.domain_of(10**12 - 1) == 0 and s.domain_of(10**12) == 1


def test_domain_ids() -> None:
    s = MixtureSampler([5, 1, 7], [1, 1, 1], batch_size=3)
    assert s.domain_offsets.tolist() == [0, 5, 6]
    assert s.domain_ids(np.arange(13)).tolist() == [0] * 5 + [1] + [2] * 7
    assert s.num_domains == 3
    with pytest.raises(ValueError, match="indices"):
        s.domain_ids(np.array([13]))


# ------------------------------------------------------------ proportions


def test_observed_proportions_converge() -> None:
    p = [0.541, 0.287, 0.042, 0.037, 0.034, 0.031, 0.028]
    s = MixtureSampler([10**6] * 7, p, batch_size=1024, seed=0)
    counts = sum(domain_counts(s, b) for b in global_batches(s, 100))
    observed = counts / counts.sum()
    assert np.all(np.abs(observed - p) <= 0.01 * np.array(p))


def test_per_batch_counts_are_identical_on_every_rank_and_follow_rounding() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=30, seed=5)
    for batch in global_batches(s, 50):
        counts = domain_counts(s, batch)
        assert counts.sum() == 30
        # Largest remainder with a carried credit: floor or ceil of p*B, or one
        # more/less when the credit carried in was large.
        assert np.all(np.abs(counts - np.array(WEIGHTS) * 30) < 2)


def test_small_weight_is_never_dropped_for_long() -> None:
    p_small, batch_size = 0.01, 64
    s = MixtureSampler([10**5] * 3, [p_small, 0.495, 0.495], batch_size=batch_size, seed=1)
    seen = [g for g, b in enumerate(global_batches(s, 2000)) if domain_counts(s, b)[0] > 0]
    gaps = np.diff([-1, *seen])
    assert gaps.max() <= math.ceil(1 / (p_small * batch_size)) + 1
    assert len(seen) >= 2000 * p_small * batch_size - 1


def test_small_weight_gap_is_bounded_with_a_tiny_batch() -> None:
    # p*B = 0.16: the carried credit stays in (-1, 1), so appearances are
    # at most about 2 / (p*B) batches apart.
    p_small, batch_size = 0.01, 16
    s = MixtureSampler([10**5] * 3, [p_small, 0.495, 0.495], batch_size=batch_size, seed=1)
    seen = [g for g, b in enumerate(global_batches(s, 3000)) if domain_counts(s, b)[0] > 0]
    assert np.diff([-1, *seen]).max() <= math.ceil(2 / (p_small * batch_size)) + 1


def test_zero_weight_never_appears() -> None:
    s = MixtureSampler(SIZES, [0.5, 0.0, 0.3, 0.2], batch_size=64, seed=2)
    for batch in global_batches(s, 100):
        assert domain_counts(s, batch)[1] == 0
    # Also when the domain held credit from earlier non-zero weights.
    s = MixtureSampler(SIZES, [0.33, 0.33, 0.34, 0.0], batch_size=10, seed=2)
    global_batches(s, 7)
    s.set_weights([0.5, 0.0, 0.5, 0.0])
    for batch in global_batches(s, 100):
        counts = domain_counts(s, batch)
        assert counts[1] == 0 and counts[3] == 0


def test_set_weights_takes_effect_from_the_next_planned_batch() -> None:
    s = MixtureSampler(SIZES, [1, 0, 0, 0], batch_size=16, seed=0)
    stream = s.iter_batches()
    for _ in range(3):
        assert domain_counts(s, next(stream)).tolist() == [16, 0, 0, 0]
    # Batch 3 is already planned (read ahead) with the old weights.
    ahead = next(stream)
    s.set_weights([0, 0, 0, 2])
    assert s.weights.tolist() == [0, 0, 0, 1]
    assert domain_counts(s, ahead).tolist() == [16, 0, 0, 0]
    assert s.planned_weights(3).tolist() == [1, 0, 0, 0]
    assert domain_counts(s, next(stream)).tolist() == [0, 0, 0, 16]
    assert s.planned_weights(4).tolist() == [0, 0, 0, 1]


def test_set_epoch_changes_the_shuffle_not_the_stream() -> None:
    a = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=0)
    b = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=0)
    b.set_epoch(1)
    assert b.epoch == 1
    for x, y in zip(global_batches(a, 5), global_batches(b, 5)):
        assert np.array_equal(np.sort(x), np.sort(y))
        assert not np.array_equal(x, y)
    # Cursors are not reset by a later epoch either.
    before = a.state_dict()
    a.set_epoch(1)
    after = a.state_dict()
    assert before["cursors"] == after["cursors"] and before["domain_epochs"] == after["domain_epochs"]


# ---------------------------------------------------------------- resume


def resumed(state: dict, **kwargs: object) -> MixtureSampler:
    """A fresh sampler restored from a JSON round trip of ``state``."""
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11, **kwargs)  # type: ignore[arg-type]
    s.load_state_dict(json.loads(json.dumps(state)))
    return s


def test_state_dict_is_plain_json() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11)
    global_batches(s, 3)
    state = s.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["version"] == MixtureSampler.STATE_VERSION
    assert state["batch_index"] == 3


def test_resume_reproduces_the_stream() -> None:
    original = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11)
    global_batches(original, 25)
    state = original.state_dict()
    expected = global_batches(original, 30)
    assert all(np.array_equal(x, y) for x, y in zip(global_batches(resumed(state), 30), expected))


def test_resume_under_read_ahead_with_a_later_weight_change() -> None:
    original = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11)
    stream = original.iter_batches()
    batches = [next(stream).copy() for _ in range(10)]  # batches 0..9 planned (read ahead)
    original.mark_consumed(7)  # the training loop finished 0..6
    original.set_weights([0.1, 0.1, 0.1, 0.7])  # scheduled for batch 10
    original.set_epoch(2)  # likewise
    state = original.state_dict(7)
    assert state["batch_index"] == 7
    assert state["weights"] == pytest.approx(WEIGHTS)
    batches += [next(stream).copy() for _ in range(20)]  # 10..29 with the new weights

    restored = resumed(state)
    assert restored.planned_batches == 7
    assert restored.weights.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.7])
    # The algorithm restored alongside re-sends its (current) weights: no effect.
    restored.set_weights([0.1, 0.1, 0.1, 0.7])
    restored.set_epoch(2)
    for g, batch in enumerate(global_batches(restored, 23), start=7):
        assert np.array_equal(batch, batches[g]), g
    assert domain_counts(restored, batches[9]).tolist() != domain_counts(restored, batches[10]).tolist()


def test_state_of_each_kept_batch_and_rank_change() -> None:
    original = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11)
    batches = global_batches(original, 6)
    original.set_weights([0.25, 0.25, 0.25, 0.25])
    batches += global_batches(original, 4)
    for g in range(10):
        state = original.state_dict(g)
        # Another world size: same global batches, each rank its slice.
        halves = [global_batches(resumed(state, rank=r, world_size=2), 10 - g) for r in range(2)]
        for i, full in enumerate(batches[g:]):
            assert np.array_equal(np.concatenate([halves[0][i], halves[1][i]]), full)


def test_state_dict_index_checks_and_snapshot_window() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=8, seed=0)
    global_batches(s, 5)
    s.mark_consumed(3)
    assert s.state_dict(3)["batch_index"] == 3
    # Stateful: once a consumer marks consumption, the bare call is the consumed boundary
    assert s.state_dict() == s.state_dict(3)
    assert s.state_dict(5)["batch_index"] == 5 == s.planned_batches
    for bad in (2, 6):
        with pytest.raises(ValueError, match=rf"^batch_index: .*got {bad}$"):
            s.state_dict(bad)
    with pytest.raises(ValueError, match="^num_batches"):
        s.mark_consumed(6)
    # Without mark_consumed, only the most recent snapshots are kept.
    s.MAX_SNAPSHOTS = 4
    global_batches(s, 20)
    assert s.planned_batches == 25
    s.state_dict(21)
    with pytest.raises(ValueError, match="^batch_index"):
        s.state_dict(20)


def test_load_state_dict_checks_the_configuration() -> None:
    state = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11).state_dict()
    for field, sampler, says in [
        (
            "domain_sizes",
            MixtureSampler([500, 3000, 40, 10001], WEIGHTS, batch_size=64, seed=11),
            "the checkpoint's domains have",
        ),
        ("batch_size", MixtureSampler(SIZES, WEIGHTS, batch_size=32, seed=11), "expected"),
        ("seed", MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=12), "expected"),
    ]:
        with pytest.raises(ValueError, match=rf"^state\.{field}: {says}"):
            sampler.load_state_dict(state)
    broken = dict(state)
    del broken["cursors"]
    with pytest.raises(ValueError, match="^state: missing field 'cursors'$"):
        resumed(broken)
    with pytest.raises(ValueError, match=r"^state\.version"):
        resumed({**state, "version": 99})


# ------------------------------------------------------------ exhaustion


def test_on_exhausted_stop() -> None:
    s = MixtureSampler([10, 1000], [0.5, 0.5], batch_size=4, seed=0, on_exhausted="stop")
    indices = list(s)
    # Domain 0 gives 2 rows per batch: 5 batches, then it cannot fill a sixth.
    assert len(indices) == 20 and s.planned_batches == 5
    rows = np.array(indices)
    assert np.array_equal(np.sort(rows[rows < 10]), np.arange(10))
    assert list(s) == []
    # Dropping the exhausted domain lets the stream go on.
    s.set_weights([0, 1])
    assert len(list(itertools.islice(s, 8))) == 8


def test_on_exhausted_reshuffle_starts_new_domain_epochs() -> None:
    s = MixtureSampler([10, 1000], [0.5, 0.5], batch_size=4, seed=0)
    global_batches(s, 12)
    state = s.state_dict()
    assert state["domain_epochs"][0] == 2 and state["cursors"][0] == 4


# ------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [0.5, 0.5]}, r"^weights: expected 4 values \(one per domain\), got 2$"),
        ({"weights": [0.5, -0.5, 0.5, 0.5]}, r"^weights: expected non-negative values"),
        ({"weights": [0.5, float("nan"), 0.5, 0.5]}, r"^weights: expected finite values"),
        ({"weights": [0, 0, 0, 0]}, r"^weights: expected a positive sum"),
        ({"batch_size": 63, "world_size": 2}, r"^batch_size: expected a multiple of world_size=2, got 63$"),
        ({"batch_size": 0}, r"^batch_size: expected an integer >= 1"),
        ({"rank": 2, "world_size": 2}, r"^rank: expected an integer in \[0, 2\)"),
        ({"domain_sizes": [5, 0, 5, 5]}, r"^domain_sizes: expected positive integers, got 0 at index 1$"),
        ({"domain_sizes": [5, 2.0, 5, 5]}, r"^domain_sizes: expected positive integers"),
        ({"on_exhausted": "wrap"}, r"^on_exhausted: expected one of reshuffle, stop"),
        ({"seed": 2**70}, r"seed|parts"),
    ],
)
def test_constructor_validation(kwargs: dict, match: str) -> None:
    args = {"domain_sizes": SIZES, "weights": WEIGHTS, "batch_size": 64, **kwargs}
    with pytest.raises(ValueError, match=match):
        MixtureSampler(**args)


def test_set_weights_validation() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=64)
    for bad, match in [
        ([1, 2, 3], r"^weights: expected 4 values"),
        ([1, 2, 3, float("inf")], r"^weights: expected finite values"),
        ([1, 2, -3, 4], r"^weights: expected non-negative values"),
        ([0, 0, 0, 0], r"^weights: expected a positive sum"),
    ]:
        with pytest.raises(ValueError, match=match):
            s.set_weights(bad)
    assert s.weights.tolist() == pytest.approx(WEIGHTS)
    with pytest.raises(ValueError, match="^epoch"):
        s.set_epoch(-1)


def test_weights_scheduled_for_a_later_batch_apply_there_and_survive_a_resume() -> None:
    sampler = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11)
    it = sampler.iter_batches()
    next(it)
    next(it)  # batches 0 and 1 planned
    with pytest.raises(ValueError, match="^from_batch: batch 1 is already planned"):
        sampler.set_weights([0.25] * 4, from_batch=1)
    sampler.set_weights([1.0, 0.0, 0.0, 0.0], from_batch=4)
    state = sampler.state_dict()  # at the next batch to plan, 2, with the change for batch 4 pending
    rows = [next(it) for _ in range(3)]  # batches 2, 3, 4
    assert set(sampler.domain_ids(rows[2]).tolist()) == {0} and len(set(sampler.domain_ids(rows[0]).tolist())) > 1
    resumed = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11)
    resumed.load_state_dict(state)
    again = resumed.iter_batches()
    assert [b.tolist() for b in (next(again), next(again), next(again))] == [r.tolist() for r in rows]


def _counts(sampler: MixtureSampler, batches: list[np.ndarray]) -> np.ndarray:
    return np.array([np.bincount(sampler.domain_ids(b), minlength=4) for b in batches])


def test_a_domain_at_its_max_epochs_leaves_the_mixture_and_the_others_renormalise() -> None:
    # domain 2 (40 rows, p 0.1 of 64-row batches: ~6.4 a batch) may give 1.5 epochs = 60 rows
    s = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11, max_epochs=[None, None, 1.5, None])
    counts = _counts(s, global_batches(s, 40))
    per_domain = counts.cumsum(axis=0)
    assert per_domain[-1, 2] == 60 and (counts.sum(axis=1) == 64).all()  # exactly its cap; full batches
    left = int(np.argmax(per_domain[:, 2] == 60))
    assert (counts[left + 1 :, 2] == 0).all()
    later = counts[left + 1 :].sum(axis=0)  # the rest keep their ratios 0.3 : 0.4 : 0.2
    assert np.allclose(later[[0, 1, 3]] / later.sum(), np.array([0.3, 0.4, 0.2]) / 0.9, atol=0.01)
    assert np.allclose(s.planned_weights(39), [1 / 3, 4 / 9, 0, 2 / 9])  # what the batch was drawn with
    assert s.drawn_before(40)[2] == 60 and s.row_caps is not None and s.row_caps[2] == 60
    # the next batch, not planned yet, is scheduled without the capped domain too (as it will be drawn)
    assert np.allclose(s.scheduled_weights(40), [1 / 3, 4 / 9, 0, 2 / 9])


def test_the_stream_ends_when_every_domain_of_the_mixture_is_capped() -> None:
    s = MixtureSampler([20, 30], [0.5, 0.5], batch_size=10, seed=1, max_epochs=1.0)
    batches = global_batches(s, 100)
    # every row once: domain 0's 20, then domain 1 alone until its 30; a sixth batch has no row left
    assert len(batches) == 5 and _counts_two(s, batches).tolist() == [20, 30]


def _counts_two(s: MixtureSampler, batches: list[np.ndarray]) -> np.ndarray:
    return np.bincount(np.concatenate([s.domain_ids(b) for b in batches]), minlength=2)


def test_resume_across_a_cap_reproduces_the_stream_and_refuses_other_caps() -> None:
    caps = [None, None, 1.5, None]
    original = MixtureSampler(SIZES, WEIGHTS, batch_size=64, seed=11, max_epochs=caps)
    global_batches(original, 7)  # domain 2 reaches its 60 rows around batch 9
    state = original.state_dict()
    expected = global_batches(original, 20)
    assert all(np.array_equal(x, y) for x, y in zip(global_batches(resumed(state, max_epochs=caps), 20), expected))
    with pytest.raises(ResumeError, match="max_epochs"):
        resumed(state)
