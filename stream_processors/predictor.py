"""The learning half of the processor: a batch of reports in, tick rows and predictions out.

:class:`Predictor` is pure and synchronous (no I/O in ``update``) and works on a
whole batch at once: per-rank state lives in slot arrays (``slots``), the
onset detector, the ticks, the lag features and the forecasters are vector
operations over the ranks a batch touches (``onset``, ``ticks``, ``lags``,
``learners``), and XGBoost is asked once per batch. Per rank, the semantics are
the per-worker reference's (``features``, ``models``, ``drift``): each rank's
state advances point by point and tick by tick, in order, in *rounds*
(``slots.rounds``). What batching changes, and is documented here:

* relative values in a batch divide by the job's fleet median as of the batch's
  start (the reference updated it report by report); predictions and the next
  inputs use the median after the batch;
* the detector sees all of a batch's points before its ticks are learnt; an
  alarm re-levels the rank at its first tick that ends after the estimated
  onset (the same tick as point by point, unless a backlog batch holds several
  onsets of one rank: then the last one wins).

An onset alarm (or a recovery: the detector's downward half) re-levels at once:
until the rank's next tick completes, the served level is the mean of its
batches since the estimated change point
(``onset.OnsetColumns``), then that mean becomes its recent history
(``lags.LagColumns.relevel``). Ids derive from the input (ticks from
``(job, rank, epoch, block)``, predictions from the report), so a replay lands
on the same ClickHouse rows.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shardsense.events import Prediction, TimingReport
from shardsense.settings import Settings
from shardsense.tables import FeatureRow
from stream_processors.columns import BatchColumns, points
from stream_processors.features import FEATURE_NAMES
from stream_processors.lags import LagColumns
from stream_processors.learners import LearnerColumns
from stream_processors.models import XGBoostForecaster
from stream_processors.onset import OnsetColumns
from stream_processors.recurrence import RecurrenceBank
from stream_processors.retrain import Retrainer, latest_model, load_model
from stream_processors.serving import Serving, prediction_id
from stream_processors.slots import SlotColumns, SlotTable, grouped_median, rounds
from stream_processors.tickrows import STATS, WINDOW, tick_rows, window_stats
from stream_processors.ticks import TickColumns, epoch_step

__all__ = ["Pending", "Predictor", "prediction_id", "tick_id"]

log = logging.getLogger(__name__)

#: A report's batches reach the detector as at most this many chunk means.
DETECT_POINTS = 64
#: How often (s) slots of silent ranks are looked for and freed.
EXPIRE_EVERY_S = 10.0


def tick_id(job_id: str, worker_id: int, key: int) -> str:
    """The ``worker_features`` row of one tick (``ticks.tick_key``), the same on a replay.

    >>> tick_id("j", 1, 5) == tick_id("j", 1, 5) != tick_id("j", 2, 5)
    True
    """
    return hashlib.sha1(f"{job_id}/{worker_id}/{key}/tick".encode()).hexdigest()[:32]


class Pending(SlotColumns):
    """Per slot: the inputs of the next forecast, and what predictions report."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any, tuple[int, ...]]]] = {
        "x": (np.nan, np.float64, (len(FEATURE_NAMES),)), "ref": (np.nan, np.float64, ()),
        "relevel": (False, bool, ()), "batches": (0, np.int64, ()),
    }
    x: np.ndarray
    ref: np.ndarray
    relevel: np.ndarray
    batches: np.ndarray


class Predictor:
    """Ticks, lag features, per-rank online models, onset re-levelling, XGBoost hot-swap."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client
        self.model_dir = Path(settings.data_dir) / "models"
        self.xgb = XGBoostForecaster()
        found = latest_model(self.model_dir)
        if found is not None:
            self.xgb.swap(load_model(found[1]), str(found[0]))
        self.retrainer: Retrainer | None = None
        if client is not None and settings.processor_retrain_s > 0:
            self.retrainer = Retrainer.from_settings(settings, client, self.model_dir)
        self.slots = SlotTable(ttl_s=settings.processor_rank_ttl_s)
        self.onset = OnsetColumns(level=settings.processor_straggler_pct / 100)
        self.ticks = TickColumns(settings.processor_tick_steps)
        self.lags = LagColumns()
        self.learners = LearnerColumns(settings.processor_forecaster)
        self.pending = Pending()
        self.serving = Serving(self, settings.processor_predict_every_ms / 1000)
        self._columns: list[SlotColumns] = [self.onset, self.ticks, self.lags, self.learners,
                                            self.pending, self.serving]
        #: Recurring interference per rank (``stream_processors.recurrence``): the
        #: forecast over the coming steps that predictions carry.
        self.recurrence = RecurrenceBank()
        self._expired_at = -float("inf")

    # ------------------------------------------------------------ slots

    def _slots(self, keys: Sequence[tuple[str, int]], now: float) -> np.ndarray:
        """Slots of ``keys``; new ones start from the initial state; silent ones expire."""
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self._expired_at = now
            freed = self.slots.expire(now)
            if len(freed):
                log.info("forgot %d silent ranks (%d live)", len(freed), len(self.slots))
        slots, new = self.slots.lookup(keys, now)
        for c in self._columns:
            c.ensure(self.slots.capacity)
            c.reset(new)
        if len(new):
            self.recurrence.forget(new)
        return slots

    def fleet_medians(self) -> np.ndarray:
        """Per job id: the median level (tick EWMA) over its live ranks (NaN if none)."""
        live = self.slots.live()
        return grouped_median(self.slots.job_of[live], self.lags.ewma[live],
                              len(self.slots.job_names))

    # ------------------------------------------------------------ update

    def update(self, reports: Sequence[TimingReport], now: float | None = None
               ) -> tuple[list[FeatureRow], list[Prediction]]:
        """One ``worker_features`` row per completed tick, one prediction per rank seen.

        ``now`` (monotonic seconds; default the clock) is when the reports arrived:
        ranks silent for ``processor_rank_ttl_s`` before it are forgotten.
        """
        self.poll_retrain()
        if not reports:
            return [], []
        now = time.monotonic() if now is None else now
        rslot = self._slots([(r.job_id, r.worker_id) for r in reports], now)
        cols = BatchColumns.of(reports)
        tslot = rslot[cols.report]
        med0 = self._medians_at_start(rslot, cols)
        self._detect(rslot, cols, med0)
        self._recur(tslot, cols, med0)
        ticks = self.ticks.fold(tslot, cols.epoch, cols.step, cols.samples, cols.wait_s,
                                cols.compute_s, cols.end_ts)
        fleet = med0[self.slots.job_of[ticks.slot]]
        stats = self._learn_ticks(ticks.slot, ticks.value, fleet,
                                  epoch_step(ticks.epoch, ticks.last_step))
        rows = tick_rows(self.slots, ticks, stats, self._count_batches(ticks.slot, ticks.batches),
                         fleet, tick_id)
        self.serving.news[ticks.slot] = True
        return rows, self.serving.predict(reports, rslot, now)

    def _medians_at_start(self, rslot: np.ndarray, cols: BatchColumns) -> np.ndarray:
        """Fleet medians per job id; a job with no level yet uses this batch's reports."""
        med = self.fleet_medians()
        missing = np.isnan(med)
        if missing.any():
            ok = cols.samples > 0
            total = np.bincount(cols.report[ok], cols.wait_s[ok] + cols.compute_s[ok],
                                minlength=len(rslot))
            samples = np.bincount(cols.report[ok], cols.samples[ok], minlength=len(rslot))
            per_report = np.where(samples > 0, total / np.where(samples > 0, samples, 1), np.nan)
            batch = grouped_median(self.slots.job_of[rslot], per_report, len(med))
            med = np.where(missing, batch, med)
        return med

    def _detect(self, rslot: np.ndarray, cols: BatchColumns, med0: np.ndarray) -> None:
        """The batch's points through the onset detector, each rank's in order."""
        pts = points(cols, len(rslot), DETECT_POINTS)
        pslot = rslot[pts.report]
        m = med0[self.slots.job_of[pslot]]
        ok = m > 0
        rel = np.where(ok, pts.per_sample_s / np.where(ok, m, 1.0), np.nan)
        for idx in rounds(pslot[ok]):
            i = np.flatnonzero(ok)[idx]
            fired = self.onset.update(pslot[i], rel[i], pts.total_s[i], pts.samples[i],
                                      pts.epoch[i], pts.step[i])
            fired |= self.onset.recovered  # a recovery re-levels (and is news) too
            self.pending.relevel[pslot[i][fired]] = True
            self.serving.news[pslot[i][fired]] = True

    def _recur(self, tslot: np.ndarray, cols: BatchColumns, med0: np.ndarray) -> None:
        """Every timing, relative to its job's fleet median, into the recurrence bank."""
        m = med0[self.slots.job_of[tslot]]
        ok = (cols.samples > 0) & (m > 0)
        rel = np.full(len(tslot), np.nan)
        rel[ok] = (cols.wait_s[ok] + cols.compute_s[ok]) / cols.samples[ok] / m[ok]
        self.recurrence.update(tslot, cols.epoch, cols.step, rel)

    def _count_batches(self, slot: np.ndarray, batches: np.ndarray) -> np.ndarray:
        """Each rank's count of batches in completed ticks, after each tick (ticks come
        grouped by slot, in order)."""
        if not len(slot):
            return np.zeros(0, dtype=np.int64)
        first = np.r_[True, slot[1:] != slot[:-1]]
        cs = np.cumsum(batches)
        base = np.repeat(cs[first] - batches[first], np.diff(np.r_[np.flatnonzero(first),
                                                                   len(slot)]))
        after = self.pending.batches[slot] + cs - base
        np.add.at(self.pending.batches, slot, batches)
        return after

    def _learn_ticks(self, slot: np.ndarray, y: np.ndarray, fleet: np.ndarray,
                     end: np.ndarray | None = None) -> np.ndarray:
        """Fold ticks into the lag state and the learners, each rank's in order.

        First the lags (the inputs never depend on the models), so XGBoost is called
        once for every tick's inputs; then the learners, round by round. With ``end``
        (each tick's last ``epoch_step``), a pending re-level applies at the rank's
        first tick ending after its onset, and each tick's row statistics
        (``tickrows.STATS``) are returned.
        """
        X = np.full((len(slot), len(FEATURE_NAMES)), np.nan)
        ref = np.full(len(slot), np.nan)
        stats = np.zeros((len(slot), len(STATS)))
        order = rounds(slot)
        for idx in order:
            s = slot[idx]
            X[idx], ref[idx] = self.pending.x[s], self.pending.ref[s]
            self.lags.update(s, y[idx], fleet[idx])
            if end is not None:
                onset = epoch_step(self.onset.onset_epoch[s], self.onset.onset_step[s])
                self._relevel(s[self.pending.relevel[s] & (end[idx] >= onset)])
                stats[idx, 0] = self.lags.ewma[s]
                stats[idx, 1:] = window_stats(*self.lags.window(s, WINDOW))
            self.pending.x[s] = self.lags.features(s, fleet[idx])
            self.pending.ref[s] = self.lags.ref[s]
        ok = ref > 0
        self._learn_rounds(slot, order, X, y / np.where(ok, ref, np.nan), ok)
        return stats

    def _learn_rounds(self, slot: np.ndarray, order: list[np.ndarray], X: np.ndarray,
                      y_rel: np.ndarray, ok: np.ndarray) -> None:
        """Predict-then-learn every usable tick (one XGBoost call for all of them)."""
        usable = ok & np.isfinite(X).all(axis=1)
        booster = self.booster(X[usable])
        out = np.full(len(slot), np.nan)
        if booster is not None:
            out[usable] = booster
        errors = []
        for idx in order:
            idx = idx[usable[idx]]
            if len(idx):
                s = slot[idx]
                P = self.learners.predict(s, X[idx], None if booster is None else out[idx])
                errors.append(np.abs(self.learners.served(s, P) - y_rel[idx]))
                self.learners.learn(s, X[idx], y_rel[idx], P)
        if errors and self.retrainer is not None:  # a drifting error makes a retrain due
            self.retrainer.observe_error(np.concatenate(errors))

    def _relevel(self, slots: np.ndarray) -> None:
        """Make the level since the onset these ranks' recent history (re-levelled)."""
        if len(slots):
            level = self.onset.level_s(slots)
            ok = np.isfinite(level) & (level > 0)
            self.lags.relevel(slots[ok], level[ok])
            self.pending.relevel[slots] = False

    def booster(self, X: np.ndarray) -> np.ndarray | None:
        """XGBoost's raw output for every row, in one call (None without a model)."""
        if self.xgb.booster is None:
            return None
        if not len(X):
            return np.zeros(0)
        return np.asarray(self.xgb.booster.inplace_predict(X.astype(np.float32)),
                          dtype=np.float64)

    # ------------------------------------------------------------ models and restarts

    def poll_retrain(self) -> None:
        """Swap in a finished retrain (never waits for one)."""
        if self.retrainer is not None:
            done = self.retrainer.poll()
            if done is not None:
                self.xgb.swap(done[1], str(done[0]))

    def new_jobs(self, reports: Sequence[TimingReport]) -> set[str]:
        """Jobs of ``reports`` this predictor holds no state for (new, handed over, or
        expired): the hook warm-starts them from the store before ``update``."""
        known = self.slots.job_ids
        return {r.job_id for r in reports if r.job_id not in known}

    def forget(self, jobs: set[str]) -> int:
        """Drop every rank of ``jobs`` (their partition went to another instance)."""
        return len(self.slots.forget_jobs(jobs))

    def replay(self, rows: Sequence[Sequence[Any]]) -> int:
        """Fold stored ticks (``history.HISTORY_COLUMNS``, oldest first) into the state.

        After a restart or a handover the models pick up where the store left off,
        and ticks already stored are not learnt again when their reports replay.
        """
        if not rows:
            return 0
        jobs, workers, epoch, step, value, slowdown, ewma = zip(*rows, strict=True)
        slot = self._slots([(str(j), int(w)) for j, w in zip(jobs, workers, strict=True)],
                           time.monotonic())
        e, sd = np.asarray(ewma, dtype=float), np.asarray(slowdown, dtype=float)
        fleet = np.where(sd > 0, e / np.where(sd > 0, sd, 1.0), e)
        self._learn_ticks(slot, np.asarray(value, dtype=float), fleet)
        es = epoch_step(np.asarray(epoch, dtype=np.int64), np.asarray(step, dtype=np.int64))
        np.maximum.at(self.ticks.last_es, slot, es)
        return len(rows)

    def close(self) -> None:
        if self.retrainer is not None:
            self.retrainer.close()

    def memory_bytes(self) -> int:
        """Bytes held in slot arrays (what grows with the ranks live at once)."""
        return (sum(c.nbytes for c in self._columns) + self.slots.job_of.nbytes * 2
                + self.recurrence.memory_bytes)

