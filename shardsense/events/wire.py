"""The wire format: compact UTF-8 JSON, and ``decode``, the single gate into typed events."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import orjson

from shardsense.errors import InvalidEvent
from shardsense.events.checks import DEFAULT_MAX_EVENT_BYTES, SCHEMA_VERSION
from shardsense.events.dead_letter import DeadLetter
from shardsense.events.prediction import Prediction
from shardsense.events.shard_map import ShardMap
from shardsense.events.timing import TimingReport

__all__ = ["Event", "decode", "encode", "peek_identity"]

Event = TimingReport | Prediction | ShardMap | DeadLetter
_KINDS: dict[str, Any] = {c.kind: c for c in (TimingReport, Prediction, ShardMap, DeadLetter)}
_FIELDS: dict[type, tuple[str, ...]] = {}


def encode(event: Event) -> bytes:
    """The event as compact UTF-8 JSON (NaN/inf are refused, never written).

    The fields are read as they are, not deep-copied like ``to_dict`` (``asdict``):
    the JSON is the same and a prediction encodes in a third of the time (the
    processor publishes one per rank per batch).
    """
    names = _FIELDS.get(type(event))
    if names is None:
        names = _FIELDS[type(event)] = tuple(f.name for f in fields(event))
    obj = {"v": SCHEMA_VERSION, "kind": event.kind, **{n: getattr(event, n) for n in names}}
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


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
