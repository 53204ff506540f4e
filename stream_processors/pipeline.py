"""The processor's work on one batch of Kafka messages, without Faust: route, learn, store.

:class:`Pipeline` is plain asyncio, so tests drive it with payloads and a client.
A batch goes through two stages:

* :meth:`Pipeline.prepare` (CPU, on the event loop): every payload is decoded by
  the shared contract (``ingest.route``), the valid reports' timings become one
  Arrow table whose insert starts at once (in a thread: chDB releases the GIL),
  and each hook prepares its share meanwhile (the predictor learns and makes its
  rows and predictions: ``ReportHook.prepare``);
* :meth:`Pipeline.store` (I/O, in threads): dead letters to their topic and
  table, every hook's rows inserted, the timings' insert awaited, then the hooks
  publish (stored first, published second: a prediction the planner sees is in
  ClickHouse).

The agent (``stream_processors.app``) prepares batch N+1 while batch N is being
stored, and acknowledges a batch's offsets only after its ``store`` returned
(at-least-once; ReplacingMergeTree removes replays). Stores are retried forever
(:func:`retry_forever`): a ClickHouse outage stalls the processor, it never drops
a batch. A hook that fails is logged; the raw rows are stored all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardsense.events import DeadLetter, TimingReport
from shardsense.settings import Settings
from shardsense.tables import BATCH_TIMINGS, DEAD_LETTERS, dead_letter_row, timing_table
from stream_processors.ingest import Routed, route

__all__ = ["Batch", "Payload", "Pipeline", "ReportHook", "SendDead", "Staged", "retry_forever"]

log = logging.getLogger(__name__)


class Staged(Protocol):
    """What a hook made of one batch: stored with the raw rows, then published."""

    async def store(self) -> None: ...

    async def publish(self) -> None: ...


class ReportHook(Protocol):
    """Sees every batch of valid reports; its work is stored with the batch's raw rows."""

    async def prepare(self, reports: list[TimingReport]) -> Staged: ...


#: Sends dead letters to the dead-letter topic; returns once the broker has them.
SendDead = Callable[[Sequence[DeadLetter]], Awaitable[None]]
#: One Kafka message as the pipeline sees it: ``(value, partition, offset)``.
Payload = tuple[bytes | None, int, int]

#: First and longest pause between two tries of a store.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


async def retry_forever(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking ``fn`` off the event loop until it succeeds (never drop a batch)."""
    delay = RETRY_FIRST_S
    while True:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except Exception as exc:
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


async def _no_topic(dead: Sequence[DeadLetter]) -> None:
    """The default ``send_dead``: dead letters go to the table only (tests)."""


@dataclass
class Batch:
    """One prepared batch, waiting to be stored."""

    routed: Routed
    timings: asyncio.Future[Any] | None = None  # the raw rows' insert, started at once
    staged: list[tuple[ReportHook, Staged]] = field(default_factory=list)


class Pipeline:
    """Route, learn, store and publish batches; ``stats`` counts them and times each stage."""

    def __init__(
        self,
        settings: Settings,
        client: Any,
        hooks: Sequence[ReportHook] = (),
        send_dead: SendDead = _no_topic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.hooks = list(hooks)
        self.send_dead = send_dead
        self.stats: dict[str, float] = {"batches": 0, "reports": 0, "timings": 0, "dead": 0,
                                        "route_s": 0.0, "store_s": 0.0, "hooks_s": 0.0}
        #: Jobs seen per source partition: what a revoked partition takes away.
        self.jobs_by_partition: dict[int, set[str]] = {}

    async def process(self, payloads: Sequence[Payload]) -> Routed:
        """Prepare and store one batch; returns only when it is stored."""
        return await self.store(await self.prepare(payloads))

    async def prepare(self, payloads: Sequence[Payload]) -> Batch:
        """Decode, build the timings' table, let every hook prepare its share."""
        started = time.perf_counter()
        s = self.settings
        routed = route(payloads, topic=s.topic_timings, max_bytes=s.max_event_bytes)
        for report, partition in zip(routed.reports, routed.partitions, strict=True):
            self.jobs_by_partition.setdefault(partition, set()).add(report.job_id)
        batch = Batch(routed)
        if routed.reports:  # the raw rows go in first, while the hooks learn
            batch.timings = asyncio.ensure_future(retry_forever(
                "timings insert", self.client.insert_arrow, BATCH_TIMINGS.name,
                timing_table(routed.reports)))
        routed_at = time.perf_counter()
        self.stats["route_s"] += routed_at - started
        if routed.reports:
            for hook in self.hooks:
                try:
                    batch.staged.append((hook, await hook.prepare(routed.reports)))
                except Exception:
                    log.exception("report hook %r failed; raw timings are stored", hook)
        self.stats["hooks_s"] += time.perf_counter() - routed_at
        return batch

    async def store(self, batch: Batch) -> Routed:
        """Dead letters, then every insert of the batch at once, then the publishing."""
        started = time.perf_counter()
        routed = batch.routed
        if routed.dead:
            await self._dead_letters(routed.dead)
        work: list[Awaitable[Any]] = [self._guarded(hook, staged.store)
                                      for hook, staged in batch.staged]
        if batch.timings is not None:
            work.append(batch.timings)
        await asyncio.gather(*work)
        for hook, staged in batch.staged:
            await self._guarded(hook, staged.publish)
        self.stats["store_s"] += time.perf_counter() - started
        self.stats["batches"] += 1
        self.stats["reports"] += len(routed.reports)
        self.stats["timings"] += sum(len(r) for r in routed.reports)
        self.stats["dead"] += len(routed.dead)
        return routed

    @staticmethod
    async def _guarded(hook: ReportHook, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception:
            log.exception("report hook %r failed; raw timings are stored", hook)

    def revoked(self, partitions: set[int]) -> set[str]:
        """Partitions this instance no longer owns: hooks forget their jobs' state (another
        instance owns it now; if the partition comes back, its jobs start from the store)."""
        jobs = set().union(*(self.jobs_by_partition.pop(p, set()) for p in partitions))
        for hook in self.hooks:
            forget = getattr(hook, "forget", None)
            if jobs and forget is not None:
                forget(jobs)
        return jobs

    async def _dead_letters(self, dead: list[DeadLetter]) -> None:
        """To the topic first, then the table; each logged with its reason."""
        await self.send_dead(dead)
        rows = [dead_letter_row(d) for d in dead]
        await retry_forever("dead-letter insert", DEAD_LETTERS.insert, self.client, rows)
        for d in dead:
            log.warning("dead letter %s:%s@%s %s: %s", d.source_topic, d.source_partition,
                        d.source_offset, d.code, d.reason)
