"""Public import path: ``from shardsense.runtime.engine import ShardSenseRuntime``."""

from producers.engine import ShardSenseRuntime

__all__ = ["ShardSenseRuntime"]
