"""Where each timing lands on a worker's own step axis: order, duplicates, epoch ends.

A rank's step counter restarts every epoch, but interference does not, so the
recurrence works on a monotone position per worker: the steps since its first
timing, counting over epoch ends. Steps per epoch are not in a timing report;
the largest step seen + 1 stands in for them (exact once one epoch was seen
to its end, and never lets a position repeat). A timing whose ``(epoch, step)``
is not after the last one kept (an at-least-once replay, a reordered report)
is dropped, so a replay changes nothing.

>>> st = SlotPositions.empty(2)
>>> keep, pos = st.advance(np.array([0, 0, 1, 0]), np.array([0, 0, 0, 1]),
...                        np.array([8, 9, 3, 0]))
>>> keep.tolist(), pos.tolist()  # slot 0: steps 8, 9, then epoch 1 step 0
([True, True, True, True], [0, 1, 0, 2])
>>> keep, pos = st.advance(np.array([0]), np.array([0]), np.array([9]))  # a replay
>>> keep.tolist()
[False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SlotPositions"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
#: Steps are packed below epochs in one int64 key: (epoch << STEP_BITS) | step.
STEP_BITS = 32


@dataclass
class SlotPositions:
    """Per slot: the last kept ``(epoch, step)``, its position, the largest step seen."""

    key: IntArray  # (epoch << STEP_BITS) | step of the last kept timing; -1 = none yet
    position: IntArray  # its position; -1 = none yet
    max_step: IntArray

    @classmethod
    def empty(cls, capacity: int) -> SlotPositions:
        return cls(np.full(capacity, -1, np.int64), np.full(capacity, -1, np.int64),
                   np.zeros(capacity, np.int64))

    def grow(self, capacity: int) -> None:
        """Make room for slots up to ``capacity - 1`` (new slots are empty)."""
        extra = capacity - len(self.key)
        if extra > 0:
            more = SlotPositions.empty(extra)
            self.key = np.concatenate([self.key, more.key])
            self.position = np.concatenate([self.position, more.position])
            self.max_step = np.concatenate([self.max_step, more.max_step])

    def reset(self, slots: IntArray) -> None:
        self.key[slots], self.position[slots], self.max_step[slots] = -1, -1, 0

    def advance(self, slots: IntArray, epochs: IntArray, steps: IntArray
                ) -> tuple[BoolArray, IntArray]:
        """Keep mask and positions of timings given in arrival order (any slot mix).

        Vectorised: one stable sort by slot; Python only for the rare slot whose
        timings arrive out of order.
        """
        if (steps < 0).any() or (steps >= 1 << STEP_BITS).any() or (epochs < 0).any():
            raise ValueError(f"steps must be in [0, 2**{STEP_BITS}) and epochs >= 0")
        order = np.argsort(slots, kind="stable")
        s, e, st = slots[order], epochs[order], steps[order]
        key = (e << STEP_BITS) | st
        first = np.ones(len(s), bool)
        first[1:] = s[1:] != s[:-1]
        prev = np.where(first, self.key[s], np.roll(key, 1))
        keep = key > prev
        if not keep.all():  # a duplicate or reordered timing: keep a running maximum per slot
            keep = self._running_max_keep(s, key, first)
        s, e, st, key = s[keep], e[keep], st[keep], key[keep]
        first = np.ones(len(s), bool)
        first[1:] = s[1:] != s[:-1]
        starts = np.flatnonzero(first)
        top = np.maximum(self.max_step[s[starts]], np.maximum.reduceat(st, starts)) \
            if len(s) else np.zeros(0, np.int64)
        per_epoch = np.repeat(top + 1, np.diff(np.append(starts, len(s))))
        prev_key = np.where(first, self.key[s], np.roll(key, 1))
        pe, ps = prev_key >> STEP_BITS, prev_key & ((1 << STEP_BITS) - 1)
        step_gain = np.where(prev_key < 0, 1, (e - pe) * per_epoch + st - ps)
        lens = np.diff(np.append(starts, len(s)))
        run = np.cumsum(step_gain)
        base = np.repeat(run[starts] - step_gain[starts], lens)
        pos = np.repeat(self.position[s[starts]], lens) + run - base
        last = np.append(starts[1:] - 1, len(s) - 1) if len(s) else starts
        self.key[s[last]], self.position[s[last]] = key[last], pos[last]
        self.max_step[s[starts]] = top
        kept = np.zeros(len(order), bool)
        kept[order[np.flatnonzero(keep)]] = True
        out = np.full(len(order), -1, np.int64)
        out[order[np.flatnonzero(keep)]] = pos
        return kept, out[kept]

    def _running_max_keep(self, s: IntArray, key: IntArray, first: BoolArray) -> BoolArray:
        keep = np.zeros(len(s), bool)
        best = -1
        for i in range(len(s)):
            if first[i]:
                best = int(self.key[s[i]])
            if key[i] > best:
                keep[i], best = True, int(key[i])
        return keep
