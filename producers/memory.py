"""In-memory implementations of the seams, for tests, demos and benchmarks.

>>> sink = InMemoryTimingSink(maxlen=1)
>>> sink.offer(0, 0, 32, 0.001, 0.01, 1, 1.0); sink.offer(0, 1, 32, 0.001, 0.01, 1, 2.0)
>>> len(sink.records), sink.dropped
(1, 1)
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from shardsense.events import ShardMap

__all__ = ["InMemoryMapSource", "InMemoryTimingSink", "TimingRecord"]


class TimingRecord(NamedTuple):
    """One batch timing, as offered by the loader."""

    epoch: int
    step: int
    samples: int
    data_wait_s: float
    compute_s: float
    map_version: int
    end_ts: float


class InMemoryTimingSink:
    """Keeps up to ``maxlen`` records and counts the rest as dropped (like a full queue)."""

    def __init__(self, maxlen: int = 1_000_000) -> None:
        if maxlen < 0:
            raise ValueError(f"maxlen must be >= 0, got {maxlen}")
        self.maxlen = maxlen
        self.records: list[TimingRecord] = []
        self.dropped = 0
        self.closed = False

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
        if len(self.records) >= self.maxlen or self.closed:
            self.dropped += 1
            return
        self.records.append(
            TimingRecord(epoch, step, samples, data_wait_s, compute_s, map_version, end_ts)
        )

    def close(self) -> None:
        self.closed = True


class InMemoryMapSource:
    """A compacted topic of one job in a dict: keeps the highest version published.

    It does not validate: tests feed it broken maps to see the runtime reject
    them (the runtime checks every map against its job itself).
    """

    def __init__(self, initial: ShardMap | None = None) -> None:
        self._lock = threading.Lock()
        self._latest: ShardMap | None = None
        self.published: list[ShardMap] = []
        if initial is not None:
            self.publish(initial)

    def latest(self) -> ShardMap | None:
        return self._latest

    def publish(self, shard_map: ShardMap) -> None:
        with self._lock:
            self.published.append(shard_map)
            if self._latest is None or shard_map.map_version > self._latest.map_version:
                self._latest = shard_map

    def wait_ready(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        return None
