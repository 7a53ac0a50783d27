"""Keyed pseudo-random permutations of ``range(n)`` computed on the fly.

The sampler needs a fresh random order of every domain each time the domain
is exhausted, for domains that may hold billions of rows. Materialising such
an order (``np.random.permutation(n)``) costs O(n) memory and time per epoch,
so instead the i-th element of the order is computed directly:

* an alternating (unbalanced) Feistel network is a bijection on
  ``[0, 2**bits)`` for any key, with ``2**(bits-1) < n <= 2**bits``;
* cycle walking (re-applying the network while the value is ``>= n``)
  restricts it to a bijection on ``[0, n)``, because following the cycle of a
  permutation from a point inside ``[0, n)`` must come back inside it.

Because ``2**bits < 2n``, fewer than half of the points need a second pass on
average, so the cost is O(1) per element and memory is O(len(positions)).
Tiny domains (``n <= 256``), where a Feistel network on a few bits is visibly
non-random, instead rank ``0..n-1`` by a keyed hash: O(n) work, bounded.

Keys come from :func:`derive_key`, a splitmix64-based hash of integers. It is
stable across processes, machines and Python versions (unlike ``hash()``,
which is salted per process), so every data-parallel rank and every resumed
run computes the same orders.

This is a shuffling tool, not cryptography.
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_key", "derive_keys", "permute", "permute_many"]

_MASK64 = (1 << 64) - 1
_U64 = np.uint64

# splitmix64 constants (Steele, Lea & Flood 2014).
_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = _U64(_GOLDEN_INT)
_MUL1 = _U64(0xBF58476D1CE4E5B9)
_MUL2 = _U64(0x94D049BB133111EB)
_S30, _S27, _S31 = _U64(30), _U64(27), _U64(31)

# Start value of the key-derivation chain (any fixed odd constant).
_HASH_INIT = 0x6A09E667F3BCC909
# Six rounds: an unbalanced Feistel needs more than the classic four before
# every output bit depends on every input bit.
_ROUNDS = 6
# Below this size permutations are built by sorting hashes (see _sort_permute).
_SMALL_N = 256
# Distinct per-round tweaks so round keys of one key are unrelated.
_ROUND_TWEAKS = tuple(_U64((0xA0761D6478BD642F * (i + 1)) & _MASK64) for i in range(_ROUNDS))

IntOrArray = int | np.integer | np.ndarray


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (returns a new array)."""
    z = z ^ (z >> _S30)
    z *= _MUL1
    z ^= z >> _S27
    z *= _MUL2
    z ^= z >> _S31
    return z


def _as_u64(value: IntOrArray, name: str) -> np.ndarray:
    """Reinterpret integers (Python ints of either sign, or integer arrays) as uint64."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integers, got dtype {value.dtype}")
        # int64 -> uint64 keeps the two's complement bits, which is what we want.
        return value.astype(np.uint64, copy=False)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if not -(1 << 63) <= value <= _MASK64:
        raise ValueError(f"{name}: expected an integer that fits in 64 bits, got {value}")
    return np.array([value & _MASK64], dtype=np.uint64)


def derive_keys(*parts: IntOrArray) -> np.ndarray:
    """Hash a sequence of integers (scalars or broadcastable arrays) to uint64 keys.

    The result depends on the order of ``parts``; it is a chain of splitmix64
    mixes, so ``derive_keys(a, b)`` and ``derive_keys(b, a)`` are unrelated.
    Arrays broadcast against each other; scalars give a length-1 array.
    """
    if not parts:
        raise ValueError("parts: expected at least one integer to hash")
    with np.errstate(over="ignore"):
        h = np.array([_HASH_INIT], dtype=np.uint64)
        for i, part in enumerate(parts):
            u = _as_u64(part, f"parts[{i}]")
            # Mixing the part on its own before combining keeps (a, b) and
            # (a ^ 1, b ^ 1)-style inputs from colliding.
            h = _mix64(h ^ _mix64(u + _GOLDEN))
    return h


def _mix64_int(z: int) -> int:
    """splitmix64 finaliser on a Python int in [0, 2**64); same as :func:`_mix64`."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_key(*parts: int) -> int:
    """Stable 64-bit key from integers, e.g. ``derive_key(seed, domain, epoch)``.

    Use this instead of ``hash()``: it is identical in every process and
    on every machine. Equal to ``int(derive_keys(*parts)[0])``, computed
    with Python ints because the sampler calls it once per batch.
    """
    if not parts:
        raise ValueError("parts: expected at least one integer to hash")
    h = _HASH_INIT
    for i, part in enumerate(parts):
        if isinstance(part, (bool, np.bool_)) or not isinstance(part, (int, np.integer)):
            raise ValueError(f"parts[{i}]: expected an integer, got {type(part).__name__}")
        part = int(part)
        if not -(1 << 63) <= part <= _MASK64:
            raise ValueError(f"parts[{i}]: expected an integer that fits in 64 bits, got {part}")
        h = _mix64_int(h ^ _mix64_int(((part & _MASK64) + _GOLDEN_INT) & _MASK64))
    return h


def _bits_for(n: np.ndarray) -> np.ndarray:
    """Smallest ``bits >= 1`` with ``2**bits >= n`` (or one more), for an int64 array ``n >= 1``.

    frexp's exponent is the bit length of ``n - 1``. Above 2**53 the float
    conversion may round up to the next power of two, which only widens the
    network by one bit: still a valid (and deterministic) choice.
    """
    exponent = np.frexp((n - 1).astype(np.float64))[1]
    return np.maximum(exponent, 1)


def _walk(x: np.ndarray, round_keys: list[np.ndarray], bits: int) -> np.ndarray:
    """Apply the Feistel network once to ``x`` (values in ``[0, 2**bits)``), in place.

    The rounds alternate between a ``bits // 2``-bit left half and the rest;
    every round maps ``(L, R)`` to ``(R, L ^ F(R))``, a bijection whatever
    ``F`` is. Operations are in place because at ~100 array operations per
    element the temporaries, not the arithmetic, dominate.
    """
    wl = bits // 2
    wr = bits - wl
    right = np.empty_like(x)
    tmp = np.empty_like(x)
    for rk in round_keys:
        np.bitwise_and(x, _U64((1 << wr) - 1), out=right)
        x >>= _U64(wr)  # x is now the left half
        np.bitwise_xor(right, rk, out=tmp)
        _mix64_inplace(tmp)
        tmp &= _U64((1 << wl) - 1)
        x ^= tmp
        right <<= _U64(wl)
        x |= right
        # The old right half is the new left half.
        wl, wr = wr, wl
    return x


def _mix64_inplace(z: np.ndarray) -> None:
    """splitmix64 finaliser applied to ``z`` in place."""
    t = z >> _S30
    z ^= t
    z *= _MUL1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _MUL2
    np.right_shift(z, _S31, out=t)
    z ^= t


def _feistel_fixed(pos: np.ndarray, n: np.ndarray, key: np.ndarray, bits: int) -> np.ndarray:
    """Feistel network on ``[0, 2**bits)`` plus cycle walking into ``[0, n)``."""
    with np.errstate(over="ignore"):
        round_keys = [_mix64(key ^ t) for t in _ROUND_TWEAKS]
        out = _walk(pos.astype(np.uint64), round_keys, bits)
        # Cycle walking: only the elements that landed outside [0, n) go
        # round again, on an ever smaller subset.
        n_u = n.astype(np.uint64)
        idx = np.flatnonzero(out >= n_u)
        while idx.size:
            y = _walk(out[idx], [rk[idx] for rk in round_keys], bits)
            out[idx] = y
            idx = idx[y >= n_u[idx]]
    return out


def _feistel_permute(pos: np.ndarray, n: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Keyed permutation for 1-d int64 ``pos``/``n`` and uint64 ``key`` (any mix of sizes)."""
    bits = _bits_for(n)
    lo, hi = int(bits.min()), int(bits.max())
    if lo == hi:
        return _feistel_fixed(pos, n, key, lo)
    # Group by network width so that shifts and masks are scalars; there are
    # at most 64 widths and usually one per domain.
    out = np.empty(pos.shape, dtype=np.uint64)
    for b in np.unique(bits).tolist():
        sel = np.flatnonzero(bits == b)
        out[sel] = _feistel_fixed(pos[sel], n[sel], key[sel], int(b))
    return out


def _sort_permute(pos: np.ndarray, n: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Exact permutations for small ``n``: rank ``0..n-1`` by a keyed hash.

    A Feistel network on a handful of bits has too few distinct round
    functions to look random (first positions of a 7-element order are
    visibly biased), so each distinct ``(n, key)`` gets its permutation by
    sorting hashes instead. All groups are sorted in one ``lexsort``; the
    work is O(sum of distinct group sizes), at most ``_SMALL_N`` per group.
    """
    groups, inverse = np.unique(np.stack([n.astype(np.uint64), key]), axis=1, return_inverse=True)
    inverse = inverse.reshape(-1)
    sizes = groups[0].astype(np.int64)
    starts = np.cumsum(sizes) - sizes
    group_of = np.repeat(np.arange(sizes.size), sizes)
    local = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(starts, sizes)
    scores = derive_keys(np.repeat(groups[1], sizes), local)
    # Sorted by group, then by score: entry starts[g] + j is the element of
    # group g that lands at position j.
    order = np.lexsort((scores, group_of))
    table = order - np.repeat(starts, sizes)
    return table[starts[inverse] + pos].astype(np.uint64)


def permute_many(positions: np.ndarray, n: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Element-wise keyed permutation: ``out[i] = pi_{key[i], n[i]}(positions[i])``.

    ``n`` and ``key`` broadcast against ``positions``. For a fixed
    ``(n, key)`` the map is a bijection of ``[0, n)``. This is the vectorised
    form used by the sampler to draw from many domains in one call.
    """
    pos = np.asarray(positions)
    if pos.dtype.kind not in "iu":
        raise ValueError(f"positions: expected an integer array, got dtype {pos.dtype}")
    n_arr = np.asarray(n, dtype=np.int64)
    if n_arr.size and int(n_arr.min()) < 1:
        raise ValueError("n: expected sizes >= 1")
    if isinstance(key, np.ndarray) and key.ndim:
        key_arr = _as_u64(key, "key")
    else:
        key_arr = _as_u64(key.item() if isinstance(key, np.ndarray) else key, "key").reshape(())
    pos, n_arr, key_arr = np.broadcast_arrays(pos.astype(np.int64, copy=False), n_arr, key_arr)
    shape = pos.shape
    pos = pos.reshape(-1)
    n_arr = n_arr.reshape(-1)
    key_arr = key_arr.reshape(-1)
    if pos.size == 0:
        return np.zeros(shape, dtype=np.int64)
    if int(pos.min()) < 0 or np.any(pos >= n_arr):
        raise ValueError("positions: expected values in [0, n)")

    out = np.empty(pos.shape, dtype=np.uint64)
    small = n_arr <= _SMALL_N
    if small.all():
        out[:] = _sort_permute(pos, n_arr, key_arr)
    elif not small.any():
        out[:] = _feistel_permute(pos, n_arr, key_arr)
    else:
        out[small] = _sort_permute(pos[small], n_arr[small], key_arr[small])
        big = ~small
        out[big] = _feistel_permute(pos[big], n_arr[big], key_arr[big])
    return out.astype(np.int64).reshape(shape)


def permute(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """Map ``positions`` through the keyed pseudo-random permutation of ``range(n)``.

    ``permute(np.arange(n), n, key)`` is a permutation of ``range(n)``; any
    subset of positions can be computed on its own, in O(len(positions))
    time and memory, independent of ``n``. Different keys give unrelated
    orders. Returns an int64 array of the same shape as ``positions``.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    return permute_many(positions, np.asarray(n, dtype=np.int64), _as_u64(key, "key").reshape(()))
