"""Rolling per-worker state: the ``worker_features`` row and the models' inputs.

Plain objects, not Faust tables: a Faust table cannot be written inside
``stream.take()`` (faust-streaming #497), and the state is rebuilt from
ClickHouse on start anyway (``Predictor.warm_start``).

Two granularities, both cheap:

* :class:`WorkerStats` sees every batch timing of a report (vectorised with
  numpy) and yields one ``worker_features`` row per report.
* :class:`LagFeatures` sees one value per *tick* (one report's time per sample)
  and builds the forecasters' relative inputs: everything is divided by the
  worker's own rolling median (``ref``), so trees and linear models never see
  raw milliseconds and a level shift does not leave them extrapolating.

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

from shardsense.tables import FeatureRow

__all__ = [
    "FEATURE_NAMES",
    "FeatureRow",
    "FleetState",
    "LagFeatures",
    "WorkerStats",
    "detect_period",
]

#: Inputs of every forecaster, in the order XGBoost sees them.
FEATURE_NAMES = (
    "lag1", "lag2", "lag3", "ewma", "mean8", "trend", "season", "season_prev",
    "slow1", "fleet_rel", "fleet_trend",
)

class WorkerStats:
    """Windowed statistics over a worker's last ``window`` batches (time per sample).

    ``trend`` is the least-squares slope of time per sample over the window, as a
    fraction of the window mean per batch (0.01 = getting 1% slower each batch).
    """

    def __init__(self, window: int = 256, alpha: float = 0.2) -> None:
        self.window = window
        self.alpha = alpha
        self._per_sample_s: np.ndarray = np.empty(0)
        self._wait: np.ndarray = np.empty(0)
        self._total: np.ndarray = np.empty(0)
        self.ewma = float("nan")
        self.batches = 0
        self.last_step = 0

    def observe(
        self, samples: list[int], wait_s: list[float], compute_s: list[float], steps: list[int]
    ) -> tuple[float, np.ndarray] | None:
        """Add one report's timings; return its time per sample and each batch's
        (None if no batch had samples)."""
        n = np.asarray(samples, dtype=float)
        w = np.asarray(wait_s, dtype=float)
        total = w + np.asarray(compute_s, dtype=float)
        ok = n > 0
        if steps:
            self.last_step = max(self.last_step, max(steps))
        if not ok.any():
            return None
        per_sample_s = total[ok] / n[ok]
        # EWMA over the batches in order, in closed form (no Python loop per timing).
        if np.isnan(self.ewma):
            self.ewma = float(per_sample_s[0])
        decay = (1.0 - self.alpha) ** np.arange(len(per_sample_s) - 1, -1, -1)
        self.ewma = float(
            (1.0 - self.alpha) ** len(per_sample_s) * self.ewma
            + self.alpha * (decay * per_sample_s).sum()
        )
        self._per_sample_s = np.concatenate([self._per_sample_s, per_sample_s])[-self.window :]
        self._wait = np.concatenate([self._wait, w[ok]])[-self.window :]
        self._total = np.concatenate([self._total, total[ok]])[-self.window :]
        self.batches += int(ok.sum())
        return float(total[ok].sum() / n[ok].sum()), per_sample_s

    def row(
        self, job_id: str, worker_id: int, event_id: str, ts: float, per_sample_s: float,
        fleet: float,
    ) -> FeatureRow:
        """The ``worker_features`` row after the latest :meth:`observe`."""
        win = self._per_sample_s
        mean = float(win.mean())
        p50, p90 = (float(v) for v in np.percentile(win, [50, 90]))
        trend = 0.0
        if len(win) >= 8 and mean > 0:
            idx = np.arange(len(win), dtype=float)
            trend = float(np.polyfit(idx, win, 1)[0] / mean)
        total = float(self._total.sum())
        share = float(self._wait.sum() / total) if total > 0 else 0.0
        slowdown = self.ewma / fleet if fleet > 0 else 1.0
        return FeatureRow(
            job_id, worker_id, event_id, ts, self.last_step, self.batches, per_sample_s,
            float(self.ewma), mean, p50, p90, trend, share, float(slowdown),
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
