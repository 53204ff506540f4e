"""Recurring interference, forecast ahead: per worker, when its level will change and to what.

A co-tenant that takes a rank 2x for 50 of every 150 steps, two ranks taking
turns, a thermal throttle that ramps and resets: each repeats, so the next
change can be planned for before it happens. :class:`RecurrenceBank` keeps one
fixed-size window of relative times per worker slot (time per sample / fleet
median, per step), finds the period by autocorrelation, folds the last periods
into a per-phase template, cuts it into levels, and says how far to trust the
schedule: the share of the last ``scored_periods`` periods that the periods
before them predicted (0 until two periods are seen, at most 1/3 after two,
2/3 after three), scaled down as soon as the live steps stop matching it.

Verdicts: ``recurring`` (a schedule), ``too_short`` (it recurs, but a level lasts
fewer than ``min_level_steps``: the 10-step wave; a map applies only at a sync
point, every 8 steps by default, plus the loop's latency, so no plan can follow
it: say so, forecast nothing), ``flat`` (a period without levels worth a map) and
``none``.

Wiring (the processor, per batch of reports)::

    # every timing of the batch, in arrival order; slot = the worker's state slot
    bank.update(slots, epochs, steps, per_sample_s / fleet_median_of_its_job)
    f = bank.forecast(slot)                      # per prediction, O(levels)
    Prediction(..., forecast_offsets=f.offsets,
               forecast_time_per_sample_s=f.in_seconds(fleet_median_of_its_job),
               forecast_confidence=f.confidence,
               model_versions={..., "recurrence": f"{f.verdict.value}:{f.period}"})

- per timing, not per report: the period is counted in the rank's steps, and
  ``(epoch, step)`` orders them (replays are dropped, epoch ends carried over);
  a timing with 0 samples is a missing step (pass NaN);
- offsets count from the slot's latest kept ``(epoch, step)``: that is the
  prediction's ``based_on_step`` / ``based_on_epoch``;
- ``forget(slots)`` when a worker's slot expires and is reused;
- ``too_short``: no schedule, but ``Forecast.level_now`` is the period's mean;
  serving it as the level (instead of the next step's prediction) is what a plan
  held over a sync interval meets (``shardsense eval``: wave10 1.48 -> 1.32x the
  clairvoyant).

Offsets carry over epoch ends (the planner converts them). Cost (``shardsense
eval`` prints it; measured on this shared 2-core box): at 2,048 ranks x 5 steps/s
(10,240 timings/s, one batch a second) ~5 µs per timing including refits, ~5 µs
per forecast, ~5% of one core, ~11 MiB; a batch's update p99 ~125 ms (refits are
capped per update: ``max_fits_per_update``). Memory is fixed per slot:
``history_steps`` float32 + a ``max_period`` plan.

>>> bank = RecurrenceBank()
>>> t = np.arange(900)
>>> bank.update(np.zeros(900, np.int64), t // 200, t % 200, np.where(t % 150 < 50, 2.0, 1.0))
>>> f = bank.forecast(0)
>>> f.verdict.value, f.period, f.offsets[:2], [round(v, 2) for v in f.levels[:2]]
('recurring', 150, [1, 51], [2.0, 1.0])
>>> round(f.confidence, 2), f.in_seconds(0.01)[:2]
(1.0, [0.02, 0.01])
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt

from shardsense.events.prediction import MAX_FORECAST_POINTS
from stream_processors.recurrence.fit import (
    autocorrelation,
    backtest,
    fold,
    pick_period,
    rolling_median,
    segment,
)
from stream_processors.recurrence.positions import SlotPositions

__all__ = ["Forecast", "RecurrenceBank", "RecurrenceConfig", "Verdict"]

IntArray = npt.NDArray[np.int64]


class Verdict(Enum):
    """What the recurrence fit of one worker found."""

    NONE = "none"
    FLAT = "flat"
    TOO_SHORT = "too_short"
    RECURRING = "recurring"


_VERDICTS = tuple(Verdict)


@dataclass(frozen=True)
class RecurrenceConfig:
    """Knobs of the fit; defaults measured on ``shardsense eval``'s recurring families."""

    history_steps: int = 1024  # window per worker: 3 periods of the longest period sought
    min_period: int = 4
    max_period: int = 340
    refit_every: int = 32  # steps between fits while a schedule fails (2x while none found;
    # once per period while one holds)
    max_fits_per_update: int = 128  # bounds one update's time; the most overdue go first
    min_acf: float = 0.5
    min_prominence: float = 0.5
    min_change: float = 0.15  # a level differs from its neighbours by at least this
    min_level_steps: int = 16  # two sync intervals (runtime default 8): shorter is unplannable
    template_periods: int = 3
    scored_periods: int = 3
    hit_tolerance: float = 0.2  # an observation within 20% of the forecast level is a hit
    hit_share: float = 0.8  # a period is predicted if this share of its steps are hits
    live_steps: int = 16  # memory of the live check (steps)
    horizon_steps: int = 300

    def __post_init__(self) -> None:
        ints = ("history_steps", "min_period", "max_period", "refit_every",
                "max_fits_per_update", "min_level_steps",
                "template_periods", "scored_periods", "live_steps", "horizon_steps")
        for name in ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.min_period < self.max_period <= self.history_steps // 2:
            raise ValueError("max_period must be in (min_period, history_steps // 2] and "
                             f"min_period >= 2, got {self.min_period}..{self.max_period}")
        for name in ("min_acf", "min_prominence", "min_change", "hit_tolerance", "hit_share"):
            if not 0 < getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in (0, 2], got {getattr(self, name)}")


@dataclass(frozen=True)
class Forecast:
    """One worker's schedule: from ``offsets[i]`` steps ahead the level is ``levels[i]``.

    Levels are relative (time per sample / fleet median); ``level_now`` is the
    template's level at the current step, or for ``too_short`` the mean over a
    period: a plan is held a sync interval, so the mean is what it meets, not the
    next step's spike. Empty offsets = flat.
    """

    offsets: list[int] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    confidence: float = 0.0
    period: int = 0
    verdict: Verdict = Verdict.NONE
    level_now: float = math.nan

    def in_seconds(self, fleet_median_s: float) -> list[float]:
        """The levels as seconds per sample at today's fleet median."""
        return [v * fleet_median_s for v in self.levels]


class RecurrenceBank:
    """Recurrence state of many worker slots in arrays; slots are the caller's indices."""

    def __init__(self, capacity: int = 0, config: RecurrenceConfig | None = None) -> None:
        self.config = config or RecurrenceConfig()
        self.capacity = 0
        self._pos = SlotPositions.empty(0)
        self._values = np.empty((0, self.config.history_steps), np.float32)
        self._plan = np.empty((0, self.config.max_period), np.float32)
        self._last_fit = np.empty(0, np.int64)
        self._period = np.empty(0, np.int64)
        self._verdict = np.empty(0, np.int8)
        self._scored = np.empty(0, np.int64)
        self._live = np.empty((0, 2), np.float64)  # decayed (hits, steps)
        self._schedule: list[tuple[list[int], list[float]]] = []
        self.fits = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        cfg = self.config
        self._pos.grow(capacity)
        self._values = np.vstack([self._values, np.full((extra, cfg.history_steps), np.nan,
                                                        np.float32)])
        self._plan = np.vstack([self._plan, np.full((extra, cfg.max_period), np.nan,
                                                    np.float32)])
        self._last_fit = np.append(self._last_fit, self._first_fit(np.arange(self.capacity,
                                                                           capacity)))
        self._period = np.append(self._period, np.zeros(extra, np.int64))
        self._verdict = np.append(self._verdict, np.zeros(extra, np.int8))
        self._scored = np.append(self._scored, np.zeros(extra, np.int64))
        self._live = np.vstack([self._live, np.zeros((extra, 2))])
        self._schedule.extend(([], []) for _ in range(extra))
        self.capacity = capacity

    @property
    def memory_bytes(self) -> int:
        """Bytes of array state (bounded: fixed per slot)."""
        return sum(a.nbytes for a in (self._values, self._plan, self._last_fit, self._period,
                                      self._verdict, self._scored, self._live, self._pos.key,
                                      self._pos.position, self._pos.max_step))

    def forget(self, slots: npt.ArrayLike) -> None:
        """Clear slots (an expired worker's slot is reused by the next one)."""
        s = np.asarray(slots, np.int64)
        s = s[s < self.capacity]
        self._pos.reset(s)
        self._values[s] = np.nan
        self._plan[s] = np.nan
        self._last_fit[s] = self._first_fit(s)
        self._period[s], self._verdict[s], self._scored[s], self._live[s] = 0, 0, 0, 0.0
        for i in s.tolist():
            self._schedule[i] = ([], [])

    def update(self, slots: npt.ArrayLike, epochs: npt.ArrayLike, steps: npt.ArrayLike,
               relative: npt.ArrayLike) -> None:
        """Add timings in arrival order: slot, epoch, step, time per sample / fleet median.

        Non-finite or non-positive values are missing steps; replayed or reordered
        ``(epoch, step)`` are dropped. Slots due for a refit are refitted here.
        """
        s, e, st = (np.asarray(a, np.int64).ravel() for a in (slots, epochs, steps))
        v = np.asarray(relative, np.float64).ravel()
        if not len(s) == len(e) == len(st) == len(v):
            raise ValueError("slots, epochs, steps and relative must have the same length")
        if len(s) and s.min() < 0:
            raise ValueError("slots must be >= 0")
        ok = np.isfinite(v) & (v > 0)
        s, e, st, v = s[ok], e[ok], st[ok], v[ok]
        if not len(s):
            return
        self._grow(max(int(s.max()) + 1, 2 * self.capacity if s.max() >= self.capacity else 0))
        before = self._pos.position[s]
        kept, pos = self._pos.advance(s, e, st)
        s, v, before = s[kept], v[kept], before[kept]
        self._clear_gaps(s, pos, before)
        fresh = pos > self._pos.position[s] - self.config.history_steps
        s, v, pos = s[fresh], v[fresh], pos[fresh]
        self._values[s, pos % self.config.history_steps] = v
        self._live_check(s, pos, v)
        self._refit_due(np.unique(s))

    def _first_fit(self, slots: IntArray) -> IntArray:
        """Spread first fits over ``refit_every`` steps, so slots that start together
        do not all fall due in the same batch."""
        return np.asarray(-(slots * 7 % self.config.refit_every), np.int64)

    def _refit_due(self, slots: IntArray) -> None:
        """Refit the slots whose cadence came round: ``refit_every`` while a schedule
        fails its live check, once per period while it holds, 2x ``refit_every``
        while there is none; at most ``max_fits_per_update``, most overdue first."""
        cfg = self.config
        recurring = self._verdict[slots] == _VERDICTS.index(Verdict.RECURRING)
        hits, seen = self._live[slots, 0], self._live[slots, 1]
        failing = seen >= cfg.live_steps / 2
        failing &= hits < cfg.hit_share * np.maximum(seen, 1e-9)
        cadence = np.where(recurring, np.where(failing, cfg.refit_every,
                                               np.maximum(cfg.refit_every,
                                                          self._period[slots])),
                           2 * cfg.refit_every)
        overdue = self._pos.position[slots] - self._last_fit[slots] - cadence
        due = overdue >= 0
        if due.sum() > cfg.max_fits_per_update:
            due &= overdue >= np.sort(overdue)[-cfg.max_fits_per_update]
        if due.any():
            self._refit(slots[due][: cfg.max_fits_per_update])

    def _clear_gaps(self, s: IntArray, pos: IntArray, before: IntArray) -> None:
        """Blank the cells of steps that were never reported (rare: dropped timings).

        ``before`` is each row's slot position before this batch.
        """
        h = self.config.history_steps
        prev = np.empty_like(pos)
        if len(pos):
            order = np.lexsort((pos, s))
            so, po = s[order], pos[order]
            first = np.ones(len(s), bool)
            first[1:] = so[1:] != so[:-1]
            prev[order] = np.where(first, before[order], np.roll(po, 1))
        for i in np.flatnonzero(pos - prev > 1).tolist():
            lo, hi = int(prev[i]) + 1, int(pos[i])
            cells = np.arange(lo, hi) % h if hi - lo < h else slice(None)
            self._values[s[i], cells] = np.nan

    def _live_check(self, s: IntArray, pos: IntArray, v: npt.NDArray[np.float64]) -> None:
        """Decayed share of steps the current schedule got right (to drop a stale one fast)."""
        on = self._verdict[s] == _VERDICTS.index(Verdict.RECURRING)
        if not on.any():
            return
        s, pos, v = s[on], pos[on], v[on]
        pred = self._plan[s, pos % self._period[s]]
        hit = np.abs(v / pred - 1.0) <= self.config.hit_tolerance
        slot, inv = np.unique(s, return_inverse=True)
        n = np.bincount(inv).astype(np.float64)
        decay = (1.0 - 1.0 / self.config.live_steps) ** n
        self._live[slot, 0] = self._live[slot, 0] * decay + np.bincount(inv, weights=hit)
        self._live[slot, 1] = self._live[slot, 1] * decay + n

    def _refit(self, slots: IntArray) -> None:
        cfg = self.config
        h = cfg.history_steps
        p = self._pos.position[slots]
        idx = (p[:, None] - h + 1 + np.arange(h)[None, :]) % h
        windows = self._values[slots[:, None], idx].astype(np.float64)
        acf = autocorrelation(rolling_median(windows), min(cfg.max_period + 1, h - 1))
        for i, slot in enumerate(slots.tolist()):
            span = int(min(p[i] + 1, h))
            period = pick_period(acf[i], cfg.min_period, min(cfg.max_period, span // 2),
                                 cfg.min_acf, cfg.min_prominence)
            self._fit_one(slot, int(p[i]), period, windows[i][h - span :])
            self._last_fit[slot] = p[i]
        self.fits += len(slots)

    def _fit_one(self, slot: int, position: int, period: int,
                 window: npt.NDArray[np.float64]) -> None:
        """Template, levels and backtest of one slot whose ``window`` ends at ``position``."""
        cfg = self.config
        verdict = Verdict.NONE
        phases: list[int] = []
        levels: list[float] = []
        tmpl = _fill(fold(window, period, cfg.template_periods)) if period else None
        if tmpl is not None and period:
            start = (position - len(window) + 1) % period
            tmpl = np.roll(tmpl, start)  # index = absolute phase (position % period)
            varies = float(tmpl.max()) > float(tmpl.min()) * (1.0 + cfg.min_change)
            verdict = Verdict.TOO_SHORT if varies else Verdict.FLAT
            if varies and period >= 2 * cfg.min_level_steps:
                phases, levels = segment(tmpl, cfg.min_change, cfg.min_level_steps)
                verdict = Verdict.RECURRING if len(phases) > 1 else Verdict.TOO_SHORT
        if self._period[slot] != period:
            self._live[slot] = 0.0
        self._period[slot] = period
        self._verdict[slot] = _VERDICTS.index(verdict)
        self._plan[slot] = np.nan
        if verdict is Verdict.RECURRING:
            self._schedule[slot] = (phases, levels)
            bounds = [*phases, period + phases[0]]
            for j, level in enumerate(levels):
                ph = np.arange(bounds[j], bounds[j + 1]) % period
                self._plan[slot, ph] = level
            self._scored[slot] = backtest(window, period, cfg.template_periods,
                                          cfg.scored_periods, cfg.hit_tolerance, cfg.hit_share)
        else:  # a too-short recurrence keeps its mean: the level a held plan meets on average
            mean = [float(tmpl.mean())] if verdict is Verdict.TOO_SHORT and tmpl is not None else []
            self._schedule[slot] = ([], mean)
            self._scored[slot] = 0

    def forecast(self, slot: int) -> Forecast:
        """The schedule from the slot's latest step on (cheap: no numpy on the way)."""
        if not 0 <= slot < self.capacity:
            return Forecast()
        verdict = _VERDICTS[int(self._verdict[slot])]
        period = int(self._period[slot])
        if verdict is not Verdict.RECURRING:
            mean = self._schedule[slot][1]
            return Forecast(period=period, verdict=verdict, level_now=mean[0] if mean else math.nan)
        cfg = self.config
        phases, levels = self._schedule[slot]
        now = int(self._pos.position[slot]) % period
        level_now = levels[bisect.bisect_right(phases, now) - 1]
        points = []
        for phase, level in zip(phases, levels, strict=True):
            off = (phase - now) % period or period
            while off <= cfg.horizon_steps:
                points.append((off, level))
                off += period
        points.sort()
        points = points[:MAX_FORECAST_POINTS]
        hits, seen = (float(x) for x in self._live[slot])
        live = min(1.0, hits / seen / cfg.hit_share) if seen >= 1 else 1.0
        confidence = self._scored[slot] / cfg.scored_periods * live
        return Forecast([o for o, _ in points], [lv for _, lv in points],
                        float(min(max(confidence, 0.0), 1.0)), period, verdict, level_now)

    def forecasts(self, slots: npt.ArrayLike) -> list[Forecast]:
        return [self.forecast(int(s)) for s in np.asarray(slots, np.int64).ravel()]


def _fill(tmpl: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Phases never observed take their circular neighbours' value; None if too many."""
    ok = np.isfinite(tmpl) & (tmpl > 0)
    if ok.all():
        return tmpl
    if ok.mean() < 0.75:
        return None
    x = np.arange(len(tmpl))
    return np.asarray(np.interp(x, x[ok], tmpl[ok], period=len(tmpl)), dtype=np.float64)
