"""The common envelope of every event and the field checks all kinds share.

Every check raises :class:`~shardsense.errors.InvalidEvent` with a stable code, so
a consumer can route whatever it rejects to the dead-letter topic.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from shardsense.errors import InvalidEvent

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_ID_CHARS",
    "MAX_TIMESTAMP",
    "SCHEMA_VERSION",
    "Envelope",
    "check_float",
    "check_id",
    "check_int",
    "check_int_list",
    "new_event_id",
    "require",
]

SCHEMA_VERSION = 1
DEFAULT_MAX_EVENT_BYTES = 1_048_576
MAX_ID_CHARS = 64
#: Largest timestamp (s) a ClickHouse DateTime64(6) holds (before 2262).
MAX_TIMESTAMP = 9.2e9


def new_event_id() -> str:
    """A fresh globally unique event id (uuid4 hex, 32 chars)."""
    return uuid.uuid4().hex


# ---------------------------------------------------------------- field checks


def require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise InvalidEvent("missing_field", f"field {name!r} is required")
    return obj[name]


def check_id(obj: dict[str, Any], name: str) -> str:
    value = require(obj, name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent("bad_type", f"field {name!r} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_value", f"field {name!r} is longer than {MAX_ID_CHARS} chars")
    return value


def check_int(obj: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = require(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("bad_type", f"field {name!r} must be an integer")
    if value < minimum:
        raise InvalidEvent("bad_value", f"field {name!r} must be >= {minimum}, got {value}")
    return value


def check_float(obj: dict[str, Any], name: str, minimum: float = 0.0,
                 maximum: float = MAX_TIMESTAMP) -> float:
    value = require(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("bad_type", f"field {name!r} must be a number")
    if not math.isfinite(value):
        raise InvalidEvent("not_finite", f"field {name!r} must be finite")
    if not minimum <= value <= maximum:
        raise InvalidEvent("bad_value",
                           f"field {name!r} must be in {minimum}..{maximum:g}, got {value}")
    return float(value)


def check_int_list(obj: dict[str, Any], name: str, minimum: int = 0) -> list[int]:
    value = require(obj, name)
    if not isinstance(value, list) or any(
        isinstance(x, bool) or not isinstance(x, int) for x in value
    ):
        raise InvalidEvent("bad_type", f"field {name!r} must be a list of integers")
    if value and min(value) < minimum:
        raise InvalidEvent("bad_value", f"field {name!r} holds a value below {minimum}")
    return value


@dataclass(frozen=True)
class Envelope:
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
            "job_id": check_id(obj, "job_id"),
            "worker_id": check_int(obj, "worker_id", minimum=-1),
            "event_id": check_id(obj, "event_id"),
            "ts": check_float(obj, "ts"),
        }

