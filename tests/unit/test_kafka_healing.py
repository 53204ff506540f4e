"""Healing logic without a broker: when a producer is replaced and what it hands over,
when a topic counts as re-created, the sink's flush policy, the planner's base choice,
the watchdog's pauses and the per-client log gate."""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.watchdog import restart_delay
from planner_service.recovery import choose_base
from producers.telemetry import next_report_in
from shardsense.events import ShardMap
from shardsense.healing import DeliveryProbe, HealingProducer, probe_from_stats, stuck_reason
from shardsense.incarnation import Incarnation, TopicWatch, changed_topics
from shardsense.kafka_logs import ClientLog

pytestmark = pytest.mark.unit


class FakeMessage:
    def __init__(self, topic: str, value: bytes, key: bytes | None) -> None:
        self._t, self._v, self._k = topic, value, key

    def topic(self) -> str:
        return self._t

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes | None:
        return self._k


class FakeProducer:
    """Queues messages; ``deliver(err)`` answers them all; ``purge`` fails them as purged."""

    made: ClassVar[list[FakeProducer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.queue: list[tuple[FakeMessage, Any]] = []
        self.fatal = False
        FakeProducer.made.append(self)

    def produce(self, topic: str, value: bytes, key: bytes | None = None,
                on_delivery: Any = None) -> None:
        if self.fatal:
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal", fatal=True))
        self.queue.append((FakeMessage(topic, value, key), on_delivery))

    def deliver(self, err: Any = None) -> None:
        queue, self.queue = self.queue, []
        for msg, cb in queue:
            cb(err, msg)

    def purge(self) -> None:
        self.pending_purge = True

    def poll(self, timeout: float = 0) -> int:
        if getattr(self, "pending_purge", False):
            self.pending_purge = False
            self.deliver(KafkaError(KafkaError._PURGE_QUEUE, "purged"))
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def healing() -> tuple[HealingProducer, Clock]:
    FakeProducer.made = []
    clock = Clock()
    return HealingProducer({"bootstrap.servers": "x"}, what="t", factory=FakeProducer,
                           clock=clock), clock


def _stats(epoch: int, rx: int, outstanding: int) -> str:
    return json.dumps({"eos": {"producer_epoch": epoch}, "msg_cnt": outstanding,
                       "brokers": {"b/1": {"nodeid": 1, "rx": rx}, "b/boot": {"nodeid": -1,
                                                                               "rx": 999}}})


def test_epoch_bumps_without_delivery_replace_the_producer_and_resend_in_order(
    healing: tuple[HealingProducer, Clock],
) -> None:
    producer, clock = healing
    got: list[tuple[Any, bytes]] = []
    for i in range(3):
        producer.produce("t", b"m%d" % i, b"k", on_delivery=lambda e, m: got.append((e, m.value())))
    producer._on_stats(_stats(0, 10, 3))  # base: nothing delivered yet
    clock.now += 0.5
    producer._on_stats(_stats(4, 14, 3))  # the restarted broker answers UNKNOWN_PRODUCER_ID
    producer.poll(0)
    old, new = FakeProducer.made
    assert producer.counts == {"recreated": 1, "resent": 3}
    assert "epoch bumped 4 times" in producer.last_reason
    assert [m.value() for m, _ in new.queue] == [b"m0", b"m1", b"m2"] and old.queue == []
    new.deliver()
    assert got == [(None, b"m0"), (None, b"m1"), (None, b"m2")], "callbacks reach the user once"


def test_a_fatal_producer_is_replaced_inside_produce(
    healing: tuple[HealingProducer, Clock],
) -> None:
    producer, _ = healing
    FakeProducer.made[0].fatal = True
    producer.produce("t", b"x", b"k")
    assert len(FakeProducer.made) == 2 and len(FakeProducer.made[1].queue) == 1
    assert producer.counts["recreated"] == 1


def test_time_outs_reach_the_callback_and_heals_back_off(
    healing: tuple[HealingProducer, Clock],
) -> None:
    producer, clock = healing
    errors: list[str] = []
    producer.produce("t", b"x", b"k", on_delivery=lambda e, m: errors.append(e.str()))
    FakeProducer.made[0].deliver(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))
    assert errors == ["timed out"] and producer.counts["recreated"] == 0
    for expected in (1, 1, 2):  # second flag inside the 1 s backoff waits; then it heals
        producer._flag("broken")
        producer.poll(0)
        assert producer.counts["recreated"] == expected
        clock.now += 0.6


def test_stuck_reason_needs_a_broker_that_answers() -> None:
    base = DeliveryProbe(at=0.0, delivered=5, epoch=1, answered=40, outstanding=2)
    paused = DeliveryProbe(at=30.0, delivered=5, epoch=1, answered=40, outstanding=9)
    assert stuck_reason(base, paused, 5.0) is None, "a paused broker answers nothing: wait"
    progress = DeliveryProbe(at=30.0, delivered=6, epoch=9, answered=90, outstanding=9)
    assert stuck_reason(base, progress, 5.0) is None
    probe = probe_from_stats(_stats(3, 7, 2), 1.0, 5)
    assert (probe.epoch, probe.answered, probe.outstanding) == (3, 7, 2)
    with pytest.raises(ValueError, match="stall_s"):
        stuck_reason(base, paused, 0)


class FakeAdmin:
    """describe_cluster/describe_topics answering from ``topics`` (None = missing)."""

    def __init__(self) -> None:
        self.cluster = "c1"
        self.topics: dict[str, str | None] = {"m": "id1"}

    def poll(self, timeout: float) -> int:
        return 0

    def describe_cluster(self, request_timeout: int) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_result(type("C", (), {"cluster_id": self.cluster})())
        return f

    def describe_topics(self, topics: Any, request_timeout: int) -> dict[str, Future[Any]]:
        out = {}
        for name, topic_id in self.topics.items():
            f: Future[Any] = Future()
            if topic_id is None:
                f.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))
            else:
                f.set_result(type("D", (), {"topic_id": topic_id, "partitions": [0]})())
            out[name] = f
        return out


def test_topic_watch_reports_a_new_incarnation_once_and_never_a_missing_topic() -> None:
    admin, clock = FakeAdmin(), Clock()
    watch = TopicWatch(["m"], admin=admin, every_s=1.0, clock=clock)

    def round_trip() -> set[str]:
        watch.changed()  # asks
        return watch.changed()  # reads the answer

    assert round_trip() == set() and watch.current("m") == Incarnation("c1", "id1", 1)
    admin.topics["m"] = None  # broker restarted, topic not re-created yet
    clock.now += 1
    assert round_trip() == set()
    admin.topics["m"], admin.cluster = "id2", "c2"
    clock.now += 1
    assert round_trip() == {"m"}
    clock.now += 1
    assert round_trip() == set()
    assert changed_topics({}, {"m": Incarnation("c", "t", 1)}) == set(), "first sight"


@pytest.mark.parametrize(("now", "queued", "last", "due"), [
    (10.0, 0, 0.0, None),        # nothing queued
    (10.0, 1, 0.0, 0.0),         # idle rank: at once
    (10.0, 5, 9.95, 0.05),       # within the gap: with the next report
    (10.0, 2000, 9.99, 0.0),     # a full report never waits
])
def test_flush_policy(now: float, queued: int, last: float, due: float | None) -> None:
    got = next_report_in(now, queued, last, flush_every_s=0.1, max_per_report=2000)
    assert got == (None if due is None else pytest.approx(due))


def test_planner_base_from_durable_facts_never_goes_back() -> None:
    stored = ShardMap.build("j", 7, [[0, 1], [2, 3]], [8, 8], num_samples=640)
    base, _ = choose_base(stored, 6, 0.0, 10.0)
    assert base is stored
    base, why = choose_base(stored, 9, 3.0, 10.0)
    assert base is None and "waiting for rank 0" in why
    base, _ = choose_base(stored, 9, 11.0, 10.0)
    assert base is not None and base.map_version == 9 and base.shards == stored.shards


def test_a_planner_with_its_own_store_reads_the_version_in_force_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Maps from its own store (it records every map it sees), ``batch_timings`` from
    ``planner_facts_url`` (the store the processor writes)."""
    from types import SimpleNamespace

    from planner_service.sink import ClickHouseSink

    asked: list[tuple[str, str]] = []

    class Store:
        def __init__(self, url: str) -> None:
            self.url = url

        def query(self, sql: str, parameters: Any = None) -> Any:
            asked.append((self.url, sql.split("FROM ")[1].split()[0]))
            return SimpleNamespace(result_rows=[(4,)] if "max(map_version)" in sql else [])

    monkeypatch.setattr("shardsense.clickhouse.connect", Store)
    sink = ClickHouseSink("chdb:///own", client=Store("own"), facts_url="http://stack:8123")
    try:
        assert sink.durable_facts("j") == (None, 4)
        sink.transfer_waits("j", 1, 2, [0], 1)
    finally:
        sink.close()
    assert asked == [("own", "v_shard_maps"), ("http://stack:8123", "batch_timings"),
                     ("http://stack:8123", "batch_timings")]


def test_broker_restart_pauses_grow() -> None:
    assert restart_delay(0) == 0.0 and restart_delay(3) == 2.0 and restart_delay(20) == 30.0
    with pytest.raises(ValueError, match="recent"):
        restart_delay(-1)


def test_client_log_passes_one_line_per_interval_and_fatal_errors_always(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = ClientLog("rank 3", interval_s=3600)
    with caplog.at_level(logging.DEBUG, logger="shardsense.kafka.client"):
        for _ in range(50):
            log.log(3, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connect refused")
            log.error(KafkaError(KafkaError._TRANSPORT, "transport"))
        log.error(KafkaError(KafkaError._FATAL, "dead", fatal=True))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("rank 3: FAIL") and "fatal" in lines[1]
    assert log.suppressed == 99 and log.last_error == "dead"


def test_siblings_that_did_not_deliver_since_are_replaced_before_their_next_message() -> None:
    FakeProducer.made = []
    clock = Clock()

    def make(what: str) -> HealingProducer:
        return HealingProducer({"bootstrap.servers": "b:1"}, what=what, factory=FakeProducer,
                               clock=clock)

    busy, idle = make("busy"), make("idle")
    for p in (busy, idle):
        p.produce("t", b"warm")
    for fake in FakeProducer.made:
        fake.deliver()
    clock.now += 1.0
    busy.produce("t", b"x")  # the broker restarts; busy finds out, idle does not
    busy._on_stats(_stats(0, 1, 1))
    clock.now += 0.5
    busy._on_stats(_stats(3, 5, 1))
    busy.poll(0)
    late = make("made after the restart")
    assert busy.counts["recreated"] == 1 and idle.counts["recreated"] == 0
    idle.produce("t", b"y")  # replaced first: y never leaves with the stale producer id
    assert idle.counts["recreated"] == 1 and "beside it" in idle.last_reason
    assert [m.value() for m, _ in FakeProducer.made[-1].queue] == [b"y"]
    assert late.counts["recreated"] == 0 and not late._reason


def test_base_recovery_asks_clickhouse_once_per_interval_and_hands_the_base_on() -> None:
    import time as _time

    from planner_service.recovery import BaseRecovery

    stored = ShardMap.build("j", 3, [[0, 1], [2, 3]], [8, 8], num_samples=800)

    class Facts:
        asked = 0
        in_force = 4  # rank 0's v4 is not stored yet

        def durable_facts(self, job_id: str) -> tuple[ShardMap | None, int]:
            Facts.asked += 1
            return stored, Facts.in_force

    clock = Clock()
    got: list[tuple[str, int, str]] = []
    recovery = BaseRecovery(Facts(), every_s=2.0, wait_s=10.0, clock=clock)

    def settle() -> None:  # the question runs on a worker thread
        for _ in range(200):
            recovery.poll(lambda j, m, why: got.append((j, m.map_version, why)))
            if recovery._running is None:
                return
            _time.sleep(0.005)

    recovery.want("j")
    settle()
    assert Facts.asked == 1 and got == [], "v4 in force, v3 stored: wait for rank 0"
    clock.now += 1.0
    settle()
    assert Facts.asked == 1, "asked again only after every_s"
    clock.now += 11.0
    settle()
    settle()
    assert got and got[0][:2] == ("j", 4), "after wait_s: the stored map as the version in force"
    recovery.close()
