"""Per-rank state in arrays: one *slot* per live ``(job, rank)``, reused once it expires.

The predictor keeps everything it knows about a rank in rows of numpy arrays
(:class:`SlotColumns`), so a batch of reports updates every rank it touches with
a few vector operations instead of a Python loop per report. :class:`SlotTable`
maps ``(job_id, worker_id)`` to a slot, gives every job a small integer id (for
per-job medians over slots) and frees the slots of ranks silent for ``ttl_s``:
memory is bounded by the ranks live at once, not by every rank ever seen.

>>> t = SlotTable(ttl_s=10.0)
>>> t.lookup([("a", 0), ("a", 1), ("a", 0)], now=0.0)[0].tolist()
[0, 1, 0]
>>> t.expire(now=5.0).tolist(), t.lookup([("a", 1)], now=5.0)[0].tolist()
([], [1])
>>> t.expire(now=12.0).tolist(), len(t)
([0], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

__all__ = ["SlotColumns", "SlotTable", "grouped_median", "rounds"]

#: Rows the arrays start with; they double whenever a slot beyond them is needed.
INITIAL_CAPACITY = 64


class SlotColumns:
    """Arrays with one row per slot, declared by :meth:`fields`, grown and reset together.

    A subclass annotates its arrays and returns ``{name: (fill, dtype, row_shape)}``
    from :meth:`fields`; a freed slot is reset to the fills before it is reused.
    """

    FIELDS: ClassVar[dict[str, tuple[Any, Any, tuple[int, ...]]]] = {}

    def __init__(self) -> None:
        self.capacity = 0
        for name, (fill, dtype, shape) in self.fields().items():
            setattr(self, name, np.full((0, *shape), fill, dtype=dtype))

    def fields(self) -> dict[str, tuple[Any, Any, tuple[int, ...]]]:
        return self.FIELDS

    def ensure(self, capacity: int) -> None:
        """Grow every array to at least ``capacity`` rows (new rows hold the fills)."""
        if capacity <= self.capacity:
            return
        for name, (fill, dtype, shape) in self.fields().items():
            old = getattr(self, name)
            new = np.full((capacity, *shape), fill, dtype=dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        """Give ``slots`` their initial values (a new rank, or a reused slot)."""
        if len(slots):
            for name, (fill, _dtype, _shape) in self.fields().items():
                getattr(self, name)[slots] = fill

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.fields())


class SlotTable:
    """``(job_id, worker_id)`` -> slot, job ids, last-seen times and expiry."""

    def __init__(self, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.ttl_s = ttl_s
        self.index: dict[tuple[str, int], int] = {}
        self.keys: list[tuple[str, int] | None] = []
        self.free: list[int] = []
        self.job_ids: dict[str, int] = {}
        self.job_names: list[str] = []
        self._job_refs: list[int] = []
        self._free_jobs: list[int] = []
        self.job_of = np.zeros(0, dtype=np.int64)
        self.last_seen = np.zeros(0, dtype=np.float64)
        self.capacity = 0

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, keys: Sequence[tuple[str, int]],
               now: float) -> tuple[np.ndarray, np.ndarray]:
        """Slots of ``keys`` (allocated when new) and the newly allocated slots."""
        out = np.empty(len(keys), dtype=np.int64)
        new: list[int] = []
        index = self.index
        for i, key in enumerate(keys):
            slot = index.get(key)
            if slot is None:
                slot = self._allocate(key)
                new.append(slot)
            out[i] = slot
        self.last_seen[out] = now
        return out, np.asarray(new, dtype=np.int64)

    def _allocate(self, key: tuple[str, int]) -> int:
        if self.free:
            slot = self.free.pop()
        else:
            slot = len(self.keys)
            self.keys.append(None)
            if slot >= self.capacity:
                self._grow(max(INITIAL_CAPACITY, 2 * self.capacity))
        self.keys[slot] = key
        self.index[key] = slot
        self.job_of[slot] = self._job(key[0])
        return slot

    def _grow(self, capacity: int) -> None:
        for name in ("job_of", "last_seen"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.capacity = capacity

    def _job(self, name: str) -> int:
        job = self.job_ids.get(name)
        if job is None:
            if self._free_jobs:
                job = self._free_jobs.pop()
                self.job_names[job] = name
                self._job_refs[job] = 0
            else:
                job = len(self.job_names)
                self.job_names.append(name)
                self._job_refs.append(0)
            self.job_ids[name] = job
        self._job_refs[job] += 1
        return job

    def expire(self, now: float) -> np.ndarray:
        """Free the slots not seen for ``ttl_s`` (and jobs left without a slot)."""
        live = np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))
        old = live[self.last_seen[live] < now - self.ttl_s]
        for slot in old.tolist():
            self._free(slot)
        return old

    def _free(self, slot: int) -> None:
        key = self.keys[slot]
        assert key is not None
        del self.index[key]
        self.keys[slot] = None
        self.free.append(slot)
        job = int(self.job_of[slot])
        self._job_refs[job] -= 1
        if self._job_refs[job] == 0:
            del self.job_ids[self.job_names[job]]
            self._free_jobs.append(job)

    def forget_jobs(self, jobs: set[str]) -> np.ndarray:
        """Free every slot of ``jobs`` now."""
        gone = [slot for key, slot in self.index.items() if key[0] in jobs]
        for slot in gone:
            self._free(slot)
        return np.asarray(gone, dtype=np.int64)

    def live(self) -> np.ndarray:
        """Every slot in use."""
        return np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))


def grouped_median(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group id (NaN/non-positive values ignored; NaN if none).

    One sort for all groups, so the fleet medians of every job cost one call.

    >>> grouped_median(np.array([0, 0, 0, 1, 1]), np.array([3., 1., 2., 4., np.nan]), 3)
    array([ 2.,  4., nan])
    """
    if groups.shape != values.shape:
        raise ValueError(f"groups: shape {groups.shape} differs from values' {values.shape}")
    ok = np.isfinite(values) & (values > 0)
    g, v = groups[ok], values[ok]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    out = np.full(n_groups, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = (v[lo] + v[hi]) / 2
    return out


def rounds(slots: np.ndarray) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into rounds so each round holds a slot at most once,
    keeping each slot's order: round k holds every slot's k-th entry.

    Sequential state (an EWMA, an SGD step) then advances one vectorised round at a
    time, exactly as it would entry by entry.

    >>> [r.tolist() for r in rounds(np.array([5, 7, 5, 5, 7]))]
    [[0, 1], [2, 4], [3]]
    """
    n = len(slots)
    if n == 0:
        return []
    order = np.argsort(slots, kind="stable")
    s = slots[order]
    first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    starts = np.repeat(first, np.diff(np.r_[first, n]))
    rank = np.arange(n) - starts
    by_round = order[np.argsort(rank, kind="stable")]
    sizes = np.bincount(rank)
    return np.split(by_round, np.cumsum(sizes)[:-1])
