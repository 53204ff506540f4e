"""Noticing that a topic is no longer the one a consumer was reading.

A broker that restarts with memory storage (the embedded one), or a topic
deleted and created again, gives a consumer an empty log while it still holds
the old offsets. Measured against the embedded broker: a consumer assigned at
offset 5 of the old log waits at offset 5 of the new one and never sees the
new messages at offsets 0..4, without any error. Comparing offsets is not
enough (the embedded broker's high watermark is its last batch's base offset
+ 1), so :class:`TopicWatch` compares what a topic *is*: the cluster id, the
topic id and the partition count, asked in the background every ``every_s``
through an AdminClient's futures (never blocking the caller). A consumer that
gets a topic back from :meth:`TopicWatch.changed` re-assigns it from the
beginning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

__all__ = ["Incarnation", "TopicWatch", "changed_topics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incarnation:
    """One life of a topic: a missing topic has none (``None`` in the maps below)."""

    cluster_id: str
    topic_id: str
    partitions: int


def changed_topics(
    known: dict[str, Incarnation], seen: dict[str, Incarnation | None]
) -> set[str]:
    """Topics whose newly seen incarnation differs from the known one.

    A topic seen missing is not a change yet (the broker may be coming back, or
    re-creating it): the change is reported when a different one shows up.

    >>> a = Incarnation("c1", "t1", 1)
    >>> changed_topics({"m": a}, {"m": None}), changed_topics({"m": a}, {"m": a})
    (set(), set())
    >>> sorted(changed_topics({"m": a, "p": a}, {"m": Incarnation("c2", "t1", 1),
    ...                                          "p": Incarnation("c1", "t9", 1)}))
    ['m', 'p']
    """
    return {
        topic for topic, now in seen.items()
        if now is not None and topic in known and known[topic] != now
    }


class TopicWatch:
    """Background re-checks of ``topics``; :meth:`changed` says which were re-created.

    ``admin`` is a ``confluent_kafka.admin.AdminClient`` (made from ``config`` if
    omitted). Cheap: one DescribeTopics and one DescribeCluster per ``every_s``.
    """

    def __init__(
        self,
        topics: Iterable[str],
        *,
        config: dict[str, Any] | None = None,
        admin: Any = None,
        every_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.topics = sorted(set(topics))
        if admin is None:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient(config or {})
        self._admin = admin
        self.every_s = every_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._known: dict[str, Incarnation] = {}
        self._pending: tuple[Future[Any], dict[str, Future[Any]]] | None = None
        self._next = -1.0
        self.checks = 0

    def current(self, topic: str) -> Incarnation | None:
        """The incarnation last seen (None before the first answer or while missing)."""
        return self._known.get(topic)

    def changed(self) -> set[str]:
        """Never blocks: topics found re-created since the last call (empty while asking)."""
        self._poll_admin()
        if self._pending is None:
            if self._clock() >= self._next:
                self._ask()
            return set()
        cluster, topics = self._pending
        if not (cluster.done() and all(f.done() for f in topics.values())):
            return set()
        self._pending = None
        self._next = self._clock() + self.every_s
        seen = self._answers(cluster, topics)
        if seen is None:
            return set()
        found = changed_topics(self._known, seen)
        for topic, now in seen.items():
            if now is not None:
                self._known[topic] = now
        for topic in sorted(found):
            log.warning("topic %s was re-created (%s); reading it again from the start",
                        topic, self._known[topic])
        return found

    def _poll_admin(self) -> None:
        try:
            self._admin.poll(0)  # serves the client's log and error callbacks
        except Exception as exc:  # pragma: no cover - poll of an AdminClient
            log.debug("admin poll: %s", exc)

    def _ask(self) -> None:
        from confluent_kafka import TopicCollection

        t = int(self.timeout_s)
        try:
            cluster = self._admin.describe_cluster(request_timeout=max(1, t))
            topics = self._admin.describe_topics(TopicCollection(self.topics),
                                                 request_timeout=max(1, t))
        except Exception as exc:
            log.debug("topic watch request failed: %s", exc)
            self._next = self._clock() + self.every_s
            return
        self._pending = (cluster, topics)
        self.checks += 1

    def _answers(
        self, cluster: Future[Any], topics: dict[str, Future[Any]]
    ) -> dict[str, Incarnation | None] | None:
        """The incarnations seen, None per missing topic; None overall if the cluster was mute."""
        try:
            cluster_id = str(cluster.result().cluster_id)
        except Exception:
            return None
        seen: dict[str, Incarnation | None] = {}
        for topic, future in topics.items():
            try:
                d = future.result()
                seen[topic] = Incarnation(cluster_id, str(d.topic_id), len(d.partitions))
            except Exception as exc:
                if "UNKNOWN_TOPIC" not in str(exc):
                    return None  # broker trouble, not an answer about the topic
                seen[topic] = None
        return seen

    def close(self) -> None:
        self._pending = None
        self._admin = None
