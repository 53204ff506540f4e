"""Shared fixtures: the real embedded broker and chDB, or containers when Docker runs.

Every integration test gets its own topics and job id (``settings`` fixture),
so tests never see each other's events; ClickHouse is one chDB path per test
process (chDB allows only one), isolated by job id / topic in queries.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardsense.settings import Settings

BACKENDS = ["embedded", "docker"]


def _docker_engine_reason() -> str | None:
    """None when a Docker engine answers; else why the docker backend is skipped."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}); container tests skipped"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Kafka bootstrap + ClickHouse URL of one backend, started once per session."""
    if request.param == "docker":
        reason = _docker_engine_reason()
        if reason:
            pytest.skip(reason)
        from testcontainers.clickhouse import ClickHouseContainer
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka, ClickHouseContainer() as ch:
            host = ch.get_container_host_ip()
            port = ch.get_exposed_port(8123)
            yield {
                "kafka": kafka.get_bootstrap_server(),
                "clickhouse": f"http://{ch.username}:{ch.password}@{host}:{port}/{ch.dbname}",
            }
        return
    external = os.environ.get("SHARDSENSE_TEST_KAFKA")
    ch_url = f"chdb://{tmp_path_factory.mktemp('chdb') / 'clickhouse'}"
    if external:
        yield {"kafka": external, "clickhouse": ch_url}
        return
    from infra.broker import EmbeddedBroker
    from shardsense.net import free_port

    log = Path(tmp_path_factory.mktemp("broker")) / "tansu.log"
    with EmbeddedBroker(free_port(), log_path=log) as broker:
        yield {"kafka": broker.bootstrap, "clickhouse": ch_url}


@pytest.fixture(scope="session")
def kafka_broker(backend: dict[str, str]) -> str:
    """Bootstrap servers of the session's broker ("127.0.0.1:PORT" when embedded)."""
    return backend["kafka"]


@pytest.fixture(scope="session")
def clickhouse_url(backend: dict[str, str]) -> str:
    """The session's ClickHouse URL with the schema applied."""
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema

    apply_schema(connect(backend["clickhouse"]))
    return backend["clickhouse"]


@pytest.fixture
def settings(kafka_broker: str, clickhouse_url: str, tmp_path: Path) -> Settings:
    """Settings with this test's own topics and job id; the topics exist already."""
    from shardsense.kafka import create_topics

    tag = uuid.uuid4().hex[:10]
    s = Settings.from_env(
        {},
        kafka_bootstrap=kafka_broker,
        clickhouse_url=clickhouse_url,
        data_dir=str(tmp_path),
        job_id=f"job-{tag}",
        topic_timings=f"t-{tag}.timings",
        topic_predictions=f"t-{tag}.predictions",
        topic_shard_maps=f"t-{tag}.shard-maps",
        topic_dead_letters=f"t-{tag}.dead-letters",
        topic_partitions=2,
    )
    create_topics(s)
    return s
