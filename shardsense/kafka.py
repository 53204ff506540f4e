"""Kafka client construction in one place, so every service gets the same safe defaults.

Producers that must agree with Faust on partitions use murmur2 (aiokafka's
partitioner); the defaults below follow the measured facts in
docs/ARCHITECTURE.md (session timeout for fast group joins on the embedded
broker, idempotence, lz4, a short linger). Every client logs through a
rate-limited :class:`~shardsense.kafka_logs.ClientLog` (one line every few
seconds against a dead broker), and producers never auto-create topics: a
restarted embedded broker would otherwise create them with its own defaults
(4 partitions, no compaction) before the stack re-creates them properly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from shardsense.errors import StackError
from shardsense.healing import HealingProducer
from shardsense.kafka_logs import ClientLog
from shardsense.settings import Settings

__all__ = [
    "admin_config", "client_logging", "consumer_config", "create_topics", "healing_producer",
    "producer_config", "wait_for_broker",
]

log = logging.getLogger(__name__)


def client_logging(settings: Settings, what: str) -> dict[str, Any]:
    """``logger`` and ``error_cb`` for one client: Python logging, rate-limited per client."""
    sink = ClientLog(what, settings.kafka_log_interval_s)
    return {"logger": sink, "error_cb": sink.error}


def _label(extra: dict[str, Any], default: str) -> str:
    """``what=`` in the keyword arguments below names the client in its log lines.

    It travels with the librdkafka keys (not as a parameter) so that callers'
    ``**{"linger.ms": 5}`` stays well-typed.
    """
    return str(extra.pop("what", default))


def admin_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An AdminClient config with the rate-limited logging."""
    what = _label(extra, "admin client")
    return settings.kafka_config(**{**client_logging(settings, what), **extra})


def healing_producer(settings: Settings, **extra: Any) -> HealingProducer:
    """A :class:`~shardsense.healing.HealingProducer` over :func:`producer_config`."""
    what = _label(extra, "producer")
    return HealingProducer(producer_config(settings, what=what, **extra), what=what,
                           stall_s=settings.kafka_stall_s)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, lz4-compressed, murmur2-partitioned producer config."""
    what = _label(extra, "producer")
    return settings.kafka_config(
        **{
            **client_logging(settings, what),
            "allow.auto.create.topics": False,
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
    what = _label(extra, "consumer")
    return settings.kafka_config(
        **{
            **client_logging(settings, what),
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

    admin = AdminClient(admin_config(settings, what=f"Kafka at {settings.bootstrap_servers}"))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except Exception as exc:  # KafkaException while the broker comes up
            last = exc
            admin.poll(0)  # its rate-limited log lines
            time.sleep(0.2)
    raise StackError(f"Kafka at {settings.bootstrap_servers} did not answer in {timeout}s: {last}")


def create_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the deployment's topics if missing; return the names created now."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(admin_config(settings))
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
