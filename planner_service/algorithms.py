"""Shard-map planning algorithms: pure functions on numpy arrays, chosen by name.

Every algorithm in :data:`ALGORITHMS` has the signature of :data:`PlanFn`::

    fn(owner, speeds, global_batch, max_batch) -> Plan

- ``owner``: integer array, shape ``(num_shards,)``: the rank holding each shard now
  (values in ``[0, world)``; a rank that joins simply owns nothing yet).
- ``speeds``: float array, shape ``(world,)``: predicted samples per second of each
  rank (``1 / time_per_sample_s``); ``0`` marks a rank that is gone: it gets no
  shards and batch size 0. Every live rank gets a batch size >= 1.
- ``global_batch``: samples per step over all ranks (the batch sizes sum to it).
- ``max_batch``: per-rank cap from device memory, ``0`` = none.

The result is a :class:`Plan`: new ``owner`` (every shard exactly once, by
construction), ``batch_sizes`` (shape ``(world,)``) and the number of shards that
changed hands. Each rank's shard count follows its batch share, so all ranks run
out of data at about the same step; only the shards a rank must give up move, and
the ones it keeps are its lowest ids (locality).

>>> owner = np.repeat(np.arange(4), 4)            # 16 shards, 4 per rank
>>> p = get_plan("minmax", owner, np.array([1.0, 1.0, 1.0, 0.5]), 28)
>>> p.batch_sizes.tolist(), p.moved, np.bincount(p.owner).tolist()
([8, 8, 8, 4], 1, [5, 4, 4, 3])
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALGORITHMS",
    "Plan",
    "PlanFn",
    "fractional_lower_bound",
    "get_plan",
    "lists_from_owner",
    "min_moves_for",
    "owner_from_lists",
    "step_time",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Plan:
    """One candidate map: ``owner`` (num_shards,), ``batch_sizes`` (world,), shards moved."""

    owner: IntArray
    batch_sizes: IntArray
    moved: int


PlanFn = Callable[[IntArray, FloatArray, int, int], Plan]


# ---------------------------------------------------------------- conversions and metrics


def owner_from_lists(shards: list[list[int]], num_shards: int) -> IntArray:
    """The owner array of a map's per-rank shard lists (assumes a valid partition)."""
    owner = np.full(num_shards, -1, dtype=np.int64)
    for rank, ids in enumerate(shards):
        owner[np.asarray(ids, dtype=np.int64)] = rank
    if (owner < 0).any():
        raise ValueError("shards: not every shard id in range(num_shards) is assigned")
    return owner


def lists_from_owner(owner: IntArray, world: int) -> list[list[int]]:
    """Per-rank ascending shard lists from an owner array (the ShardMap wire shape).

    >>> lists_from_owner(np.array([1, 0, 1]), 3)
    [[1], [0, 2], []]
    """
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=world)
    return [part.tolist() for part in np.split(order, np.cumsum(counts)[:-1])]


def step_time(batch_sizes: npt.ArrayLike, speeds: npt.ArrayLike) -> float:
    """Predicted synchronous step time: the slowest rank's ``batch / speed``.

    >>> step_time([8, 4], [2.0, 1.0])
    4.0
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    s = np.asarray(speeds, dtype=np.float64)
    busy = b > 0
    if not busy.any():
        return 0.0
    with np.errstate(divide="ignore"):
        return float(np.max(b[busy] / s[busy]))


def fractional_lower_bound(speeds: npt.ArrayLike, global_batch: int) -> float:
    """No plan beats this step time: all work over all speed (``B / sum(speeds)``)."""
    return float(global_batch / np.sum(np.asarray(speeds, dtype=np.float64)))


def min_moves_for(owner: IntArray, batch_sizes: IntArray) -> float:
    """Fewest shard moves that make every rank's data share match its batch share.

    Fractional: ``sum(max(0, have_r - S * b_r / B))``; integer plans need at least
    its ceiling, so ``moved / ceil(min_moves_for(...))`` measures wasted moves.
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    have = np.bincount(owner, minlength=len(b)).astype(np.float64)
    ideal = len(owner) * b / b.sum()
    return float(np.maximum(have - ideal, 0.0).sum())


# ---------------------------------------------------------------- validation


def _validate(owner: IntArray, speeds: FloatArray, global_batch: int, max_batch: int) -> None:
    """Raise ValueError naming the argument that makes planning impossible."""
    if owner.ndim != 1 or owner.size == 0 or owner.dtype.kind not in "iu":
        raise ValueError(f"owner must be a non-empty 1-D integer array, got {owner.dtype}")
    if speeds.ndim != 1 or speeds.size == 0:
        raise ValueError("speeds must be a non-empty 1-D array")
    if not np.isfinite(speeds).all() or (speeds < 0).any():
        raise ValueError("speeds must be finite and >= 0")
    if owner.min() < 0 or owner.max() >= speeds.size:
        raise ValueError(f"owner holds ranks outside [0, {speeds.size}) (len(speeds))")
    live = int(np.count_nonzero(speeds))
    if live == 0:
        raise ValueError("speeds: no live rank (every speed is 0)")
    if isinstance(global_batch, bool) or int(global_batch) != global_batch or global_batch < live:
        raise ValueError(
            f"global_batch must be an integer >= {live} live ranks, got {global_batch}"
        )
    if max_batch < 0:
        raise ValueError(f"max_batch must be >= 0 (0 = no cap), got {max_batch}")
    if max_batch and max_batch * live < global_batch:
        raise ValueError(
            f"max_batch {max_batch} x {live} live ranks cannot hold global_batch {global_batch}"
        )


# ---------------------------------------------------------------- batch sizes


def _water_fill(speeds: FloatArray, total: int, cap: int) -> FloatArray:
    """Fractional shares ``clip(T * s, 1, cap)`` of live ranks summing to at most ``total``.

    ``T`` is found by bisection from below, so the sum never exceeds ``total``
    and flooring leaves a deficit of at most about one sample per live rank.
    """
    live = speeds > 0
    s = speeds[live]
    upper = float(cap) if cap else float(total)
    lo, hi = 0.0, upper / float(s.min())
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.clip(mid * s, 1.0, upper).sum() <= total:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    shares = np.zeros_like(speeds)
    shares[live] = np.clip(lo * s, 1.0, upper)
    return shares


def _floor_shares(shares: FloatArray) -> IntArray:
    # A share of 2.9999999999 is 3: bisection stops a hair below the exact value.
    return np.floor(shares + 1e-9).astype(np.int64)


def _largest_remainder(
    shares: FloatArray, total: int, cap: int, live: npt.NDArray[np.bool_]
) -> IntArray:
    """Integer shares summing to ``total``: floors, then +1 for the largest remainders."""
    b = _floor_shares(shares)
    while (deficit := total - int(b.sum())) > 0:
        room = live & ((b < cap) if cap else True)
        rem = np.where(room, shares - b, -np.inf)
        take = np.argsort(-rem, kind="stable")[: min(deficit, int(room.sum()))]
        b[take] += 1
    assert b.sum() == total
    return b


def _minmax_batches(speeds: FloatArray, total: int, cap: int) -> IntArray:
    """Integer batch sizes with the smallest possible step time ``max b_r / s_r``.

    Floors of the fractional optimum, then each missing sample goes to the rank
    that would finish it soonest (a heap): greedy is exact for min-max here.
    """
    b = _floor_shares(_water_fill(speeds, total, cap))
    deficit = total - int(b.sum())
    heap = [
        ((int(b[r]) + 1) / float(speeds[r]), int(r))
        for r in np.flatnonzero((speeds > 0) & ((b < cap) if cap else True))
    ]
    heapq.heapify(heap)
    for _ in range(deficit):
        _, r = heapq.heappop(heap)
        b[r] += 1
        if not cap or b[r] < cap:
            heapq.heappush(heap, ((int(b[r]) + 1) / float(speeds[r]), r))
    assert b.sum() == total
    return b


# ---------------------------------------------------------------- shard counts and moves


def _counts_largest_remainder(owner: IntArray, batch: IntArray) -> IntArray:
    """Shard counts proportional to batch shares, by largest remainder."""
    ideal = owner.size * batch / batch.sum()
    return _largest_remainder(ideal, owner.size, 0, batch > 0)


def _counts_sticky(owner: IntArray, batch: IntArray) -> IntArray:
    """Shard counts within one shard of proportional that keep as many shards in place.

    A rank whose current count already lies between floor and ceil of its ideal
    keeps it; the sum is then fixed on ranks with slack, largest remainder first.
    Among all roundings of the ideal this moves the fewest shards.
    """
    ideal = owner.size * batch / batch.sum()
    lo = _floor_shares(ideal)
    hi = np.where(ideal - lo > 1e-9, lo + 1, lo)
    have = np.bincount(owner, minlength=batch.size)
    counts = np.clip(have, lo, hi)
    diff = owner.size - int(counts.sum())
    if diff > 0:
        rem = np.where(counts < hi, ideal - lo, -np.inf)
        counts[np.argsort(-rem, kind="stable")[:diff]] += 1
    elif diff < 0:
        rem = np.where(counts > lo, ideal - lo, np.inf)
        counts[np.argsort(rem, kind="stable")[:-diff]] -= 1
    assert counts.sum() == owner.size and (counts >= lo).all() and (counts <= hi).all()
    return counts


def _reassign(owner: IntArray, counts: IntArray) -> tuple[IntArray, int]:
    """Give every rank ``counts[r]`` shards moving only the surplus (the minimum).

    Ranks over their count keep their lowest shard ids and release the rest;
    released shards, in id order, fill the ranks under their count in rank
    order, so neighbouring shards tend to land on the same rank.
    """
    world = counts.size
    order = np.argsort(owner, kind="stable")
    have = np.bincount(owner, minlength=world)
    starts = np.cumsum(have) - have
    pos = np.arange(owner.size) - np.repeat(starts, have)
    released = np.sort(order[pos >= counts[owner[order]]])
    receivers = np.repeat(np.arange(world), np.maximum(counts - have, 0))
    assert released.size == receivers.size
    new_owner = owner.copy()
    new_owner[released] = receivers
    return new_owner, int(released.size)


# ---------------------------------------------------------------- the algorithms


def _prepare(
    owner: npt.ArrayLike, speeds: npt.ArrayLike, global_batch: int, max_batch: int
) -> tuple[IntArray, FloatArray]:
    o = np.asarray(owner)
    s = np.asarray(speeds, dtype=np.float64)
    _validate(o, s, global_batch, max_batch)
    return o.astype(np.int64, copy=False), s


def static(owner: IntArray, speeds: FloatArray, global_batch: int, max_batch: int = 0) -> Plan:
    """Baseline: equal batch sizes and equal shard counts over live ranks (ignores speed)."""
    o, s = _prepare(owner, speeds, global_batch, max_batch)
    live = s > 0
    equal = np.where(live, 1.0, 0.0)
    batch = _largest_remainder(_water_fill(equal, global_batch, max_batch), global_batch,
                               max_batch, live)
    new_owner, moved = _reassign(o, _counts_largest_remainder(o, batch))
    return Plan(new_owner, batch, moved)


def proportional(
    owner: IntArray, speeds: FloatArray, global_batch: int, max_batch: int = 0
) -> Plan:
    """Batch sizes and shard counts proportional to speed, both by largest remainder."""
    o, s = _prepare(owner, speeds, global_batch, max_batch)
    batch = _largest_remainder(_water_fill(s, global_batch, max_batch), global_batch,
                               max_batch, s > 0)
    new_owner, moved = _reassign(o, _counts_largest_remainder(o, batch))
    return Plan(new_owner, batch, moved)


def minmax(owner: IntArray, speeds: FloatArray, global_batch: int, max_batch: int = 0) -> Plan:
    """Optimal integer step time, then the fewest moves among near-proportional counts."""
    o, s = _prepare(owner, speeds, global_batch, max_batch)
    batch = _minmax_batches(s, global_batch, max_batch)
    new_owner, moved = _reassign(o, _counts_sticky(o, batch))
    return Plan(new_owner, batch, moved)


#: Planning algorithms by name; add one here to compare it in ``shardsense plan-bench``.
ALGORITHMS: dict[str, PlanFn] = {"static": static, "proportional": proportional, "minmax": minmax}


def get_plan(
    algorithm: str,
    owner: npt.ArrayLike,
    speeds: npt.ArrayLike,
    global_batch: int,
    max_batch: int = 0,
) -> Plan:
    """Run the algorithm registered as ``algorithm`` (ValueError if unknown)."""
    try:
        fn = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(
            f"algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}"
        ) from None
    return fn(np.asarray(owner), np.asarray(speeds, dtype=np.float64), global_batch, max_batch)
