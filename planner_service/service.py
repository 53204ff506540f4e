"""The planner process: every job's predictions and shard maps in, maps and decisions out.

It plans every job it sees (``settings.job_id`` is only the trainers' default):
one :class:`~planner_service.policy.PlanPolicy` per job in a
:class:`~planner_service.jobs.JobTable`, evaluated when the job's predictions
or maps arrive (debounced per job), swept every ``planner_interval_ms``, and
forgotten after ``planner_job_idle_s`` without input. Several instances split
the jobs through a consumer group on the prediction topic
(:mod:`planner_service.feeds`, :mod:`planner_service.ownership`).

A map is published synchronously (idempotent producer, keyed by job) and
adopted only once the broker acknowledged it; a failed publish is retried at
the job's next evaluation. Decisions go to ClickHouse with their reasons
('skipped' at most once per interval and job); the cost of each published
move is learnt from data-wait (:mod:`planner_service.learning`).

Healing (issue 12): the producer recreates itself after a broker restart
(``HealingProducer``), the feeds read re-created topics again from the start
(``Feeds.heal``), and a job whose map partition holds no map of it (a restarted
embedded broker forgets its topics) gets its base map from ClickHouse
(:class:`~planner_service.recovery.BaseRecovery`), so its versions go on from
where they were. Maps seen on the topic (rank 0's too) are stored there.

Run it as ``shardsense planner`` (:func:`main`) or in a thread of the embedded
stack (``Planner(settings).start()`` ... ``.stop()``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from planner_service.decision import Decision, Outcome, PolicyConfig
from planner_service.feeds import Feeds
from planner_service.jobs import JobTable
from planner_service.learning import TransferProbe
from planner_service.ownership import partition_of
from planner_service.policy import PlanPolicy
from planner_service.recovery import BaseRecovery
from planner_service.sink import ClickHouseSink, DecisionSink
from shardsense.errors import InvalidEvent
from shardsense.events import DeadLetter, Prediction, ShardMap, decode, encode, peek_identity
from shardsense.kafka import healing_producer
from shardsense.settings import Settings

__all__ = ["Planner", "main"]

log = logging.getLogger(__name__)

#: A map partition is read again for a job without a base map at most this often.
REREAD_EVERY_S = 5.0
#: Longest the loop waits for input before looking at the clock again.
MAX_POLL_S = 0.1


class Planner:
    """Plans every job of the prediction partitions it owns; see the module doc."""

    def __init__(
        self, settings: Settings, *, sink: DecisionSink | None = None, client: Any = None
    ) -> None:
        """``sink`` replaces ClickHouse (tests); ``client`` shares the stack's ClickHouse client."""
        self.settings = s = settings
        self.jobs = JobTable(
            PolicyConfig.from_settings(s), debounce_s=s.planner_debounce_ms / 1000,
            interval_s=s.planner_interval_ms / 1000, idle_s=float(s.planner_job_idle_s))
        self.sink: DecisionSink = sink or ClickHouseSink(
            s.resolved_clickhouse_url, client=client, facts_url=s.planner_facts_url)
        self.probe = TransferProbe(self.sink)
        self.recovery = BaseRecovery(self.sink)
        self.ready = threading.Event()  # set once assigned and its map partitions are read
        self.stats = {"predictions": 0, "maps": 0, "invalid": 0, "decisions": 0, "published": 0,
                      "foreign": 0, "expired": 0, "stale_maps": 0}
        self.feeds: Feeds | None = None
        self._reread_at: dict[int, float] = {}
        self._warned_keys = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def policy_of(self, job_id: str) -> PlanPolicy | None:
        """The policy of a job this instance plans (None: not one of its jobs now)."""
        job = self.jobs.get(job_id)
        return job.policy if job is not None else None

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
        """Consume, evaluate due jobs, publish; until ``stop`` is set."""
        stop = stop or self._stop
        s = self.settings
        feeds = self.feeds = Feeds(s, float(s.planner_rank_timeout_s), self._lost)
        producer = healing_producer(s, what="planner producer", **{"linger.ms": 0})
        try:
            if not feeds.start(stop):
                return
            while not stop.is_set():
                for msg in feeds.poll(min(MAX_POLL_S, self.jobs.next_due())):
                    self._handle(msg, producer)
                if feeds.ready and not self.ready.is_set():
                    log.info("planner: ready: %d jobs on partitions %s", len(self.jobs),
                             sorted(feeds.owned or ()))
                    self.ready.set()
                self._tick(producer)
        finally:
            feeds.close()
            producer.flush(5)
            self.probe.close()
            self.recovery.close()
            self.sink.close()

    def _tick(self, producer: Any) -> None:
        """Evaluate the due jobs; expire idle ones; learn from finished measurements."""
        for job_id in self.jobs.due():
            self._evaluate(job_id, producer)
        for job_id in self.jobs.expire():
            self.stats["expired"] += 1
            self.probe.forget(job_id)
            self.recovery.forget(job_id)
            log.info("planner: job %s idle > %ds, forgotten", job_id,
                     self.settings.planner_job_idle_s)
        self.probe.poll(self._learned)
        self.recovery.poll(self._recovered)
        producer.poll(0)

    def _lost(self, partitions: set[int]) -> None:
        """Another instance owns these prediction partitions now: forget their jobs."""
        for job_id in self.jobs.drop_partitions(partitions):
            self.probe.forget(job_id)
            self.recovery.forget(job_id)

    # ------------------------------------------------------------ input

    def _owner_partition(self, job_id: str) -> int:
        """The prediction partition (and so the instance) a job belongs to."""
        n = self.feeds.n_predictions if self.feeds is not None else 1
        return partition_of(job_id.encode(), max(n, 1))

    def _handle(self, msg: Any, producer: Any) -> None:
        s = self.settings
        is_map = msg.topic() == s.topic_shard_maps
        key = msg.key()
        if is_map and key is not None and not self._mine(key.decode(errors="replace")):
            return  # another instance's job
        try:
            event = decode(msg.value(), expect=ShardMap if is_map else Prediction,
                           max_bytes=s.max_event_bytes)
        except InvalidEvent as exc:
            self.stats["invalid"] += 1
            self._dead_letter(producer, exc, msg)
            return
        if not self._mine(event.job_id):
            if not is_map:
                self._foreign(event.job_id, msg)
            return
        if isinstance(event, ShardMap) and self._stale_unknown(event):
            return
        partition = self._owner_partition(event.job_id)
        policy = self.jobs.policy(event.job_id, partition)
        if isinstance(event, ShardMap):
            self.stats["maps"] += 1
            before = policy.base
            if policy.observe_map(event) and (before is None or before.event_id != event.event_id):
                log.debug("planner: job %s base map is now v%d", event.job_id, event.map_version)
                self.sink.record_map(event)  # rank 0's maps too: ClickHouse outlives the topic
        elif isinstance(event, Prediction):
            self.stats["predictions"] += 1
            policy.observe_prediction(event)
            if policy.base is None:
                self._reread(partition)
                self._want_base(event.job_id, partition)
        self.jobs.touch(event.job_id)

    def _stale_unknown(self, m: ShardMap) -> bool:
        """A map of a job not planned now, older than the idle time: a finished job's.

        Not adopted (a planner's memory does not grow with every job the compacted
        topic ever held); should the job still be alive, its predictions create it
        and have its map partition read again.
        """
        if self.jobs.get(m.job_id) is not None:
            return False
        stale = m.ts < time.time() - self.settings.planner_job_idle_s
        self.stats["stale_maps"] += stale
        return stale

    def _mine(self, job_id: str) -> bool:
        """Whether this instance plans ``job_id`` (without feeds, as in unit tests: yes)."""
        return self.feeds is None or self.feeds.owns(self._owner_partition(job_id))

    def _foreign(self, job_id: str, msg: Any) -> None:
        """A prediction of a job another instance owns: its producer does not key by job."""
        self.stats["foreign"] += 1
        if not self._warned_keys:
            self._warned_keys = True
            log.warning("planner: a prediction of job %s arrived on partition %d, not on the "
                        "job's partition %d: predictions must be keyed by job id "
                        "(docs/EVENTS.md); ignored", job_id, msg.partition(),
                        self._owner_partition(job_id))

    def _reread(self, partition: int) -> None:
        """A job without a base map: read its map partition again (rarely)."""
        if self.feeds is None:
            return
        now = time.monotonic()
        if now - self._reread_at.get(partition, -REREAD_EVERY_S) >= REREAD_EVERY_S:
            self._reread_at[partition] = now
            self.feeds.reread(partition % max(self.feeds.n_maps, 1))

    def _want_base(self, job_id: str, partition: int) -> None:
        """The job's map partition was read to its end without its map: ask ClickHouse."""
        feeds = self.feeds
        if feeds is None or feeds.map_caught_up(partition % max(feeds.n_maps, 1)):
            self.recovery.want(job_id)

    def _recovered(self, job_id: str, base: ShardMap, why: str) -> None:
        policy = self.policy_of(job_id)
        if policy is not None and policy.base is None:
            policy.observe_map(base)
            log.warning("planner: the shard-map topic holds no map of job %s; base map v%d "
                        "rebuilt from ClickHouse (%s)", job_id, base.map_version, why)

    def _dead_letter(self, producer: Any, exc: InvalidEvent, msg: Any) -> None:
        """Route a payload that breaks the contract to the dead-letter topic; never crash."""
        job, worker = peek_identity(msg.value())
        if job and not self._mine(job):
            return  # the owning instance reports it
        dead = DeadLetter.for_payload(
            exc, msg.value(), source_topic=msg.topic(), source_partition=msg.partition(),
            source_offset=msg.offset(), job_id=job, worker_id=worker,
        )
        log.warning("planner: rejected %s@%d: %s", msg.topic(), msg.offset(), exc)
        producer.produce(self.settings.topic_dead_letters, key=job.encode(), value=encode(dead))
        producer.poll(0)

    # ------------------------------------------------------------ output

    def _evaluate(self, job_id: str, producer: Any) -> Decision | None:
        job = self.jobs.get(job_id)
        feeds = self.feeds
        if job is None or (feeds is not None and not feeds.owns(job.partition)):
            return None
        if feeds is not None and not feeds.map_caught_up(job.partition % max(feeds.n_maps, 1)):
            self.jobs.touch(job_id)  # again once the partition's maps are read
            return None
        policy = job.policy
        base = policy.base
        decision = policy.evaluate()
        if decision is None:
            return None
        self.stats["decisions"] += 1
        if decision.shard_map is not None:
            error = self._publish(producer, decision.shard_map)
            if error:
                log.error("planner: publishing map v%d of job %s failed: %s",
                          decision.shard_map.map_version, job_id, error)
                return None  # the policy retries at the next evaluation
            policy.observe_map(decision.shard_map)
            if base is not None and self.settings.planner_learn_bandwidth:
                self.probe.published(job_id, base, decision.shard_map)
        log.log(logging.INFO if decision.shard_map else logging.DEBUG,
                "planner %s %s v%d: %s", job_id, decision.outcome, decision.map_version,
                decision.reason)
        if decision.outcome is not Outcome.SKIPPED or self.jobs.record_skip(job_id):
            self.sink.record_decision(job_id, decision)
        return decision

    def _publish(self, producer: Any, new_map: ShardMap) -> str:
        """Produce synchronously; the caller adopts the map only once the broker has it."""
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer.produce(self.settings.topic_shard_maps, key=new_map.job_id.encode(),
                         value=encode(new_map), on_delivery=delivered)
        if producer.flush(10) > 0:
            errors.append("not delivered within 10 s")
        if errors:
            return "; ".join(errors)
        self.stats["published"] += 1
        self.sink.record_map(new_map)
        return ""

    def _learned(self, job_id: str, shards: int, extra_wait_s: float) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            per_shard = job.policy.observe_transfer(shards, extra_wait_s)
            log.info("planner: job %s: %d shards cost %.3fs extra wait -> %.3gs per shard",
                     job_id, shards, extra_wait_s, per_shard)


def main(settings: Settings) -> int:
    """``shardsense planner``: run until SIGINT/SIGTERM; 0 on a clean stop."""
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("planner: signal %d, stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    _ensure_schema(settings)
    Planner(settings).run(stop)
    return 0


def _ensure_schema(settings: Settings) -> None:
    """Its own store (a fresh chDB path) gets the tables; a failure only warns: the sink retries."""
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema

    try:
        apply_schema(connect(settings.resolved_clickhouse_url))
    except Exception as exc:
        log.warning("planner: could not apply the ClickHouse schema: %s", exc)
