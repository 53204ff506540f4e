"""producers: the training-side library (virtual shards, schedule, loaders, timing).

Importing the package does not import torch; the torch-using parts
(``ShardSenseRuntime``, ``ShardLoader``, the DDP hook) load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from producers.agreement import MapAgreement
from producers.maps import JobShape, elastic_map, equal_batch_sizes, map_problem, rebalance
from producers.memory import InMemoryMapSource, InMemoryTimingSink, TimingRecord
from producers.schedule import Assignment, EpochSchedule
from producers.seams import MapSource, TimingSink
from producers.shards import EpochOrder, VirtualShards
from producers.world import World

__all__ = [
    "Assignment",
    "EpochOrder",
    "EpochSchedule",
    "InMemoryMapSource",
    "InMemoryTimingSink",
    "JobShape",
    "LoaderOptions",
    "MapAgreement",
    "MapSource",
    "ShardLoader",
    "ShardSenseRuntime",
    "TimingRecord",
    "TimingSink",
    "VirtualShards",
    "World",
    "attach_weighted_mean",
    "elastic_map",
    "equal_batch_sizes",
    "map_problem",
    "rebalance",
]

_LAZY = {
    "ShardSenseRuntime": "producers.engine",
    "ShardLoader": "producers.loader",
    "LoaderOptions": "producers.loader",
    "attach_weighted_mean": "producers.ddp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
