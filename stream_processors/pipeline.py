"""The processor's work on one batch of Kafka messages, without Faust: route, store, hooks.

:class:`Pipeline` is what the Faust agent (``stream_processors.app``) awaits per
batch; it is plain asyncio, so tests drive it with payloads and a client. Per
batch: every payload is decoded by the shared contract (``ingest.route``); dead
letters go to the dead-letter topic (``send_dead``) and table; valid reports'
timings go to ``batch_timings`` (Arrow), then to the hooks (features, models,
predictions). ``process`` returns only once everything is stored: the agent
acknowledges offsets after it (at-least-once; ReplacingMergeTree removes replays).
Stores are retried forever (:func:`retry_forever`): a ClickHouse outage stalls
the processor, it never drops a batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardsense.events import DeadLetter, TimingReport
from shardsense.settings import Settings
from shardsense.tables import BATCH_TIMINGS, DEAD_LETTERS, dead_letter_row, timing_table
from stream_processors.ingest import Routed, route

__all__ = ["Payload", "Pipeline", "ReportHook", "SendDead", "retry_forever"]

log = logging.getLogger(__name__)

#: Called with every batch of valid reports, after their raw rows are stored.
ReportHook = Callable[[list[TimingReport]], Awaitable[None]]
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


class Pipeline:
    """Route, store and hand on batches; ``stats`` counts them and times each stage."""

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
        """Route, store and hand on one batch; returns only when it is stored."""
        started = time.perf_counter()
        s = self.settings
        routed = route(payloads, topic=s.topic_timings, max_bytes=s.max_event_bytes)
        routed_at = time.perf_counter()
        for report, partition in zip(routed.reports, routed.partitions, strict=True):
            self.jobs_by_partition.setdefault(partition, set()).add(report.job_id)
        if routed.dead:
            await self._dead_letters(routed.dead)
        if routed.reports:
            await retry_forever("timings insert", self.client.insert_arrow,
                                BATCH_TIMINGS.name, timing_table(routed.reports))
            stored_at = time.perf_counter()
            self.stats["store_s"] += stored_at - routed_at
            await self._run_hooks(routed.reports)
            self.stats["hooks_s"] += time.perf_counter() - stored_at
        self.stats["route_s"] += routed_at - started
        self.stats["batches"] += 1
        self.stats["reports"] += len(routed.reports)
        self.stats["timings"] += sum(len(r) for r in routed.reports)
        self.stats["dead"] += len(routed.dead)
        return routed

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

    async def _run_hooks(self, reports: list[TimingReport]) -> None:
        """Every hook sees the batch; one that fails is logged, the raw rows stay stored."""
        for hook in self.hooks:
            try:
                await hook(reports)
            except Exception:
                log.exception("report hook %r failed; raw timings are stored", hook)
