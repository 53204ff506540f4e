"""Where the planner's decisions and maps go: ClickHouse off the hot path, or memory in tests.

:class:`ClickHouseSink` queues rows and inserts them from its own thread, so a
slow or absent ClickHouse never delays planning or publishing; rows that cannot
be written after a few tries are dropped with an error log (Kafka, not
ClickHouse, is the source of truth for maps).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Protocol

from planner_service.decision import Decision
from shardsense.events import ShardMap
from shardsense.tables import PLANNER_DECISIONS, SHARD_MAPS, TABLES, shard_map_row

__all__ = ["ClickHouseSink", "DecisionSink", "MemorySink"]

log = logging.getLogger(__name__)

#: Per rank: the median wait per sample under the old map, and the first batches under the
#: new one as (data wait, samples): a bigger batch waits longer without any move cost.
_TRANSFER_SQL = """
SELECT worker_id,
       quantileIf(0.5)(data_wait_s / samples, map_version = {old:UInt32}) AS baseline,
       arraySlice(arrayMap(x -> (x.2, x.3), arraySort(x -> x.1,
           groupArrayIf((end_ts, data_wait_s, samples), map_version = {new:UInt32}))),
           1, {k:UInt32}) AS first
FROM batch_timings FINAL
WHERE job_id = {job:String} AND map_version IN ({old:UInt32}, {new:UInt32})
  AND worker_id IN {ranks:Array(Int32)} AND samples > 0
GROUP BY worker_id
"""


class DecisionSink(Protocol):
    """What the planner needs from storage; everything must return quickly."""

    def record_decision(self, job_id: str, decision: Decision) -> None: ...

    def record_map(self, shard_map: ShardMap) -> None: ...

    def transfer_waits(
        self, job_id: str, old: int, new: int, ranks: list[int], first: int
    ) -> dict[int, float]:
        """Extra data-wait (s) of each rank over its first batches under map ``new``."""
        ...

    def durable_facts(self, job_id: str) -> tuple[ShardMap | None, int]:
        """(newest stored map, newest version in force): see ``planner_service.recovery``."""
        ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps everything in lists; ``waits`` is what :meth:`transfer_waits` answers."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.maps: list[ShardMap] = []
        self.waits: dict[int, float] = {}
        self.in_force = 0

    def record_decision(self, job_id: str, decision: Decision) -> None:
        self.decisions.append(decision)

    def record_map(self, shard_map: ShardMap) -> None:
        self.maps.append(shard_map)

    def transfer_waits(
        self, job_id: str, old: int, new: int, ranks: list[int], first: int
    ) -> dict[int, float]:
        return {r: w for r, w in self.waits.items() if r in ranks}

    def durable_facts(self, job_id: str) -> tuple[ShardMap | None, int]:
        mine = [m for m in self.maps if m.job_id == job_id]
        return max(mine, key=lambda m: m.map_version, default=None), self.in_force

    def close(self) -> None:
        pass


class ClickHouseSink:
    """Batches inserts into ``planner_decisions`` and ``shard_maps`` from a daemon thread."""

    def __init__(
        self, url: str, *, client: Any = None, flush_s: float = 0.5, retries: int = 3,
        facts_url: str = "",
    ) -> None:
        """``facts_url``: where ``batch_timings`` is read (``planner_facts_url``; empty: url)."""
        self.url = url
        self.facts_url = facts_url if facts_url != url else ""
        self._facts: Any = None
        self.flush_s = flush_s
        self.retries = retries
        self._queue: queue.Queue[tuple[str, list[Any]] | None] = queue.Queue()
        self._client: Any = client  # shared client (embedded stack) or None: connect lazily
        self._thread = threading.Thread(target=self._run, name="planner-sink", daemon=True)
        self._thread.start()

    def client(self) -> Any:
        if self._client is None:
            from shardsense.clickhouse import connect

            self._client = connect(self.url)
        return self._client

    def facts(self) -> Any:
        """The client that reads the trainers' facts (``batch_timings``)."""
        if not self.facts_url:
            return self.client()
        if self._facts is None:
            from shardsense.clickhouse import connect

            self._facts = connect(self.facts_url)
        return self._facts

    def record_decision(self, job_id: str, decision: Decision) -> None:
        self._queue.put((PLANNER_DECISIONS.name, decision.row(job_id)))

    def record_map(self, shard_map: ShardMap) -> None:
        self._queue.put((SHARD_MAPS.name, shard_map_row(shard_map)))

    def transfer_waits(
        self, job_id: str, old: int, new: int, ranks: list[int], first: int
    ) -> dict[int, float]:
        """Per rank with ``first`` batches under ``new``: wait above the old median per sample."""
        params = {"job": job_id, "old": old, "new": new, "ranks": ranks, "k": first}
        rows = self.facts().query(_TRANSFER_SQL, parameters=params).result_rows
        return {
            int(rank): float(sum(max(0.0, w - base * n) for w, n in batches))
            for rank, base, batches in rows
            if len(batches) >= first and base == base  # NaN baseline: no batches before
        }

    def durable_facts(self, job_id: str) -> tuple[ShardMap | None, int]:
        from planner_service.recovery import durable_facts

        return durable_facts(self.client(), job_id, self.facts())

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        pending: dict[str, list[list[Any]]] = {}
        tries = 0
        done = False
        while not done:
            try:
                item = self._queue.get(timeout=self.flush_s)
                while True:
                    if item is None:
                        done = True
                    else:
                        pending.setdefault(item[0], []).append(item[1])
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if not pending:
                continue
            try:
                for table, rows in list(pending.items()):
                    TABLES[table].insert(self.client(), rows)
                    del pending[table]
                tries = 0
            except Exception as exc:
                tries += 1
                log.error("planner: ClickHouse insert failed (%d/%d): %s", tries, self.retries, exc)
                if tries >= self.retries:
                    log.error("planner: dropping %d rows", sum(map(len, pending.values())))
                    pending.clear()
                    tries = 0
