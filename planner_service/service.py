"""The planner process: Kafka in (predictions, shard maps), Kafka + ClickHouse out.

One consumer, no consumer group: the shard-map partition is read from the
beginning (the compacted topic's latest map per job is the planner's whole
persistent state, so a restart resumes from it and never bumps a version by
itself), and the prediction partitions from ``rank_timeout`` ago (the speeds
that still count). Partitions are assigned, not subscribed, so start-up costs
no group join. Nothing is evaluated until the map partition is read to its end.

Healing (issue 12): the producer recreates itself after a broker restart
(``HealingProducer``); a ``TopicWatch`` notices a re-created topic and its
partitions are read again from the start; and when the map topic holds no map
of the job (a restarted embedded broker forgets its topics), the base map is
rebuilt from ClickHouse (``planner_service.recovery``), so versions go on from
where they were instead of stopping.

Run it as ``shardsense planner`` (:func:`main`) or in a thread of the embedded
stack (``Planner(settings).start()`` ... ``.stop()``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError

from planner_service.decision import Decision, PolicyConfig
from planner_service.policy import PlanPolicy
from planner_service.recovery import choose_base
from planner_service.sink import ClickHouseSink, DecisionSink
from shardsense.errors import InvalidEvent
from shardsense.events import DeadLetter, Prediction, ShardMap, decode, encode, peek_identity
from shardsense.incarnation import TopicWatch
from shardsense.kafka import admin_config, consumer_config, healing_producer
from shardsense.kafka_logs import LOG_EVERY_S
from shardsense.settings import Settings

__all__ = ["Planner", "main"]

log = logging.getLogger(__name__)

#: Batches under a new map over which its transfer cost is measured, and how long to wait.
MEASURE_BATCHES = 20
MEASURE_AFTER_S = 30.0
#: Without a base map: ask ClickHouse this often; plan from a stored map after this wait.
RECOVER_EVERY_S = 2.0
RECOVER_WAIT_S = 10.0


class Planner:
    """Plans one job (``settings.job_id``); see the module doc for the data flow."""

    def __init__(
        self, settings: Settings, *, sink: DecisionSink | None = None, client: Any = None
    ) -> None:
        """``sink`` replaces ClickHouse (tests); ``client`` shares the stack's ClickHouse client."""
        self.settings = settings
        self.policy = PlanPolicy(PolicyConfig.from_settings(settings), settings.job_id)
        self.sink: DecisionSink = sink or ClickHouseSink(
            settings.resolved_clickhouse_url, client=client
        )
        self.ready = threading.Event()  # set once the shard-map topic has been read to its end
        self.stats = {"predictions": 0, "maps": 0, "invalid": 0, "decisions": 0, "published": 0}
        self._unread_maps: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._measure: tuple[float, int, int, dict[int, float]] | None = None
        self._measuring: Future[dict[int, float]] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="planner-measure")
        self.watch: TopicWatch | None = None
        self._recovering: Future[tuple[ShardMap | None, int]] | None = None
        self._recover_at = 0.0
        self._recover_since: float | None = None
        self._recover_why = ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Planner:
        """Run in a daemon thread (the embedded stack's way)."""
        self._thread = threading.Thread(target=self.run, name="planner", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume, evaluate every ``planner_interval_ms``, publish; until ``stop`` is set."""
        from confluent_kafka import Consumer

        stop = stop or self._stop
        s = self.settings
        consumer = Consumer(consumer_config(
            s, f"shardsense-planner-{s.job_id}", what="planner consumer",
            **{"enable.partition.eof": True, "fetch.wait.max.ms": s.map_fetch_wait_ms},
        ))
        producer = healing_producer(s, what="planner producer", **{"linger.ms": 0})
        watch = self.watch = TopicWatch([s.topic_shard_maps, s.topic_predictions],
                                        config=admin_config(s, what="planner topic watch"))
        try:
            if not self._assign(consumer, stop):
                return
            interval = s.planner_interval_ms / 1000.0
            next_eval = time.monotonic() + interval
            while not stop.is_set():
                msg = consumer.poll(min(0.2, interval))
                if msg is not None:
                    self._handle(msg, producer)
                recreated = watch.changed()
                if recreated:
                    self._reread(consumer, recreated)
                self._recover_base()
                if self.ready.is_set() and time.monotonic() >= next_eval:
                    next_eval = time.monotonic() + interval
                    self._evaluate(producer)
                    self._learn_bandwidth()
                producer.poll(0)
        finally:
            watch.close()
            consumer.close()
            producer.flush(5)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.sink.close()

    # ------------------------------------------------------------ input

    def _assign(self, consumer: Any, stop: threading.Event) -> bool:
        """Assign the map partition from the start and predictions from the timeout ago.

        Waits (logging every ``LOG_EVERY_S``) while the broker is unreachable or the
        topics are missing; False only if stopped meanwhile.
        """
        topics = [self.settings.topic_shard_maps, self.settings.topic_predictions]
        last_log = -LOG_EVERY_S
        while not stop.is_set():
            try:
                if self._try_assign(consumer, topics):
                    return True
                problem = "topics missing"
            except Exception as exc:  # KafkaException while the broker is away
                problem = str(exc)
            if time.monotonic() - last_log >= LOG_EVERY_S:
                last_log = time.monotonic()
                log.warning("planner: waiting for topics %s (%s)", topics, problem)
            stop.wait(1.0)
        return False

    def _try_assign(self, consumer: Any, topics: list[str]) -> bool:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        s = self.settings
        meta = consumer.list_topics(timeout=5)
        if not all(t in meta.topics and meta.topics[t].partitions for t in topics):
            return False
        since_ms = int((time.time() - s.planner_rank_timeout_s) * 1000)
        wanted = [
            TopicPartition(s.topic_predictions, p, since_ms)
            for p in meta.topics[s.topic_predictions].partitions
        ]
        starts = [
            TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in consumer.offsets_for_times(wanted, timeout=10)
        ]
        maps = [TopicPartition(s.topic_shard_maps, p, OFFSET_BEGINNING)
                for p in meta.topics[s.topic_shard_maps].partitions]
        self._unread_maps = {tp.partition for tp in maps}
        consumer.assign(maps + starts)
        log.info("planner for job %s reading %s and %s", s.job_id, *topics)
        return True

    def _reread(self, consumer: Any, topics: set[str]) -> None:
        """Re-created topics are read from the start; the others go on where they were."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        meta = consumer.list_topics(timeout=5)
        keep = [tp for tp in consumer.position(consumer.assignment()) if tp.topic not in topics]
        fresh = [TopicPartition(t, p, OFFSET_BEGINNING)
                 for t in sorted(topics) if t in meta.topics for p in meta.topics[t].partitions]
        if self.settings.topic_shard_maps in topics:
            self._unread_maps = set()  # the policy keeps its base map; nothing to wait for
        consumer.assign(keep + fresh)

    def _recover_base(self) -> None:
        """No base map once caught up: rebuild it from ClickHouse (off the loop thread)."""
        if not self.ready.is_set() or self.policy.base is not None:
            self._recover_since = None
            return
        now = time.monotonic()
        if self._recover_since is None:
            self._recover_since = now
        if self._recovering is None:
            if now >= self._recover_at:
                self._recovering = self._executor.submit(self.sink.durable_facts,
                                                         self.settings.job_id)
            return
        if not self._recovering.done():
            return
        future, self._recovering = self._recovering, None
        self._recover_at = now + RECOVER_EVERY_S
        try:
            stored, in_force = future.result()
        except Exception as exc:
            log.warning("planner: cannot read the job's maps from ClickHouse: %s", exc)
            return
        base, why = choose_base(stored, in_force, now - self._recover_since, RECOVER_WAIT_S)
        if base is None:
            if why != self._recover_why:
                log.info("planner: no base map for job %s: %s", self.settings.job_id, why)
            self._recover_why = why
            return
        self.policy.observe_map(base)
        log.warning("planner: the shard-map topic holds no map of job %s; base map v%d "
                    "rebuilt from ClickHouse (%s)", self.settings.job_id, base.map_version, why)

    def _handle(self, msg: Any, producer: Any) -> None:
        s = self.settings
        err = msg.error()
        if err is not None:
            end_of_partition = err.code() == KafkaError._PARTITION_EOF
            if end_of_partition and msg.topic() == s.topic_shard_maps:
                self._unread_maps.discard(msg.partition())
                if not self._unread_maps and not self.ready.is_set():
                    log.info("planner: caught up on shard maps (latest version %s)",
                             self.policy.base.map_version if self.policy.base else None)
                    self.ready.set()
            elif not end_of_partition:
                log.warning("planner: consumer error %s", err)
            return
        is_map = msg.topic() == s.topic_shard_maps
        if is_map and msg.key() is not None and msg.key() != s.job_id.encode():
            return  # another job's map
        try:
            event = decode(msg.value(), expect=ShardMap if is_map else Prediction,
                           max_bytes=s.max_event_bytes)
        except InvalidEvent as exc:
            self.stats["invalid"] += 1
            self._dead_letter(producer, exc, msg)
            return
        if event.job_id != s.job_id:
            return
        if isinstance(event, ShardMap):
            self.stats["maps"] += 1
            before = self.policy.base
            if self.policy.observe_map(event) and (before is None
                                                   or before.event_id != event.event_id):
                log.debug("planner: base map is now version %d", event.map_version)
                self.sink.record_map(event)  # rank 0's maps too: ClickHouse outlives the topic
        elif isinstance(event, Prediction):
            self.stats["predictions"] += 1
            self.policy.observe_prediction(event)

    def _dead_letter(self, producer: Any, exc: InvalidEvent, msg: Any) -> None:
        """Route a payload that breaks the contract to the dead-letter topic; never crash."""
        job, worker = peek_identity(msg.value())
        if job != self.settings.job_id:
            return  # another job's consumer (or the processor) reports its own garbage
        dead = DeadLetter.for_payload(
            exc, msg.value(), source_topic=msg.topic(), source_partition=msg.partition(),
            source_offset=msg.offset(), job_id=job, worker_id=worker,
        )
        log.warning("planner: rejected %s@%d: %s", msg.topic(), msg.offset(), exc)
        producer.produce(self.settings.topic_dead_letters, key=job.encode(), value=encode(dead))
        producer.poll(0)

    # ------------------------------------------------------------ output

    def _evaluate(self, producer: Any) -> Decision | None:
        decision = self.policy.evaluate()
        if decision is None:
            return None
        self.stats["decisions"] += 1
        if decision.shard_map is not None:
            error = self._publish(producer, decision.shard_map)
            if error:
                log.error("planner: publishing map v%d failed: %s",
                          decision.shard_map.map_version, error)
                return None  # the policy retries at the next interval
        log.log(logging.INFO if decision.shard_map else logging.DEBUG,
                "planner %s v%d: %s", decision.outcome, decision.map_version, decision.reason)
        self.sink.record_decision(self.settings.job_id, decision)
        return decision

    def _publish(self, producer: Any, new_map: ShardMap) -> str:
        """Produce synchronously; adopt the map only once the broker has it."""
        base = self.policy.base
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer.produce(self.settings.topic_shard_maps, key=self.settings.job_id.encode(),
                         value=encode(new_map), on_delivery=delivered)
        if producer.flush(10) > 0:
            errors.append("not delivered within 10 s")
        if errors:
            return "; ".join(errors)
        self.stats["published"] += 1
        self.policy.observe_map(new_map)
        self.sink.record_map(new_map)
        if base is not None and self.settings.planner_learn_bandwidth:
            had = [len(ids) for ids in base.shards]
            per_rank = {
                r: float((len(ids) - had[r]) * self.settings.planner_shard_bytes)
                for r, ids in enumerate(new_map.shards[: base.world_size])
                if len(ids) > had[r]
            }
            if per_rank:
                due = time.monotonic() + MEASURE_AFTER_S
                self._measure = (due, base.map_version, new_map.map_version, per_rank)
        return ""

    def _learn_bandwidth(self) -> None:
        """Off the hot path: ask ClickHouse what the last move cost in data-wait."""
        if self._measuring is not None and self._measuring.done():
            future, self._measuring = self._measuring, None
            assert self._measure is not None
            _, _, _, per_rank = self._measure
            try:
                waits = future.result()
            except Exception as exc:
                log.warning("planner: cannot measure transfer cost: %s", exc)
                waits = {}
            for rank, extra in waits.items():
                bps = self.policy.set_bandwidth(per_rank[rank], extra)
                log.info("planner: rank %d took %.3fs extra wait -> bandwidth %.3g B/s",
                         rank, extra, bps)
            self._measure = None
        if self._measure is not None and self._measuring is None:
            due, old, new, per_rank = self._measure
            if time.monotonic() >= due:
                self._measuring = self._executor.submit(
                    self.sink.transfer_waits, self.settings.job_id, old, new,
                    sorted(per_rank), MEASURE_BATCHES,
                )


def main(settings: Settings) -> int:
    """``shardsense planner``: run until SIGINT/SIGTERM; 0 on a clean stop."""
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("planner: signal %d, stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    Planner(settings).run(stop)
    return 0
