"""The gate between Kafka and everything else: validate and route.

A pure function, so the dead-letter rules are unit-testable without a broker;
the rows it leads to are built by :mod:`shardsense.tables`.
A payload becomes either a :class:`TimingReport` or a :class:`DeadLetter`
that names the reason and the source offset; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shardsense.errors import InvalidEvent
from shardsense.events import DeadLetter, TimingReport, decode, peek_identity

__all__ = ["Routed", "route"]


@dataclass
class Routed:
    """One batch of payloads split into accepted reports and dead letters."""

    reports: list[TimingReport] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)  # each report's source partition


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
        out.partitions.append(partition)
    return out
