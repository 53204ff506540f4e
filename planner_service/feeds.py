"""The planner's two inputs: predictions through a consumer group, shard maps by assignment.

Planner instances split the jobs by sharing the prediction topic in one
consumer group (:func:`group_id`); an instance owns the jobs of the partitions
it is assigned (:mod:`planner_service.ownership`). Its shard-map consumer has
no group: it is assigned the matching map partitions and reads each from the
beginning (the compacted topic's latest map per job is the planner's whole
persistent state), so a restart or a take-over resumes from it.

Start-up stays fast for one instance: every map partition is read while the
group join runs (~3 s on the embedded broker: its fixed initial delay with the
6 s session time-out); the first assignment then drops what another instance
owns. Predictions of a newly assigned partition start ``since_s`` ago
(``offsets_for_times``; each counts as old as its timestamp); a partition kept
through a rebalance goes on from where it was. Nothing is committed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from planner_service.ownership import map_partitions
from shardsense.kafka import consumer_config
from shardsense.settings import Settings

__all__ = ["Feeds", "group_id"]

log = logging.getLogger(__name__)


def group_id(settings: Settings) -> str:
    """The consumer group every planner instance of a deployment joins (named by its topic)."""
    return f"shardsense-planner.{settings.topic_predictions}"


class Feeds:
    """Both consumers of one planner instance, polled from one thread."""

    def __init__(self, settings: Settings, since_s: float,
                 on_lost: Callable[[set[int]], None]) -> None:
        s = self.settings = settings
        self.since_s = since_s
        self.on_lost = on_lost
        self.predictions = Consumer(consumer_config(s, group_id(s)))
        self.maps = Consumer(consumer_config(
            s, f"shardsense-planner-maps-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True}))
        self.n_predictions = self.n_maps = 0
        self.owned: set[int] | None = None  # prediction partitions; None until first assigned
        self.suspended: set[int] = set()  # revoked, not yet reassigned: no decisions
        self.unread_maps: set[int] = set()
        self.positions: dict[int, int] = {}
        self.rebalances = 0

    # ------------------------------------------------------------ lifecycle

    def start(self, stop: Any) -> bool:
        """Wait for the topics, read every map partition, join the group (False: stopped)."""
        s = self.settings
        topics = [s.topic_shard_maps, s.topic_predictions]
        while not stop.is_set():
            meta = self.maps.list_topics(timeout=5)
            if all(t in meta.topics and meta.topics[t].partitions for t in topics):
                break
            log.info("planner: waiting for topics %s", topics)
            stop.wait(1.0)
        else:
            return False
        self.n_maps = len(meta.topics[s.topic_shard_maps].partitions)
        self.n_predictions = len(meta.topics[s.topic_predictions].partitions)
        if self.n_predictions % self.n_maps:
            log.warning("planner: %s has %d partitions, %s %d: every instance reads every map",
                        s.topic_shard_maps, self.n_maps, s.topic_predictions, self.n_predictions)
        self._assign_maps(set(range(self.n_maps)))
        self.predictions.subscribe([s.topic_predictions], on_assign=self._on_assign,
                                   on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("planner: joining %s on %s; reading %s", group_id(s), *topics[::-1])
        return True

    def close(self) -> None:
        for consumer in (self.predictions, self.maps):
            try:
                consumer.close()
            except Exception:
                log.exception("planner: closing a consumer failed")

    # ------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """Assigned once, and every map partition of the owned jobs read to its end."""
        return self.owned is not None and not (self.unread_maps & self.wanted_maps())

    def wanted_maps(self) -> set[int]:
        owned = set(range(self.n_predictions)) if self.owned is None else self.owned
        return map_partitions(owned, self.n_predictions, self.n_maps) if self.n_maps else set()

    def owns(self, partition: int) -> bool:
        """Whether this instance decides for the jobs of prediction ``partition`` now."""
        if self.owned is None:
            return True  # start-up: keep everything until the first assignment says
        return partition in self.owned and partition not in self.suspended

    def map_caught_up(self, map_partition: int) -> bool:
        return map_partition not in self.unread_maps

    # ------------------------------------------------------------ polling

    def poll(self, timeout: float, batch: int = 500) -> list[Any]:
        """Messages of both consumers: waits up to ``timeout`` for a prediction, not longer."""
        out: list[Any] = []
        first = self.predictions.poll(timeout)
        if first is not None:
            out.append(first)
            out.extend(self.predictions.consume(batch, 0))
        out.extend(self.maps.consume(batch, 0))
        kept = []
        for msg in out:
            err = msg.error()
            if err is None:
                if msg.topic() == self.settings.topic_predictions:
                    self.positions[msg.partition()] = msg.offset() + 1
                kept.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                if msg.topic() == self.settings.topic_shard_maps:
                    self.unread_maps.discard(msg.partition())
            else:
                log.warning("planner: consumer error %s", err)
        return kept

    def reread(self, map_partition: int) -> None:
        """Read one map partition again from the start (a returning job whose map we forgot)."""
        try:
            self.maps.seek(TopicPartition(self.settings.topic_shard_maps, map_partition,
                                          OFFSET_BEGINNING))
        except Exception as exc:  # not yet fetching: the next assignment reads it anyway
            log.debug("planner: cannot re-read map partition %d yet: %s", map_partition, exc)

    # ------------------------------------------------------------ rebalancing

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.suspended |= {tp.partition for tp in partitions}

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Offsets for the new assignment; drop the jobs of lost partitions; follow their maps."""
        assigned = {tp.partition for tp in partitions}
        before = (set(range(self.n_predictions)) if self.owned is None
                  else self.owned) | self.suspended
        lost = before - assigned
        kept = assigned & (self.owned or set())
        self.owned, self.suspended = assigned, set()
        self.rebalances += 1
        for p in lost:
            self.positions.pop(p, None)
        if lost:
            self.on_lost(lost)
        since_ms = int((time.time() - self.since_s) * 1000)
        fresh = [TopicPartition(self.settings.topic_predictions, p, since_ms)
                 for p in sorted(assigned - kept)]
        starts = self.predictions.offsets_for_times(fresh, timeout=10) if fresh else []
        offsets = [TopicPartition(tp.topic, tp.partition,
                                  tp.offset if tp.offset >= 0 else OFFSET_END) for tp in starts]
        offsets += [TopicPartition(self.settings.topic_predictions, p,
                                   self.positions.get(p, OFFSET_END)) for p in sorted(kept)]
        consumer.assign(offsets)
        self._assign_maps(self.wanted_maps())
        log.info("planner: assigned prediction partitions %s (lost %s)", sorted(assigned),
                 sorted(lost))

    def _assign_maps(self, wanted: set[int]) -> None:
        """Map partitions ``wanted``: the ones already read go on, new ones from the start."""
        topic = self.settings.topic_shard_maps
        current = {tp.partition: tp for tp in self.maps.position(self.maps.assignment())}
        tps = [current[p] if p in current else TopicPartition(topic, p, OFFSET_BEGINNING)
               for p in sorted(wanted)]
        self.unread_maps = (self.unread_maps & wanted) | (wanted - set(current))
        self.maps.assign(tps)
