"""The forecasters for every rank at once: :mod:`stream_processors.models` over columns.

Per rank, learning stays per rank and online (predict, then learn, one tick at a
time); what is batched is the arithmetic across ranks:

* ``river``: River's ``LinearRegression`` (plain SGD, lr 0.05, squared loss, no
  L2) on the centred relative inputs, EWMA until 16 ticks, written as vector
  updates of a ``(slots, features)`` weight matrix: each row is one rank's own
  model, updated exactly as ``learn_one`` would (a test checks the weights
  against River's after the same ticks).
* ``hybrid``: the shared XGBoost booster plus a per-rank linear model of its
  residual (lr 0.005, from 8 ticks); the booster is asked once per batch for all
  inputs (``inplace_predict``), not once per rank.
* ``xgboost``, ``ewma``, ``last`` as in ``models``; ``auto`` serves, per rank, the
  candidate (ewma, river, hybrid, xgboost) with the lowest EWMA of absolute error.

Every column is in relative units (a value over the rank's ``ref``), clipped to
:data:`~stream_processors.models.CLIP` with the reference's fallbacks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from stream_processors.lags import COL
from stream_processors.models import CLIP
from stream_processors.slots import SlotColumns

__all__ = ["CANDIDATES", "SERVED", "LearnerColumns", "clip_rel"]

#: Columns of :meth:`LearnerColumns.predict`'s output; ``auto`` picks among the first four.
CANDIDATES = ("ewma", "river", "hybrid", "xgboost", "last")
#: The candidate column a fixed ``processor_forecaster`` serves.
SERVED = {name: i for i, name in enumerate(CANDIDATES)}
_AUTO = 4  # auto chooses among CANDIDATES[:_AUTO]
_NF = 11
#: Weight of the newest error in the served model's uncertainty (EWMA of |error|).
ERROR_SMOOTHING = 0.05
#: River's LinearRegression clips gradients at this magnitude.
CLIP_GRADIENT = 1e12


def clip_rel(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``models._clip`` over arrays: non-finite -> ``fallback``, else clipped to ``CLIP``.

    >>> clip_rel(np.array([np.nan, 50.0, 1.2]), np.array([1.0, 1.0, 1.0])).tolist()
    [1.0, 10.0, 1.2]
    """
    return np.where(np.isfinite(v), np.clip(v, CLIP[0], CLIP[1]), fallback)


def _centred(X: np.ndarray) -> np.ndarray:
    """``models.centered``: inputs minus 1, except ``trend`` (already centred)."""
    c = X - 1.0
    c[:, COL["trend"]] = X[:, COL["trend"]]
    return c


class LearnerColumns(SlotColumns):
    """Per slot: two linear models, auto-select errors, the served model's uncertainty."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any, tuple[int, ...]]]] = {
        "river_w": (0.0, np.float64, (_NF,)), "river_b": (0.0, np.float64, ()),
        "river_seen": (0, np.int64, ()),
        "resid_w": (0.0, np.float64, (_NF,)), "resid_b": (0.0, np.float64, ()),
        "resid_seen": (0, np.int64, ()),
        "auto_err": (0.0, np.float64, (_AUTO,)), "best": (0, np.int64, ()),
        "abs_err": (np.nan, np.float64, ()), "learned": (0, np.int64, ()),
    }
    river_w: np.ndarray
    river_b: np.ndarray
    river_seen: np.ndarray
    resid_w: np.ndarray
    resid_b: np.ndarray
    resid_seen: np.ndarray
    auto_err: np.ndarray
    best: np.ndarray
    abs_err: np.ndarray
    learned: np.ndarray

    def __init__(self, forecaster: str = "auto", river_lr: float = 0.05, river_warmup: int = 16,
                 resid_lr: float = 0.005, resid_warmup: int = 8, auto_alpha: float = 0.02) -> None:
        if forecaster != "auto" and forecaster not in SERVED:
            raise ValueError(f"forecaster: unknown {forecaster!r}; choose from "
                             f"{['auto', *CANDIDATES]}")
        self.forecaster = forecaster
        self.river_lr, self.river_warmup = river_lr, river_warmup
        self.resid_lr, self.resid_warmup = resid_lr, resid_warmup
        self.auto_alpha = auto_alpha
        super().__init__()

    def predict(self, slots: np.ndarray, X: np.ndarray, booster_out: np.ndarray | None
                ) -> np.ndarray:
        """Every candidate's relative forecast, ``(n, len(CANDIDATES))``."""
        ewma_raw = X[:, COL["ewma"]]
        ewma = clip_rel(ewma_raw, np.ones(len(X)))
        base = ewma if booster_out is None else clip_rel(booster_out, ewma_raw)
        Xc = _centred(X)
        river_raw = np.einsum("ij,ij->i", Xc, self.river_w[slots]) + self.river_b[slots] + 1.0
        river = clip_rel(np.where(self.river_seen[slots] >= self.river_warmup, river_raw,
                                  np.nan), ewma)
        resid = np.einsum("ij,ij->i", Xc, self.resid_w[slots]) + self.resid_b[slots]
        resid = np.where(self.resid_seen[slots] >= self.resid_warmup, resid, 0.0)
        resid = np.where(np.isfinite(resid), resid, 0.0)
        hybrid = clip_rel(base + resid, base)
        last = clip_rel(X[:, COL["lag1"]], np.ones(len(X)))
        return np.stack([ewma, river, hybrid, base, last], axis=1)

    def served(self, slots: np.ndarray, P: np.ndarray) -> np.ndarray:
        """The served column of ``P`` per slot (``auto``: the lowest recent error)."""
        if self.forecaster == "auto":
            return P[np.arange(len(slots)), self.best[slots]]
        return P[:, SERVED[self.forecaster]]

    def served_name(self, slots: np.ndarray) -> list[str]:
        if self.forecaster == "auto":
            return [CANDIDATES[b] for b in self.best[slots].tolist()]
        return [self.forecaster] * len(slots)

    def learn(self, slots: np.ndarray, X: np.ndarray, y: np.ndarray, P: np.ndarray) -> None:
        """One round: score ``P`` (made before ``y`` was known) against ``y``, then learn."""
        err = np.abs(self.served(slots, P) - y)
        a = self.abs_err[slots]
        self.abs_err[slots] = np.where(np.isnan(a), err, a + ERROR_SMOOTHING * (err - a))
        self.learned[slots] += 1
        e = np.abs(P[:, :_AUTO] - y[:, None])
        e = np.where(np.isfinite(e), e, 10.0)
        errs = self.auto_err[slots] + self.auto_alpha * (e - self.auto_err[slots])
        self.auto_err[slots] = errs
        self.best[slots] = np.argmin(errs, axis=1)
        finite = np.isfinite(y)
        s, Xc = slots[finite], _centred(X[finite])
        self._sgd(s, Xc, y[finite] - 1.0, self.river_w, self.river_b, self.river_lr)
        self.river_seen[s] += 1
        target = y[finite] - P[finite, SERVED["xgboost"]]
        self._sgd(s, Xc, target, self.resid_w, self.resid_b, self.resid_lr)
        self.resid_seen[s] += 1

    @staticmethod
    def _sgd(slots: np.ndarray, Xc: np.ndarray, target: np.ndarray, w: np.ndarray,
             b: np.ndarray, lr: float) -> None:
        """River's ``LinearRegression.learn_one`` (SGD, squared loss) for each row at once."""
        raw = np.einsum("ij,ij->i", Xc, w[slots]) + b[slots]
        g = np.clip(2.0 * (raw - target), -CLIP_GRADIENT, CLIP_GRADIENT)
        b[slots] -= lr * g
        w[slots] -= lr * g[:, None] * Xc
