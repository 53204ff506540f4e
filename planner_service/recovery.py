"""The planner's base map from durable facts, for when the shard-map topic forgot it.

The compacted topic is the planner's state, but the embedded broker keeps topics
in memory: after it restarts, a planner that reads the topic finds nothing and
would never plan again. ClickHouse outlives the broker and holds two facts:
every map the planner published or saw (``shard_maps``), and the version in
force on each rank, reported in every timing (``batch_timings.map_version``).

:func:`choose_base` decides from those facts (pure): the newest stored map when
it is at least the version in force; otherwise wait for rank 0, which publishes
its map again when it finds the topic re-created, and after ``wait_s`` plan from
the newest stored map relabelled with the version in force, so versions never go
backwards and the next plan (version + 1) is one every loader accepts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

from shardsense.events import ShardMap

__all__ = ["LATEST_MAP_SQL", "RECOVER_EVERY_S", "RECOVER_WAIT_S", "VERSION_IN_FORCE_SQL",
           "BaseRecovery", "choose_base", "durable_facts", "map_from_row"]

log = logging.getLogger(__name__)

#: A job without a base map asks ClickHouse this often; plans from a stored map after this.
RECOVER_EVERY_S = 2.0
RECOVER_WAIT_S = 10.0

#: Columns in ``map_from_row`` order.
_MAP_FIELDS = ("job_id", "map_version", "event_id", "ts", "apply_epoch", "apply_step",
               "num_shards", "batch_sizes", "shards", "num_samples", "max_batch_size",
               "predicted_gain_s", "move_cost_s", "reason")
LATEST_MAP_SQL = (
    f"SELECT {', '.join(_MAP_FIELDS)} FROM v_shard_maps WHERE job_id = {{job:String}} "
    "ORDER BY map_version DESC LIMIT 1"
)
VERSION_IN_FORCE_SQL = "SELECT max(map_version) FROM batch_timings WHERE job_id = {job:String}"


def map_from_row(row: Any) -> ShardMap:
    """A validated :class:`ShardMap` from one ``LATEST_MAP_SQL`` row (ids and times kept)."""
    values = dict(zip(_MAP_FIELDS, row, strict=True))
    ts = values["ts"]
    built = ShardMap.build(
        str(values["job_id"]), int(values["map_version"]),
        [[int(s) for s in shards] for shards in values["shards"]],
        [int(b) for b in values["batch_sizes"]],
        num_shards=int(values["num_shards"]), apply_epoch=int(values["apply_epoch"]),
        apply_step=int(values["apply_step"]), num_samples=int(values["num_samples"]),
        max_batch_size=int(values["max_batch_size"]),
        predicted_gain_s=float(values["predicted_gain_s"]),
        move_cost_s=float(values["move_cost_s"]), reason=str(values["reason"]),
    )
    stamp = ts.timestamp() if isinstance(ts, datetime) else float(ts)
    return dataclasses.replace(built, event_id=str(values["event_id"]), ts=stamp)


def durable_facts(client: Any, job_id: str, timings: Any = None) -> tuple[ShardMap | None, int]:
    """(newest stored map of the job or None, newest version a rank reported in force).

    Maps are read from ``client`` (the planner stores every map it sees there), the
    version in force from ``timings`` (default ``client``): a planner with its own
    chDB path reads the processor's ``batch_timings`` through another store.
    """
    params = {"job": job_id}
    rows = client.query(LATEST_MAP_SQL, parameters=params).result_rows
    stored = map_from_row(rows[0]) if rows else None
    in_force = (timings or client).query(VERSION_IN_FORCE_SQL, parameters=params).result_rows
    version = int(in_force[0][0] or 0) if in_force else 0
    return stored, version


def choose_base(
    stored: ShardMap | None, in_force: int, waited_s: float, wait_s: float
) -> tuple[ShardMap | None, str]:
    """The base map to plan from now (or None to wait), and why.

    >>> m = ShardMap.build("j", 4, [[0, 1], [2, 3]], [8, 8])
    >>> choose_base(m, 4, 0.0, 10.0)[0].map_version
    4
    >>> choose_base(m, 5, 0.0, 10.0)
    (None, 'v5 is in force but only v4 is stored: waiting for rank 0 to publish v5 again')
    >>> choose_base(m, 5, 12.0, 10.0)[0].map_version
    5
    >>> choose_base(None, 0, 99.0, 10.0)
    (None, 'nothing stored for the job yet: waiting for its first map')
    """
    if stored is None:
        if in_force:
            return None, f"v{in_force} is in force but no map is stored: waiting for rank 0"
        return None, "nothing stored for the job yet: waiting for its first map"
    if stored.map_version >= in_force:
        return stored, f"newest stored map v{stored.map_version}"
    if waited_s < wait_s:
        return None, (f"v{in_force} is in force but only v{stored.map_version} is stored: "
                      f"waiting for rank 0 to publish v{in_force} again")
    return dataclasses.replace(stored, map_version=in_force), (
        f"rank 0 did not publish v{in_force} within {wait_s:.0f}s: planning from stored "
        f"v{stored.map_version} as v{in_force}")


class _Facts(Protocol):
    def durable_facts(self, job_id: str) -> tuple[ShardMap | None, int]: ...


class BaseRecovery:
    """Jobs waiting for a base map, asked of ClickHouse one at a time on a worker thread.

    The planner calls :meth:`want` for a job whose map partition it read to the end
    without finding a map, and :meth:`poll` from its loop; ``apply(job, base, why)``
    gets each base map chosen (:func:`choose_base`).
    """

    def __init__(self, sink: _Facts, every_s: float | None = None, wait_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.clock = sink, clock
        self.every_s = RECOVER_EVERY_S if every_s is None else every_s
        self.wait_s = RECOVER_WAIT_S if wait_s is None else wait_s
        self._since: dict[str, float] = {}  # job -> when it was first wanted
        self._next: dict[str, float] = {}
        self._why: dict[str, str] = {}
        self._running: tuple[str, Future[tuple[ShardMap | None, int]]] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="planner-recover")

    def want(self, job_id: str) -> None:
        if job_id not in self._since:
            self._since[job_id] = self.clock()

    def forget(self, job_id: str) -> None:
        for table in (self._since, self._next, self._why):
            table.pop(job_id, None)

    def poll(self, apply: Callable[[str, ShardMap, str], None]) -> None:
        """Hand a finished answer on (or wait again); start the next due question."""
        now = self.clock()
        if self._running is not None and self._running[1].done():
            job_id, future = self._running
            self._running = None
            self._answered(job_id, future, now, apply)
        if self._running is None:
            due = next((j for j in self._since if self._next.get(j, 0.0) <= now), None)
            if due is not None:
                self._next[due] = now + self.every_s
                self._running = (due, self._executor.submit(self.sink.durable_facts, due))

    def _answered(self, job_id: str, future: Future[tuple[ShardMap | None, int]], now: float,
                  apply: Callable[[str, ShardMap, str], None]) -> None:
        if job_id not in self._since:
            return  # forgotten meanwhile
        try:
            stored, in_force = future.result()
        except Exception as exc:
            log.warning("planner: cannot read job %s's maps from ClickHouse: %s", job_id, exc)
            return
        base, why = choose_base(stored, in_force, now - self._since[job_id], self.wait_s)
        if base is None:
            if why != self._why.get(job_id):
                log.info("planner: no base map for job %s: %s", job_id, why)
            self._why[job_id] = why
            return
        self.forget(job_id)
        apply(job_id, base, why)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
