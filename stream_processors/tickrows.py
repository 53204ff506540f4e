"""``worker_features`` rows, one per completed tick: window statistics over ticks.

The window is a rank's last :data:`WINDOW` tick values (its lag history), so a
row costs a few vector operations per round, not a pass over raw batches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shardsense.tables import FeatureRow
from stream_processors.slots import SlotTable
from stream_processors.ticks import Ticks

__all__ = ["STATS", "WINDOW", "tick_rows", "window_stats"]

#: Ticks the rows' mean, percentiles and trend are taken over.
WINDOW = 32
#: Columns of :func:`window_stats`' output.
STATS = ("ewma", "mean", "p50", "p90", "trend")
#: Ticks needed before a trend is reported.
TREND_MIN = 8


def window_stats(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean, median, 90th percentile (linear, as numpy's) and trend of each row's first
    ``count`` values, ``(n, 4)``; the trend is the least-squares slope per value over
    the mean (0 below ``TREND_MIN`` values).

    >>> window_stats(np.array([[1., 2., 3., 4., 5., 6., 7., 8., 9.]]), np.array([9])).round(3)
    array([[5. , 5. , 8.2, 0.2]])
    """
    n, w = values.shape
    valid = np.arange(w)[None, :] < count[:, None]
    c = np.maximum(count, 1)
    v = np.where(valid, values, 0.0)
    mean = v.sum(axis=1) / c
    s = np.where(valid, values, np.inf)
    s.sort(axis=1)
    rows = np.arange(n)

    def quantile(q: float) -> np.ndarray:
        pos = q * (c - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        return s[rows, lo] + (pos - lo) * (s[rows, hi] - s[rows, lo])

    x = np.arange(w)[None, :] - (c[:, None] - 1) / 2.0
    x = np.where(valid, x, 0.0)
    slope = (x * (v - mean[:, None]) * valid).sum(axis=1) / np.maximum((x * x).sum(axis=1),
                                                                       1e-300)
    trend = np.where((count >= TREND_MIN) & (mean > 0), slope / np.where(mean > 0, mean, 1.0),
                     0.0)
    out = np.stack([mean, quantile(0.5), quantile(0.9), trend], axis=1)
    out[count == 0] = np.nan
    return out


def tick_rows(table: SlotTable, ticks: Ticks, stats: np.ndarray, batches: np.ndarray,
              fleet: np.ndarray, row_id: Callable[[str, int, int], str]) -> list[FeatureRow]:
    """One row per tick: ``stats`` columns as :data:`STATS`, ``batches`` the rank's
    batch count after the tick, ``fleet`` the fleet median the tick was measured against."""
    out = []
    slowdown = np.where(fleet > 0, stats[:, 0] / np.where(fleet > 0, fleet, 1.0), 1.0)
    epoch = ticks.epoch.tolist()
    columns = zip(ticks.slot.tolist(), ticks.key.tolist(), ticks.end_ts.tolist(),
                  ticks.last_step.tolist(), batches.tolist(), ticks.value.tolist(),
                  stats.tolist(), _share(ticks.wait_s, ticks.total_s).tolist(), slowdown.tolist(),
                  epoch, strict=True)
    for slot, key, ts, step, n, value, (ewma, mean, p50, p90, trend), wait, slow, e in columns:
        key_of = table.keys[slot]
        assert key_of is not None
        job, worker = key_of
        out.append(FeatureRow(job, worker, row_id(job, worker, key), ts, step, n, value, ewma,
                              mean, p50, p90, trend, wait, slow, e))
    return out


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.where(whole > 0, part / np.where(whole > 0, whole, 1.0), 0.0)
