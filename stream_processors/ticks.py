"""Ticks: what the forecasters learn on, ``tick_steps`` consecutive steps of one rank.

A tick is the block of a rank's steps ``[k * tick_steps, (k + 1) * tick_steps)``
within an epoch; its value is the block's seconds per sample (total time over
total samples). Why steps and not reports: a report holds whatever the sink's
flush policy packed (one batch at a low step rate, hundreds at a high one), so
"one tick = one report" made a lag mean a different span of training whenever
the policy or the step rate changed. Blocks of steps are the same for every
rank of a job (synchronous training: everyone takes the same steps), the same
on a replay (the tick's id is ``(job, rank, epoch, k)``, so its
``worker_features`` row deduplicates), the unit the planner and the forecast
contract speak (``based_on_step``, ``forecast_offsets``), and independent of
the processor's own batching.

A tick is complete when its last step arrives, or when a later tick's first
batch does (an epoch's short last block, a gap). A batch at or before the last
``(epoch, step)`` folded for its rank (a replay after a restart or a rebalance)
is not folded in again.

>>> tc = TickColumns(tick_steps=4)
>>> tc.ensure(1)
>>> t = tc.fold(np.array([0, 0, 0]), np.array([0, 0, 0]), np.array([2, 3, 4]),
...             np.array([10., 10., 10.]), np.zeros(3), np.array([1., 2., 4.]), np.zeros(3))
>>> t.key.tolist(), t.value.tolist(), int(tc.carry_key[0])
([0], [0.15], 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from stream_processors.slots import SlotColumns

__all__ = ["EPOCH_SHIFT", "TickColumns", "Ticks", "epoch_step", "tick_key"]

#: A tick's key is ``epoch << EPOCH_SHIFT | block``: ordered like (epoch, block).
EPOCH_SHIFT = 40
_NO_KEY = -1


def tick_key(epoch: np.ndarray, step: np.ndarray, tick_steps: int) -> np.ndarray:
    """Ordered keys of the ticks that ``(epoch, step)`` fall in.

    >>> tick_key(np.array([0, 0, 1]), np.array([7, 8, 0]), 8).tolist()
    [0, 1, 1099511627776]
    """
    block = np.minimum(step // tick_steps, (1 << EPOCH_SHIFT) - 1)
    return (np.minimum(epoch, (1 << 22) - 1) << EPOCH_SHIFT) | block


def epoch_step(epoch: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``(epoch, step)`` as one ordered integer (steps clipped below ``2**EPOCH_SHIFT``).

    >>> (epoch_step(np.array([1]), np.array([0])) > epoch_step(np.array([0]), np.array([9])))
    array([ True])
    """
    return (np.minimum(epoch, (1 << 22) - 1) << EPOCH_SHIFT) | np.minimum(
        step, (1 << EPOCH_SHIFT) - 1)


@dataclass
class Ticks:
    """Completed ticks of one batch, each rank's in order."""

    slot: np.ndarray
    key: np.ndarray
    value: np.ndarray  # seconds per sample over the tick
    wait_s: np.ndarray
    total_s: np.ndarray
    batches: np.ndarray
    last_step: np.ndarray
    end_ts: np.ndarray

    def __len__(self) -> int:
        return len(self.slot)

    @property
    def epoch(self) -> np.ndarray:
        return self.key >> EPOCH_SHIFT


class TickColumns(SlotColumns):
    """Per slot: the tick being filled (the *carry*) and the last completed tick."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any, tuple[int, ...]]]] = {
        "carry_key": (_NO_KEY, np.int64, ()), "carry_total_s": (0.0, np.float64, ()),
        "carry_wait_s": (0.0, np.float64, ()), "carry_samples": (0.0, np.float64, ()),
        "carry_batches": (0, np.int64, ()), "carry_step": (0, np.int64, ()),
        "carry_end_ts": (0.0, np.float64, ()), "last_es": (_NO_KEY, np.int64, ()),
    }
    carry_key: np.ndarray
    carry_total_s: np.ndarray
    carry_wait_s: np.ndarray
    carry_samples: np.ndarray
    carry_batches: np.ndarray
    carry_step: np.ndarray
    carry_end_ts: np.ndarray
    last_es: np.ndarray  # the last (epoch, step) folded in (``epoch_step``)

    def __init__(self, tick_steps: int) -> None:
        if tick_steps < 1:
            raise ValueError(f"tick_steps must be >= 1, got {tick_steps}")
        self.tick_steps = tick_steps
        super().__init__()

    def fold(self, slot: np.ndarray, epoch: np.ndarray, step: np.ndarray, samples: np.ndarray,
             wait_s: np.ndarray, compute_s: np.ndarray, end_ts: np.ndarray) -> Ticks:
        """Fold one batch's timings (arrival order) into the carries; return completed ticks."""
        order = np.argsort(slot, kind="stable")
        slot, epoch, step = slot[order], epoch[order], step[order]
        samples, wait_s, compute_s, end_ts = (samples[order], wait_s[order], compute_s[order],
                                              end_ts[order])
        es = epoch_step(epoch, step)
        fresh = self._fresh(slot, es)
        np.maximum.at(self.last_es, slot[fresh], es[fresh])
        ok = samples > 0
        rows = _Rows(slot, tick_key(epoch, step, self.tick_steps), np.where(ok, wait_s +
                     compute_s, 0.0), np.where(ok, wait_s, 0.0), np.where(ok, samples, 0.0),
                     ok.astype(np.int64), step, end_ts).take(np.flatnonzero(fresh))
        return self._segments(self._with_carries(rows))

    def _fresh(self, slot: np.ndarray, es: np.ndarray) -> np.ndarray:
        """Rows after everything folded so far for their slot (rows grouped by slot)."""
        fresh = es > self.last_es[slot]
        same = slot[1:] == slot[:-1]
        if not (same & (es[1:] <= es[:-1])).any():
            return fresh
        seen: dict[int, int] = {}  # a slot's steps go back within the batch: rare, slow
        for i, (s, e) in enumerate(zip(slot.tolist(), es.tolist(), strict=True)):
            top = seen.get(s, int(self.last_es[s]))
            fresh[i] = e > top
            seen[s] = max(top, e)
        return fresh

    def _with_carries(self, rows: _Rows) -> _Rows:
        """Put each touched slot's carry before its timings, as one more row."""
        touched = np.unique(rows.slot)
        c = touched[self.carry_key[touched] != _NO_KEY]
        carry = _Rows(c, self.carry_key[c], self.carry_total_s[c], self.carry_wait_s[c],
                      self.carry_samples[c], self.carry_batches[c], self.carry_step[c],
                      self.carry_end_ts[c])
        both = _Rows.concat(carry, rows)
        order = np.argsort(both.slot, kind="stable")  # carries first within their slot
        return both.take(order)

    def _segments(self, r: _Rows) -> Ticks:
        """Sum runs of equal (slot, key); all but each slot's last run are complete."""
        n = len(r.slot)
        if n == 0:
            return _Rows.empty().ticks()
        cut = np.r_[True, (r.slot[1:] != r.slot[:-1]) | (r.key[1:] != r.key[:-1])]
        first = np.flatnonzero(cut)
        last = np.r_[first[1:], n] - 1
        seg = _Rows(r.slot[first], r.key[first], np.add.reduceat(r.total_s, first),
                    np.add.reduceat(r.wait_s, first), np.add.reduceat(r.samples, first),
                    np.add.reduceat(r.batches, first), r.step[last], r.end_ts[last])
        slot_last = np.r_[seg.slot[1:] != seg.slot[:-1], True]
        ends_block = seg.step % self.tick_steps == self.tick_steps - 1
        done = ~slot_last | ends_block
        self._keep_carries(seg, slot_last & ~ends_block, slot_last & ends_block)
        finished = np.flatnonzero(done)
        valued = finished[seg.samples[finished] > 0]
        return seg.take(valued).ticks()

    def _keep_carries(self, seg: _Rows, open_: np.ndarray, closed: np.ndarray) -> None:
        o = np.flatnonzero(open_)
        s = seg.slot[o]
        self.carry_key[s], self.carry_total_s[s] = seg.key[o], seg.total_s[o]
        self.carry_wait_s[s], self.carry_samples[s] = seg.wait_s[o], seg.samples[o]
        self.carry_batches[s], self.carry_step[s] = seg.batches[o], seg.step[o]
        self.carry_end_ts[s] = seg.end_ts[o]
        self.carry_key[seg.slot[closed]] = _NO_KEY

    def partial_s(self, slots: np.ndarray) -> np.ndarray:
        """Seconds per sample of the tick being filled (NaN if it has no samples)."""
        n = self.carry_samples[slots]
        ok = (self.carry_key[slots] != _NO_KEY) & (n > 0)
        return np.where(ok, self.carry_total_s[slots] / np.where(ok, n, 1.0), np.nan)


@dataclass
class _Rows:
    """Timing-like rows while folding (a carry is one row holding several batches)."""

    slot: np.ndarray
    key: np.ndarray
    total_s: np.ndarray
    wait_s: np.ndarray
    samples: np.ndarray
    batches: np.ndarray
    step: np.ndarray
    end_ts: np.ndarray

    def _columns(self) -> list[np.ndarray]:
        return [self.slot, self.key, self.total_s, self.wait_s, self.samples, self.batches,
                self.step, self.end_ts]

    @staticmethod
    def concat(a: _Rows, b: _Rows) -> _Rows:
        return _Rows(*(np.concatenate([x, y]) for x, y in
                       zip(a._columns(), b._columns(), strict=True)))

    def take(self, index: np.ndarray) -> _Rows:
        return _Rows(*(c[index] for c in self._columns()))

    @staticmethod
    def empty() -> _Rows:
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return _Rows(i, i, f, f, f, i, i, f)

    def ticks(self) -> Ticks:
        value = self.total_s / np.where(self.samples > 0, self.samples, 1.0)
        return Ticks(self.slot, self.key, value, self.wait_s, self.total_s, self.batches,
                     self.step, self.end_ts)
