"""Planner service glue without a broker: publish/adopt, retry, bandwidth learning, rejects."""

from __future__ import annotations

import time
from typing import Any

import pytest

import planner_service.service as service
from planner_service.service import Planner
from planner_service.sink import MemorySink
from shardsense.events import Prediction, ShardMap, decode

pytestmark = pytest.mark.unit


class FakeProducer:
    """Delivers at once (or fails every message when ``fail`` is set)."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None,
                on_delivery: Any = None) -> None:
        self.sent.append((topic, key, value))
        if on_delivery is not None:
            on_delivery(self.fail or None, None)

    def flush(self, timeout: float = 0) -> int:
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


class FakeMessage:
    def __init__(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self._topic, self._value, self._key = topic, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def make_planner(monkeypatch: pytest.MonkeyPatch) -> tuple[Planner, MemorySink]:
    from shardsense.settings import Settings

    monkeypatch.setattr(service, "MEASURE_AFTER_S", 0.0)
    s = Settings.from_env({}, job_id="job-u", planner_confirmations=1,
                          planner_smoothing_pct=100)
    sink = MemorySink()
    planner = Planner(s, sink=sink)
    base = ShardMap.build("job-u", 1, [[0, 1, 2, 3], [4, 5, 6, 7]], [16, 16],
                          num_samples=10_000, worker_id=0)
    planner.policy.observe_map(base)
    for rank, tps in ((0, 0.01), (1, 0.03)):
        planner.policy.observe_prediction(
            Prediction("job-u", rank, f"e{rank}", time.time(), time_per_sample_s=tps))
    return planner, sink


def test_publish_adopts_records_and_learns_bandwidth(monkeypatch: pytest.MonkeyPatch) -> None:
    planner, sink = make_planner(monkeypatch)
    producer = FakeProducer()
    decision = planner._evaluate(producer)
    assert decision is not None and decision.outcome == "published"
    ((topic, key, value),) = producer.sent
    assert topic == planner.settings.topic_shard_maps and key == b"job-u"
    sent = decode(value, expect=ShardMap)
    assert isinstance(sent, ShardMap) and sent.batch_sizes == [24, 8]
    assert planner.policy.base == sent and sink.maps == [sent] and sink.decisions == [decision]
    # Rank 0 received 2 shards (16 MiB) and waited 0.16 s more than before: 100 MB/s.
    sink.waits = {0: 2 * planner.settings.planner_shard_bytes / 100e6}
    planner._learn_bandwidth()  # submits the query
    assert planner._measuring is not None
    planner._measuring.result(5)
    planner._learn_bandwidth()  # applies it
    assert planner.policy.bandwidth.samples == 1
    assert planner.policy.bandwidth.bps == pytest.approx(100e6)


def test_failed_publish_is_not_adopted_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    planner, sink = make_planner(monkeypatch)
    assert planner._evaluate(FakeProducer(fail="broker down")) is None
    assert planner.policy.base is not None and planner.policy.base.map_version == 1
    assert sink.decisions == [] and sink.maps == []
    retry = planner._evaluate(FakeProducer())
    assert retry is not None and retry.map_version == 2


def test_bad_prediction_is_dead_lettered_and_other_jobs_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planner, _ = make_planner(monkeypatch)
    s = planner.settings
    producer = FakeProducer()
    planner._handle(FakeMessage(s.topic_predictions, b'{"v":1,"job_id":"job-u"}'), producer)
    planner._handle(FakeMessage(s.topic_predictions, b'{"v":1,"job_id":"other"}'), producer)
    other = ShardMap.build("other", 9, [[0]], [1])
    from shardsense.events import encode

    planner._handle(FakeMessage(s.topic_shard_maps, encode(other), b"other"), producer)
    assert planner.stats["invalid"] == 2 and planner.stats["maps"] == 0
    ((topic, key, value),) = producer.sent
    assert topic == s.topic_dead_letters and key == b"job-u" and b"unknown_kind" in value
