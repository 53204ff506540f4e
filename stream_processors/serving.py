"""The predictions a batch publishes: which ranks, at what level, with what flags.

A rank's prediction is published when it has news (a tick completed, an onset
alarm, its straggler flag changed, its first batches) and otherwise at least
every ``every_s`` while it reports: a rank sending ten reports a second has
nothing new to say ten times a second, and every prediction is a row and a
message. While an onset re-level is pending, every batch refines the level
since the change point, so every batch publishes it.

The served level is the rank's forecaster's (``learners``) times its ``ref``;
after an onset alarm, until the next tick, the mean since the change point
(``onset``); before its first tick, the mean of the tick being filled (``ticks``).
The forecast over the coming steps (offsets, levels, confidence) is the
recurrence bank's (``stream_processors.recurrence``), in seconds at the job's
fleet median; a recurrence too short to plan for serves its period's mean.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from shardsense.events import Prediction, TimingReport
from stream_processors.recurrence import Verdict
from stream_processors.slots import SlotColumns
from stream_processors.ticks import EPOCH_SHIFT

if TYPE_CHECKING:
    from stream_processors.predictor import Predictor

__all__ = ["PRIOR_REL_ERROR", "Serving", "prediction_id"]

#: Relative error assumed for a forecast before any was scored.
PRIOR_REL_ERROR = 0.1


def prediction_id(report_event_id: str) -> str:
    """The prediction made after a report, the same on every replay of it.

    >>> prediction_id("abc") == prediction_id("abc") != prediction_id("abd")
    True
    """
    return hashlib.sha1(f"{report_event_id}/prediction".encode()).hexdigest()[:32]


class Serving(SlotColumns):
    """Per slot: news since the last prediction, when it was, the flag it carried."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any, tuple[int, ...]]]] = {
        "news": (True, bool, ()), "last_at": (-np.inf, np.float64, ()),
        "last_flag": (False, bool, ()),
    }
    news: np.ndarray
    last_at: np.ndarray
    last_flag: np.ndarray

    def __init__(self, predictor: Predictor, every_s: float) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.p = predictor
        self.every_s = every_s
        #: Which processor process made a prediction (``model_versions["instance"]``).
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        super().__init__()

    def predict(self, reports: Sequence[TimingReport], rslot: np.ndarray,
                now: float) -> list[Prediction]:
        """The batch's predictions: ranks with news, or quiet for ``every_s``."""
        p = self.p
        last = np.full(p.slots.capacity, -1, dtype=np.int64)
        np.maximum.at(last, rslot, np.arange(len(rslot)))
        seen = np.flatnonzero(last >= 0)
        fleet = p.fleet_medians()[p.slots.job_of[seen]]
        p.pending.x[seen] = p.lags.features(seen, fleet)
        p.pending.ref[seen] = p.lags.ref[seen]
        flag = p.onset.straggler(seen)
        due = (self.news[seen] | p.pending.relevel[seen] | (flag != self.last_flag[seen])
               | (now - self.last_at[seen] >= self.every_s))
        level, uncertainty, served = self._levels(seen)
        keep = due & np.isfinite(level) & (level > 0)
        s = seen[keep]
        self.news[s], self.last_at[s], self.last_flag[s] = False, now, flag[keep]
        return self._events(reports, s, last[s], level[keep], uncertainty[keep], fleet[keep],
                            [n for n, k in zip(served, keep.tolist(), strict=True) if k])

    def _levels(self, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Served seconds per sample, its uncertainty and the serving model per slot."""
        p = self.p
        X, ref = p.pending.x[seen], p.pending.ref[seen]
        P = p.learners.predict(seen, X, p.booster(X))
        level = p.learners.served(seen, P) * ref
        served = p.learners.served_name(seen)
        err = p.learners.abs_err[seen]
        uncertainty = np.where(np.isfinite(err), err, PRIOR_REL_ERROR) * ref
        relevel = p.pending.relevel[seen]
        onset = p.onset.level_s(seen)
        early = ~(ref > 0)  # no tick yet: the batches of the tick being filled
        fallback = np.where(relevel & np.isfinite(onset), onset, p.ticks.partial_s(seen))
        use = (relevel & np.isfinite(onset)) | early
        level = np.where(use, fallback, level)
        uncertainty = np.where(use, PRIOR_REL_ERROR * fallback, uncertainty)
        served = [("onset" if r else "partial") if u else name for name, u, r in
                  zip(served, use.tolist(), relevel.tolist(), strict=True)]
        return level, uncertainty, served

    def _forecast(self, slot: int, level_s: float, fleet_s: float
                  ) -> tuple[float, dict[str, Any], str]:
        """The served level, the forecast fields and the recurrence verdict of one rank.

        A recurrence too short to plan for serves its period's mean: what a map held
        over a sync interval meets (``recurrence`` says so).
        """
        f = self.p.recurrence.forecast(slot)
        verdict = f"{f.verdict.value}:{f.period}"
        if not fleet_s > 0:
            return level_s, {}, verdict
        if f.verdict is Verdict.TOO_SHORT and math.isfinite(f.level_now):
            level_s = f.level_now * fleet_s
        return level_s, {"forecast_offsets": f.offsets,
                         "forecast_time_per_sample_s": f.in_seconds(fleet_s),
                         "forecast_confidence": f.confidence}, verdict

    def _events(self, reports: Sequence[TimingReport], slots: np.ndarray, last: np.ndarray,
                level: np.ndarray, uncertainty: np.ndarray, fleet: np.ndarray,
                served: list[str]) -> list[Prediction]:
        p = self.p
        straggler = p.onset.straggler(slots).tolist()
        alarms = p.onset.alarms[slots] > 0
        onset_step = np.where(alarms, p.onset.onset_step[slots], 0).tolist()
        slowdown = np.where(fleet > 0, level / np.where(fleet > 0, fleet, 1.0), 1.0).tolist()
        es = np.maximum(p.ticks.last_es[slots], 0)
        epoch = (es >> EPOCH_SHIFT).tolist()
        step = (es & ((1 << EPOCH_SHIFT) - 1)).tolist()
        learned = p.learners.learned[slots].tolist()
        xgb = p.xgb.version or "none"
        out = []
        for i, (ri, slot) in enumerate(zip(last.tolist(), slots.tolist(), strict=True)):
            r = reports[ri]
            now_s, forecast, recurrence = self._forecast(slot, float(level[i]), float(fleet[i]))
            out.append(Prediction(
                job_id=r.job_id, worker_id=r.worker_id, event_id=prediction_id(r.event_id),
                ts=r.ts, time_per_sample_s=now_s, uncertainty_s=float(uncertainty[i]),
                slowdown=now_s / fleet[i] if fleet[i] > 0 else slowdown[i],
                straggler=straggler[i], based_on_step=step[i], based_on_epoch=epoch[i],
                onset_step=onset_step[i], **forecast,
                model_versions={"served": served[i], "xgboost": xgb,
                                "river_updates": str(learned[i]), "instance": self.instance,
                                "recurrence": recurrence},
            ))
        return out
