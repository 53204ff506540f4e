"""Kafka client construction in one place, so every service gets the same safe defaults.

Producers that must agree with Faust on partitions use murmur2 (aiokafka's
partitioner); the defaults below follow the measured facts in
docs/ARCHITECTURE.md (session timeout for fast group joins on the embedded
broker, idempotence, lz4, a short linger).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from shardsense.errors import StackError
from shardsense.settings import Settings

__all__ = ["consumer_config", "create_topics", "producer_config", "wait_for_broker"]

log = logging.getLogger(__name__)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, lz4-compressed, murmur2-partitioned producer config."""
    return settings.kafka_config(
        **{
            "enable.idempotence": True,
            "linger.ms": 25,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "message.max.bytes": max(settings.max_event_bytes + 4096, 1_000_000),
            **extra,
        }
    )


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer that starts at the earliest offset and joins its group quickly."""
    return settings.kafka_config(
        **{
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "enable.auto.commit": False,
            **extra,
        }
    )


def wait_for_broker(settings: Settings, timeout: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise :class:`StackError`."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_config())
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except Exception as exc:  # KafkaException while the broker comes up
            last = exc
            time.sleep(0.2)
    raise StackError(f"Kafka at {settings.bootstrap_servers} did not answer in {timeout}s: {last}")


def create_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the deployment's topics if missing; return the names created now."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in settings.topics() if t.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, config=t.config) for t in wanted],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"could not create topic {name!r}: {exc}") from exc
    log.info("created topics %s", created)
    return created
