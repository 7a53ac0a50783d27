"""MixtureSampler: a deterministic, resumable, rank-aware stream of mixture batches.

(long file: one class whose planning, read-ahead snapshots and checkpoint state must change together.)

How one global batch ``g`` (``batch_size`` = B rows over all ranks and all
gradient-accumulation micro-batches of one optimizer step) is planned:

1. **Counts.** Each domain holds a running credit. ``p_i · B`` is added to it,
   the domain gets the floor, the slots left over go to the largest
   fractional credits, and what was given is subtracted. The carried residual
   stays in (-1, 1), so every domain's cumulative count is within one row of
   ``p_i · B · batches``: a domain with a small ``p_i > 0`` gets a row about
   every ``1/(p_i·B)`` batches (never more than ``2/(p_i·B) + 1`` apart)
   instead of being rounded away. A domain with ``p_i = 0`` never gets a row.
2. **Rows.** Domain ``d`` is read through a keyed pseudo-random permutation of
   its rows (:mod:`mixflow.data.permutation`), keyed by ``(seed, d,
   domain epoch)``: without replacement until the domain is exhausted, then a
   new domain epoch with a new order (``on_exhausted="reshuffle"``), or the
   end of the stream (``on_exhausted="stop"``). With ``max_epochs``, a domain
   that has given ``floor(max_epochs · size)`` rows leaves the mixture: the
   batch that reaches the cap takes only the rows left, the others share the
   rest in proportion to p, and later batches draw from p without it,
   renormalised (the stream ends when no domain of p is left).
3. **Shuffle.** The B rows are sorted by a hash keyed by ``(seed, epoch, g)``
   (a uniform shuffle) so that domains are spread over ranks and micro-batches.
4. **Slice.** Rank ``r`` of ``W`` takes rows ``[r·B/W, (r+1)·B/W)``.

Every step depends only on the seed, the weights and the state, so every
rank computes the same global batch without communicating, and a restored
state reproduces the uninterrupted stream exactly.

Nothing is proportional to the dataset size: a batch costs O(B + K) and the
sampler holds O(B + K) numbers (plus a bounded window of per-batch
snapshots, see :meth:`MixtureSampler.mark_consumed`). Rows of each domain
are computed a few batches ahead in one vectorised call, which is only a
cache of a pure function of the state and is never part of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from mixflow.data.permutation import derive_key, derive_keys, permute_many
from mixflow.data.proportions import validate_domain_sizes, validate_weights
from mixflow.errors import ResumeError

__all__ = ["MixtureSampler"]

_ON_EXHAUSTED = ("reshuffle", "stop")
# Distinct tags keep the key streams of domain orders and batch shuffles apart
# even when their other inputs coincide.
_TAG_DOMAIN = 0x646F6D61696E  # "domain"
_TAG_SHUFFLE = 0x73687566666C65  # "shuffle"


@dataclass(frozen=True)
class _Snapshot:
    """Sampler state at the start of one planned global batch.

    ``credit`` is the carried credit before this batch's adjustment, and
    ``weights``/``epoch`` are the values in force for this batch, so that
    planning from a snapshot repeats exactly the same float operations.
    Arrays are never mutated in place, so snapshots share them freely.
    """

    drawn: np.ndarray
    credit: np.ndarray
    weights: np.ndarray
    epoch: int
    rows: np.ndarray | None = None
    """The batch's global rows (all ranks, in slice order), once planned."""


def _row_caps(max_epochs: Any, sizes: np.ndarray) -> np.ndarray | None:
    """floor(max_epochs · size) per domain (one number for all, or one per domain with None for
    uncapped), or None without caps."""
    if max_epochs is None:
        return None
    values = [max_epochs] * sizes.size if isinstance(max_epochs, (int, float)) else list(max_epochs)
    if len(values) != sizes.size:
        raise ValueError(f"max_epochs: expected {sizes.size} values (one per domain), got {len(values)}")
    caps = np.full(sizes.size, np.iinfo(np.int64).max // 4, dtype=np.int64)
    for d, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not np.isfinite(value):
            raise ValueError(f"max_epochs: expected numbers > 0 (or null: no cap), got {value!r}")
        caps[d] = max(1, int(np.floor(value * sizes[d])))
    return caps


def _check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """An ``int`` (numpy integers accepted, bool refused), optionally ``>= minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


class MixtureSampler(Sampler[int]):
    """Infinite stream of global row indices mixing several domains with weights ``p``.

    ``domain_sizes`` are the row counts of the domains, concatenated in order:
    row ``r`` of domain ``d`` is the index ``domain_offsets[d] + r``.
    ``batch_size`` is the *global* batch (all ranks, all micro-batches of one
    optimizer step) and must be a multiple of ``world_size``; each rank
    yields its contiguous ``batch_size // world_size`` slice of every global
    batch. ``on_exhausted`` is ``"reshuffle"`` (a domain that runs out starts
    a new epoch with a new order) or ``"stop"`` (the stream ends when a
    domain with ``p > 0`` cannot fill its share of a batch).

    Iteration is a single continuous stream: a fresh ``iter()`` continues
    from the current planning position rather than restarting, so the
    DataLoader may recreate its iterator at every epoch. Use one iterator at
    a time. There is no ``__len__``: the stream is infinite.

    Batches are planned lazily, when their first index is requested, which
    with DataLoader prefetching can be several batches before the training
    loop uses them. For exact resume, the sampler keeps a snapshot of its
    state at the start of every planned batch not yet marked consumed
    (:meth:`mark_consumed`), and :meth:`state_dict` can return the state as
    of any of those batches, including weight changes made since.
    """

    #: Version of the :meth:`state_dict` layout.
    STATE_VERSION = 1
    #: At most this many snapshots are kept even if :meth:`mark_consumed` is
    #: never called, so memory stays bounded; read-ahead is a few batches.
    MAX_SNAPSHOTS = 1024
    # Rows of a domain are computed this many batches' worth ahead (at least
    # _MIN_REFILL) so that the permutation runs on large vectors: O(B + K)
    # cached rows, a few hundred kB for B = 1024.
    _REFILL_BATCHES = 32
    _MIN_REFILL = 256

    def __init__(
        self,
        domain_sizes: Sequence[int],
        weights: Sequence[float] | np.ndarray,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_exhausted: str = "reshuffle",
        max_epochs: float | Sequence[float | None] | None = None,
    ) -> None:
        super().__init__()
        self._sizes = validate_domain_sizes(domain_sizes)
        k = self._sizes.size
        self._batch_size = _check_int(batch_size, "batch_size", 1)
        self._world_size = _check_int(world_size, "world_size", 1)
        self._rank = _check_int(rank, "rank", 0)
        if self._rank >= self._world_size:
            raise ValueError(f"rank: expected an integer in [0, {self._world_size}) (world_size), got {self._rank}")
        if self._batch_size % self._world_size:
            raise ValueError(
                f"batch_size: expected a multiple of world_size={self._world_size}, got {self._batch_size}"
            )
        self._seed = _check_int(seed, "seed")
        # Validated through derive_key so that an out-of-range seed fails here, not mid-run.
        derive_key(self._seed)
        if on_exhausted not in _ON_EXHAUSTED:
            raise ValueError(f"on_exhausted: expected one of {', '.join(_ON_EXHAUSTED)}, got {on_exhausted!r}")
        self._on_exhausted = on_exhausted
        self._max_rows = _row_caps(max_epochs, self._sizes)

        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.int64)
        self._total_rows = int(self._sizes.sum())
        self._shuffle_positions = np.arange(self._batch_size, dtype=np.int64)

        # Live state: what holds after planning batches [0, planned).
        self._planned = 0
        self._drawn = np.zeros(k, dtype=np.int64)  # rows taken so far, all domain epochs
        self._credit = np.zeros(k, dtype=np.float64)
        self._weights = validate_weights(weights, k)  # in force for the last planned batch
        self._epoch = 0
        # Changes recorded for a batch index, applied when that batch is
        # planned. Sorted by index, at most one entry per index.
        self._weight_changes: list[tuple[int, np.ndarray]] = []
        self._epoch_changes: list[tuple[int, int]] = []

        self._snapshots: dict[int, _Snapshot] = {}
        self._consumed = 0
        # Whether a consumer reports consumed batches (mark_consumed): then a bare state_dict() is
        # taken at the last consumed batch, whatever the DataLoader has read ahead.
        self._marks_consumption = False

        # Read-ahead cache of each domain's row order: rows for stream
        # positions [buf_start, buf_start + len(buf)).
        self._buffers: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(k)]
        self._buf_start = np.zeros(k, dtype=np.int64)

    # ------------------------------------------------------------------ info

    @property
    def num_domains(self) -> int:
        """Number of domains K."""
        return int(self._sizes.size)

    @property
    def domain_sizes(self) -> list[int]:
        """Row count of each domain."""
        return self._sizes.tolist()

    @property
    def domain_offsets(self) -> np.ndarray:
        """Global index of each domain's first row (a copy)."""
        return self._offsets.copy()

    @property
    def batch_size(self) -> int:
        """Global batch size B (all ranks, all micro-batches)."""
        return self._batch_size

    @property
    def local_batch_size(self) -> int:
        """Rows this rank yields per global batch: ``batch_size // world_size``."""
        return self._batch_size // self._world_size

    @property
    def rank(self) -> int:
        """This process's data-parallel rank."""
        return self._rank

    @property
    def world_size(self) -> int:
        """Number of data-parallel ranks sharing each global batch."""
        return self._world_size

    @property
    def seed(self) -> int:
        """Seed of all permutations."""
        return self._seed

    @property
    def on_exhausted(self) -> str:
        """``"reshuffle"`` or ``"stop"``."""
        return self._on_exhausted

    @property
    def weights(self) -> np.ndarray:
        """The current sampling weights (a copy), i.e. the latest set, maybe not yet used by a planned batch."""
        if self._weight_changes:
            return self._weight_changes[-1][1].copy()
        return self._weights.copy()

    @property
    def epoch(self) -> int:
        """The latest value given to :meth:`set_epoch`."""
        if self._epoch_changes:
            return self._epoch_changes[-1][1]
        return self._epoch

    @property
    def planned_batches(self) -> int:
        """Number of global batches planned so far, i.e. the index of the next batch to plan."""
        return self._planned

    def domain_ids(self, indices: np.ndarray) -> np.ndarray:
        """Domain of each global row index (vectorised; int64 array of the same shape)."""
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise ValueError(f"indices: expected integers, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self._total_rows):
            raise ValueError(f"indices: expected values in [0, {self._total_rows}) (total rows)")
        return np.searchsorted(self._offsets, idx, side="right").astype(np.int64) - 1

    def domain_of(self, index: int) -> int:
        """Domain of one global row index."""
        index = _check_int(index, "index")
        return int(self.domain_ids(np.array([index], dtype=np.int64))[0])

    def planned_weights(self, batch_index: int) -> np.ndarray:
        """Weights that were in force when global batch ``batch_index`` was planned (without the
        domains that had reached ``max_epochs``, renormalised: what the batch was drawn with).

        With read-ahead these can differ from :attr:`weights`; corrections
        such as ``π/p`` must use the ``p`` the batch was drawn with. Needs a
        kept snapshot (a planned batch not yet marked consumed).
        """
        snap = self._planned_snapshot(batch_index)
        return self._effective(snap.weights, snap.drawn).copy()

    def drawn_before(self, batch_index: int) -> np.ndarray:
        """Rows each domain had given (all its epochs) before global batch ``batch_index``: a planned
        batch not yet consumed, or the next to plan."""
        if batch_index == self._planned:
            return self._drawn.copy()
        return self._planned_snapshot(batch_index).drawn.copy()

    @property
    def row_caps(self) -> np.ndarray | None:
        """Rows each domain may give (``floor(max_epochs · size)``; a very large number where
        uncapped), or None without ``max_epochs``."""
        return None if self._max_rows is None else self._max_rows.copy()

    def _effective(self, weights: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        """``weights`` without the domains at their cap, renormalised (all 0 when none is left)."""
        if self._max_rows is None or bool(np.all(drawn < self._max_rows)):
            return weights
        kept = np.where(drawn < self._max_rows, weights, 0.0)
        total = kept.sum()
        return kept / total if total > 0 else kept

    def _within_caps(self, counts: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
        """``counts`` with no domain past its cap: a domain's rows beyond it go to the domains with
        room, in proportion to ``weights`` (largest remainders); None when they have none."""
        if self._max_rows is None:
            return counts
        room = self._max_rows - self._drawn
        extra = int(np.maximum(counts - room, 0).sum())
        counts = np.minimum(counts, room)
        while extra > 0:
            space = np.where(weights > 0, room - counts, 0)
            if not bool(np.any(space > 0)):
                return None
            share = np.where(space > 0, weights, 0.0)
            due = share / share.sum() * extra
            give = np.floor(due).astype(np.int64)
            top = np.argsort(-(due - give), kind="stable")[: extra - int(give.sum())]
            give[top] += 1
            give = np.minimum(give, space)
            counts = counts + give
            extra -= int(give.sum())
        return counts

    def scheduled_weights(self, batch_index: int) -> np.ndarray:
        """The weights batch ``batch_index`` is drawn with: its plan's for a planned batch not yet
        consumed, else the weights in force as things stand (those set for it or an earlier batch)."""
        if batch_index < self._planned:
            return self.planned_weights(batch_index)
        weights = self._weights
        for index, changed in self._weight_changes:
            if index <= batch_index:
                weights = changed
        if batch_index == self._planned:  # the next to plan: less the domains at their cap, as planned ones
            return self._effective(weights, self._drawn).copy()
        return weights.copy()

    def planned_rows(self, batch_index: int) -> np.ndarray:
        """The global rows of planned batch ``batch_index`` (all ranks; rank r's slice is
        ``[r·B/W, (r+1)·B/W)``), e.g. to count the step's tokens per domain before its first forward."""
        rows = self._planned_snapshot(batch_index).rows
        assert rows is not None  # every planned batch's snapshot holds its rows
        return rows.copy()

    def _planned_snapshot(self, batch_index: int) -> _Snapshot:
        snap = self._snapshots.get(_check_int(batch_index, "batch_index"))
        if snap is None:
            raise ValueError(
                f"batch_index: expected a planned batch not yet consumed ({self._kept_range()}), got {batch_index}"
            )
        return snap

    # --------------------------------------------------------------- control

    def set_weights(self, weights: Sequence[float] | np.ndarray, from_batch: int | None = None) -> None:
        """Use new sampling weights from global batch ``from_batch`` (default: the next batch not yet
        planned).

        ``weights`` must have one finite, non-negative entry per domain with
        a positive sum; they are normalised. The change is recorded with the
        batch index it applies to, so that :meth:`state_dict` for a batch
        planned earlier replays it at the same batch, and a change scheduled
        for a later batch survives a resume. ``from_batch`` before the next
        unplanned batch is an error (that batch's rows are already drawn).
        Setting the weights already scheduled last again is a no-op (in
        particular right after :meth:`load_state_dict`, where it keeps a
        restored schedule intact); other weights replace any change scheduled
        for the same or a later batch.
        """
        new = validate_weights(weights, self.num_domains)
        at = self._planned if from_batch is None else _check_int(from_batch, "from_batch", 0)
        if at < self._planned:
            raise ValueError(
                f"from_batch: batch {at} is already planned (batches up to {self._planned - 1} are); "
                "new weights apply from a batch not yet planned"
            )
        if np.array_equal(new, self.weights):
            return
        self._weight_changes = [c for c in self._weight_changes if c[0] < at]
        self._weight_changes.append((at, new))

    def set_epoch(self, epoch: int) -> None:
        """Mix ``epoch`` into the shuffle keys of batches planned from now on.

        Called by the Trainer at each epoch. Cursors are not reset: the
        mixture stream is continuous across epochs. Recorded like
        :meth:`set_weights` so that resumes replay it at the same batch.
        """
        epoch = _check_int(epoch, "epoch", 0)
        if epoch == self.epoch:
            return
        self._epoch_changes = [c for c in self._epoch_changes if c[0] < self._planned]
        self._epoch_changes.append((self._planned, epoch))

    def mark_consumed(self, num_batches: int) -> None:
        """Declare global batches ``[0, num_batches)`` done; their snapshots are dropped.

        After this, :meth:`state_dict` accepts any batch index from
        ``num_batches`` to :attr:`planned_batches`.
        """
        num_batches = _check_int(num_batches, "num_batches", 0)
        self._marks_consumption = True
        if num_batches > self._planned:
            raise ValueError(
                f"num_batches: expected at most {self._planned} (batches planned so far), got {num_batches}"
            )
        if num_batches <= self._consumed:
            return
        self._consumed = num_batches
        for g in [g for g in self._snapshots if g < num_batches]:
            del self._snapshots[g]
        self._prune_changes()

    # ------------------------------------------------------------- iteration

    def iter_batches(self) -> Iterator[np.ndarray]:
        """Yield this rank's slice of each global batch as an int64 array.

        Each global batch is planned when the generator is asked for it.
        Like ``iter()``, continues from the current planning position.
        """
        local = self.local_batch_size
        lo = self._rank * local
        while True:
            batch = self._plan_next()
            if batch is None:
                return
            yield batch[lo : lo + local]

    def __iter__(self) -> Iterator[int]:
        """Yield global row indices one by one (this rank's slices, batch after batch), as plain
        ``int``s: the plan of each batch stays with the sampler (:meth:`planned_weights`), its one
        record of p."""
        for batch in self.iter_batches():
            yield from batch.tolist()

    # --------------------------------------------------------------- planning

    def _resolve(self, g: int) -> tuple[np.ndarray, int]:
        """Weights and epoch in force for batch ``g == planned_batches``."""
        weights, epoch = self._weights, self._epoch
        for idx, w in self._weight_changes:
            if idx == g:
                weights = w
        for idx, e in self._epoch_changes:
            if idx == g:
                epoch = e
        return weights, epoch

    def _allocate(self, weights: np.ndarray, credit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-domain counts for one batch and the credit carried to the next."""
        batch = self._batch_size
        active = weights > 0
        # Credit of an inactive domain is forgotten, so a zero weight means
        # no rows; re-centring keeps the carried credits summing to zero,
        # which is what makes the floors plus the leftover slots add up to B.
        credit = np.where(active, credit, 0.0)
        credit[active] -= credit[active].mean()
        due = credit + weights * batch
        counts = np.where(active, np.floor(due), 0.0).clip(min=0).astype(np.int64)
        left = batch - int(counts.sum())
        remainder = np.where(active, due - counts, -np.inf)
        n_active = int(active.sum())
        # Usually one pass; loops only on float drift or extreme credits.
        while left > 0:
            top = np.argsort(-remainder, kind="stable")[: min(left, n_active)]
            counts[top] += 1
            remainder[top] -= 1.0
            left -= top.size
        while left < 0:
            candidates = np.where(counts > 0, remainder, np.inf)
            low = np.argsort(candidates, kind="stable")[: min(-left, int((counts > 0).sum()))]
            counts[low] -= 1
            remainder[low] += 1.0
            left += low.size
        return counts, np.where(active, due - counts, 0.0)

    def _plan_next(self) -> np.ndarray | None:
        """Plan global batch ``planned_batches``; None when the stream has ended."""
        g = self._planned
        weights, epoch = self._resolve(g)
        drawing = self._effective(weights, self._drawn)
        if not drawing.sum() > 0:
            return None  # every domain of the mixture has given its max_epochs
        counts, credit = self._allocate(drawing, self._credit)
        capped = self._within_caps(counts, drawing)
        if capped is None:
            return None  # the domains with rows left cannot fill a batch
        counts = capped
        drawn_after = self._drawn + counts
        if self._on_exhausted == "stop" and bool(np.any(drawn_after > self._sizes)):
            # Nothing is committed: a later set_weights that drops the
            # exhausted domain lets the stream go on.
            return None

        rows = self._rows(counts, weights)
        # Sorting by a keyed hash is an exactly uniform shuffle and, for a
        # whole batch, cheaper than a Feistel network evaluated at every slot.
        scores = derive_keys(derive_key(self._seed, _TAG_SHUFFLE, epoch, g), self._shuffle_positions)
        batch = rows[np.argsort(scores, kind="stable")]

        self._snapshots[g] = _Snapshot(self._drawn, self._credit, weights, epoch, batch)
        if len(self._snapshots) > self.MAX_SNAPSHOTS:
            del self._snapshots[next(iter(self._snapshots))]
            self._prune_changes()
        self._drawn = drawn_after
        self._credit = credit
        self._weights = weights
        self._epoch = epoch
        self._planned = g + 1
        return batch

    def _rows(self, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Global row indices of the next ``counts[d]`` rows of each domain, in domain order."""
        start = self._drawn
        end = start + counts
        buf_len = np.fromiter((b.size for b in self._buffers), dtype=np.int64, count=counts.size)
        stale = (counts > 0) & ((start < self._buf_start) | (end > self._buf_start + buf_len))
        if stale.any():
            self._refill(np.flatnonzero(stale), counts, weights)
        parts = []
        for d in np.flatnonzero(counts).tolist():
            lo = int(start[d] - self._buf_start[d])
            parts.append(self._buffers[d][lo : lo + int(counts[d])])
        return np.concatenate(parts)

    def _refill(self, domains: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> None:
        """Compute the next rows of ``domains`` in one vectorised permutation call."""
        expected = np.ceil(weights[domains] * self._batch_size).astype(np.int64)
        length = np.maximum(counts[domains], np.maximum(expected * self._REFILL_BATCHES, self._MIN_REFILL))
        start = self._drawn[domains]
        if self._on_exhausted == "stop":
            # Rows past the end would never be used.
            length = np.maximum(np.minimum(length, self._sizes[domains] - start), counts[domains])
        first = np.cumsum(length) - length
        # Split each domain's range into runs of one domain epoch, so keys are
        # hashed once per run rather than once per row.
        sizes = self._sizes[domains]
        epoch_lo = start // sizes
        runs = (start + length - 1) // sizes - epoch_lo + 1
        run_domain = np.repeat(np.arange(domains.size), runs)
        run_epoch = np.repeat(epoch_lo, runs) + (np.arange(int(runs.sum())) - np.repeat(np.cumsum(runs) - runs, runs))
        run_size = sizes[run_domain]
        run_lo = np.maximum(start[run_domain], run_epoch * run_size)
        run_hi = np.minimum((start + length)[run_domain], (run_epoch + 1) * run_size)
        run_len = run_hi - run_lo
        run_keys = derive_keys(self._seed, _TAG_DOMAIN, domains[run_domain], run_epoch)
        # Position of each row within its domain epoch's order.
        position = np.repeat(run_lo - run_epoch * run_size, run_len) + (
            np.arange(int(run_len.sum()), dtype=np.int64) - np.repeat(np.cumsum(run_len) - run_len, run_len)
        )
        rows = permute_many(position, np.repeat(run_size, run_len), np.repeat(run_keys, run_len))
        rows += np.repeat(self._offsets[domains[run_domain]], run_len)
        for i, d in enumerate(domains.tolist()):
            self._buffers[d] = rows[first[i] : first[i] + length[i]]
            self._buf_start[d] = start[i]

    # ------------------------------------------------------------------ state

    def _kept_range(self) -> str:
        if self._snapshots:
            return f"kept snapshots {min(self._snapshots)}..{max(self._snapshots)}, next to plan {self._planned}"
        return f"no snapshots kept, next to plan {self._planned}"

    def _prune_changes(self) -> None:
        """Forget changes older than every batch whose state can still be asked for."""
        if not (self._weight_changes or self._epoch_changes):
            return
        # Snapshots are inserted in increasing batch order, so the first is the oldest.
        oldest = next(iter(self._snapshots)) if self._snapshots else self._planned
        self._weight_changes = [c for c in self._weight_changes if c[0] >= oldest]
        self._epoch_changes = [c for c in self._epoch_changes if c[0] >= oldest]

    def state_dict(self, batch_index: int | None = None) -> dict[str, Any]:
        """JSON-serialisable state as of the start of global batch ``batch_index``.

        ``None`` (the ``Stateful`` call, no argument) means the first batch not yet consumed when a
        consumer marks consumed batches (:meth:`mark_consumed`, as the step engine does), else the
        next batch to plan (:attr:`planned_batches`).
        Otherwise ``batch_index`` must be a planned batch not yet marked
        consumed, or ``planned_batches``. The state holds the weights and
        epoch in force for that batch plus every change recorded for a later
        batch, so a sampler restored from it plans ``batch_index``,
        ``batch_index + 1``, ... exactly as this one did (or will).
        """
        if batch_index is None:
            g = self._consumed if self._marks_consumption else self._planned
        else:
            g = _check_int(batch_index, "batch_index", 0)
        if g == self._planned:
            weights, epoch = self._resolve(g)
            snap = _Snapshot(self._drawn, self._credit, weights, epoch)
        elif g in self._snapshots:
            snap = self._snapshots[g]
        else:
            raise ValueError(
                f"batch_index: expected a planned batch not yet consumed or the next to plan "
                f"({self._kept_range()}), got {g}"
            )
        cursors = snap.drawn % self._sizes
        domain_epochs = snap.drawn // self._sizes
        return {
            "version": self.STATE_VERSION,
            "domain_sizes": self._sizes.tolist(),
            "batch_size": self._batch_size,
            "seed": self._seed,
            "on_exhausted": self._on_exhausted,
            "rank": self._rank,
            "world_size": self._world_size,
            "batch_index": g,
            "cursors": cursors.tolist(),
            "domain_epochs": domain_epochs.tolist(),
            "credits": snap.credit.tolist(),
            "weights": snap.weights.tolist(),
            "epoch": snap.epoch,
            "row_caps": None if self._max_rows is None else self._max_rows.tolist(),
            "weight_schedule": [[idx, w.tolist()] for idx, w in self._weight_changes if idx > g],
            "epoch_schedule": [[idx, e] for idx, e in self._epoch_changes if idx > g],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; iteration resumes at the start of its batch.

        ``domain_sizes``, ``batch_size`` and ``seed`` must match this
        sampler; ``rank`` and ``world_size`` may differ (the global batch is
        the same, each rank takes its own slice).
        """
        if not isinstance(state, dict):
            raise ResumeError(f"state: expected a dict from MixtureSampler.state_dict(), got {type(state).__name__}")
        required = (
            "version", "domain_sizes", "batch_size", "seed", "batch_index", "cursors",
            "domain_epochs", "credits", "weights", "epoch", "weight_schedule", "epoch_schedule",
        )  # fmt: skip
        missing = [key for key in required if key not in state]
        if missing:
            raise ResumeError(f"state: missing field {missing[0]!r}")
        version = _check_int(state["version"], "state.version", 1)
        if version > self.STATE_VERSION:
            raise ResumeError(f"state.version: expected at most {self.STATE_VERSION}, got {version}")
        if list(state["domain_sizes"]) != self._sizes.tolist():
            raise ResumeError(
                f"state.domain_sizes: the checkpoint's domains have {list(state['domain_sizes'])} training rows, this "
                f"run's {self._sizes.tolist()}: cutoff_len, val_size, max_samples or the data changed since it was "
                "saved (resume with the same data settings, or start a new run)"
            )
        if state["batch_size"] != self._batch_size:
            raise ResumeError(
                f"state.batch_size: expected {self._batch_size} (this sampler), got {state['batch_size']}"
            )
        if state["seed"] != self._seed:
            raise ResumeError(f"state.seed: expected {self._seed} (this sampler), got {state['seed']}")
        caps = None if self._max_rows is None else self._max_rows.tolist()
        if state.get("row_caps") != caps:
            raise ResumeError(
                f"state.row_caps: the checkpoint's max_epochs caps ({state.get('row_caps')} rows) differ "
                f"from this run's ({caps}); resume with the same max_epochs"
            )

        self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        """The position and schedules of a checked :meth:`state_dict` (its header already matches)."""
        k = self.num_domains
        g = _check_int(state["batch_index"], "state.batch_index", 0)
        cursors = self._int_vector(state["cursors"], "state.cursors")
        domain_epochs = self._int_vector(state["domain_epochs"], "state.domain_epochs")
        if np.any(cursors >= self._sizes):
            raise ResumeError("state.cursors: expected each cursor below its domain size")
        credits = np.array(state["credits"], dtype=np.float64)
        if credits.shape != (k,) or not np.all(np.isfinite(credits)):
            raise ResumeError(f"state.credits: expected {k} finite numbers")
        # Stored weights are already normalised; re-normalising could change
        # the last bits and with them the plan, so only check them.
        validate_weights(state["weights"], k, name="state.weights")
        weights = np.array(state["weights"], dtype=np.float64)
        epoch = _check_int(state["epoch"], "state.epoch", 0)
        weight_changes = []
        for entry in state["weight_schedule"]:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise ResumeError("state.weight_schedule: expected [batch_index, weights] pairs")
            index = _check_int(entry[0], "state.weight_schedule batch_index", g + 1)
            validate_weights(entry[1], k, name="state.weight_schedule weights")
            weight_changes.append((index, np.array(entry[1], dtype=np.float64)))
        epoch_changes = []
        for entry in state["epoch_schedule"]:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise ResumeError("state.epoch_schedule: expected [batch_index, epoch] pairs")
            index = _check_int(entry[0], "state.epoch_schedule batch_index", g + 1)
            epoch_changes.append((index, _check_int(entry[1], "state.epoch_schedule epoch", 0)))
        for name, changes in (("state.weight_schedule", weight_changes), ("state.epoch_schedule", epoch_changes)):
            indices = [c[0] for c in changes]
            if indices != sorted(set(indices)):
                raise ResumeError(f"{name}: expected strictly increasing batch indices, got {indices}")

        self._planned = g
        self._consumed = g
        self._marks_consumption = False
        self._drawn = domain_epochs * self._sizes + cursors
        self._credit = credits
        self._weights = weights
        self._epoch = epoch
        self._weight_changes = weight_changes
        self._epoch_changes = epoch_changes
        self._snapshots = {}
        self._buffers = [np.zeros(0, dtype=np.int64) for _ in range(k)]
        self._buf_start = np.zeros(k, dtype=np.int64)

    def _int_vector(self, values: Any, name: str) -> np.ndarray:
        """K non-negative integers from a state field."""
        if not isinstance(values, (list, tuple)) or len(values) != self.num_domains:
            raise ResumeError(f"{name}: expected {self.num_domains} integers (one per domain)")
        return np.array([_check_int(v, name, 0) for v in values], dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(domains={self.num_domains}, batch_size={self._batch_size}, "
            f"rank={self._rank}/{self._world_size}, planned={self._planned}, on_exhausted={self._on_exhausted!r})"
        )
