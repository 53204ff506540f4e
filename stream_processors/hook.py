"""The seam the Faust agent awaits per batch: learn, store, publish (``PredictionHook``).

Awaited before the batch's offsets are acknowledged, so a crash replays the
batch; the derived ids make that replay idempotent downstream. Stored first,
published second: a prediction the planner sees is in ClickHouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shardsense.events import TimingReport, encode
from shardsense.settings import Settings
from shardsense.tables import PREDICTIONS, WORKER_FEATURES, prediction_row
from shardsense.topics import job_key
from stream_processors.history import job_history
from stream_processors.pipeline import retry_forever
from stream_processors.predictor import Predictor

__all__ = ["PredictionHook"]

log = logging.getLogger(__name__)

#: Stored ticks per rank a warm start replays (enough for the lags and the level).
WARM_TICKS = 64


class PredictionHook:
    """``ReportHook`` for ``stream_processors.pipeline.Pipeline``: learn, store, publish."""

    def __init__(self, settings: Settings, client: Any, producer: Any = None,
                 predictor: Predictor | None = None) -> None:
        self.settings = settings
        self.client = client
        self.predictor = predictor or Predictor(settings, client)
        if producer is None:
            from confluent_kafka import Producer

            from shardsense.kafka import producer_config

            producer = Producer(producer_config(settings, **{"linger.ms": 0}))
        self.producer = producer
        self.stats = {"feature_rows": 0, "predictions": 0, "warm_started": 0, "update_s": 0.0,
                      "store_s": 0.0, "publish_s": 0.0}

    async def __call__(self, reports: list[TimingReport]) -> None:
        started = time.perf_counter()
        await self._warm_start(self.predictor.new_jobs(reports))
        rows, preds = self.predictor.update(reports)
        updated = time.perf_counter()
        self.stats["update_s"] += updated - started
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
        topic = self.settings.topic_predictions
        for p in preds:
            self.producer.produce(topic, encode(p), key=job_key(p.job_id))
        if preds:
            left = await asyncio.to_thread(self.producer.flush, 30.0)
            if left:
                log.warning("%d prediction messages still queued after 30s", left)
        self.stats["publish_s"] += time.perf_counter() - stored
        self.stats["feature_rows"] += len(rows)
        self.stats["predictions"] += len(preds)

    async def _warm_start(self, jobs: set[str]) -> None:
        """Jobs new to this instance start from their stored ticks (a restart, a handover);
        a failed read starts them cold rather than stalling the batch."""
        limit = self.settings.processor_warm_start_rows
        if not jobs or self.client is None or limit <= 0:
            return
        try:
            rows = await asyncio.to_thread(job_history, self.client, jobs, WARM_TICKS, limit)
        except Exception as exc:
            log.warning("warm start of %d jobs failed (%s); they start cold", len(jobs), exc)
            return
        replayed = self.predictor.replay(rows)
        self.stats["warm_started"] += replayed
        if replayed:
            log.info("warm start: %d stored ticks of %d jobs replayed", replayed, len(jobs))

    def forget(self, jobs: set[str]) -> None:
        """Another instance owns ``jobs`` now (their partition was revoked)."""
        self.predictor.forget(jobs)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver queued predictions, drop the producer, stop the retrain thread."""
        if self.producer is not None:
            self.producer.flush(timeout)
            self.producer = None  # its librdkafka threads end with it
        self.predictor.close()
