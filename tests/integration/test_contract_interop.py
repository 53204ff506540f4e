"""An outside team's view: confluent-kafka writes, kafka-python reads, docs/EVENTS.md alone.

The reader below uses only what docs/EVENTS.md states (JSON, envelope fields,
column-wise timings, the key format) and none of ShardSense's code.
"""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from shardsense.events import TIMING_COLUMNS, TimingReport, encode
from shardsense.kafka import producer_config
from shardsense.settings import Settings
from shardsense.topics import job_key

pytestmark = pytest.mark.integration


def test_reports_written_by_confluent_are_read_by_kafka_python(settings: Settings) -> None:
    from kafka import KafkaConsumer

    producer = Producer(producer_config(settings))
    sent = []
    for rank in range(3):
        cols = {c: [rank, rank + 1, rank + 2] for c in TIMING_COLUMNS}
        report = TimingReport.new(settings.job_id, rank, cols, host=f"node{rank}")
        producer.produce(settings.topic_timings, encode(report),
                         key=job_key(settings.job_id))
        sent.append(report)
    assert producer.flush(15) == 0

    consumer = KafkaConsumer(
        settings.topic_timings,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    got = {}
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        for msg in consumer:
            doc = json.loads(msg.value.decode("utf-8"))
            assert msg.key.decode() == doc["job_id"]  # EVENTS.md: keyed by job id
            got[doc["event_id"]] = doc
    consumer.close()

    assert set(got) == {r.event_id for r in sent}
    for report in sent:
        doc = got[report.event_id]
        assert doc["v"] == 1 and doc["kind"] == "timing_report"
        assert doc["job_id"] == settings.job_id and doc["host"] == report.host
        assert set(doc["timings"]) == set(TIMING_COLUMNS)
        assert doc["timings"]["samples"] == report.timings["samples"]
        assert all(len(col) == 3 for col in doc["timings"].values())


def _murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition EVENTS.md promises: Kafka's murmur2 of the key, as kafka-python has it."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_a_jobs_timings_predictions_and_maps_share_one_partition(settings: Settings) -> None:
    """Co-partitioning (contracts §1): ShardSense's producers (the timing sink's config,
    the processor's and the planner's) put every event of job J on partition p(J) of
    timings, predictions and shard maps, the murmur2 partition any client computes."""
    from kafka import KafkaConsumer

    topics = (settings.topic_timings, settings.topic_predictions, settings.topic_shard_maps)
    jobs = [f"{settings.job_id}-{i}" for i in range(8)]
    producer = Producer(producer_config(settings))
    for job in jobs:
        for topic in topics:
            producer.produce(topic, json.dumps({"job_id": job}).encode(), key=job_key(job))
    assert producer.flush(15) == 0
    consumer = KafkaConsumer(*topics, bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=1000)
    where: dict[str, set[int]] = {}
    seen = 0
    deadline = time.monotonic() + 30
    while seen < len(jobs) * len(topics) and time.monotonic() < deadline:
        for msg in consumer:
            where.setdefault(json.loads(msg.value)["job_id"], set()).add(msg.partition)
            seen += 1
    consumer.close()
    assert seen == len(jobs) * len(topics)
    assert set(where) == set(jobs)
    for job, parts in where.items():
        assert parts == {_murmur2_partition(job.encode(), settings.topic_partitions)}, job
    assert settings.topic_partitions == 2
    assert len({p for parts in where.values() for p in parts}) == 2  # both partitions used
