"""Dead letters: a rejected input, why, and where it came from."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from shardsense.errors import InvalidEvent
from shardsense.events.checks import MAX_ID_CHARS, Envelope, new_event_id, require

__all__ = ["DeadLetter"]


@dataclass(frozen=True)
class DeadLetter(Envelope):
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
            code=str(require(obj, "code")),
            reason=str(require(obj, "reason")),
            source_topic=str(obj.get("source_topic", "")),
            source_partition=int(obj.get("source_partition", -1)),
            source_offset=int(obj.get("source_offset", -1)),
            payload_b64=str(obj.get("payload_b64", "")),
            payload_bytes=int(obj.get("payload_bytes", 0)),
        )

