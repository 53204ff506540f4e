"""The two seams between the training loop and Kafka (implemented in telemetry.py / mapfeed.py).

The runtime only ever talks to these protocols, so tests and demos run with the
in-memory versions in ``producers.memory`` and production plugs in
``producers.telemetry.KafkaTimingSink(settings, worker_id)`` and
``producers.mapfeed.KafkaMapSource(settings)``.

Rules the implementations must keep (the training loop is sacred):

* ``TimingSink.offer`` is called once per batch from the training thread. It
  must return in microseconds, never block on the network and never raise:
  enqueue into a bounded queue and drop (counting in ``dropped``) when full.
* ``MapSource.latest`` is called at sync points (every few steps) from the
  training thread: return the newest map already seen, never wait.
* Optional extras the runtime uses when present: ``MapSource.wait_ready(timeout_s)
  -> bool`` is called once at start-up so that "latest" really is the latest on
  the compacted topic; ``close()`` on both when the runtime closes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from shardsense.events import ShardMap

__all__ = ["MapSource", "TimingSink"]


@runtime_checkable
class TimingSink(Protocol):
    """Receives one record per batch; ships them in few messages, off the training thread."""

    @property
    def dropped(self) -> int:
        """Records given up on (queue full, broker unreachable, serialisation error)."""
        ...

    def offer(
        self,
        epoch: int,
        step: int,
        samples: int,
        data_wait_s: float,
        compute_s: float,
        map_version: int,
        end_ts: float,
    ) -> None:
        """Queue one batch timing; never blocks, never raises."""
        ...

    def close(self) -> None:
        """Flush what can be flushed within a short bound, then release resources."""
        ...


@runtime_checkable
class MapSource(Protocol):
    """The shard maps of one job: the newest validated one, and a way to publish."""

    def latest(self) -> ShardMap | None:
        """Newest validated map seen for the job (by ``map_version``); non-blocking."""
        ...

    def publish(self, shard_map: ShardMap) -> None:
        """Publish a map the training side made (the first map, or an elastic split)."""
        ...
