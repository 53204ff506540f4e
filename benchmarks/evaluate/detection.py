"""Onset detection: delay in batches to flag a 1.5x onset, and false alarms without one."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.evaluate.families import make_trace
from stream_processors.drift import StragglerDetector
from stream_processors.features import FleetState

__all__ = ["detection"]


def detection(trials: int = 40, seed: int = 0, ticks: int = 1500, workers: int = 8,
              factor: float = 1.5) -> tuple[list[int], int, int, int]:
    """Onset delays (batches, 1 = flagged on the first slow batch), misses,
    false alarms and batches without an onset, over noisy and shared-fluctuation fleets."""
    rng = np.random.default_rng(seed)
    delays: list[int] = []
    misses = false_alarms = clean = 0
    for trial in range(trials):
        family = ("noise", "shared", "periodic-free")[trial % 3]
        tps = make_trace("noise" if family == "periodic-free" else family,
                         seed * 1000 + trial, ticks, workers)
        slow = int(rng.integers(workers))
        onset = int(rng.integers(300, ticks - 200))
        tps[onset:, slow] *= factor
        detectors = [StragglerDetector() for _ in range(workers)]
        levels = FleetState()
        ewma = [float("nan")] * workers
        found = None
        for t in range(ticks):
            m = levels.median(default=float(np.median(tps[t])))
            for w in range(workers):
                y = float(tps[t, w])
                alarm = detectors[w].update(y / m)
                if w == slow and t >= onset:
                    if alarm and found is None:
                        found = t - onset + 1
                    elif alarm and t - onset >= 100:
                        false_alarms += 1
                else:
                    clean += 1
                    false_alarms += int(alarm)
                e = ewma[w]
                ewma[w] = y if math.isnan(e) else e + 0.3 * (y - e)
                levels.set(w, ewma[w])
        if found is None or found > 100:
            misses += 1
        else:
            delays.append(found)
    return delays, misses, false_alarms, clean

