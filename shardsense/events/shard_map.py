"""Shard maps: which rank owns which shards, and each rank's share of the global batch."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shardsense.errors import InvalidEvent, InvalidShardMap
from shardsense.events.checks import (
    Envelope,
    check_float,
    check_int,
    check_int_list,
    new_event_id,
    require,
)

__all__ = ["ShardMap", "check_partition", "moved_shards"]


@dataclass(frozen=True)
class ShardMap(Envelope):
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
        num_shards = check_int(obj, "num_shards", minimum=1)
        shards = require(obj, "shards")
        if not isinstance(shards, list) or not shards:
            raise InvalidEvent("bad_type", "field 'shards' must be a non-empty list of lists")
        per_rank = [check_int_list({"shards": s}, "shards") for s in shards]
        batch_sizes = check_int_list(obj, "batch_sizes")
        if len(batch_sizes) != len(per_rank):
            raise InvalidEvent(
                "bad_shape",
                f"batch_sizes has {len(batch_sizes)} entries for {len(per_rank)} ranks",
            )
        global_batch = check_int(obj, "global_batch_size", minimum=1)
        if sum(batch_sizes) != global_batch:
            raise InvalidEvent(
                "bad_value",
                f"batch_sizes sum to {sum(batch_sizes)}, not global_batch_size {global_batch}",
            )
        check_partition(per_rank, num_shards)
        max_batch = check_int(obj, "max_batch_size") if "max_batch_size" in obj else 0
        if max_batch and max(batch_sizes) > max_batch:
            raise InvalidEvent(
                "bad_value", f"a batch size exceeds max_batch_size {max_batch}: {batch_sizes}"
            )
        return cls(
            **env,
            map_version=check_int(obj, "map_version", minimum=1),
            num_shards=num_shards,
            global_batch_size=global_batch,
            apply_epoch=check_int(obj, "apply_epoch"),
            apply_step=check_int(obj, "apply_step"),
            shards=per_rank,
            batch_sizes=batch_sizes,
            num_samples=check_int(obj, "num_samples") if "num_samples" in obj else 0,
            max_batch_size=max_batch,
            predicted_gain_s=check_float(obj, "predicted_gain_s", minimum=-math.inf),
            move_cost_s=check_float(obj, "move_cost_s"),
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


def moved_shards(old: Sequence[Sequence[int]], new: Sequence[Sequence[int]]) -> int:
    """How many shards change owner between two per-rank shard lists (``ShardMap.shards``).

    The one count of a map change's cost, used by the runtime (mid-epoch move
    limit), the planner and the console.

    >>> moved_shards([[0, 1], [2, 3]], [[0], [1, 2, 3]])
    1
    """
    owner = {int(s): r for r, owned in enumerate(old) for s in owned}
    return sum(owner.get(int(s)) != r for r, owned in enumerate(new) for s in owned)
