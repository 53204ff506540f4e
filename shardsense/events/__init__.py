"""Versioned event contracts shared by every service (documented in docs/EVENTS.md).

Every event is one UTF-8 JSON object with a common envelope::

    {"v": 1, "kind": "...", "job_id": "...", "worker_id": 3,
     "event_id": "<1-64 chars>", "ts": <unix seconds>, ...kind-specific fields}

``decode`` is the single gate: it returns a typed event or raises
:class:`~shardsense.errors.InvalidEvent` with a stable ``code`` and a readable
``reason``; consumers route that to the dead-letter topic and go on.

>>> report = TimingReport.new("job-1", 0, {"epoch": [0], "step": [0], "samples": [32],
...     "data_wait_s": [0.001], "compute_s": [0.01], "map_version": [0], "end_ts": [1.0]})
>>> decode(encode(report)).timings["samples"]
[32]
>>> decode(b'{"v": 9}')
Traceback (most recent call last):
...
shardsense.errors.InvalidEvent: bad_version: schema version 9 is not supported (supported: 1)
"""

from __future__ import annotations

from shardsense.events.checks import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    MAX_TIMESTAMP,
    SCHEMA_VERSION,
    new_event_id,
)
from shardsense.events.dead_letter import DeadLetter
from shardsense.events.prediction import Prediction
from shardsense.events.shard_map import ShardMap, check_partition, moved_shards
from shardsense.events.timing import (
    MAX_TIMINGS_PER_REPORT,
    TIMING_COLUMNS,
    TIMING_MAX,
    TimingReport,
)
from shardsense.events.wire import Event, decode, encode, peek_identity

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_ID_CHARS",
    "MAX_TIMESTAMP",
    "MAX_TIMINGS_PER_REPORT",
    "SCHEMA_VERSION",
    "TIMING_COLUMNS",
    "TIMING_MAX",
    "DeadLetter",
    "Event",
    "Prediction",
    "ShardMap",
    "TimingReport",
    "check_partition",
    "decode",
    "encode",
    "moved_shards",
    "new_event_id",
    "peek_identity",
]
