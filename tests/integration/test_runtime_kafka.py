"""The training runtime's Kafka side against the real embedded broker.

Timings must arrive packed (few messages), complete, once and in order per rank;
shard maps must be followed by version with invalid ones rejected; and with no
broker at all, offer() must stay fast while drops are counted and close() is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from producers.mapfeed import KafkaMapSource
from producers.telemetry import KafkaTimingSink
from shardsense.events import ShardMap, TimingReport, decode, encode
from shardsense.kafka import consumer_config, producer_config
from shardsense.net import free_port
from shardsense.settings import Settings

pytestmark = pytest.mark.integration


def _read_all(settings: Settings, topic: str, expect_rows: int, timeout: float = 20.0) -> list:
    """Every report on ``topic`` (all partitions), read with a plain confluent Consumer."""
    consumer = Consumer(consumer_config(settings, f"reader-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    reports: list[TimingReport] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and sum(map(len, reports)) < expect_rows:
            for msg in consumer.consume(500, 0.5):
                assert msg.error() is None, msg.error()
                event = decode(msg.value(), expect=TimingReport)
                assert isinstance(event, TimingReport)
                assert msg.key() == settings.job_id.encode()  # keyed by job (EVENTS.md)
                reports.append(event)
    finally:
        consumer.close()
    return reports


def test_timings_arrive_packed_complete_and_in_order(settings: Settings) -> None:
    ranks, per_rank = 2, 5000
    sinks = [KafkaTimingSink(settings, r, flush_every_s=0.2) for r in range(ranks)]
    for step in range(per_rank):
        for r, sink in enumerate(sinks):
            sink.offer(0, step, 32 + r, 0.001, 0.01 * (r + 1), 1, 1_700_000_000.0 + step)
    t0 = time.monotonic()
    for sink in sinks:
        sink.close(timeout=15.0)
    print(f"close of {ranks} sinks: {time.monotonic() - t0:.2f}s; stats {sinks[0].stats()}")
    assert [s.sent for s in sinks] == [per_rank] * ranks
    assert [s.dropped for s in sinks] == [0] * ranks

    reports = _read_all(settings, settings.topic_timings, ranks * per_rank)
    messages = sum(s.stats()["messages"] for s in sinks)
    assert len(reports) == messages
    assert len(reports) <= ranks * per_rank // 500, "timings must be packed many per message"
    for r in range(ranks):
        steps = [s for rep in reports if rep.worker_id == r for s in rep.timings["step"]]
        assert steps == list(range(per_rank)), f"rank {r}: missing, duplicated or reordered"
        mine = [rep for rep in reports if rep.worker_id == r]
        assert {x for rep in mine for x in rep.timings["samples"]} == {32 + r}
        assert all(rep.job_id == settings.job_id and rep.host for rep in mine)


def _map(settings: Settings, version: int, world: int = 2) -> ShardMap:
    shards = [list(range(r, 8, world)) for r in range(world)]
    return ShardMap.build(settings.job_id, version, shards, [16] * world, num_samples=800)


def _produce_raw(settings: Settings, key: bytes, value: bytes) -> None:
    producer = Producer(producer_config(settings))
    producer.produce(settings.topic_shard_maps, value, key)
    assert producer.flush(10.0) == 0


def _wait(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_map_source_follows_versions_and_rejects_invalid(settings: Settings) -> None:
    source = KafkaMapSource(settings)
    try:
        assert source.wait_for_initial(15.0) is None  # empty topic: caught up, no map
        source.publish(_map(settings, 1))
        source.publish(_map(settings, 2, world=4))
        bad = _map(settings, 3).to_dict()
        bad["shards"] = [[0, 1, 2], [2, 3, 4, 5, 6, 7]]  # shard 2 twice: not a partition
        _produce_raw(settings, settings.job_id.encode(), json.dumps(bad).encode())
        _produce_raw(settings, settings.job_id.encode(), encode(_map(settings, 1)))  # older
        other = _map(settings.replace(job_id="someone-else"), 9)
        _produce_raw(settings, b"someone-else", encode(other))
        assert _wait(lambda: source.counts["rejected"] >= 1 and source.counts["stale"] >= 3)
        latest = source.latest()
        assert latest is not None and latest.map_version == 2 and latest.world_size == 4
        assert source.counts["rejected"] == 1, source.stats()
        assert "not_a_partition" in source.last_rejection
        assert source.counts["published"] == 2
    finally:
        source.close()

    late = KafkaMapSource(settings)  # a rank (re)starting later reads the compacted history
    try:
        t0 = time.monotonic()
        first = late.wait_for_initial(15.0)
        print(f"late source caught up in {time.monotonic() - t0:.2f}s: {late.stats()}")
        assert first is not None and first.map_version == 2
        assert late.counts["rejected"] == 1 and late.counts["other_jobs"] == 1
    finally:
        late.close()


def test_no_broker_offer_stays_fast_and_drops_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dead = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{free_port()}", job_id="dead-job")
    sink = KafkaTimingSink(dead, 0, max_queue=65536, message_timeout_s=1.0)
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        sink.offer(0, i, 32, 0.001, 0.01, 1, 1.0 + i)
    took = time.perf_counter() - t0
    print(f"{n} offers with no broker: {took * 1e3:.1f} ms ({took / n * 1e9:.0f} ns/offer)")
    assert took < 10.0  # generous: the point is that it never waits on the network
    assert _wait(lambda: sink.dropped > 0, timeout=10.0), sink.stats()
    assert _wait(lambda: sink.stats()["dropped_kafka"] > 0, timeout=10.0), sink.stats()
    t0 = time.monotonic()
    sink.close(timeout=3.0)
    closed_in = time.monotonic() - t0
    stats = sink.stats()
    print(f"close: {closed_in:.2f}s; {stats}")
    assert closed_in < 3.5
    assert stats["sent"] == 0 and stats["dropped"] == n and stats["queued"] == 0

    # A long message timeout: librdkafka's bounded queue fills up and refuses instead.
    small = KafkaTimingSink(dead, 1, message_timeout_s=300.0, max_buffered_kbytes=512)
    for i in range(20_000):
        small.offer(0, i, 32, 0.001, 0.01, 1, 1.0 + i)
    assert _wait(lambda: small.stats()["dropped_kafka"] > 0, timeout=10.0), small.stats()
    t0 = time.monotonic()
    small.close(timeout=2.0)
    assert time.monotonic() - t0 < 2.5
    assert small.stats()["dropped"] == 20_000, small.stats()
    noisy = [r for r in caplog.records if r.name.startswith(("producers.telemetry", "shardsense"))]
    print(f"{len(noisy)} log records for 120k dropped timings")
    assert len(noisy) <= 8, [r.getMessage() for r in noisy]  # summaries, never per batch

    maps = KafkaMapSource(dead)
    t0 = time.monotonic()
    assert maps.wait_for_initial(0.5) is None and maps.latest() is None
    maps.publish(_map(dead, 1), timeout=0.5)  # never raises; adopted locally, counted failed
    assert maps.counts["publish_failed"] == 1 and maps.latest() is not None
    maps.close(timeout=3.0)
    assert time.monotonic() - t0 < 6.0


def test_a_forked_child_drops_instead_of_queueing() -> None:
    """DataLoader workers are forked: a sink there has no sender thread, so it must not fill up."""
    dead = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{free_port()}", job_id="fork-job")
    sink = KafkaTimingSink(dead, 0)
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: offer, report, leave without running any cleanup
            for i in range(10):
                sink.offer(0, i, 32, 0.001, 0.01, 1, 1.0)
            os.write(write_end, f"{sink.stats()['queued']} {sink.dropped}".encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            report = pipe.read()
        os.waitpid(pid, 0)
        assert report == "0 10"
        sink.offer(0, 0, 32, 0.001, 0.01, 1, 1.0)  # the parent is unaffected
        assert sink.dropped == 0
    finally:
        sink.close(timeout=1.0)
