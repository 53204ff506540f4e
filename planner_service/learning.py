"""Learning what a map change really cost: the extra data-wait of the ranks that got shards.

After a published map, the ranks that received shards are measured once they
have trained ``MEASURE_BATCHES`` batches under it (asked ``MEASURE_AFTER_S``
later, off the planner's loop, in ClickHouse ``batch_timings``): their extra
data-wait over those batches, against the shards each received, teaches the
job's :class:`~planner_service.decision.MoveCost`. One measurement per job is
pending at a time (a newer map replaces an unmeasured one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from planner_service.sink import DecisionSink
from shardsense.events import ShardMap

__all__ = ["MEASURE_AFTER_S", "MEASURE_BATCHES", "TransferProbe", "shards_received"]

log = logging.getLogger(__name__)

#: Batches under a new map over which its transfer cost is measured, and how long to wait.
MEASURE_BATCHES = 20
MEASURE_AFTER_S = 30.0


def shards_received(old: ShardMap, new: ShardMap) -> dict[int, int]:
    """Shards each rank of ``old`` holds more of under ``new`` (only the ranks that gained).

    >>> a = ShardMap.build("j", 1, [[0, 1], [2, 3]], [2, 2])
    >>> shards_received(a, ShardMap.build("j", 2, [[0, 1, 2], [3]], [3, 1]))
    {0: 1}
    """
    had = [len(ids) for ids in old.shards]
    return {r: len(ids) - had[r] for r, ids in enumerate(new.shards[: old.world_size])
            if len(ids) > had[r]}


@dataclass(frozen=True)
class _Measure:
    due: float
    old: int
    new: int
    shards: dict[int, int]


class TransferProbe:
    """Pending measurements by job, asked one at a time on a worker thread."""

    def __init__(self, sink: DecisionSink, after_s: float = MEASURE_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.after_s, self.clock = sink, after_s, clock
        self._pending: dict[str, _Measure] = {}
        self._running: tuple[str, _Measure, Future[dict[int, float]]] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="planner-measure")

    def published(self, job_id: str, old: ShardMap, new: ShardMap) -> None:
        """Measure ``new`` against ``old`` later (if any rank received shards)."""
        shards = shards_received(old, new)
        if shards:
            self._pending[job_id] = _Measure(self.clock() + self.after_s, old.map_version,
                                             new.map_version, shards)

    def forget(self, job_id: str) -> None:
        self._pending.pop(job_id, None)

    def poll(self, apply: Callable[[str, int, float], None]) -> None:
        """Start the next due measurement; hand a finished one's ``(job, shards, wait)`` on."""
        if self._running is not None and self._running[2].done():
            job_id, m, future = self._running
            self._running = None
            try:
                waits = future.result()
            except Exception as exc:
                log.warning("planner: cannot measure the transfer cost of %s: %s", job_id, exc)
                waits = {}
            for rank, extra in waits.items():
                apply(job_id, m.shards[rank], extra)
        if self._running is None:
            now = self.clock()
            due = next((j for j, m in self._pending.items() if m.due <= now), None)
            if due is not None:
                m = self._pending.pop(due)
                self._running = (due, m, self._executor.submit(
                    self.sink.transfer_waits, due, m.old, m.new, sorted(m.shards),
                    MEASURE_BATCHES))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
