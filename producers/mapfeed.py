"""The shard maps of one job, followed from the compacted shard-map topic in the background.

Every rank reads the topic's whole compacted history on start: partitions are assigned
explicitly from ``OFFSET_BEGINNING`` (no consumer-group join, which costs seconds on the
embedded broker, and no committed offsets that would skip old maps). The consumer thread
keeps only the newest valid map of ``settings.job_id``: older or duplicate versions are
ignored, invalid ones rejected with a logged reason while the previous map stays in force.
``latest()`` just reads that reference, so the training loop never waits on Kafka.

Without a broker nothing raises: ``latest()`` stays ``None`` (or the last map seen),
``wait_ready``/``wait_for_initial`` time out, and warnings are rate-limited.

Healing: a :class:`~shardsense.incarnation.TopicWatch` notices when the topic was
re-created (a restarted embedded broker forgets its topics): the partitions are then
read again from the beginning, and once caught up, if the new topic holds no map of the
job as new as the one this rank has, the source publishes that map again (rank 0 is the
only rank with a map source), so the planner and later loaders find it. Versions never
go backwards: the republished map keeps its version. A new map is seen within one fetch
wait (``map_fetch_wait_ms``; the embedded broker answers an empty fetch only when it
expires) plus one poll.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from shardsense.errors import ConfigError, InvalidEvent
from shardsense.events import ShardMap, decode, encode
from shardsense.healing import HealingProducer
from shardsense.incarnation import TopicWatch
from shardsense.kafka import admin_config, consumer_config, healing_producer
from shardsense.kafka_logs import LOG_EVERY_S
from shardsense.settings import Settings

__all__ = ["KafkaMapSource"]

log = logging.getLogger(__name__)


class KafkaMapSource:
    """A :class:`producers.seams.MapSource` over ``settings.topic_shard_maps``."""

    def __init__(
        self, settings: Settings, *, poll_timeout_s: float = 0.1, republish: bool = True
    ) -> None:
        self._settings = settings
        self._job = settings.job_id
        self._key = settings.job_id.encode()
        self._topic = settings.topic_shard_maps
        self._poll_timeout_s = poll_timeout_s
        self._latest: ShardMap | None = None
        self._adopt_lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._producer: HealingProducer | None = None
        self._producer_lock = threading.Lock()
        self._caught_up: dict[int, bool] = {}
        self._end_at_start: dict[int, int] = {}
        self._assigned = False
        self._republish = republish
        self._republish_due = False
        self._topic_version = 0  # newest map of the job in the topic as it is now
        self._last_warn = -LOG_EVERY_S
        self.counts = {"accepted": 0, "rejected": 0, "stale": 0, "other_jobs": 0,
                       "tombstones": 0, "published": 0, "publish_failed": 0,
                       "topic_recreated": 0, "republished": 0}
        self.last_rejection = ""
        self.last_error = ""
        # No subscribe(): the group id only satisfies librdkafka; nothing joins or commits.
        config = consumer_config(
            settings,
            f"shardsense-mapfeed-{settings.job_id}-{uuid.uuid4().hex[:8]}",
            what=f"shard-map consumer of job {settings.job_id}",
            **{"enable.partition.eof": True, "fetch.wait.max.ms": settings.map_fetch_wait_ms},
        )
        try:
            self._consumer = Consumer(config)
            self.watch = TopicWatch(
                [self._topic], config=admin_config(settings, what="shard-map topic watch")
            )
        except KafkaException as exc:
            raise ConfigError("SHARDSENSE_RDKAFKA_*", f"bad Kafka consumer config: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="shardsense-mapfeed", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ training side

    def latest(self) -> ShardMap | None:
        """Newest valid map of the job seen so far; never waits."""
        return self._latest

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the history that existed at start has been read (False on timeout)."""
        return self._ready.wait(max(0.0, timeout_s))

    def wait_for_initial(self, timeout: float) -> ShardMap | None:
        """Wait (bounded) until caught up with the topic, then return the latest map or None."""
        self.wait_ready(timeout)
        return self._latest

    def publish(self, shard_map: ShardMap, timeout: float = 5.0) -> None:
        """Validate, adopt locally if newer, and produce the map keyed by job id (flushed).

        Never raises: an invalid map is logged and counted as rejected; a map not confirmed
        within ``timeout`` counts as ``publish_failed`` (librdkafka keeps retrying it until
        its message timeout, so it may still arrive).
        """
        problem = self._problem(shard_map)
        if problem is not None:
            self._reject(problem, f"publish v{shard_map.map_version}")
            return
        self._adopt(shard_map)
        self._produce(shard_map, timeout, "published")

    def _produce(self, shard_map: ShardMap, timeout: float, counter: str) -> None:
        try:
            with self._producer_lock:
                if self._producer is None:
                    self._producer = healing_producer(
                        self._settings, what=f"shard-map producer of job {self._job}"
                    )
                producer = self._producer
            failed: list[str] = []

            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failed.append(err.str())

            producer.produce(self._topic, encode(shard_map), self._key, on_delivery=on_delivery)
            left = producer.flush(max(0.0, timeout))
            if left or failed:
                raise KafkaException(failed[0] if failed else f"not delivered in {timeout}s")
            self.counts[counter] += 1
            self._topic_version = max(self._topic_version, shard_map.map_version)
        except Exception as exc:
            self.counts["publish_failed"] += 1
            self.last_error = str(exc)
            log.warning("publishing shard map v%d of job %s failed: %s",
                        shard_map.map_version, self._job, exc)

    def stats(self) -> dict[str, Any]:
        latest = self._latest
        return {**self.counts, "version": latest.map_version if latest else 0,
                "ready": self._ready.is_set(), "last_rejection": self.last_rejection,
                "last_error": self.last_error}

    def close(self, timeout: float = 5.0) -> None:
        """Stop the consumer thread (bounded) and flush a pending publish."""
        self._stop.set()
        self._thread.join(max(0.0, timeout))
        with self._producer_lock:
            if self._producer is not None:
                self._producer.flush(min(1.0, timeout))
                self._producer = None

    def __enter__(self) -> KafkaMapSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ validation

    def _problem(self, shard_map: ShardMap) -> str | None:
        """Why this map must not be used by this job, or None."""
        if shard_map.job_id != self._job:
            return f"wrong_job: map is for job {shard_map.job_id!r}, not {self._job!r}"
        try:
            ShardMap.from_dict(shard_map.to_dict())
        except InvalidEvent as exc:
            return f"{exc.code}: {exc.reason}"
        return None

    def _reject(self, reason: str, where: str) -> None:
        with self._adopt_lock:
            self.counts["rejected"] += 1
            self.last_rejection = f"{where}: {reason}"
        log.warning("rejected shard map (%s) for job %s: %s; keeping v%d",
                    where, self._job, reason, self._latest.map_version if self._latest else 0)

    def _adopt(self, shard_map: ShardMap) -> bool:
        with self._adopt_lock:
            current = self._latest
            if current is not None and shard_map.map_version <= current.map_version:
                self.counts["stale"] += 1
                return False
            self._latest = shard_map
            self.counts["accepted"] += 1
        log.info("job %s: shard map v%d in force (%d ranks, global batch %d)", self._job,
                 shard_map.map_version, shard_map.world_size, shard_map.global_batch_size)
        return True

    def _handle(self, msg: Message) -> None:
        if msg.key() != self._key:
            self.counts["other_jobs"] += 1
            return
        value = msg.value()
        if value is None:
            self.counts["tombstones"] += 1
            return
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        try:
            event = decode(value, expect=ShardMap, max_bytes=self._settings.max_event_bytes)
        except InvalidEvent as exc:
            self._reject(f"{exc.code}: {exc.reason}", where)
            return
        assert isinstance(event, ShardMap)
        problem = self._problem(event)
        if problem is not None:
            self._reject(problem, where)
        else:
            self._topic_version = max(self._topic_version, event.map_version)
            self._adopt(event)

    # ------------------------------------------------------------ consumer thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._assigned and not self._assign():
                    self._stop.wait(1.0)
                    continue
                msg = self._consumer.poll(self._poll_timeout_s)  # returns on the first message
                if msg is not None:
                    self._on_message(msg)
                if self._topic in self.watch.changed():
                    self._reread()
                self._maybe_republish()
        except Exception as exc:  # pragma: no cover - keep the last good map in force
            self.last_error = str(exc)
            log.exception("shard-map consumer stopped; job %s keeps its last map", self._job)
        finally:
            try:
                self._consumer.close()
                self.watch.close()
            except Exception as exc:  # pragma: no cover
                log.debug("closing the shard-map consumer: %s", exc)

    def _reread(self) -> None:
        """The topic was re-created: read the new one from the start, then maybe republish."""
        self.counts["topic_recreated"] += 1
        self._assigned = False
        self._topic_version = 0
        self._republish_due = self._republish
        if not self._assign():
            self._stop.wait(0.2)

    def _maybe_republish(self) -> None:
        """Once caught up with a re-created topic: put our newest map back if it is missing."""
        if not self._republish_due or not self._assigned or not all(self._caught_up.values()):
            return
        self._republish_due = False
        latest = self._latest
        if latest is None or self._topic_version >= latest.map_version:
            return
        log.warning("job %s: shard map v%d is missing from the re-created topic %s; "
                    "publishing it again", self._job, latest.map_version, self._topic)
        self._produce(latest, 5.0, "republished")

    def _on_message(self, msg: Message) -> None:
        err = msg.error()
        if err is None:
            self._handle(msg)
            self._mark(msg.partition() or 0, msg.offset() or 0)
        elif err.code() == KafkaError._PARTITION_EOF:
            self._mark(msg.partition() or 0, None)
        else:
            self._on_error(err)

    def _mark(self, partition: int, offset: int | None) -> None:
        """Record progress; ready once every partition reached its end as of start."""
        if offset is None or offset + 1 >= self._end_at_start.get(partition, 0):
            self._caught_up[partition] = True
        self._check_ready()

    def _check_ready(self) -> None:
        if not self._ready.is_set() and self._assigned and all(self._caught_up.values()):
            self._ready.set()

    def _assign(self) -> bool:
        """Assign every partition from the beginning; False (warned) until the topic exists."""
        self._caught_up.clear()
        self._end_at_start.clear()
        try:
            meta = self._consumer.list_topics(self._topic, timeout=2.0).topics.get(self._topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaException(meta.error if meta else "topic missing")
            partitions = sorted(meta.partitions)
            for p in partitions:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=2.0
                ) or (0, 0)
                self._end_at_start[p] = high
                self._caught_up[p] = high <= low
        except Exception as exc:
            self._caught_up.clear()
            self._warn(f"shard-map topic {self._topic} not readable yet: {exc}")
            return False
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING)
                               for p in partitions])
        self._assigned = True
        self._check_ready()
        return True

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        self._warn(f"shard-map consumer: {err.str()}")

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warn >= LOG_EVERY_S:
            self._last_warn = now
            log.warning("%s (job %s keeps v%d)", text, self._job,
                        self._latest.map_version if self._latest else 0)
