"""The bench's methods: named settings overlays on one path each, so an ablation is one line.

A method runs on one *path*: ``baseline`` (DistributedSampler, equal split),
``product`` (the real loop: Kafka, Faust, planner service; see
:mod:`benchmarks.loop.host`) or ``inprocess`` (the old in-process loop, an
ablation no user runs). Its ``overlay`` replaces settings of the product
path's :class:`~shardsense.settings.Settings`; :data:`TRUE_SHARD_BYTES` stands
for the bench data set's real shard size.

>>> resolve_overlay(METHODS["true-bytes"].overlay, shard_bytes=26400)
({'planner_shard_bytes': 26400}, [])
>>> resolve_overlay(METHODS["reactive"].overlay, shard_bytes=1)
({'processor_forecaster': 'ewma', 'planner_schedule_ahead': 0}, [])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "PATHS",
    "PENDING_SETTINGS",
    "SCHEDULE_AHEAD",
    "TRUE_SHARD_BYTES",
    "Method",
    "resolve_overlay",
]

#: Where a method's figures come from (results.json records it per run and row).
PATHS = {
    "baseline": "static DistributedSampler split, DDP's default mean (no ShardSense)",
    "product": "product path: KafkaTimingSink -> embedded broker -> Faust processor and its "
               "served forecaster -> planner service -> KafkaMapSource -> rank-0 agreement",
    "inprocess": "ABLATION, no user runs it: in-process loop (all_gather of timings -> EWMA "
                 "with level reset -> PlanPolicy -> in-memory maps; no Kafka, Faust or "
                 "planner service)",
}

#: Placeholder in an overlay for the bench data set's true bytes per shard.
TRUE_SHARD_BYTES = "<true shard bytes>"

#: The planner's switch for scheduling maps ahead of a forecast change (issue 14).
SCHEDULE_AHEAD = "planner_schedule_ahead"

#: Overlay keys allowed to name settings that do not exist (yet); every other key must.
#: Empty: every setting the methods name exists.
PENDING_SETTINGS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Method:
    """One line of the ablation table: a name, a path, and the settings it changes."""

    name: str
    path: str
    doc: str
    overlay: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"path: {self.path!r} is not one of {sorted(PATHS)}")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("static", "baseline", "equal split, no ShardSense"),
    Method("shardsense", "product", "the product path on default settings"),
    Method("true-bytes", "product", "defaults, but the planner knows the true shard size",
           {"planner_shard_bytes": TRUE_SHARD_BYTES}),
    Method("reactive", "product", "EWMA served, no scheduling ahead",
           {"processor_forecaster": "ewma", SCHEDULE_AHEAD: 0}),
    Method("inprocess", "inprocess", "ablation: the in-process loop (no Kafka, Faust, "
           "planner service)"),
)}

DEFAULT_METHODS = tuple(METHODS)


def resolve_overlay(
    overlay: Mapping[str, Any], *, shard_bytes: int
) -> tuple[dict[str, Any], list[str]]:
    """``(settings changes, pending names skipped)``; ``ValueError`` names an unknown key."""
    from shardsense.settings import Settings

    known = {f.name for f in dataclasses.fields(Settings)}
    changes: dict[str, Any] = {}
    pending: list[str] = []
    for key, value in overlay.items():
        if key not in known:
            if key not in PENDING_SETTINGS:
                raise ValueError(f"overlay: {key!r} is not a setting of shardsense.settings")
            pending.append(key)
            continue
        changes[key] = shard_bytes if value == TRUE_SHARD_BYTES else value
    return changes, pending
