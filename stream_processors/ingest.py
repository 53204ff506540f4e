"""The gate between Kafka and everything else: validate, route, shape rows.

Pure functions, so the dead-letter rules are unit-testable without a broker.
A payload becomes either a :class:`TimingReport` or a :class:`DeadLetter`
that names the reason and the source offset; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardsense.errors import InvalidEvent
from shardsense.events import DeadLetter, TimingReport, decode, peek_identity

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "TIMING_ROW_COLUMNS",
    "Routed",
    "dead_letter_rows",
    "route",
    "timing_rows",
]

#: Column order of ``batch_timings`` inserts (see infra/clickhouse/001_core.sql).
TIMING_ROW_COLUMNS = (
    "job_id", "worker_id", "event_id", "seq", "epoch", "step", "samples",
    "data_wait_s", "compute_s", "map_version", "end_ts", "report_ts", "host",
)
DEAD_LETTER_COLUMNS = (
    "job_id", "event_id", "ts", "code", "reason", "source_topic", "source_partition",
    "source_offset", "payload_bytes",
)


@dataclass
class Routed:
    """One batch of payloads split into accepted reports and dead letters."""

    reports: list[TimingReport] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def route(
    payloads: Sequence[tuple[bytes | None, int, int]], *, topic: str, max_bytes: int
) -> Routed:
    """Validate ``(payload, partition, offset)`` triples from ``topic``.

    >>> r = route([(b"{oops", 0, 7)], topic="t", max_bytes=1024)
    >>> (len(r.reports), r.dead[0].code, r.dead[0].source_offset)
    (0, 'not_json', 7)
    """
    out = Routed()
    for raw, partition, offset in payloads:
        try:
            event = decode(raw, expect=TimingReport, max_bytes=max_bytes)
        except InvalidEvent as err:
            job, worker = peek_identity(raw if raw and len(raw) <= max_bytes else None)
            out.dead.append(
                DeadLetter.for_payload(
                    err, raw, source_topic=topic, source_partition=partition,
                    source_offset=offset, job_id=job, worker_id=worker,
                )
            )
            continue
        assert isinstance(event, TimingReport)
        out.reports.append(event)
    return out


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def timing_rows(reports: Sequence[TimingReport]) -> list[list[Any]]:
    """Column-oriented data for one ``batch_timings`` insert (DateTime64 as µs ticks)."""
    cols: list[list[Any]] = [[] for _ in TIMING_ROW_COLUMNS]
    (job, worker, event, seq, epoch, step, samples, wait, compute, version, end, rts, host) = cols
    for r in reports:
        n = len(r)
        t = r.timings
        job.extend([r.job_id] * n)
        worker.extend([r.worker_id] * n)
        event.extend([r.event_id] * n)
        seq.extend(range(n))
        epoch.extend(t["epoch"])
        step.extend(t["step"])
        samples.extend(t["samples"])
        wait.extend(float(x) for x in t["data_wait_s"])
        compute.extend(float(x) for x in t["compute_s"])
        version.extend(t["map_version"])
        end.extend(_micros(x) for x in t["end_ts"])
        rts.extend([_micros(r.ts)] * n)
        host.extend([r.host] * n)
    return cols


def dead_letter_rows(dead: Sequence[DeadLetter]) -> list[list[Any]]:
    """Row-oriented data for one ``dead_letters`` insert."""
    return [
        [d.job_id, d.event_id, _micros(d.ts), d.code, d.reason, d.source_topic,
         d.source_partition, d.source_offset, d.payload_bytes]
        for d in dead
    ]
