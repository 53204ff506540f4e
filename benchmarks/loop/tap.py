"""An outside observer on the predictions and shard-map topics: what arrived, and when.

The tap is a plain confluent-kafka consumer in the bench's parent, assigned every
partition of both topics from the beginning (no group join), with a short fetch
wait so its arrival clock adds little to what it measures: the embedded broker
answers an empty fetch only when the wait expires. It decodes with the shared
contract and keeps ``(arrival wall time, event)`` for each message.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from shardsense.errors import InvalidEvent
from shardsense.events import Prediction, ShardMap, decode
from shardsense.kafka import consumer_config
from shardsense.settings import Settings

__all__ = ["Tap"]

log = logging.getLogger(__name__)

#: librdkafka's fetch.wait.max.ms for the tap (the default 500 would add up to 0.5 s).
FETCH_WAIT_MS = 10


class Tap:
    """Records predictions and shard maps of one run as they arrive."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.predictions: list[tuple[float, Prediction]] = []
        self.maps: list[tuple[float, ShardMap]] = []
        self.invalid = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-tap", daemon=True)

    def start(self, timeout: float = 15.0) -> Tap:
        """Start consuming; returns once every partition is assigned."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the bench's tap consumer was not assigned in time")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        s = self.settings
        consumer = Consumer(consumer_config(
            s, f"bench-tap-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": FETCH_WAIT_MS}))
        try:
            topics = (s.topic_predictions, s.topic_shard_maps)
            meta = consumer.list_topics(timeout=10)
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                             for p in meta.topics[t].partitions])
            self._ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(200, 0.05):
                    self._record(msg, time.time())
        except Exception:
            log.exception("bench tap stopped")
        finally:
            consumer.close()

    def _record(self, msg: Any, arrived: float) -> None:
        if msg.error() is not None or msg.value() is None:
            return
        is_map = msg.topic() == self.settings.topic_shard_maps
        try:
            event = decode(msg.value(), expect=ShardMap if is_map else Prediction,
                           max_bytes=self.settings.max_event_bytes)
        except InvalidEvent:
            self.invalid += 1
            return
        if isinstance(event, ShardMap):
            self.maps.append((arrived, event))
        elif isinstance(event, Prediction):
            self.predictions.append((arrived, event))
