"""Timing reports: many batch timings of one rank, column-wise, in one message."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shardsense.errors import InvalidEvent
from shardsense.events.checks import MAX_TIMESTAMP, Envelope, new_event_id, require

__all__ = ["MAX_TIMINGS_PER_REPORT", "TIMING_COLUMNS", "TIMING_MAX", "TimingReport", "check_column"]

MAX_TIMINGS_PER_REPORT = 10_000

#: Columns of a timing report, each a list of equal length (one entry per batch).
#: ``int`` columns must hold integers >= 0; ``float`` columns finite numbers >= 0.
TIMING_COLUMNS: dict[str, type] = {
    "epoch": int,
    "step": int,
    "samples": int,
    "data_wait_s": float,
    "compute_s": float,
    "map_version": int,
    "end_ts": float,
}
#: Largest value each column holds: its ClickHouse type's range (UInt32, Int64 steps,
#: DateTime64(6) times before 2262). Beyond it an insert would fail on every retry.
TIMING_MAX: dict[str, float] = {
    "epoch": 2**32 - 1,
    "step": 2**63 - 1,
    "samples": 2**32 - 1,
    "data_wait_s": 1e9,
    "compute_s": 1e9,
    "map_version": 2**32 - 1,
    "end_ts": MAX_TIMESTAMP,
}


@dataclass(frozen=True)
class TimingReport(Envelope):
    """Many batch timings of one rank, column-wise (see ``TIMING_COLUMNS``).

    Packing many timings per message is what makes the pipeline fast: the
    stream processor pays per Kafka message, not per timing.
    """

    timings: dict[str, list[Any]] = field(default_factory=dict)
    host: str = ""

    kind: ClassVar[str] = "timing_report"

    @classmethod
    def new(
        cls, job_id: str, worker_id: int, timings: dict[str, list[Any]], host: str = ""
    ) -> TimingReport:
        return cls(job_id, worker_id, new_event_id(), time.time(), timings, host)

    def __len__(self) -> int:
        return len(self.timings["step"])

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> TimingReport:
        env = cls._envelope(obj)
        host = obj.get("host", "")
        if not isinstance(host, str) or len(host) > 255:
            raise InvalidEvent("bad_type", "field 'host' must be a string of <= 255 chars")
        cols = require(obj, "timings")
        if not isinstance(cols, dict):
            raise InvalidEvent("bad_type", "field 'timings' must be an object of columns")
        missing = [c for c in TIMING_COLUMNS if c not in cols]
        if missing:
            raise InvalidEvent("missing_field", f"timings lacks columns {missing}")
        extra = sorted(set(cols) - set(TIMING_COLUMNS))
        if extra:
            raise InvalidEvent("unknown_field", f"timings has unknown columns {extra}")
        lengths = set()
        for name, kind in TIMING_COLUMNS.items():
            col = cols[name]
            if not isinstance(col, list):
                raise InvalidEvent("bad_type", f"timings.{name} must be a list")
            lengths.add(len(col))
            check_column(name, kind, col)
        if len(lengths) != 1:
            raise InvalidEvent("bad_shape", f"timings columns differ in length: {sorted(lengths)}")
        (n,) = lengths
        if not 1 <= n <= MAX_TIMINGS_PER_REPORT:
            raise InvalidEvent(
                "bad_shape", f"a report holds 1..{MAX_TIMINGS_PER_REPORT} timings, got {n}"
            )
        return cls(**env, timings={c: cols[c] for c in TIMING_COLUMNS}, host=host)


def check_column(name: str, kind: type, col: list[Any]) -> None:
    """Type, finiteness and sign of one timing column, with the first bad index.

    The fast path (C-speed builtins: exact types, ``min``, a finite ``sum``)
    accepts a valid column ~10x faster than the loop, which the processor pays
    per timing; anything it does not accept goes through the loop below, which
    finds and names the first bad value.
    """
    top = TIMING_MAX[name]
    if col:
        types = set(map(type, col))
        if types <= ({int} if kind is int else {int, float}) and min(col) >= 0 and (
            max(col) <= top
        ) and (kind is int or math.isfinite(sum(col))):
            return
    for i, x in enumerate(col):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InvalidEvent("bad_type", f"timings.{name}[{i}] must be a number")
        if kind is int and not isinstance(x, int):
            raise InvalidEvent("bad_type", f"timings.{name}[{i}] must be an integer")
        if not math.isfinite(x):
            raise InvalidEvent("not_finite", f"timings.{name}[{i}] must be finite")
        if x < 0:
            raise InvalidEvent("negative", f"timings.{name}[{i}] must be >= 0, got {x}")
        if x > top:
            raise InvalidEvent("out_of_range", f"timings.{name}[{i}] must be <= {top:g}, got {x}")
