"""The processor's learning hook: learn, store, publish (``PredictionHook``).

``prepare`` runs in the pipeline's first stage (new jobs warm-started from the
store, then ``Predictor.update``); the rows and predictions it returns are
inserted with the batch's raw timings, then published, all before the batch's
offsets are acknowledged, so a crash replays the batch; the derived ids make
that replay idempotent downstream. Stored first, published second: a
prediction the planner sees is in ClickHouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shardsense.events import Prediction, TimingReport, encode
from shardsense.settings import Settings
from shardsense.tables import PREDICTIONS, WORKER_FEATURES, FeatureRow, prediction_row
from shardsense.topics import job_key
from stream_processors.history import job_history
from stream_processors.pipeline import retry_forever
from stream_processors.predictor import Predictor

__all__ = ["PredictionHook"]

log = logging.getLogger(__name__)

#: Longest a batch waits for its predictions to be delivered (the rest follow later).
PUBLISH_WAIT_S = 1.0

#: Stored ticks per rank a warm start replays (enough for the lags and the level).
WARM_TICKS = 64


class PredictionHook:
    """``ReportHook`` for ``stream_processors.pipeline.Pipeline``: learn, store, publish."""

    def __init__(self, settings: Settings, client: Any, producer: Any = None,
                 predictor: Predictor | None = None) -> None:
        self.settings = settings
        self.client = client
        self.predictor = predictor or Predictor(settings, client)
        if producer is None:  # heals itself after a broker restart (issue 12)
            from shardsense.kafka import healing_producer

            producer = healing_producer(settings, what="prediction producer",
                                        **{"linger.ms": 0})
        self.producer = producer
        self.stats = {"feature_rows": 0, "predictions": 0, "warm_started": 0, "update_s": 0.0,
                      "store_s": 0.0, "publish_s": 0.0}

    async def prepare(self, reports: list[TimingReport]) -> _Staged:
        """Warm-start new jobs, then learn: the batch's tick rows and predictions."""
        await self._warm_start(self.predictor.new_jobs(reports))
        started = time.perf_counter()
        rows, preds = self.predictor.update(reports)
        self.stats["update_s"] += time.perf_counter() - started
        return _Staged(self, rows, preds)

    async def __call__(self, reports: list[TimingReport]) -> None:
        """Prepare, store and publish one batch (what the pipeline does in two stages)."""
        staged = await self.prepare(reports)
        await staged.store()
        await staged.publish()

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

    def state(self) -> dict[str, float]:
        """How much rank state is held: live ranks, slots, bytes (they follow the live ranks)."""
        p = self.predictor
        return {"live_ranks": len(p.slots), "slot_capacity": p.slots.capacity,
                "state_bytes": p.memory_bytes()}

    def forget(self, jobs: set[str]) -> None:
        """Another instance owns ``jobs`` now (their partition was revoked)."""
        self.predictor.forget(jobs)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver queued predictions, drop the producer, stop the retrain thread."""
        if self.producer is not None:
            self.producer.flush(timeout)
            self.producer = None  # its librdkafka threads end with it
        self.predictor.close()


class _Staged:
    """One batch's tick rows and predictions: inserted, then published."""

    def __init__(self, hook: PredictionHook, rows: list[FeatureRow],
                 preds: list[Prediction]) -> None:
        self.hook, self.rows, self.preds = hook, rows, preds

    async def store(self) -> None:
        started = time.perf_counter()
        client, work = self.hook.client, []
        if self.rows:
            work.append(retry_forever("worker_features insert", WORKER_FEATURES.insert,
                                      client, [row.values() for row in self.rows]))
        if self.preds:
            work.append(retry_forever("predictions insert", PREDICTIONS.insert, client,
                                      [prediction_row(p) for p in self.preds]))
        await asyncio.gather(*work)
        stats = self.hook.stats
        stats["store_s"] += time.perf_counter() - started
        stats["feature_rows"] += len(self.rows)

    async def publish(self) -> None:
        started = time.perf_counter()
        hook = self.hook
        topic = hook.settings.topic_predictions
        for p in self.preds:
            hook.producer.produce(topic, encode(p), key=job_key(p.job_id))
        if self.preds:  # bounded: a long batch across a group re-join can lose reports (issue 12)
            left = await asyncio.to_thread(hook.producer.flush, PUBLISH_WAIT_S)
            if left:
                log.warning("%d prediction messages still queued after %.0fs (sent later)",
                            left, PUBLISH_WAIT_S)
        hook.stats["publish_s"] += time.perf_counter() - started
        hook.stats["predictions"] += len(self.preds)
