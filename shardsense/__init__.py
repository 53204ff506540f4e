"""ShardSense: ends stragglers in synchronous data-parallel training.

The public API, importable without torch (``ShardSenseRuntime`` loads torch
lazily, on first access, because the processor, planner and console import
this package without it)::

    from shardsense import ShardSenseRuntime, LoaderOptions, Settings, TimingReport, decode
"""

from __future__ import annotations

from typing import Any

from shardsense.errors import (
    BrokerMissing,
    ConfigError,
    InvalidEvent,
    InvalidShardMap,
    MigrationError,
    PortInUse,
    ShardSenseError,
    SqlRefused,
    StackError,
)
from shardsense.events import (
    SCHEMA_VERSION,
    DeadLetter,
    Event,
    Prediction,
    ShardMap,
    TimingReport,
    decode,
    encode,
)
from shardsense.settings import Settings

__all__ = [
    "SCHEMA_VERSION",
    "BrokerMissing",
    "ConfigError",
    "DeadLetter",
    "Event",
    "InvalidEvent",
    "InvalidShardMap",
    "LoaderOptions",
    "MigrationError",
    "PortInUse",
    "Prediction",
    "Settings",
    "ShardMap",
    "ShardSenseError",
    "ShardSenseRuntime",
    "SqlRefused",
    "StackError",
    "TimingReport",
    "decode",
    "encode",
]


def __getattr__(name: str) -> Any:
    if name in ("ShardSenseRuntime", "LoaderOptions"):
        from shardsense.runtime import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'shardsense' has no attribute {name!r}")
