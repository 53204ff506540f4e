"""Planner service glue without a broker: routing by job, publish, retry, learning, rejects."""

from __future__ import annotations

import time
from typing import Any

import pytest

from planner_service.jobs import JobTable
from planner_service.learning import TransferProbe
from planner_service.policy import PolicyConfig
from planner_service.service import Planner
from planner_service.sink import MemorySink
from shardsense.events import Prediction, ShardMap, decode, encode

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


def base_map(job: str) -> ShardMap:
    return ShardMap.build(job, 1, [[0, 1, 2, 3], [4, 5, 6, 7]], [16, 16], num_samples=10_000,
                          worker_id=0)


def feed(planner: Planner, job: str, speeds: tuple[float, ...], step: int = 5) -> None:
    """One prediction per rank through the planner's own message handling."""
    s = planner.settings
    for rank, tps in enumerate(speeds):
        p = Prediction(job, rank, f"e{job}{rank}{step}", time.time(), time_per_sample_s=tps,
                       based_on_step=step)
        planner._handle(FakeMessage(s.topic_predictions, encode(p), job.encode()),
                        FakeProducer())


def make_planner(**over: Any) -> tuple[Planner, MemorySink]:
    from shardsense.settings import Settings

    s = Settings.from_env({}, job_id="job-u", planner_evidence_steps=0,
                          planner_smoothing_pct=100, planner_debounce_ms=0, **over)
    sink = MemorySink()
    planner = Planner(s, sink=sink)
    planner.probe = TransferProbe(sink, after_s=0.0)
    for job in ("job-u", "job-v"):
        planner._handle(FakeMessage(s.topic_shard_maps, encode(base_map(job)), job.encode()),
                        FakeProducer())
    return planner, sink


def test_every_job_is_planned_on_its_own_and_moves_are_learnt() -> None:
    planner, sink = make_planner()
    feed(planner, "job-u", (0.01, 0.03))
    feed(planner, "job-v", (0.02, 0.02))
    # Rank 0 will receive 2 shards and wait 0.2 s more than before: 0.1 s per shard.
    sink.waits = {0: 0.2}
    producer = FakeProducer()
    planner._tick(producer)  # publishes, then submits the measurement (due at once here)
    ((topic, key, value),) = producer.sent  # job-v is balanced already
    assert topic == planner.settings.topic_shard_maps and key == b"job-u"
    sent = decode(value, expect=ShardMap)
    assert isinstance(sent, ShardMap) and sent.batch_sizes == [24, 8]
    u = planner.jobs.get("job-u")
    assert u is not None and u.policy.base == sent and sink.maps == [sent]
    assert [d.outcome.value for d in sink.decisions] == ["published", "skipped"]
    for _ in range(100):
        planner.probe.poll(planner._learned)  # applies it once done
        if u.policy.move_cost.samples:
            break
        time.sleep(0.01)
    assert u.policy.move_cost.shard_s == pytest.approx(0.05)  # half-way from the 0 prior


def test_failed_publish_is_not_adopted_and_is_retried() -> None:
    planner, sink = make_planner()
    feed(planner, "job-u", (0.01, 0.03))
    assert planner._evaluate("job-u", FakeProducer(fail="broker down")) is None
    u = planner.jobs.get("job-u")
    assert u is not None and u.policy.base is not None and u.policy.base.map_version == 1
    assert sink.decisions == [] and sink.maps == []
    retry = planner._evaluate("job-u", FakeProducer())
    assert retry is not None and retry.map_version == 2


def test_skipped_decisions_are_stored_at_most_once_per_interval() -> None:
    planner, sink = make_planner(planner_interval_ms=60_000)
    for step in range(5, 10):
        feed(planner, "job-v", (0.02, 0.02), step=step)
        planner._evaluate("job-v", FakeProducer())
    assert planner.stats["decisions"] == 5
    assert [d.outcome.value for d in sink.decisions] == ["skipped"]


def test_bad_prediction_is_dead_lettered_with_its_job() -> None:
    planner, _ = make_planner()
    s = planner.settings
    producer = FakeProducer()
    planner._handle(FakeMessage(s.topic_predictions, b'{"v":1,"job_id":"job-u"}'), producer)
    assert planner.stats["invalid"] == 1
    ((topic, key, value),) = producer.sent
    assert topic == s.topic_dead_letters and key == b"job-u" and b"unknown_kind" in value


def test_job_table_debounces_sweeps_and_expires() -> None:
    now = [100.0]
    jobs = JobTable(PolicyConfig(), debounce_s=0.05, interval_s=1.0, idle_s=10.0,
                    clock=lambda: now[0])
    a = jobs.policy("a", partition=0)
    jobs.policy("b", partition=1)
    assert jobs.policy("a", partition=0) is a  # same job, same policy
    jobs.touch("a")
    jobs.touch("a")  # a second input does not postpone the first one's evaluation
    now[0] += 0.05
    assert jobs.due() == ["a"]
    assert jobs.next_due() == pytest.approx(0.95)
    now[0] += 1.0
    assert sorted(jobs.due()) == ["a", "b"]  # the sweep
    assert jobs.drop_partitions({1}) == ["b"] and len(jobs) == 1
    a.observe_map(base_map("a"))  # input keeps it alive
    now[0] += 9.0
    assert jobs.expire() == []
    now[0] += 2.0
    assert jobs.expire() == ["a"] and len(jobs) == 0
