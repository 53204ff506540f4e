"""ShardSense: ends stragglers in synchronous data-parallel training.

``from shardsense import ShardSenseRuntime`` works, but lazily: torch is an
optional extra, and the processor, planner and console import this package
without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ShardSenseRuntime"]


def __getattr__(name: str) -> Any:
    if name == "ShardSenseRuntime":
        from producers.engine import ShardSenseRuntime

        return ShardSenseRuntime
    raise AttributeError(f"module 'shardsense' has no attribute {name!r}")
