"""Straggler onset for every rank at once: :class:`~stream_processors.drift.StragglerDetector`
over columns, plus where the change began and the level since then.

Per rank the arithmetic is exactly the reference detector's (River's
``PageHinkley`` in upward mode on the relative slowdown divided by the rank's own
baseline, clipped; the smoothed slowdown; the hold after an alarm): a test feeds
both the same points and compares every alarm. Each call of :meth:`OnsetColumns.update`
is one *round*: at most one point per rank, so a batch's points advance in
``slots.rounds`` order, as they would one by one.

What the reference does not have: Page-Hinkley's cumulative sum is lowest just
before an upward change, so the point after its running minimum is the change
point's estimate. Each rank keeps the time and samples accumulated since that
candidate; an alarm makes it the rank's *onset* (``onset_epoch``/``onset_step``)
and starts the *level* since the onset (``level_s``: seconds per sample), which
the predictor serves at once instead of waiting for its forecasters to ramp up.

A *recovery* is the same in the other direction: a second Page-Hinkley (River's
``mode="down"``, run as ``mode="up"`` on the negated input) on the same points, its
change point the point after its running extreme. It moves the onset and the level
to where the rank sped up again, and ends the alarm's hold. Without it a rank that
recovered (a co-tenant's burst ending, a throttle resetting) kept its slow forecast
while the forecasters ramped down: 55-95 steps on the bench's burst (2026-12-01),
most of a 100-step fast phase.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from stream_processors.slots import SlotColumns

__all__ = ["OnsetColumns"]

_F = np.float64
_I = np.int64


class OnsetColumns(SlotColumns):
    """Page-Hinkley, baseline, smoothed slowdown and onset tracking per slot.

    Parameters as :class:`~stream_processors.drift.StragglerDetector` (same defaults).
    """

    FIELDS: ClassVar[dict[str, tuple[Any, Any, tuple[int, ...]]]] = {
        "ph_n": (0, _I, ()), "ph_mean": (0.0, _F, ()), "ph_sum": (0.0, _F, ()),
        "ph_min": (np.inf, _F, ()), "ph_drift": (False, bool, ()),
        "baseline": (np.nan, _F, ()), "smoothed": (1.0, _F, ()), "since_alarm": (0, _I, ()),
        "alarms": (0, _I, ()), "seen": (0, _I, ()),
        # the candidate change point: the point after Page-Hinkley's running minimum
        "at_min": (False, bool, ()), "cand_epoch": (0, _I, ()), "cand_step": (0, _I, ()),
        "cand_total_s": (0.0, _F, ()), "cand_samples": (0.0, _F, ()),
        # the onset of the current level (0 = none yet) and the level since it
        "onset_epoch": (0, _I, ()), "onset_step": (0, _I, ()),
        "level_total_s": (0.0, _F, ()), "level_samples": (0.0, _F, ()),
        # the recovery detector (Page-Hinkley downwards) and its candidate change point
        "dn_n": (0, _I, ()), "dn_mean": (0.0, _F, ()), "dn_sum": (0.0, _F, ()),
        "dn_min": (np.inf, _F, ()), "dn_drift": (False, bool, ()),
        "dn_at_min": (False, bool, ()), "dn_epoch": (0, _I, ()), "dn_step": (0, _I, ()),
        "dn_total_s": (0.0, _F, ()), "dn_samples": (0.0, _F, ()), "recoveries": (0, _I, ()),
    }
    ph_n: np.ndarray
    ph_mean: np.ndarray
    ph_sum: np.ndarray
    ph_min: np.ndarray
    ph_drift: np.ndarray
    baseline: np.ndarray
    smoothed: np.ndarray
    since_alarm: np.ndarray
    alarms: np.ndarray
    seen: np.ndarray
    at_min: np.ndarray
    cand_epoch: np.ndarray
    cand_step: np.ndarray
    cand_total_s: np.ndarray
    cand_samples: np.ndarray
    onset_epoch: np.ndarray
    onset_step: np.ndarray
    level_total_s: np.ndarray
    level_samples: np.ndarray
    dn_n: np.ndarray
    dn_mean: np.ndarray
    dn_sum: np.ndarray
    dn_min: np.ndarray
    dn_drift: np.ndarray
    dn_at_min: np.ndarray
    dn_epoch: np.ndarray
    dn_step: np.ndarray
    dn_total_s: np.ndarray
    dn_samples: np.ndarray
    recoveries: np.ndarray

    def __init__(self, delta: float = 0.1, threshold: float = 0.8, min_instances: int = 20,
                 clip: float = 1.9, level: float = 1.3, hold: int = 50, alpha: float = 0.1,
                 baseline_alpha: float = 0.02, ph_alpha: float = 0.9999) -> None:
        self.delta, self.threshold, self.min_instances = delta, threshold, min_instances
        self.clip, self.level, self.hold = clip, level, hold
        self.alpha, self.baseline_alpha, self.ph_alpha = alpha, baseline_alpha, ph_alpha
        super().__init__()
        #: The slots of the last :meth:`update` whose point raised a recovery (its mask).
        self.recovered = np.zeros(0, dtype=bool)

    def fields(self) -> dict[str, tuple[Any, Any, tuple[int, ...]]]:
        return {**self.FIELDS, "since_alarm": (self.hold, _I, ())}

    def update(self, slots: np.ndarray, slowdown: np.ndarray, total_s: np.ndarray,
               samples: np.ndarray, epoch: np.ndarray, step: np.ndarray) -> np.ndarray:
        """One point per slot (relative slowdown, its seconds and samples, its first
        epoch/step); returns the mask of slots whose point raised an onset alarm
        (:attr:`recovered` then holds the mask of those that raised a recovery)."""
        x = np.clip(slowdown, 0.0, self.clip)
        self.seen[slots] += 1
        self.smoothed[slots] += self.alpha * (x - self.smoothed[slots])
        self.since_alarm[slots] += 1
        base = self.baseline[slots]
        base = np.where(np.isnan(base), x, base)
        z = np.where(base > 0, np.minimum(x / np.where(base > 0, base, 1.0), self.clip), x)
        self.baseline[slots] = base + self.baseline_alpha * (x - base)
        alarm, new_min = self._page_hinkley(slots, z)
        self._track("cand", "at_min", slots, new_min, total_s, samples, epoch, step)
        self._start_levels(slots, alarm, total_s, samples)
        self.recovered = self._recover(slots, z, total_s, samples, epoch, step) & ~alarm
        return alarm

    def _page_hinkley(self, slots: np.ndarray, z: np.ndarray, prefix: str = "ph"
                      ) -> tuple[np.ndarray, np.ndarray]:
        """River's PageHinkley (mode "up") over the fields ``<prefix>_n|mean|sum|min|drift``:
        reset after an alarm, then the update; returns (alarm, new running minimum)."""
        col = {name: getattr(self, f"{prefix}_{name}") for name in ("n", "mean", "sum", "min",
                                                                   "drift")}
        reset = col["drift"][slots]
        n = np.where(reset, 0, col["n"][slots]) + 1
        mean = np.where(reset, 0.0, col["mean"][slots])
        mean = mean + (z - mean) / n
        total = self.ph_alpha * np.where(reset, 0.0, col["sum"][slots]) + (z - mean) - self.delta
        low = np.where(reset, np.inf, col["min"][slots])
        new_min = total < low
        low = np.where(new_min, total, low)
        drift = (n >= self.min_instances) & (total - low > self.threshold)
        col["n"][slots], col["mean"][slots], col["sum"][slots] = n, mean, total
        col["min"][slots], col["drift"][slots] = low, drift
        return drift, new_min

    def _track(self, prefix: str, flag: str, slots: np.ndarray, extreme: np.ndarray,
               total_s: np.ndarray, samples: np.ndarray, epoch: np.ndarray,
               step: np.ndarray) -> None:
        """A change-point candidate (fields ``<prefix>_total_s|samples|epoch|step``)
        restarts at the point after a running extreme (``flag``); others add to it."""
        start = getattr(self, flag)[slots]
        for name, value in (("total_s", total_s), ("samples", samples)):
            col = getattr(self, f"{prefix}_{name}")
            col[slots] = np.where(start, 0.0, col[slots]) + value
        for name, value in (("epoch", epoch), ("step", step)):
            col = getattr(self, f"{prefix}_{name}")
            col[slots] = np.where(start, value, col[slots])
        getattr(self, flag)[slots] = extreme

    def _start_levels(self, slots: np.ndarray, alarm: np.ndarray, total_s: np.ndarray,
                      samples: np.ndarray) -> None:
        """An alarm turns the candidate into the onset; otherwise the level grows."""
        fired = slots[alarm]
        self.alarms[fired] += 1
        self.since_alarm[fired] = 0
        self.onset_epoch[fired] = self.cand_epoch[fired]
        self.onset_step[fired] = self.cand_step[fired]
        held = slots[~alarm]
        self.level_total_s[held] += total_s[~alarm]
        self.level_samples[held] += samples[~alarm]
        self.level_total_s[fired] = self.cand_total_s[fired]
        self.level_samples[fired] = self.cand_samples[fired]

    def _recover(self, slots: np.ndarray, z: np.ndarray, total_s: np.ndarray,
                 samples: np.ndarray, epoch: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Page-Hinkley downwards (upwards on ``-z``: River's ``mode="down"`` with its
        sums negated); a recovery moves the onset and the level to its change point (the
        point after the running extreme) and ends the hold."""
        drift, new_min = self._page_hinkley(slots, -z, prefix="dn")
        self._track("dn", "dn_at_min", slots, new_min, total_s, samples, epoch, step)
        up = slots[drift]
        self.recoveries[up] += 1
        self.since_alarm[up] = np.maximum(self.since_alarm[up], self.hold)
        self.onset_epoch[up], self.onset_step[up] = self.dn_epoch[up], self.dn_step[up]
        self.level_total_s[up], self.level_samples[up] = self.dn_total_s[up], self.dn_samples[up]
        return drift

    def straggler(self, slots: np.ndarray) -> np.ndarray:
        """The planner's flag: a fresh onset, or a persistently slow rank."""
        return (self.since_alarm[slots] < self.hold) | (self.smoothed[slots] >= self.level)

    def level_s(self, slots: np.ndarray) -> np.ndarray:
        """Seconds per sample since the onset (NaN before any)."""
        n = self.level_samples[slots]
        return np.where(n > 0, self.level_total_s[slots] / np.where(n > 0, n, 1.0), np.nan)
