"""The fleet's speeds over the coming steps, from every rank's forecast (pure functions).

Each rank's forecast is a list of ``(global step, seconds per sample from then)``;
merged, they cut the horizon into segments in which no rank's level changes.
A segment's confidence is the lowest confidence among the ranks whose level in
it differs from the level now (1 when none does): how far the planner may
trust that the fleet will look like that.

>>> segs = fleet_segments(100, 200, [0.01, 0.01], {1: [(120, 0.02), (150, 0.01)]}, {1: 0.8})
>>> [(s.start, s.end, s.times.tolist(), s.confidence) for s in segs]
[(100, 120, [0.01, 0.01], 1.0), (120, 150, [0.01, 0.02], 0.8), (150, 200, [0.01, 0.01], 1.0)]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "fleet_segments"]


@dataclass(frozen=True)
class Segment:
    """Steps ``[start, end)`` with every rank's seconds per sample (0 = not planned for)."""

    start: int
    end: int
    times: np.ndarray
    confidence: float

    @property
    def steps(self) -> int:
        return self.end - self.start


def fleet_segments(
    now: int,
    end: int,
    times_now: Sequence[float] | np.ndarray,
    changes: Mapping[int, Sequence[tuple[int, float]]],
    confidence: Mapping[int, float],
) -> list[Segment]:
    """Cut ``[now, end)`` at every forecast change of any rank; the first segment is now's.

    ``times_now[r]`` is rank r's level now (0 = not planned for: it stays 0);
    ``changes[r]`` its forecast changes in increasing global steps, and
    ``confidence[r]`` the trust in them.
    """
    if end <= now:
        raise ValueError(f"end must be after now, got now={now}, end={end}")
    base = np.asarray(times_now, dtype=float)
    cuts = sorted({at for r, cs in changes.items() if base[r] > 0 for at, _ in cs
                   if now < at < end})
    bounds = [now, *cuts, end]
    out = []
    for start, stop in itertools.pairwise(bounds):
        times = base.copy()
        for r, cs in changes.items():
            if base[r] <= 0:
                continue
            for at, level in cs:
                if at > start:
                    break
                times[r] = level
        differ = [confidence.get(r, 0.0) for r in range(times.size) if times[r] != base[r]]
        out.append(Segment(start, stop, times, min(differ, default=1.0)))
    return out
