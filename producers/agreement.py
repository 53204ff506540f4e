"""Which shard map applies at which step: rank 0 decides, every rank gets the same answer.

Maps never apply where a rank happens to see them. At sync points (every
``sync_every`` steps, and at ``epoch_end``) rank 0 reads the newest map, checks
it against the job, picks the point ``(epoch, step)`` it applies from and
broadcasts map and point (a :class:`Placement`); the other ranks never consult
a map source. The point is the map's own ``(apply_epoch, apply_step)``, or the
earliest step no rank has produced yet when that is later: the sync step
itself without DataLoader workers, the prefetch depth beyond it with them. So
a map that arrives ahead of its step is scheduled at exactly that step, in
this epoch or a later one. A newer map replaces every map decided earlier
that has not applied yet (it is the planner's newest word), and then applies
where its own point says. A map that moves more than ``move_limit`` of the
shards applies only at an epoch's first step (the safe point for large
reshards). Without torch.distributed the one process decides alone
(``World.broadcast`` is the identity).

>>> apply_point((2, 5), (1, 40), 100), apply_point((0, 0), (1, 40), 100)
((2, 5), (1, 40))
>>> apply_point((1, 130), (1, 40), 100)  # beyond the epoch's last step: the next epoch's start
(2, 0)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from producers.maps import JobShape, elastic_map, map_problem
from producers.schedule import Assignment
from producers.seams import MapSource
from producers.world import World
from shardsense.errors import InvalidShardMap
from shardsense.events import ShardMap, check_partition, moved_shards

__all__ = ["AgreedMap", "MapAgreement", "Placement", "Point", "apply_point"]

log = logging.getLogger(__name__)

#: ``(apply_step, map)``: one entry of an epoch's plan.
AgreedMap = tuple[int, ShardMap]
#: ``(epoch, step)``, ordered as a tuple.
Point = tuple[int, int]


@dataclass(frozen=True)
class Placement:
    """Rank 0's decision, broadcast: ``shard_map`` applies from ``(epoch, step)``.

    It replaces every earlier decision still to come: this epoch's maps planned
    at ``withdraw_from`` or later (no rank has produced those steps) and a map
    held for a later epoch.
    """

    epoch: int
    step: int
    shard_map: ShardMap
    withdraw_from: int


def apply_point(asked: Point, earliest: Point, steps: int) -> Point:
    """Where a map asked for ``asked`` applies: not before ``earliest``, on a real step.

    ``steps`` is the steps per epoch; a point past an epoch's last step means
    the first step after it, the next epoch's step 0.
    """
    epoch, step = max(asked, earliest)
    return (epoch + 1, 0) if step >= steps else (epoch, step)


def _is_partition(m: ShardMap, num_shards: int) -> bool:
    try:
        check_partition(m.shards, num_shards)
    except InvalidShardMap:
        return False
    return True


class MapAgreement:
    """The decisions about maps; every public method is a collective under torch.distributed."""

    def __init__(
        self, job: JobShape, world: World, maps: MapSource, *, move_limit: float
    ) -> None:
        self.job = job
        self.world = world
        self.maps = maps
        self.move_limit = move_limit
        self.rejected: set[int] = set()

    def initial(self, wait_s: float) -> ShardMap:
        """The job's map at start: the source's latest if it fits, else a published split."""
        m = None
        if self.world.is_coordinator:
            wait = getattr(self.maps, "wait_ready", None)
            if wait is not None and not wait(wait_s):
                log.warning("map source not caught up after %.1fs; using what it has", wait_s)
            m = self._adopt_or_build(self._latest(), 0, "first map of the job", (0, 0))
        return self.world.broadcast(m)  # type: ignore[return-value]

    def elastic(self, in_force: ShardMap, newest: int, epoch: int, step: int) -> ShardMap:
        """After a restart with another world size: the map that applies at the resume step."""
        m = None
        if self.world.is_coordinator:
            reason = f"elastic restart at epoch {epoch} step {step}"
            m = self._adopt_or_build(in_force, newest, reason, (epoch, step))
        return self.world.broadcast(m)  # type: ignore[return-value]

    def at_sync(
        self, epoch: int, first: int, steps: int, newest: int, base: Assignment
    ) -> Placement | None:
        """Mid-epoch: the newest acceptable map and its point, or ``None``.

        ``first`` is the earliest step of ``epoch`` no rank has produced yet
        (``steps`` when the epoch is all produced); ``base`` the assignment in
        force just before it, which a new map moves shards from.
        """
        decided = None
        if self.world.is_coordinator:
            decided = self._decide((epoch, first), steps, newest, base, min(first, steps))
        return self.world.broadcast(decided)

    def at_epoch_end(
        self, epoch: int, steps: int, newest: int, base: Assignment
    ) -> Placement | None:
        """At the end of ``epoch``: the newest acceptable map from ``epoch + 1`` on, or None."""
        decided = None
        if self.world.is_coordinator:
            decided = self._decide((epoch + 1, 0), steps, newest, base, steps)
        return self.world.broadcast(decided)

    # ------------------------------------------------------------ rank 0 only

    def _latest(self) -> ShardMap | None:
        try:
            return self.maps.latest()
        except Exception:
            log.exception("map source failed; the map in force stays")
            return None

    def _decide(
        self, earliest: Point, steps: int, newest: int, base: Assignment, withdraw_from: int
    ) -> Placement | None:
        m = self._candidate(newest)
        if m is None:
            return None
        epoch, step = apply_point((m.apply_epoch, m.apply_step), earliest, steps)
        if step and moved_shards(base.shards, m.shards) > self.move_limit * self.job.num_shards:
            return None  # a large reshard waits for an epoch's first step
        return Placement(epoch, step, m, withdraw_from)

    def _candidate(self, newest: int) -> ShardMap | None:
        """The source's latest map if newer than ``newest`` and fit for this job."""
        m = self._latest()
        if m is None or m.map_version <= newest or m.map_version in self.rejected:
            return None  # nothing new, an older or duplicate version, or already rejected
        problem = map_problem(m, self.job, self.world.size)
        if problem is not None:
            self.rejected.add(m.map_version)
            log.warning("rejected map v%d: %s; map v%d stays in force",
                        m.map_version, problem, newest)
            return None
        return m

    def _adopt_or_build(
        self, previous: ShardMap | None, newest: int, reason: str, at: tuple[int, int]
    ) -> ShardMap:
        latest = self._latest()
        if latest is not None and latest.map_version > newest:
            problem = map_problem(latest, self.job, self.world.size)
            if problem is None:
                return latest
            log.info("latest map v%d does not fit (%s); publishing an equal split",
                     latest.map_version, problem)
        version = max(newest, latest.map_version if latest else 0) + 1
        if previous is not None and not _is_partition(previous, self.job.num_shards):
            previous = None  # no locality to keep from a map that does not fit
        m = elastic_map(self.job, version, self.world.size, previous, reason=reason, at=at)
        try:
            self.maps.publish(m)
        except Exception:
            log.exception("publishing map v%d failed; using it locally", version)
        return m
