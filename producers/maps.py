"""Shard maps as the loader sees them: checking, defaults and elastic rebalancing.

The planner is another service (we never import it); this module only holds
what the training side must decide alone: the first map of a job, the equal
split after an elastic restart (moving as few shards as possible), and
whether an incoming map may be applied at all.

>>> rebalance([[0, 1, 2], [3, 4, 5]], 3, 6)
[[0, 1], [3, 4], [2, 5]]
>>> equal_batch_sizes(10, 3)
[4, 3, 3]
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.schedule import Assignment
from shardsense.errors import InvalidShardMap
from shardsense.events import ShardMap, check_partition

__all__ = [
    "JobShape",
    "assignment",
    "elastic_map",
    "equal_batch_sizes",
    "map_problem",
    "rebalance",
]


@dataclass(frozen=True)
class JobShape:
    """What every map of a job must agree with."""

    job_id: str
    num_samples: int
    num_shards: int
    global_batch_size: int
    max_batch_size: int = 0


def equal_batch_sizes(global_batch: int, world: int, cap: int = 0) -> list[int]:
    """``global_batch`` split as evenly as possible (larger shares first)."""
    if world < 1:
        raise ValueError(f"num_workers must be >= 1, got {world}")
    if global_batch < world:
        raise ValueError(
            f"global_batch_size ({global_batch}) must be >= num_workers ({world}): "
            "every rank takes at least one sample per step"
        )
    base, extra = divmod(global_batch, world)
    sizes = [base + (1 if r < extra else 0) for r in range(world)]
    if cap and sizes[0] > cap:
        raise ValueError(
            f"global_batch_size ({global_batch}) over {world} ranks needs {sizes[0]} "
            f"samples per rank, above max_batch_size {cap}"
        )
    return sizes


def rebalance(shards: list[list[int]], world: int, num_shards: int) -> list[list[int]]:
    """Equal shard counts for ``world`` ranks, each keeping what it can of ``shards``.

    Rank ``r`` keeps the first ``quota[r]`` of its shards; the surplus and the
    shards of ranks that no longer exist are handed to ranks below quota in
    ascending id order. With ``shards=[]`` this is the contiguous default.
    """
    base, extra = divmod(num_shards, world)
    quota = [base + (1 if r < extra else 0) for r in range(world)]
    kept: list[list[int]] = []
    for r in range(world):
        own = list(shards[r]) if r < len(shards) else []
        kept.append(own[: quota[r]])
    taken = {s for own in kept for s in own}
    pool = iter(s for s in range(num_shards) if s not in taken)
    for r in range(world):
        while len(kept[r]) < quota[r]:
            kept[r].append(next(pool))
    return kept


def elastic_map(
    job: JobShape,
    version: int,
    world: int,
    previous: ShardMap | None,
    *,
    reason: str,
    at: tuple[int, int] = (0, 0),
) -> ShardMap:
    """An equal split for ``world`` ranks that moves as few of ``previous``'s shards as possible.

    ``at`` is the ``(epoch, step)`` it applies from (recorded in the map for the console).
    """
    base = [] if previous is None else previous.shards
    return ShardMap.build(
        job.job_id,
        version,
        rebalance(base, world, job.num_shards),
        equal_batch_sizes(job.global_batch_size, world, job.max_batch_size),
        num_shards=job.num_shards,
        num_samples=job.num_samples,
        max_batch_size=job.max_batch_size,
        apply_epoch=at[0],
        apply_step=at[1],
        reason=reason,
        worker_id=0,
    )


def map_problem(m: ShardMap, job: JobShape, world: int) -> str | None:
    """Why ``m`` cannot apply to this job with ``world`` ranks, or ``None`` if it can."""
    if m.job_id != job.job_id:
        return f"map is for job {m.job_id!r}, not {job.job_id!r}"
    if m.num_shards != job.num_shards:
        return f"map has {m.num_shards} shards, the job has {job.num_shards}"
    if m.num_samples and m.num_samples != job.num_samples:
        return f"map describes {m.num_samples} samples, the dataset has {job.num_samples}"
    if m.global_batch_size != job.global_batch_size:
        return (
            f"map's global batch is {m.global_batch_size}, the job's is "
            f"{job.global_batch_size} (it must stay constant)"
        )
    if len(m.shards) != world or len(m.batch_sizes) != world:
        return f"map is for {len(m.shards)} ranks, the job runs {world}"
    if sum(m.batch_sizes) != m.global_batch_size:
        return f"batch sizes sum to {sum(m.batch_sizes)}, not {m.global_batch_size}"
    try:
        check_partition(m.shards, job.num_shards)
    except InvalidShardMap as exc:
        return exc.reason
    if min(m.batch_sizes) < 1:
        return f"every rank needs at least one sample per step: {m.batch_sizes}"
    for cap, what in ((job.max_batch_size, "this job's"), (m.max_batch_size, "the map's")):
        if cap and max(m.batch_sizes) > cap:
            return f"batch sizes {m.batch_sizes} exceed {what} max_batch_size {cap}"
    return None


def assignment(m: ShardMap) -> Assignment:
    """The schedule's view of a (checked) map."""
    return Assignment(
        m.map_version, tuple(tuple(s) for s in m.shards), tuple(m.batch_sizes)
    )
