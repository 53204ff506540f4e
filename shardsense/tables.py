"""The six ClickHouse tables as the code writes them: columns and one row builder each.

The schema (``shardsense/schema/001_core.sql``) says what a table holds; this
module says how every writer fills it, once: the processor (timings, features,
predictions, dead letters), the planner (decisions, maps), the console's
fixtures and the tests all build rows here, so a column added to the schema is
added to one list. Times are seconds in the code and ``DateTime64(6)`` in
ClickHouse: :func:`micros` is the one conversion.

>>> PREDICTIONS.columns[:4]
('job_id', 'worker_id', 'event_id', 'ts')
>>> DEAD_LETTERS.row(job_id="j", event_id="e", ts=1.5, code="c", reason="r",
...     source_topic="t", source_partition=0, source_offset=7, payload_bytes=3)
['j', 'e', 1500000, 'c', 'r', 't', 0, 7, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shardsense.events import DeadLetter, Prediction, ShardMap, TimingReport

__all__ = [
    "BATCH_TIMINGS",
    "DEAD_LETTERS",
    "PLANNER_DECISIONS",
    "PREDICTIONS",
    "SHARD_MAPS",
    "TABLES",
    "WORKER_FEATURES",
    "FeatureRow",
    "Table",
    "dead_letter_row",
    "micros",
    "prediction_row",
    "shard_map_row",
    "timing_table",
]


def micros(seconds: float) -> int:
    """Unix seconds as the integer microseconds a ``DateTime64(6)`` insert takes.

    >>> micros(1.0000015)
    1000002
    """
    return round(seconds * 1_000_000)


@dataclass(frozen=True)
class Table:
    """A table's insert columns, in order; ``times`` are its ``DateTime64(6)`` columns."""

    name: str
    columns: tuple[str, ...]
    times: tuple[str, ...] = ("ts",)

    def row(self, source: object = None, /, **values: Any) -> list[Any]:
        """One row in column order: each column from ``values``, else ``source``'s attribute.

        Time columns take seconds and are written as :func:`micros`.
        """
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"values: {self.name} has no columns {sorted(unknown)}")
        out = [values[c] if c in values else getattr(source, c) for c in self.columns]
        for c in self.times:
            i = self.columns.index(c)
            out[i] = micros(out[i])
        return out

    def insert(self, client: Any, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (made by :meth:`row`) through a clickhouse-connect client."""
        client.insert(self.name, rows, column_names=list(self.columns))


BATCH_TIMINGS = Table(
    "batch_timings",
    ("job_id", "worker_id", "event_id", "seq", "epoch", "step", "samples", "data_wait_s",
     "compute_s", "map_version", "end_ts", "report_ts", "host"),
    times=("end_ts", "report_ts"),
)
WORKER_FEATURES = Table(
    "worker_features",
    ("job_id", "worker_id", "event_id", "ts", "last_step", "batches", "time_per_sample_s",
     "ewma_tps", "mean_tps", "p50_tps", "p90_tps", "trend", "wait_share", "slowdown", "epoch"),
)
PREDICTIONS = Table(
    "predictions",
    ("job_id", "worker_id", "event_id", "ts", "based_on_step", "time_per_sample_s",
     "uncertainty_s", "slowdown", "straggler", "model_versions", "based_on_epoch", "onset_step",
     "forecast_offsets", "forecast_time_per_sample_s", "forecast_confidence"),
)
PLANNER_DECISIONS = Table(
    "planner_decisions",
    ("job_id", "decision_id", "ts", "decision", "reason", "algorithm", "map_version",
     "world_size", "moved_shards", "predicted_gain_s", "move_cost_s", "current_step_s",
     "predicted_step_s", "batch_sizes"),
)
SHARD_MAPS = Table(
    "shard_maps",
    ("job_id", "map_version", "event_id", "ts", "apply_epoch", "apply_step", "num_shards",
     "global_batch_size", "batch_sizes", "shards", "predicted_gain_s", "move_cost_s", "reason",
     "num_samples", "max_batch_size"),  # the job's shape: a base map rebuilt from the table
)
DEAD_LETTERS = Table(
    "dead_letters",
    ("job_id", "event_id", "ts", "code", "reason", "source_topic", "source_partition",
     "source_offset", "payload_bytes"),
)
#: Every table by name.
TABLES = {t.name: t for t in (BATCH_TIMINGS, WORKER_FEATURES, PREDICTIONS, PLANNER_DECISIONS,
                              SHARD_MAPS, DEAD_LETTERS)}


@dataclass(frozen=True)
class FeatureRow:
    """One ``worker_features`` row: one *tick* of one rank (``processor_tick_steps``
    steps, see ``stream_processors.ticks``). ``(event_id, ts)`` derive from the
    tick's ``(job, rank, epoch, block)`` and its last batch, so a replayed tick maps
    onto the same row and ReplacingMergeTree keeps one.

    The ``*_tps`` columns are seconds per sample (the stored column names): the
    tick's value, its EWMA over ticks, and the mean, median and 90th percentile of
    the last 32 ticks; ``trend`` is their least-squares slope per tick over their
    mean; ``wait_share`` the tick's share of data wait; ``slowdown`` the EWMA over
    the job's fleet median.
    """

    job_id: str
    worker_id: int
    event_id: str
    ts: float
    last_step: int
    batches: int
    time_per_sample_s: float
    ewma_tps: float
    mean_tps: float
    p50_tps: float
    p90_tps: float
    trend: float
    wait_share: float
    slowdown: float
    epoch: int = 0

    def values(self) -> list[Any]:
        """The row for an insert (``ts`` as microseconds)."""
        return WORKER_FEATURES.row(self)


def prediction_row(p: Prediction) -> list[Any]:
    """The ``predictions`` row of one prediction event."""
    return PREDICTIONS.row(p, straggler=int(p.straggler))


def shard_map_row(m: ShardMap) -> list[Any]:
    """The ``shard_maps`` row of one published map."""
    return SHARD_MAPS.row(m)


def dead_letter_row(d: DeadLetter) -> list[Any]:
    """The ``dead_letters`` row of one rejected input."""
    return DEAD_LETTERS.row(d)


def _per_report(values: list[Any], index: Any) -> Any:
    """One value per report, repeated for each of its timings (dictionary-encoded)."""
    import pyarrow as pa

    small = pa.array(values).dictionary_encode()
    return pa.DictionaryArray.from_arrays(small.indices.take(index), small.dictionary)


def timing_table(reports: Sequence[TimingReport]) -> Any:
    """One ``batch_timings`` insert as a ``pyarrow.Table`` (columns ``BATCH_TIMINGS.columns``).

    Arrow, not Python lists: numpy builds the columns and ClickHouse reads them
    as they are, where clickhouse-connect's Native writer loops over every value
    (measured, 40k timings into chDB: 1.1 µs per timing against 1.8). Insert it
    with ``client.insert_arrow("batch_timings", table)``.

    >>> r = TimingReport.new("j", 3, {"epoch": [0, 0], "step": [7, 8], "samples": [32, 32],
    ...     "data_wait_s": [0.0, 0.1], "compute_s": [1.0, 1.0], "map_version": [1, 1],
    ...     "end_ts": [1.5, 2.5]})
    >>> t = timing_table([r])
    >>> t.column("seq").to_pylist(), t.column("end_ts").cast("int64").to_pylist()
    ([0, 1], [1500000, 2500000])
    """
    import numpy as np
    import pyarrow as pa

    lens = np.fromiter((len(r) for r in reports), dtype=np.int64, count=len(reports))
    index = pa.array(np.repeat(np.arange(len(reports), dtype=np.int32), lens))
    starts = np.repeat(np.cumsum(lens) - lens, lens)

    def column(name: str, dtype: Any) -> Any:
        parts = [np.asarray(r.timings[name], dtype=dtype) for r in reports]
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    def times(seconds: Any) -> Any:
        return pa.array(np.round(seconds * 1e6).astype(np.int64), pa.timestamp("us"))

    arrays = [
        _per_report([r.job_id for r in reports], index),
        pa.array(np.repeat(np.fromiter((r.worker_id for r in reports), np.int32), lens)),
        _per_report([r.event_id for r in reports], index),
        pa.array((np.arange(int(lens.sum())) - starts).astype(np.uint32)),
        pa.array(column("epoch", np.uint32)),
        pa.array(column("step", np.uint64)),
        pa.array(column("samples", np.uint32)),
        pa.array(column("data_wait_s", np.float64)),
        pa.array(column("compute_s", np.float64)),
        pa.array(column("map_version", np.uint32)),
        times(column("end_ts", np.float64)),
        times(np.repeat(np.fromiter((r.ts for r in reports), np.float64), lens)),
        _per_report([r.host for r in reports], index),
    ]
    return pa.table(arrays, names=list(BATCH_TIMINGS.columns))
