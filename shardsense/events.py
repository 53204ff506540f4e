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

import base64
import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import orjson

from shardsense.errors import InvalidEvent, InvalidShardMap

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_TIMINGS_PER_REPORT",
    "SCHEMA_VERSION",
    "TIMING_COLUMNS",
    "DeadLetter",
    "Event",
    "Prediction",
    "ShardMap",
    "TimingReport",
    "decode",
    "encode",
    "new_event_id",
]

SCHEMA_VERSION = 1
DEFAULT_MAX_EVENT_BYTES = 1_048_576
MAX_TIMINGS_PER_REPORT = 10_000
MAX_ID_CHARS = 64

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
MAX_TIMESTAMP = 9.2e9
TIMING_MAX: dict[str, float] = {
    "epoch": 2**32 - 1,
    "step": 2**63 - 1,
    "samples": 2**32 - 1,
    "data_wait_s": 1e9,
    "compute_s": 1e9,
    "map_version": 2**32 - 1,
    "end_ts": MAX_TIMESTAMP,
}


def new_event_id() -> str:
    """A fresh globally unique event id (uuid4 hex, 32 chars)."""
    return uuid.uuid4().hex


# ---------------------------------------------------------------- field checks


def _require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise InvalidEvent("missing_field", f"field {name!r} is required")
    return obj[name]


def _check_id(obj: dict[str, Any], name: str) -> str:
    value = _require(obj, name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent("bad_type", f"field {name!r} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_value", f"field {name!r} is longer than {MAX_ID_CHARS} chars")
    return value


def _check_int(obj: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = _require(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("bad_type", f"field {name!r} must be an integer")
    if value < minimum:
        raise InvalidEvent("bad_value", f"field {name!r} must be >= {minimum}, got {value}")
    return value


def _check_float(obj: dict[str, Any], name: str, minimum: float = 0.0,
                 maximum: float = MAX_TIMESTAMP) -> float:
    value = _require(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("bad_type", f"field {name!r} must be a number")
    if not math.isfinite(value):
        raise InvalidEvent("not_finite", f"field {name!r} must be finite")
    if not minimum <= value <= maximum:
        raise InvalidEvent("bad_value",
                           f"field {name!r} must be in {minimum}..{maximum:g}, got {value}")
    return float(value)


def _check_int_list(obj: dict[str, Any], name: str, minimum: int = 0) -> list[int]:
    value = _require(obj, name)
    if not isinstance(value, list) or any(
        isinstance(x, bool) or not isinstance(x, int) for x in value
    ):
        raise InvalidEvent("bad_type", f"field {name!r} must be a list of integers")
    if value and min(value) < minimum:
        raise InvalidEvent("bad_value", f"field {name!r} holds a value below {minimum}")
    return value


# ---------------------------------------------------------------- event types


@dataclass(frozen=True)
class _Envelope:
    """Fields every event carries; ``worker_id`` is -1 for events not from a rank."""

    job_id: str
    worker_id: int
    event_id: str
    ts: float

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "kind": self.kind, **asdict(self)}

    @staticmethod
    def _envelope(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "job_id": _check_id(obj, "job_id"),
            "worker_id": _check_int(obj, "worker_id", minimum=-1),
            "event_id": _check_id(obj, "event_id"),
            "ts": _check_float(obj, "ts"),
        }


@dataclass(frozen=True)
class TimingReport(_Envelope):
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
        cols = _require(obj, "timings")
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
            _check_column(name, kind, col)
        if len(lengths) != 1:
            raise InvalidEvent("bad_shape", f"timings columns differ in length: {sorted(lengths)}")
        (n,) = lengths
        if not 1 <= n <= MAX_TIMINGS_PER_REPORT:
            raise InvalidEvent(
                "bad_shape", f"a report holds 1..{MAX_TIMINGS_PER_REPORT} timings, got {n}"
            )
        return cls(**env, timings={c: cols[c] for c in TIMING_COLUMNS}, host=host)


def _check_column(name: str, kind: type, col: list[Any]) -> None:
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


@dataclass(frozen=True)
class Prediction(_Envelope):
    """The processor's forecast for one rank (``worker_id``), consumed by the planner.

    ``time_per_sample_s`` is the predicted compute+wait seconds per sample of the
    rank's next batches; ``slowdown`` is that divided by the fleet median.
    """

    time_per_sample_s: float = 0.0
    uncertainty_s: float = 0.0
    slowdown: float = 1.0
    straggler: bool = False
    based_on_step: int = 0
    model_versions: dict[str, str] = field(default_factory=dict)

    kind: ClassVar[str] = "prediction"

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Prediction:
        env = cls._envelope(obj)
        if env["worker_id"] < 0:
            raise InvalidEvent("bad_value", "a prediction's worker_id must be a rank >= 0")
        straggler = _require(obj, "straggler")
        if not isinstance(straggler, bool):
            raise InvalidEvent("bad_type", "field 'straggler' must be a boolean")
        versions = obj.get("model_versions", {})
        if not isinstance(versions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in versions.items()
        ):
            raise InvalidEvent("bad_type", "field 'model_versions' must map strings to strings")
        return cls(
            **env,
            time_per_sample_s=_check_float(obj, "time_per_sample_s"),
            uncertainty_s=_check_float(obj, "uncertainty_s"),
            slowdown=_check_float(obj, "slowdown"),
            straggler=straggler,
            based_on_step=_check_int(obj, "based_on_step"),
            model_versions=versions,
        )


@dataclass(frozen=True)
class ShardMap(_Envelope):
    """Which rank owns which shards, and each rank's share of the global batch.

    ``shards[r]`` lists the shard ids of rank ``r`` (every id in
    ``range(num_shards)`` exactly once overall); ``batch_sizes[r]`` is rank
    ``r``'s per-step sample count and they sum to ``global_batch_size``.
    ``num_samples`` (dataset length) and ``max_batch_size`` (per-rank cap from
    device memory, 0 = none) describe the job so that the planner can plan
    from the map alone; every later map keeps them. The map applies from
    ``(apply_epoch, apply_step)`` or the first step all ranks agree on after
    it. ``map_version`` increases by one per job.
    """

    map_version: int = 0
    num_shards: int = 0
    global_batch_size: int = 0
    apply_epoch: int = 0
    apply_step: int = 0
    shards: list[list[int]] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    num_samples: int = 0
    max_batch_size: int = 0
    predicted_gain_s: float = 0.0
    move_cost_s: float = 0.0
    reason: str = ""

    kind: ClassVar[str] = "shard_map"

    @property
    def world_size(self) -> int:
        return len(self.shards)

    @classmethod
    def build(
        cls,
        job_id: str,
        map_version: int,
        shards: list[list[int]],
        batch_sizes: list[int],
        *,
        num_shards: int | None = None,
        apply_epoch: int = 0,
        apply_step: int = 0,
        num_samples: int = 0,
        max_batch_size: int = 0,
        predicted_gain_s: float = 0.0,
        move_cost_s: float = 0.0,
        reason: str = "",
        worker_id: int = -1,
    ) -> ShardMap:
        """A new validated map (``worker_id`` -1 = the planner, else the rank that made it)."""
        obj = cls(
            job_id=job_id,
            worker_id=worker_id,
            event_id=new_event_id(),
            ts=time.time(),
            map_version=map_version,
            num_shards=sum(map(len, shards)) if num_shards is None else num_shards,
            global_batch_size=sum(batch_sizes),
            apply_epoch=apply_epoch,
            apply_step=apply_step,
            shards=[list(s) for s in shards],
            batch_sizes=list(batch_sizes),
            num_samples=num_samples,
            max_batch_size=max_batch_size,
            predicted_gain_s=predicted_gain_s,
            move_cost_s=move_cost_s,
            reason=reason,
        )
        return cls.from_dict(obj.to_dict())

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ShardMap:
        env = cls._envelope(obj)
        num_shards = _check_int(obj, "num_shards", minimum=1)
        shards = _require(obj, "shards")
        if not isinstance(shards, list) or not shards:
            raise InvalidEvent("bad_type", "field 'shards' must be a non-empty list of lists")
        per_rank = [_check_int_list({"shards": s}, "shards") for s in shards]
        batch_sizes = _check_int_list(obj, "batch_sizes")
        if len(batch_sizes) != len(per_rank):
            raise InvalidEvent(
                "bad_shape",
                f"batch_sizes has {len(batch_sizes)} entries for {len(per_rank)} ranks",
            )
        global_batch = _check_int(obj, "global_batch_size", minimum=1)
        if sum(batch_sizes) != global_batch:
            raise InvalidEvent(
                "bad_value",
                f"batch_sizes sum to {sum(batch_sizes)}, not global_batch_size {global_batch}",
            )
        check_partition(per_rank, num_shards)
        max_batch = _check_int(obj, "max_batch_size") if "max_batch_size" in obj else 0
        if max_batch and max(batch_sizes) > max_batch:
            raise InvalidEvent(
                "bad_value", f"a batch size exceeds max_batch_size {max_batch}: {batch_sizes}"
            )
        return cls(
            **env,
            map_version=_check_int(obj, "map_version", minimum=1),
            num_shards=num_shards,
            global_batch_size=global_batch,
            apply_epoch=_check_int(obj, "apply_epoch"),
            apply_step=_check_int(obj, "apply_step"),
            shards=per_rank,
            batch_sizes=batch_sizes,
            num_samples=_check_int(obj, "num_samples") if "num_samples" in obj else 0,
            max_batch_size=max_batch,
            predicted_gain_s=_check_float(obj, "predicted_gain_s", minimum=-math.inf),
            move_cost_s=_check_float(obj, "move_cost_s"),
            reason=str(obj.get("reason", ""))[:500],
        )


def check_partition(shards: list[list[int]], num_shards: int) -> None:
    """Raise :class:`InvalidShardMap` unless ``shards`` covers ``range(num_shards)`` once.

    >>> check_partition([[0, 2], [1]], 3)
    >>> check_partition([[0, 1], [1]], 3)
    Traceback (most recent call last):
    ...
    shardsense.errors.InvalidShardMap: not_a_partition: shard 1 is assigned twice; \
shard 2 is unassigned
    """
    seen = [0] * num_shards
    for rank_shards in shards:
        for s in rank_shards:
            if s >= num_shards:
                raise InvalidShardMap(
                    "not_a_partition", f"shard {s} is out of range 0..{num_shards - 1}"
                )
            seen[s] += 1
    problems = []
    twice = next((i for i, c in enumerate(seen) if c > 1), None)
    if twice is not None:
        problems.append(f"shard {twice} is assigned twice")
    missing = next((i for i, c in enumerate(seen) if c == 0), None)
    if missing is not None:
        problems.append(f"shard {missing} is unassigned")
    if problems:
        raise InvalidShardMap("not_a_partition", "; ".join(problems))


@dataclass(frozen=True)
class DeadLetter(_Envelope):
    """A rejected input: why, where it came from, and its first bytes (base64)."""

    code: str = ""
    reason: str = ""
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    payload_b64: str = ""
    payload_bytes: int = 0

    kind: ClassVar[str] = "dead_letter"
    #: Only this many leading bytes of a rejected payload are kept.
    KEEP_BYTES: ClassVar[int] = 4096

    @classmethod
    def for_payload(
        cls,
        error: InvalidEvent,
        payload: bytes | None,
        *,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        job_id: str = "unknown",
        worker_id: int = -1,
    ) -> DeadLetter:
        raw = payload or b""
        return cls(
            job_id=job_id[:MAX_ID_CHARS] or "unknown",
            worker_id=worker_id,
            event_id=new_event_id(),
            ts=time.time(),
            code=error.code,
            reason=error.reason,
            source_topic=source_topic,
            source_partition=source_partition,
            source_offset=source_offset,
            payload_b64=base64.b64encode(raw[: cls.KEEP_BYTES]).decode("ascii"),
            payload_bytes=len(raw),
        )

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> DeadLetter:
        env = cls._envelope(obj)
        return cls(
            **env,
            code=str(_require(obj, "code")),
            reason=str(_require(obj, "reason")),
            source_topic=str(obj.get("source_topic", "")),
            source_partition=int(obj.get("source_partition", -1)),
            source_offset=int(obj.get("source_offset", -1)),
            payload_b64=str(obj.get("payload_b64", "")),
            payload_bytes=int(obj.get("payload_bytes", 0)),
        )


Event = TimingReport | Prediction | ShardMap | DeadLetter
_KINDS: dict[str, Any] = {c.kind: c for c in (TimingReport, Prediction, ShardMap, DeadLetter)}


# ---------------------------------------------------------------- wire format


def encode(event: Event) -> bytes:
    """The event as compact UTF-8 JSON (NaN/inf are refused, never written)."""
    return json.dumps(event.to_dict(), separators=(",", ":"), allow_nan=False).encode()


def _no_constants(name: str) -> Any:
    raise InvalidEvent("not_finite", f"JSON constant {name} is not allowed")


def _parse(raw: bytes) -> Any:
    """JSON by orjson (7x the stdlib's speed on a 2,000-timing report: 0.25 vs
    1.7 ms here). What orjson refuses is parsed again by the stdlib, which names
    the precise problem (a NaN constant, bad UTF-8) or accepts what only orjson
    refuses (UTF-16 text). Integers beyond 64 bits come back as floats, which
    the integer columns reject."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except InvalidEvent:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent("not_json", f"payload is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("not_json", "payload nests too deeply") from None


def decode(
    raw: bytes | None,
    *,
    expect: type[Event] | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Event:
    """Parse and validate one payload, or raise :class:`InvalidEvent`.

    ``expect`` pins the kind a topic carries (a prediction on the timings topic
    is rejected); ``max_bytes`` bounds the payload before parsing.
    """
    if raw is None or len(raw) == 0:
        raise InvalidEvent("empty", "payload is empty")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"payload is {len(raw)} bytes, limit is {max_bytes}")
    obj = _parse(raw)
    if not isinstance(obj, dict):
        raise InvalidEvent("bad_type", "payload must be a JSON object")
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidEvent(
            "bad_version",
            f"schema version {version!r} is not supported (supported: {SCHEMA_VERSION})",
        )
    kind = obj.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidEvent("unknown_kind", f"event kind {kind!r} is unknown")
    if expect is not None and cls is not expect:
        raise InvalidEvent("wrong_kind", f"expected {expect.kind!r}, got {kind!r}")
    event: Event = cls.from_dict(obj)
    return event


def peek_identity(raw: bytes | None) -> tuple[str, int]:
    """Best-effort (job_id, worker_id) of a rejected payload, for dead-letter keys."""
    try:
        obj = json.loads(raw or b"")
        job = obj.get("job_id")
        worker = obj.get("worker_id")
        return (
            job if isinstance(job, str) and job else "unknown",
            worker if isinstance(worker, int) and not isinstance(worker, bool) else -1,
        )
    except Exception:
        return "unknown", -1
