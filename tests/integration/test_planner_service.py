"""The planner against the real embedded broker and chDB: publish, skip, elastic, restart."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from planner_service.service import Planner
from shardsense.clickhouse import connect
from shardsense.events import Prediction, ShardMap, decode, encode, new_event_id
from shardsense.kafka import consumer_config, producer_config
from shardsense.settings import Settings
from shardsense.topics import job_key

pytestmark = pytest.mark.integration

WORLD, SHARDS, BATCH = 4, 64, 128


def fast(settings: Settings, **over: int) -> Settings:
    return settings.replace(**{
        "planner_interval_ms": 200, "planner_evidence_steps": 0, "planner_smoothing_pct": 100,
        "planner_learn_bandwidth": 0, **over,
    })


def publish_base(settings: Settings, producer: Producer) -> ShardMap:
    per = SHARDS // WORLD
    base = ShardMap.build(
        settings.job_id, 1, [list(range(r * per, (r + 1) * per)) for r in range(WORLD)],
        [BATCH // WORLD] * WORLD, num_samples=50_000, worker_id=0,
    )
    producer.produce(settings.topic_shard_maps, encode(base), key=settings.job_id.encode())
    producer.flush(10)
    return base


def predict(settings: Settings, producer: Producer, tps: dict[int, float], step: int) -> None:
    for rank, t in tps.items():
        p = Prediction(settings.job_id, rank, new_event_id(), time.time(),
                       time_per_sample_s=t, based_on_step=step)
        producer.produce(settings.topic_predictions, encode(p), key=job_key(settings.job_id))
    producer.flush(10)


def read_maps(settings: Settings, job: str = "") -> list[ShardMap]:
    """Every map of the job (default: the settings') on the compacted topic, in order."""
    job = job or settings.job_id
    consumer = Consumer(consumer_config(settings, "test-reader", **{"enable.partition.eof": True}))
    topic = settings.topic_shard_maps
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    maps: list[ShardMap] = []
    unread = set(parts)
    deadline = time.monotonic() + 10
    try:
        while unread and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                unread.discard(msg.partition())  # end of partition
                continue
            m = decode(msg.value(), expect=ShardMap)
            assert isinstance(m, ShardMap)
            if m.job_id == job:
                maps.append(m)
    finally:
        consumer.close()
    return maps


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_slow_rank_gets_half_the_share_noise_is_skipped_restart_keeps_version(
    settings: Settings,
) -> None:
    s = fast(settings)
    producer = Producer(producer_config(s))
    publish_base(s, producer)
    speeds = {0: 0.01, 1: 0.01, 2: 0.01, 3: 0.02}
    predict(s, producer, speeds, step=40)
    planner = Planner(s).start()
    try:
        wait_for(lambda: planner.stats["published"] >= 1)
        rng = random.Random(3)
        for step in range(41, 46):  # +-3% noise around the same speeds: nothing worth moving
            predict(s, producer, {r: t * rng.uniform(0.97, 1.03) for r, t in speeds.items()}, step)
            time.sleep(0.25)
        wait_for(lambda: planner.stats["decisions"] >= 4)
    finally:
        planner.stop()
    maps = read_maps(s)
    assert [m.map_version for m in maps] == [1, 2]
    new = maps[-1]
    assert new.worker_id == -1 and new.apply_step == 40
    assert new.batch_sizes[3] * 2 == pytest.approx(new.batch_sizes[0], abs=2)
    assert len(new.shards[3]) * 2 == pytest.approx(len(new.shards[0]), abs=2)
    assert set(range(16)) <= set(new.shards[0])  # rank 0 kept its own shards

    restarted = Planner(s).start()  # reads v2 back, replays the recent predictions
    try:
        wait_for(restarted.ready.is_set)
        predict(s, producer, speeds, step=50)
        wait_for(lambda: restarted.stats["decisions"] >= 1)
        policy = restarted.policy_of(s.job_id)
        assert policy is not None and policy.base is not None and policy.base.map_version == 2
    finally:
        restarted.stop()
    assert [m.map_version for m in read_maps(s)] == [1, 2]

    client = connect(s.resolved_clickhouse_url)
    rows = client.query(
        "SELECT decision, count(), max(map_version) FROM planner_decisions FINAL "
        "WHERE job_id = {j:String} GROUP BY decision", parameters={"j": s.job_id},
    ).result_rows
    counts = {d: (n, v) for d, n, v in rows}
    assert counts["published"] == (1, 2)
    assert counts["skipped"][0] >= 3
    stored = client.query(
        "SELECT map_version, batch_sizes FROM shard_maps FINAL WHERE job_id = {j:String} "
        "ORDER BY map_version", parameters={"j": s.job_id},
    ).result_rows
    # rank 0's first map too (seen on the topic): ClickHouse must outlive the topic
    assert stored == [(1, maps[0].batch_sizes), (2, new.batch_sizes)]


def test_noisy_equal_speeds_never_publish_and_a_silent_rank_forces_a_replan(
    settings: Settings,
) -> None:
    s = fast(settings, planner_evidence_steps=2, planner_smoothing_pct=30,
             planner_rank_timeout_s=3)
    producer = Producer(producer_config(s))
    publish_base(s, producer)
    planner = Planner(s).start()
    rng = random.Random(5)
    try:
        wait_for(planner.ready.is_set)  # joined its group, read the maps
        for step in range(12):
            predict(s, producer, {r: 0.01 * rng.uniform(0.92, 1.08) for r in range(WORLD)}, step)
            time.sleep(0.2)
        wait_for(lambda: planner.stats["decisions"] >= 5)
        assert planner.stats["published"] == 0
        for step in range(12, 40):  # rank 2 falls silent
            predict(s, producer, {r: 0.01 for r in (0, 1, 3)}, step)
            time.sleep(0.2)
            if planner.stats["published"]:
                break
    finally:
        planner.stop()
    maps = read_maps(s)
    assert [m.map_version for m in maps] == [1, 2]
    assert maps[-1].batch_sizes[2] == 0 and maps[-1].shards[2] == []
    assert "rank 2 silent" in maps[-1].reason


def test_transfer_waits_come_from_batch_timings_in_chdb(settings: Settings) -> None:
    from datetime import UTC, datetime

    from planner_service.sink import ClickHouseSink

    client = connect(settings.resolved_clickhouse_url)
    rows = []
    for i in range(30):  # rank 0: 10 ms waits under v1, then +50 ms for its first 5 under v2
        for version in (1, 2):
            wait = 0.01 + (0.05 if version == 2 and i < 5 else 0.0)
            ts = datetime.fromtimestamp(1e9 + version * 1000 + i, UTC)
            rows.append([settings.job_id, 0, f"e{version}-{i}", 0, 0, i, 32, wait, 0.1,
                         version, ts, ts])
    client.insert("batch_timings", rows, column_names=[
        "job_id", "worker_id", "event_id", "seq", "epoch", "step", "samples", "data_wait_s",
        "compute_s", "map_version", "end_ts", "report_ts"])
    sink = ClickHouseSink(settings.resolved_clickhouse_url, client=client)
    try:
        waits = sink.transfer_waits(settings.job_id, 1, 2, [0, 1], 20)
        assert waits == {0: pytest.approx(0.25)}
        assert sink.transfer_waits(settings.job_id, 1, 2, [0], 40) == {}  # too few batches
    finally:
        sink.close()


def test_shardsense_planner_runs_as_its_own_process(settings: Settings, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    s = fast(settings)
    producer = Producer(producer_config(s))
    publish_base(s, producer)
    predict(s, producer, {0: 0.01, 1: 0.01, 2: 0.03, 3: 0.01}, step=7)
    env = {**os.environ, "SHARDSENSE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'own'}"}
    flags = ["--kafka-bootstrap", s.kafka_bootstrap, "--job-id", s.job_id,
             "--topic-predictions", s.topic_predictions, "--topic-shard-maps",
             s.topic_shard_maps, "--planner-interval-ms", "200", "--planner-evidence-steps", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "planner", *flags], env=env)
    try:
        wait_for(lambda: len(read_maps(s)) >= 2, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    (_, new) = read_maps(s)
    assert new.map_version == 2 and new.batch_sizes[2] < new.batch_sizes[0]
