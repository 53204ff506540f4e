"""The learning half of the processor: reports in, feature rows and predictions out.

:class:`Predictor` is pure and synchronous (no I/O in ``update``), so it is unit
testable and cheap: per *report*, not per timing, apart from the vectorised
window statistics and the onset detector (at most ``DETECT_POINTS`` values per
report). :class:`PredictionHook` is the seam the Faust agent awaits: it runs
``update``, writes ``worker_features`` and ``predictions`` off the event loop,
and publishes the predictions, all before the batch's offsets are committed.

Ids are derived from the report (``event_id`` and ``ts``), so a report replayed
after a crash lands on the same ClickHouse rows and ReplacingMergeTree keeps one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shardsense.events import Prediction, TimingReport, encode
from shardsense.settings import Settings
from shardsense.tables import PREDICTIONS, WORKER_FEATURES, FeatureRow, prediction_row
from shardsense.topics import job_key
from stream_processors.drift import StragglerDetector
from stream_processors.features import FleetState, LagFeatures, WorkerStats
from stream_processors.models import AutoSelect, Forecaster, XGBoostForecaster, make_forecaster
from stream_processors.pipeline import retry_forever
from stream_processors.retrain import Retrainer, latest_model, load_model

__all__ = ["PredictionHook", "Predictor"]

log = logging.getLogger(__name__)

#: A report's batches reach the detector as at most this many chunk means.
DETECT_POINTS = 64
#: Relative error assumed for a forecast before any was scored.
PRIOR_REL_ERROR = 0.1
#: Weight of the newest score in the EWMA of |relative error| (the uncertainty).
ERROR_SMOOTHING = 0.05


def chunk_means(values: np.ndarray, points: int) -> np.ndarray:
    """``values`` in order as at most ``points`` consecutive chunk means (one numpy call).

    >>> chunk_means(np.arange(6.0), 3).tolist()
    [0.5, 2.5, 4.5]
    """
    n = len(values)
    if n <= points:
        return values
    starts = (np.arange(points) * n) // points
    return np.add.reduceat(values, starts) / np.diff(np.append(starts, n))


def prediction_id(report_event_id: str) -> str:
    """The prediction made after a report, the same on every replay of it.

    >>> prediction_id("abc") == prediction_id("abc") != prediction_id("abd")
    True
    """
    return hashlib.sha1(f"{report_event_id}/prediction".encode()).hexdigest()[:32]


@dataclass
class WorkerModel:
    """Everything learnt about one worker."""

    stats: WorkerStats
    lags: LagFeatures
    model: Forecaster
    detector: StragglerDetector
    pending: tuple[dict[str, float], float] | None = None  # (x, ref) of the last forecast
    abs_err: float = math.nan  # EWMA of |relative error|: the uncertainty estimate
    learned: int = 0


class Predictor:
    """Rolling features, per-worker online models, onset detection, XGBoost hot-swap."""

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
            self.retrainer = Retrainer(
                client, settings.job_id, self.model_dir, settings.processor_retrain_s,
                settings.processor_retrain_rows,
            )
        self.workers: dict[tuple[str, int], WorkerModel] = {}
        self.fleets: dict[str, FleetState] = {}
        # Import River now (~1 s), not inside the first batch's processing.
        make_forecaster(settings.processor_forecaster, self.xgb)
        StragglerDetector()

    def _worker(self, job: str, worker: int) -> WorkerModel:
        wm = self.workers.get((job, worker))
        if wm is None:
            detector = StragglerDetector(level=self.settings.processor_straggler_pct / 100)
            model = make_forecaster(self.settings.processor_forecaster, self.xgb)
            wm = WorkerModel(WorkerStats(), LagFeatures(), model, detector)
            self.workers[(job, worker)] = wm
        return wm

    def _learn(self, wm: WorkerModel, y: float, fleet: float) -> None:
        """Predict-then-learn: the forecast made before ``y`` is scored, then learnt."""
        if wm.pending is not None:
            x, ref = wm.pending
        elif wm.lags.ref > 0:
            x, ref = wm.lags.features(fleet), wm.lags.ref
        else:
            x, ref = {}, math.nan
        if x and ref > 0:
            _score_and_learn(wm, x, ref, y)
        wm.lags.update(y, fleet)
        wm.pending = None

    def update(self, reports: Sequence[TimingReport]) -> tuple[list[FeatureRow], list[Prediction]]:
        """One ``worker_features`` row per report, one prediction per worker seen."""
        self.poll_retrain()
        rows: list[FeatureRow] = []
        last: dict[tuple[str, int], TimingReport] = {}
        for r in reports:
            fleet = self.fleets.setdefault(r.job_id, FleetState())
            wm = self._worker(r.job_id, r.worker_id)
            t = r.timings
            seen = wm.stats.observe(t["samples"], t["data_wait_s"], t["compute_s"], t["step"])
            if seen is None:
                continue
            per_sample_s, batch_per_sample_s = seen
            m = fleet.median(default=per_sample_s)
            if m > 0:
                points = chunk_means(batch_per_sample_s, DETECT_POINTS) / m
                wm.detector.update_many(points.tolist())
            self._learn(wm, per_sample_s, m)
            fleet.set(r.worker_id, wm.stats.ewma)
            rows.append(wm.stats.row(r.job_id, r.worker_id, r.event_id, r.ts, per_sample_s,
                                     fleet.median(default=per_sample_s)))
            last[(r.job_id, r.worker_id)] = r
        return rows, self._predict(last)

    def _predict(self, last: dict[tuple[str, int], TimingReport]) -> list[Prediction]:
        todo = []
        for key, r in last.items():
            wm = self.workers[key]
            fleet = self.fleets[r.job_id].median()
            if wm.lags.ref > 0:
                todo.append((r, wm, wm.lags.features(fleet), wm.lags.ref, fleet))
        self.xgb.prime([x for _, _, x, _, _ in todo])
        out = []
        for r, wm, x, ref, fleet in todo:
            wm.pending = (x, ref)
            time_per_sample_s = wm.model.predict_one(x) * ref
            err = wm.abs_err if math.isfinite(wm.abs_err) else PRIOR_REL_ERROR
            served = wm.model.chosen if isinstance(wm.model, AutoSelect) else wm.model.name
            out.append(Prediction(
                job_id=r.job_id, worker_id=r.worker_id, event_id=prediction_id(r.event_id),
                ts=r.ts, time_per_sample_s=time_per_sample_s, uncertainty_s=err * ref,
                slowdown=time_per_sample_s / fleet if fleet > 0 else 1.0,
                straggler=wm.detector.straggler,
                based_on_step=wm.stats.last_step,
                model_versions={"served": served, "xgboost": self.xgb.version or "none",
                                "river_updates": str(wm.learned)},
            ))
        return out

    def poll_retrain(self) -> None:
        """Swap in a finished retrain (never waits for one)."""
        if self.retrainer is not None:
            done = self.retrainer.poll()
            if done is not None:
                self.xgb.swap(done[1], str(done[0]))

    def warm_start(self) -> int:
        """Replay recent ``worker_features`` history into the models; returns rows used.

        After a restart the models pick up where the history left off instead of
        relearning from scratch (the history *is* the learning state's record).
        """
        limit = self.settings.processor_warm_start_rows
        if self.client is None or limit <= 0:
            return 0
        rows = self.client.query(
            "SELECT job_id, worker_id, time_per_sample_s, slowdown, ewma_tps FROM ("
            " SELECT job_id, worker_id, ts, time_per_sample_s, slowdown, ewma_tps"
            " FROM v_worker_features ORDER BY ts DESC LIMIT {n:UInt32}) ORDER BY ts",
            parameters={"n": limit},
        ).result_rows
        replay: dict[tuple[str, int], list[tuple[dict[str, float], float, float]]] = {}
        for job, worker, per_sample_s, slowdown, ewma in rows:
            wm = self._worker(str(job), int(worker))
            fleet = ewma / slowdown if slowdown > 0 else ewma
            if wm.lags.ref > 0:
                x = wm.lags.features(fleet)
                replay.setdefault((str(job), int(worker)), []).append(
                    (x, wm.lags.ref, per_sample_s))
            wm.lags.update(float(per_sample_s), float(fleet))
            wm.stats.ewma = float(ewma)
            self.fleets.setdefault(str(job), FleetState()).set(int(worker), float(ewma))
        # Inputs first, then one booster call for all of them, then the models learn.
        self.xgb.prime([x for items in replay.values() for x, _, _ in items])
        for key, items in replay.items():
            wm = self.workers[key]
            for x, ref, y in items:
                _score_and_learn(wm, x, ref, y)
        return len(rows)

    def close(self) -> None:
        if self.retrainer is not None:
            self.retrainer.close()


def _score_and_learn(wm: WorkerModel, x: dict[str, float], ref: float, y: float) -> None:
    """Score the forecast for ``y`` (relative to ``ref``) into the uncertainty, then learn it."""
    err = abs(wm.model.predict_one(x) - y / ref)
    wm.abs_err = err if math.isnan(wm.abs_err) else wm.abs_err + ERROR_SMOOTHING * (
        err - wm.abs_err)
    wm.model.learn_one(x, y / ref)
    wm.learned += 1


class PredictionHook:
    """``ReportHook`` for ``stream_processors.pipeline.Pipeline``: learn, store, publish.

    Awaited by the agent before the batch's offsets are acknowledged, so a crash
    replays the batch; the derived ids make that replay idempotent downstream.
    """

    def __init__(self, settings: Settings, client: Any, producer: Any = None,
                 predictor: Predictor | None = None) -> None:
        self.settings = settings
        self.client = client
        self.predictor = predictor or Predictor(settings, client)
        if producer is None:
            from confluent_kafka import Producer

            from shardsense.kafka import producer_config

            producer = Producer(producer_config(settings))
        self.producer = producer
        self.stats = {"feature_rows": 0, "predictions": 0, "update_s": 0.0, "store_s": 0.0,
                      "publish_s": 0.0}

    async def __call__(self, reports: list[TimingReport]) -> None:
        started = time.perf_counter()
        rows, preds = self.predictor.update(reports)
        updated = time.perf_counter()
        self.stats["update_s"] += updated - started
        # Stored first, published second: a prediction the planner sees is in ClickHouse.
        work = []
        if rows:
            work.append(retry_forever("worker_features insert", WORKER_FEATURES.insert,
                                      self.client, [row.values() for row in rows]))
        if preds:
            work.append(retry_forever("predictions insert", PREDICTIONS.insert, self.client,
                                      [prediction_row(p) for p in preds]))
        await asyncio.gather(*work)
        stored = time.perf_counter()
        self.stats["store_s"] += stored - updated
        for p in preds:
            self.producer.produce(self.settings.topic_predictions, encode(p),
                                  key=job_key(p.job_id))
        if preds:
            left = await asyncio.to_thread(self.producer.flush, 30.0)
            if left:
                log.warning("%d prediction messages still queued after 30s", left)
        self.stats["publish_s"] += time.perf_counter() - stored
        self.stats["feature_rows"] += len(rows)
        self.stats["predictions"] += len(preds)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver queued predictions, drop the producer, stop the retrain thread."""
        if self.producer is not None:
            self.producer.flush(timeout)
            self.producer = None  # its librdkafka threads end with it
        self.predictor.close()
