"""The forecasters' inputs for every rank at once: :class:`~stream_processors.features.LagFeatures`
over columns.

Per slot the same state as the reference (the last ``history`` tick values, the
last ``ref_window`` fleet medians, the EWMA, ``ref`` = the median of the last
``ref_window`` values, the detected period) and the same arithmetic: a test
compares :meth:`LagColumns.features` with ``LagFeatures.features`` tick by tick.
Each :meth:`LagColumns.update` is one round (a slot at most once).

:meth:`LagColumns.relevel` is what the reference lacks: after an onset alarm the
rank's recent history is the new level, so ``ref``, the EWMA and the lags say
"steady at the new level" at once instead of ramping over ``ref_window`` ticks.

>>> lc = LagColumns()
>>> lc.ensure(2)
>>> s = np.array([0, 1])
>>> for y in [1.0, 1.0, 2.0, 1.0]:
...     lc.update(s, np.array([y, 2 * y]), np.array([1.0, 1.0]))
>>> lc.features(s, np.array([1.0, 1.0]))[:, 0].tolist(), lc.ref.tolist()
([1.0, 1.0], [1.0, 2.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream_processors.features import FEATURE_NAMES, detect_period
from stream_processors.slots import SlotColumns

__all__ = ["COL", "LagColumns", "window_median"]

#: Column of each feature in the inputs matrix (``FEATURE_NAMES`` order).
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_F = np.float64
_I = np.int64


def window_median(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Row medians of the first ``count`` entries of each row (NaN where count is 0).

    >>> window_median(np.array([[3., 1., 9.], [4., 5., 0.]]), np.array([3, 2])).tolist()
    [3.0, 4.5]
    """
    n, w = values.shape
    if len(count) != n:
        raise ValueError(f"count: {len(count)} rows, values has {n}")
    v = np.where(np.arange(w) < count[:, None], values, np.nan)
    v.sort(axis=1)  # NaN last
    rows = np.arange(n)
    c = np.maximum(count, 1)
    med = (v[rows, (c - 1) // 2] + v[rows, c // 2]) / 2
    return np.where(count > 0, med, np.nan)


class LagColumns(SlotColumns):
    """Per slot: tick history, fleet history, EWMA, ref, period (see the module doc)."""

    hist: np.ndarray
    fleet: np.ndarray
    ticks: np.ndarray
    fleet_ticks: np.ndarray
    ewma: np.ndarray
    ref: np.ndarray
    period: np.ndarray

    def __init__(self, ref_window: int = 32, history: int = 512, alpha: float = 0.3,
                 period_every: int = 64) -> None:
        if not 1 <= ref_window <= history:
            raise ValueError(f"ref_window must be in 1..history, got {ref_window}")
        self.ref_window, self.history = ref_window, history
        self.alpha, self.period_every = alpha, period_every
        super().__init__()

    def fields(self) -> dict[str, tuple[Any, Any, tuple[int, ...]]]:
        return {"hist": (np.nan, _F, (self.history,)), "fleet": (np.nan, _F, (self.ref_window,)),
                "ticks": (0, _I, ()), "fleet_ticks": (0, _I, ()), "ewma": (np.nan, _F, ()),
                "ref": (np.nan, _F, ()), "period": (0, _I, ())}

    # ------------------------------------------------------------ reading

    def last(self, slots: np.ndarray, lags: np.ndarray) -> np.ndarray:
        """Values ``lags`` ticks back (1 = the last), shape ``(n, k)``; NaN where unknown."""
        t = self.ticks[slots][:, None]
        pos = (t - lags) % self.history
        v = self.hist[slots[:, None], pos]
        return np.where((lags >= 1) & (lags <= np.minimum(t, self.history)), v, np.nan)

    def window(self, slots: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``width`` values oldest first, left-aligned (NaN padded), and counts."""
        count = np.minimum(self.ticks[slots], width)
        lags = count[:, None] - np.arange(width)[None, :]
        return self.last(slots, lags), count

    def _rel(self, slots: np.ndarray, lags: np.ndarray, ref: np.ndarray) -> np.ndarray:
        v = self.last(slots, lags[:, None])[:, 0]
        ok = np.isfinite(v) & (ref > 0)
        return np.where(ok, v / np.where(ref > 0, ref, 1.0), 1.0)

    def features(self, slots: np.ndarray, fleet: np.ndarray) -> np.ndarray:
        """Inputs for predicting each slot's next tick, ``(n, len(FEATURE_NAMES))``."""
        n = len(slots)
        ref = self.ref[slots]
        count = np.minimum(self.ticks[slots], self.history)
        known = (count > 0) & (ref > 0)
        safe_ref = np.where(ref > 0, ref, 1.0)
        X = np.ones((n, len(FEATURE_NAMES)))
        X[:, COL["trend"]] = 0.0
        for k in (1, 2, 3):
            X[:, COL[f"lag{k}"]] = self._rel(slots, np.full(n, k), ref)
        X[:, COL["ewma"]] = self.ewma[slots] / safe_ref
        self._recent(slots, X, safe_ref)
        self._season(slots, X, ref, count)
        self._fleet(slots, X, fleet)
        X[~known] = 1.0
        X[~known, COL["trend"]] = 0.0
        return X

    def _recent(self, slots: np.ndarray, X: np.ndarray, ref: np.ndarray) -> None:
        """``mean8`` and ``trend`` over the last (up to) 8 values."""
        recent, m = self.window(slots, 8)
        m_safe = np.maximum(m, 1)
        X[:, COL["mean8"]] = np.nansum(recent, axis=1) / m_safe / ref
        half = m // 2
        pos = np.arange(8)[None, :]
        first = pos < half[:, None]
        second = (pos >= half[:, None]) & (pos < m[:, None])
        a = np.where(first, recent, 0.0).sum(axis=1) / np.maximum(half, 1)
        b = np.where(second, recent, 0.0).sum(axis=1) / np.maximum(m - half, 1)
        X[:, COL["trend"]] = np.where(m >= 4, (b - a) / ref, 0.0)

    def _season(self, slots: np.ndarray, X: np.ndarray, ref: np.ndarray,
                count: np.ndarray) -> None:
        """Mean relative value 1, 2 and 3 periods back (and one tick before each)."""
        p = self.period[slots]
        has = (p > 0) & (count > p)
        season = np.zeros(len(slots))
        prev = np.zeros(len(slots))
        used = np.zeros(len(slots))
        for k in (1, 2, 3):
            ok = has & (k * p <= count)
            season += np.where(ok, self._rel(slots, k * p, ref), 0.0)
            prev += np.where(ok, self._rel(slots, k * p + 1, ref), 0.0)
            used += ok
        X[:, COL["season"]] = np.where(has, season / np.maximum(used, 1), 1.0)
        X[:, COL["season_prev"]] = np.where(has, prev / np.maximum(used, 1), 1.0)

    def _fleet(self, slots: np.ndarray, X: np.ndarray, fleet: np.ndarray) -> None:
        """``slow1`` against the last fleet median seen, and the fleet's own trend."""
        w = self.ref_window
        fcount = np.minimum(self.fleet_ticks[slots], w)
        lags = fcount[:, None] - np.arange(w)[None, :]
        pos = (self.fleet_ticks[slots][:, None] - lags) % w
        ring = np.where(lags >= 1, self.fleet[slots[:, None], pos], np.nan)
        has = fcount > 0
        fleet_ref = np.where(has, window_median(ring, fcount), fleet)
        last_pos = (self.fleet_ticks[slots] - 1) % w
        last_fleet = np.where(has, self.fleet[slots, last_pos], fleet)
        last_value = self.last(slots, np.ones((len(slots), 1), dtype=_I))[:, 0]
        ok = last_fleet > 0
        X[:, COL["slow1"]] = np.where(ok, last_value / np.where(ok, last_fleet, 1.0), 1.0)
        okr = fleet_ref > 0
        safe = np.where(okr, fleet_ref, 1.0)
        X[:, COL["fleet_rel"]] = np.where(okr, fleet / safe, 1.0)
        X[:, COL["fleet_trend"]] = np.where(okr, last_fleet / safe, 1.0)

    # ------------------------------------------------------------ writing

    def update(self, slots: np.ndarray, y: np.ndarray, fleet: np.ndarray) -> None:
        """Record one tick value per slot and the fleet median it was measured against."""
        t = self.ticks[slots]
        self.hist[slots, t % self.history] = y
        self.ticks[slots] = t + 1
        f_ok = fleet > 0
        fs = slots[f_ok]
        self.fleet[fs, self.fleet_ticks[fs] % self.ref_window] = fleet[f_ok]
        self.fleet_ticks[fs] += 1
        e = self.ewma[slots]
        self.ewma[slots] = np.where(np.isnan(e), y, e + self.alpha * (y - e))
        values, count = self.window(slots, self.ref_window)
        self.ref[slots] = window_median(values, count)
        self._periods(slots[(t + 1) % self.period_every == 0])

    def _periods(self, due: np.ndarray) -> None:
        """Re-detect the period of slots at a multiple of ``period_every`` ticks (rare)."""
        for s in due.tolist():
            n = min(int(self.ticks[s]), self.history)
            ref = self.ref[s]
            if n >= 96 and ref > 0:
                values, _ = self.window(np.array([s]), n)
                self.period[s] = detect_period(values[0] / ref)

    def relevel(self, slots: np.ndarray, level: np.ndarray) -> None:
        """Make ``level`` each slot's recent history: the last ``ref_window`` values, the
        EWMA and ``ref`` (the period and older values stay)."""
        t = np.maximum(self.ticks[slots], 1)
        self.ticks[slots] = t
        lags = np.arange(1, self.ref_window + 1)[None, :]
        ok = lags <= np.minimum(t, self.history)[:, None]
        pos = (t[:, None] - lags) % self.history
        rows = np.broadcast_to(slots[:, None], pos.shape)
        self.hist[rows[ok], pos[ok]] = np.broadcast_to(level[:, None], pos.shape)[ok]
        self.ewma[slots] = level
        self.ref[slots] = level
