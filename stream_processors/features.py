"""The forecasters' inputs for one worker: the per-worker reference semantics.

:class:`LagFeatures` sees one value per *tick* (``stream_processors.ticks``: a
block of steps) and builds the forecasters' relative inputs: everything is
divided by the worker's own rolling median (``ref``), so trees and linear models
never see raw milliseconds and a level shift does not leave them extrapolating.

The processor computes the same inputs for every rank of a batch at once
(``stream_processors.lags.LagColumns``, tested equal to this class); this one
stays the readable definition, and is what ``shardsense eval`` and the XGBoost
retrain replay. Plain objects, not Faust tables: a Faust table cannot be written
inside ``stream.take()`` (faust-streaming #497), and the state is rebuilt from
ClickHouse anyway (``Predictor.replay``, a job's stored ticks).

>>> lf = LagFeatures()
>>> for y in [1.0, 1.0, 2.0, 1.0]:
...     x = lf.features(fleet=1.0)
...     lf.update(y, fleet=1.0)
>>> round(lf.features(fleet=1.0)["lag1"], 3), round(lf.ref, 3)
(1.0, 1.0)
"""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np

__all__ = ["FEATURE_NAMES", "FleetState", "LagFeatures", "detect_period"]

#: Inputs of every forecaster, in the order XGBoost sees them.
FEATURE_NAMES = (
    "lag1", "lag2", "lag3", "ewma", "mean8", "trend", "season", "season_prev",
    "slow1", "fleet_rel", "fleet_trend",
)

class FleetState:
    """The latest level (EWMA time per sample) of every worker of one job.

    The fleet median is what "slow" is relative to: dividing by it removes
    fleet-wide fluctuations (shared storage, network) that would otherwise
    look like every worker becoming a straggler at once.
    """

    def __init__(self) -> None:
        self.levels: dict[int, float] = {}

    def set(self, worker_id: int, level: float) -> None:
        if level == level and level > 0:  # not NaN
            self.levels[worker_id] = level

    def median(self, default: float = 0.0) -> float:
        return statistics.median(self.levels.values()) if self.levels else default


def detect_period(values: np.ndarray, min_lag: int = 2, max_lag: int = 200,
                  min_acf: float = 0.3) -> int:
    """Dominant period of ``values`` by autocorrelation, or 0 if there is none.

    >>> t = np.arange(600)
    >>> detect_period(1.0 + (t % 25 < 4) + 0.01 * np.sin(t))
    25
    >>> detect_period(np.random.default_rng(0).normal(size=600))
    0
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    max_lag = min(max_lag, n // 3)
    if max_lag <= min_lag:
        return 0
    x = x - x.mean()
    denom = float((x * x).sum())
    if denom <= 0:
        return 0
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[: max_lag + 1] / denom
    a = [float(v) for v in acf]
    # local maxima only: a slowly varying series has high acf at every small lag
    peaks = [(a[lag], lag) for lag in range(min_lag, max_lag + 1)
             if a[lag - 1] < a[lag] >= a[min(lag + 1, max_lag)]]
    if not peaks:
        return 0
    best, lag = max(peaks)
    return lag if best >= min_acf else 0


class LagFeatures:
    """Relative lag, level, trend, seasonal and fleet features of one worker's ticks.

    Call :meth:`features` before a tick's value is known (predict), then
    :meth:`update` with the value (learn): the predict-then-learn order of
    progressive validation. ``ref`` (the rolling median of the last ``ref_window``
    values) converts relative predictions back to seconds.
    """

    def __init__(self, ref_window: int = 32, history: int = 512, alpha: float = 0.3,
                 period_every: int = 64) -> None:
        self.ref_window = ref_window
        self.alpha = alpha
        self.period_every = period_every
        self.values: deque[float] = deque(maxlen=history)
        self.fleet: deque[float] = deque(maxlen=ref_window)
        self.ewma = float("nan")
        self.ref = float("nan")
        self.period = 0
        self.ticks = 0

    def _rel(self, lag: int) -> float:
        if lag <= len(self.values) and self.ref > 0:
            return self.values[-lag] / self.ref
        return 1.0

    def features(self, fleet: float) -> dict[str, float]:
        """Inputs for predicting the next value (all ~1.0 when nothing is known)."""
        if not self.values or not self.ref > 0:
            return dict.fromkeys(FEATURE_NAMES, 1.0) | {"trend": 0.0}
        vals = self.values
        recent = list(vals)[-8:]
        mean8 = sum(recent) / len(recent) / self.ref
        trend = 0.0
        if len(recent) >= 4:
            half = len(recent) // 2
            trend = (sum(recent[half:]) / (len(recent) - half)
                     - sum(recent[:half]) / half) / self.ref
        season = season_prev = 1.0
        p = self.period
        if p and len(vals) > p:
            lags = [k * p for k in (1, 2, 3) if k * p <= len(vals)]
            season = sum(self._rel(lag) for lag in lags) / len(lags)
            season_prev = sum(self._rel(lag + 1) for lag in lags) / len(lags)
        fleet_ref = statistics.median(self.fleet) if self.fleet else fleet
        last_fleet = self.fleet[-1] if self.fleet else fleet
        return {
            "lag1": self._rel(1),
            "lag2": self._rel(2),
            "lag3": self._rel(3),
            "ewma": self.ewma / self.ref,
            "mean8": mean8,
            "trend": trend,
            "season": season,
            "season_prev": season_prev,
            "slow1": vals[-1] / last_fleet if last_fleet > 0 else 1.0,
            "fleet_rel": fleet / fleet_ref if fleet_ref > 0 else 1.0,
            "fleet_trend": last_fleet / fleet_ref if fleet_ref > 0 else 1.0,
        }

    def update(self, y: float, fleet: float) -> None:
        """Record the tick's value and the fleet median it was measured against."""
        self.values.append(y)
        if fleet > 0:
            self.fleet.append(fleet)
        self.ewma = y if self.ewma != self.ewma else self.ewma + self.alpha * (y - self.ewma)
        last = list(self.values)[-self.ref_window :]
        self.ref = statistics.median(last)
        self.ticks += 1
        if self.ticks % self.period_every == 0 and len(self.values) >= 96 and self.ref > 0:
            self.period = detect_period(np.asarray(self.values) / self.ref)
