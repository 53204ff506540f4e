"""Broken payloads reach the dead-letter topic with their reason; valid ones still flow.

Runs the real Faust processor against the real embedded broker and chDB.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from shardsense.clickhouse import connect
from shardsense.events import TIMING_COLUMNS, DeadLetter, TimingReport, decode, encode
from shardsense.kafka import consumer_config, producer_config
from shardsense.settings import Settings
from shardsense.topics import job_key
from stream_processors.app import ProcessorThread, create_app

pytestmark = pytest.mark.integration


def _report(job: str, worker: int = 0, **over: Any) -> dict[str, Any]:
    obj = TimingReport.new(job, worker, {c: [1, 2, 3] for c in TIMING_COLUMNS}).to_dict()
    obj.update(over)
    return obj


def _broken(job: str, max_bytes: int) -> dict[str, bytes]:
    """Eleven kinds of broken payload, by the code the contract must give them."""
    good = _report(job)
    cols = good["timings"]
    return {
        "not_json": b"\x00\x01 definitely not json",
        "bad_type": json.dumps(_report(job, worker_id="seven")).encode(),
        "not_finite": json.dumps(_report(job)).replace('"ts": ', '"ts": NaN, "x": ').encode(),
        "negative": json.dumps(
            _report(job, timings={**cols, "data_wait_s": [0.1, -0.5, 0.1]})
        ).encode(),
        "bad_version": json.dumps(_report(job, v=99)).encode(),
        "oversized": b'{"v":1,"pad":"' + b"x" * (max_bytes + 10) + b'"}',
        "missing_field": json.dumps(
            {k: v for k, v in _report(job).items() if k != "event_id"}
        ).encode(),
        "bad_shape": json.dumps(_report(job, timings={**cols, "step": [1]})).encode(),
        "unknown_kind": json.dumps(_report(job, kind="gossip")).encode(),
        "empty": b"",
        "wrong_kind": json.dumps({**_report(job), "kind": "prediction"}).encode(),
    }


def test_each_broken_payload_is_dead_lettered_and_valid_events_flow(settings: Settings) -> None:
    settings = settings.replace(max_event_bytes=8192)
    client = connect(settings.resolved_clickhouse_url)
    broken = _broken(settings.job_id, settings.max_event_bytes)
    producer = Producer(producer_config(settings))
    valid: list[TimingReport] = []
    for i, payload in enumerate(broken.values()):
        producer.produce(settings.topic_timings, payload, key=job_key(settings.job_id))
        report = TimingReport.new(settings.job_id, i % 3, {c: [i, i + 1] for c in TIMING_COLUMNS})
        producer.produce(settings.topic_timings, encode(report),
                         key=job_key(settings.job_id))
        valid.append(report)
    assert producer.flush(15) == 0

    processor = ProcessorThread(create_app(settings, client)).start()
    try:
        dead = _read_dead_letters(settings, expected=len(broken), timeout=60)
        rows = _wait_rows(client, settings.job_id, expected=2 * len(valid), timeout=30)
    finally:
        processor.stop()

    by_code = {d.code: d for d in dead}
    assert set(by_code) == set(broken), f"missing: {set(broken) - set(by_code)}"
    for d in dead:
        assert d.reason and d.source_topic == settings.topic_timings and d.source_offset >= 0
    assert by_code["oversized"].payload_bytes > settings.max_event_bytes
    assert rows == 2 * len(valid)
    table = client.query(
        "SELECT code, source_offset FROM v_dead_letters WHERE source_topic = {t:String}",
        parameters={"t": settings.topic_timings},
    ).result_rows
    assert {code for code, _ in table} == set(broken)


def _read_dead_letters(settings: Settings, expected: int, timeout: float) -> list[DeadLetter]:
    consumer = Consumer(consumer_config(settings, f"dlq-reader-{settings.job_id}"))
    consumer.subscribe([settings.topic_dead_letters])
    found: list[DeadLetter] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = decode(msg.value(), expect=DeadLetter)
            assert isinstance(event, DeadLetter)
            found.append(event)
    finally:
        consumer.close()
    return found


def _wait_rows(client: Any, job: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = client.query("SELECT count() FROM v_batch_timings WHERE job_id = {j:String}",
                             parameters={"j": job}).result_rows[0][0]
        if count >= expected:
            break
        time.sleep(0.3)
    return int(count)
