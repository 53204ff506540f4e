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
from shardsense.topics import timing_key

pytestmark = pytest.mark.integration


def test_reports_written_by_confluent_are_read_by_kafka_python(settings: Settings) -> None:
    from kafka import KafkaConsumer

    producer = Producer(producer_config(settings))
    sent = []
    for rank in range(3):
        cols = {c: [rank, rank + 1, rank + 2] for c in TIMING_COLUMNS}
        report = TimingReport.new(settings.job_id, rank, cols, host=f"node{rank}")
        producer.produce(settings.topic_timings, encode(report),
                         key=timing_key(settings.job_id, rank))
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
            assert msg.key.decode() == f"{doc['job_id']}/{doc['worker_id']}"
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
