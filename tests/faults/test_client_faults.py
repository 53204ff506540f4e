"""Issue 12 (clients): the Kafka clients come back by themselves after broker faults.

One loop of real clients runs against its own embedded broker: fake ranks offering
timings through real ``KafkaTimingSink`` s, rank 0's ``KafkaMapSource``, the real
Faust processor (learning hooks, chDB), the planner, and the stack's
``BrokerWatchdog`` (which re-creates the topics a restarted broker forgot). Then:

* the broker is killed (-9) and comes back empty on the same port, once with a new
  cluster id: every client must deliver again, rank 0 must put its map back on the
  re-created topic, and a slowdown made after the fault must be planned for;
* the broker is paused (SIGSTOP) for 10 s: nothing may be lost or recreated;
* the broker is down 30 s and comes back empty: training never waits, what the sinks
  gave up on is counted and logged, and the loop adapts again.

Each test prints its recovery timeline (``Timeline.report``); it asserts counts and
orders only (shared machine), with generous time-outs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.broker import EmbeddedBroker
from infra.watchdog import BrokerWatchdog
from planner_service.service import Planner
from producers.mapfeed import KafkaMapSource
from producers.maps import JobShape, elastic_map
from producers.telemetry import KafkaTimingSink
from shardsense.clickhouse import connect
from shardsense.kafka import create_topics
from shardsense.net import free_port
from shardsense.settings import Settings
from stream_processors.app import ProcessorThread, create_app
from stream_processors.service import default_hooks
from tests.support.faults import FakeRanks, Timeline, fault_settings, stored_steps, wait_until

pytestmark = pytest.mark.faults

WORLD, SHARDS, BATCH = 3, 48, 48
#: generous: the machine is shared by several test runs
RECOVER_S = 60.0


@dataclass
class Loop:
    settings: Settings
    broker: EmbeddedBroker
    client: Any
    maps: KafkaMapSource
    sinks: list[KafkaTimingSink]
    ranks: FakeRanks
    planner: Planner
    app: Any
    watchdog: BrokerWatchdog

    def version(self) -> int:
        latest = self.maps.latest()
        return latest.map_version if latest else 0

    def share(self, rank: int) -> int:
        latest = self.maps.latest()
        return latest.batch_sizes[rank] if latest else 0


@pytest.fixture
def loop(clickhouse_url: str, tmp_path: Path) -> Iterator[Loop]:
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log").start()
    s = fault_settings(
        broker.bootstrap, clickhouse_url, tmp_path,
        planner_interval_ms=200, planner_smoothing_pct=100,
        planner_learn_bandwidth=0, planner_warmup_ms=0, planner_shard_bytes=1,
        processor_retrain_s=0, processor_warm_start_rows=0, processor_forecaster="ewma",
    )
    create_topics(s)
    watchdog = BrokerWatchdog(s, broker, every_s=0.2).start()
    client = connect(clickhouse_url)
    app = create_app(s, client, default_hooks(s, client))
    processor = ProcessorThread(app).start()
    planner = Planner(s, client=client).start()
    maps = KafkaMapSource(s)
    maps.wait_ready(30)
    job = JobShape(s.job_id, 48_000, SHARDS, BATCH)
    maps.publish(elastic_map(job, 1, WORLD, None, reason="first map", at=(0, 0)))
    sinks = [KafkaTimingSink(s, r) for r in range(WORLD)]
    ranks = FakeRanks(sinks, maps).start()
    try:
        yield Loop(s, broker, client, maps, sinks, ranks, planner, app, watchdog)
    finally:
        ranks.stop()
        for sink in sinks:
            sink.close(2.0)
        maps.close(2.0)
        planner.stop()
        processor.stop()
        watchdog.stop()
        broker.stop()


def _delivered(loop: Loop) -> int:
    return sum(s.sent for s in loop.sinks)


def _steady(loop: Loop, tl: Timeline) -> None:
    """Before the fault: timings stored and predictions reaching the planner."""
    tl.watch("first timing row", lambda: stored_steps(loop.client, loop.settings.job_id),
             RECOVER_S)
    tl.watch("planner has predictions", lambda: loop.planner.stats["predictions"] > 0,
             RECOVER_S)
    s = loop.settings
    planner_watch = loop.planner.feeds.watch if loop.planner.feeds else None
    watches = [(loop.maps.watch, s.topic_shard_maps), (planner_watch, s.topic_shard_maps),
               (planner_watch, s.topic_predictions)]
    tl.watch("every topic watch knows its topic",
             lambda: all(w is not None and w.current(t) for w, t in watches), RECOVER_S)
    policy = loop.planner.policy_of(s.job_id)
    assert policy is not None and policy.base is not None and policy.base.map_version == 1


def _adapts_to_a_slowdown(loop: Loop, tl: Timeline) -> None:
    """Rank 2 turns 3x slower after the fault: a new map cutting its share reaches rank 0."""
    version = loop.version()
    loop.ranks.slowdown[2] = 3.0
    tl.mark("rank 2 made 3x slower")
    tl.watch("new map for the slowdown in force on rank 0",
             lambda: loop.version() > version and loop.share(2) < BATCH // WORLD, RECOVER_S)


def _recovery(loop: Loop, tl: Timeline, back_wall: float) -> None:
    """Every client delivers again after the broker is back; the loop still adapts."""
    sent, preds = _delivered(loop), loop.planner.stats["predictions"]
    recreated = loop.maps.counts["topic_recreated"]
    tl.watch_all({
        "sinks deliver again": lambda: _delivered(loop) > sent,
        "processor stores a new timing": lambda: _stored_after(loop, back_wall),
        "planner gets new predictions": lambda: loop.planner.stats["predictions"] > preds,
        "map source re-reads the new topic":
            lambda: loop.maps.counts["topic_recreated"] > recreated,
        "rank 0 republished its map": lambda: loop.maps.counts["republished"] >= 1,
    }, RECOVER_S)
    _adapts_to_a_slowdown(loop, tl)


@pytest.mark.parametrize("new_cluster", [False, True], ids=["same-cluster", "new-cluster-id"])
def test_clients_heal_after_the_broker_restarts_empty(loop: Loop, new_cluster: bool) -> None:
    tl = Timeline(f"broker kill -9 + restart ({'new' if new_cluster else 'same'} cluster id)")
    _steady(loop, tl)
    if new_cluster:
        loop.broker.cluster_id = "shardsense-faults-new"
    loop.broker.kill()
    tl.mark("broker killed")
    # the watchdog restarts it (same port) and re-creates the topics
    tl.watch("broker back, topics re-created", lambda: loop.broker.alive and _topics_exist(loop),
             RECOVER_S)
    back_wall = time.time()
    _recovery(loop, tl, back_wall)
    tl.report("broker back, topics re-created")
    versions = [m.map_version for m in _maps_on_topic(loop)]
    assert versions == sorted(versions), "versions went backwards on the topic"
    assert sum(x.stats()["producer_recreated"] for x in loop.sinks) >= 1
    # timings offered once the broker was back are all stored (none dropped)
    _assert_all_stored(loop, back_wall + 0.5)


def test_clients_ride_out_a_10s_broker_pause(loop: Loop) -> None:
    tl = Timeline("broker SIGSTOP 10 s")
    _steady(loop, tl)
    paused_at = time.time()
    loop.broker.pause()
    tl.mark("broker paused")
    time.sleep(10)
    loop.broker.resume()
    resumed_wall = time.time()
    tl.mark("broker resumed")
    sent, preds = _delivered(loop), loop.planner.stats["predictions"]
    tl.watch_all({
        "sinks deliver again": lambda: _delivered(loop) > sent,
        "processor stores a new timing": lambda: _stored_after(loop, resumed_wall),
        "planner gets new predictions": lambda: loop.planner.stats["predictions"] > preds,
    }, RECOVER_S)
    _adapts_to_a_slowdown(loop, tl)
    tl.report("broker resumed")
    # a pause loses nothing: every timing offered from before the pause on is stored once
    _assert_all_stored(loop, paused_at - 1.0)
    assert all(s.dropped == 0 for s in loop.sinks)
    assert loop.maps.counts["topic_recreated"] == 0


#: The outage of item 5 (the one long test of the tier).
OUTAGE_S = 30.0


def test_loop_resumes_after_the_broker_is_down_30s(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    tl = Timeline(f"broker down {OUTAGE_S:.0f} s, then back empty on the same port")
    _steady(loop, tl)
    loop.watchdog.stop()  # the outage is the test's to time: no restart meanwhile
    caplog.set_level(logging.WARNING, logger="producers.telemetry")
    step = loop.ranks.step
    loop.broker.kill()
    down_wall = time.time()
    tl.mark("broker killed")
    time.sleep(OUTAGE_S)
    steps_while_down = loop.ranks.step - step
    loop.broker.stop()  # reap
    loop.broker.start()
    create_topics(loop.settings)  # what the stack's watchdog does for a broker that forgot
    back_wall = time.time()
    tl.mark("broker back, topics re-created")
    _recovery(loop, tl, back_wall)
    tl.report("broker back, topics re-created")
    _assert_all_stored(loop, back_wall + 0.5)
    loop.ranks.stop()
    wait_until(lambda: all(x.stats()["queued"] == 0 and x.stats()["in_flight"] <= 0
                           for x in loop.sinks), RECOVER_S, "the sinks to settle")
    stored = stored_steps(loop.client, loop.settings.job_id)
    offered = loop.ranks.offered_at
    while_down = {s for s, t in offered.items() if down_wall < t < back_wall}
    dropped = [x.dropped for x in loop.sinks]
    missing = [len(while_down - stored.get(r, set())) for r in range(WORLD)]
    print(f"  training steps while the broker was down: {steps_while_down}; longest offer "
          f"{loop.ranks.max_offer_s * 1000:.1f} ms; per rank, offered while down "
          f"{len(while_down)}, not stored {missing}, dropped (counted) {dropped}", flush=True)
    # training never waited for the broker: it kept stepping through the outage (a quarter
    # of its pace at least, on a shared machine)
    assert steps_while_down >= 0.25 * OUTAGE_S / loop.ranks.step_s and while_down
    # every timing offered while it was down is stored, or counted as dropped
    assert all(m <= d for m, d in zip(missing, dropped, strict=True)), (missing, dropped)
    if any(dropped):
        assert any("timings dropped" in r.getMessage() for r in caplog.records)


def _stored_after(loop: Loop, wall: float) -> bool:
    """Whether a timing offered after ``wall`` is in ClickHouse."""
    after = loop.ranks.steps_after(wall)
    return any(max(steps, default=-1) in after
               for steps in stored_steps(loop.client, loop.settings.job_id).values())


def _topics_exist(loop: Loop) -> bool:
    from confluent_kafka.admin import AdminClient

    from shardsense.kafka import admin_config

    try:
        names = AdminClient(admin_config(loop.settings)).list_topics(timeout=1).topics
    except Exception:
        return False
    return all(t.name in names for t in loop.settings.topics())


def _assert_all_stored(loop: Loop, wall: float) -> None:
    """Every timing offered after ``wall`` reaches ClickHouse (waits for the pipeline)."""
    try:
        wait_until(lambda: not _missing_after(loop, wall), RECOVER_S, "timings in ClickHouse")
    except AssertionError:
        missing = sorted(_missing_after(loop, wall))
        offered = loop.ranks.offered_at
        raise AssertionError(
            f"{len(missing)} timings offered after the fault never stored, e.g. "
            f"{[(r, s, round(offered[s] - wall, 2)) for r, s in missing[:12]]}; "
            f"sinks: {[x.stats() for x in loop.sinks]}"
        ) from None


def _missing_after(loop: Loop, wall: float) -> set[tuple[int, int]]:
    """(rank, step) offered after ``wall`` (and at least 1 s ago) not in ClickHouse."""
    stored = stored_steps(loop.client, loop.settings.job_id)
    due = time.time() - 1.0
    steps = {s for s, t in list(loop.ranks.offered_at.items()) if wall < t < due}
    return {(r, s) for r in range(WORLD) for s in steps if s not in stored.get(r, set())}


def _maps_on_topic(loop: Loop) -> list[Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from shardsense.events import ShardMap, decode
    from shardsense.kafka import consumer_config

    s = loop.settings
    consumer = Consumer(consumer_config(s, "faults-reader", **{"enable.partition.eof": True}))
    consumer.assign([TopicPartition(s.topic_shard_maps, 0, OFFSET_BEGINNING)])
    out = []
    try:
        while True:
            msg = consumer.poll(5)
            if msg is None or msg.error():
                return out
            m = decode(msg.value(), expect=ShardMap)
            if m.job_id == s.job_id:
                out.append(m)
    finally:
        consumer.close()
