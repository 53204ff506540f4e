"""Issue 12 item 2: a planner that finds no map of its job on the (forgotten) topic rebuilds
its base map from ClickHouse, and never goes back in versions (real broker + chDB)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from planner_service.recovery import durable_facts
from planner_service.service import Planner
from shardsense.clickhouse import connect
from shardsense.events import Prediction, ShardMap, encode, new_event_id
from shardsense.kafka import producer_config
from shardsense.settings import Settings
from shardsense.tables import SHARD_MAPS, shard_map_row

pytestmark = pytest.mark.integration


def _timings(client: object, job: str, version: int) -> None:
    now = datetime.now(UTC)
    rows = [[job, r, f"e-{job}-{r}", 0, 0, 10, 16, 0.001, 0.02, version, now, now]
            for r in range(2)]
    client.insert("batch_timings", rows, column_names=[  # type: ignore[attr-defined]
        "job_id", "worker_id", "event_id", "seq", "epoch", "step", "samples", "data_wait_s",
        "compute_s", "map_version", "end_ts", "report_ts"])


def _predict(settings: Settings) -> None:
    """Predictions of the job make the planner plan it (keyed by job id, as the processor)."""
    producer = Producer(producer_config(settings))
    for rank in range(2):
        p = Prediction(settings.job_id, rank, new_event_id(), time.time(),
                       time_per_sample_s=0.01, based_on_step=10)
        producer.produce(settings.topic_predictions, encode(p), key=settings.job_id.encode())
    assert producer.flush(10) == 0


def _base(planner: Planner, job: str) -> ShardMap | None:
    policy = planner.policy_of(job)
    return policy.base if policy is not None else None


def _wait(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_base_map_is_rebuilt_from_clickhouse_when_the_topic_has_none(settings: Settings) -> None:
    client = connect(settings.resolved_clickhouse_url)
    stored = ShardMap.build(settings.job_id, 6, [[0, 1, 2], [3, 4, 5]], [10, 6],
                            num_samples=1600, max_batch_size=12, reason="before the crash")
    SHARD_MAPS.insert(client, [shard_map_row(stored)])
    _timings(client, settings.job_id, 6)
    got, in_force = durable_facts(client, settings.job_id)
    assert in_force == 6 and got is not None
    assert (got.map_version, got.shards, got.batch_sizes, got.event_id) == (
        6, stored.shards, stored.batch_sizes, stored.event_id)
    assert (got.num_samples, got.max_batch_size) == (1600, 12), "the job's shape survives"

    planner = Planner(settings, client=client).start()
    try:
        _predict(settings)
        _wait(lambda: _base(planner, settings.job_id) is not None)
        base = _base(planner, settings.job_id)
        assert base is not None and (base.map_version, base.event_id) == (6, stored.event_id)
    finally:
        planner.stop()


def test_a_newer_version_in_force_than_stored_waits_then_never_goes_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import planner_service.recovery as recovery

    monkeypatch.setattr(recovery, "RECOVER_WAIT_S", 1.0)
    monkeypatch.setattr(recovery, "RECOVER_EVERY_S", 0.2)
    client = connect(settings.resolved_clickhouse_url)
    stored = ShardMap.build(settings.job_id, 3, [[0, 1], [2, 3]], [8, 8], num_samples=800)
    SHARD_MAPS.insert(client, [shard_map_row(stored)])
    _timings(client, settings.job_id, 4)  # rank 0 had v4 (its own map, never stored)
    planner = Planner(settings, client=client).start()
    try:
        _predict(settings)
        _wait(lambda: _base(planner, settings.job_id) is not None)
        base = _base(planner, settings.job_id)
        assert base is not None and base.map_version == 4 and base.shards == stored.shards
    finally:
        planner.stop()
