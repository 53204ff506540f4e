"""Which shard map applies at which step: rank 0 decides, every rank gets the same answer.

Maps never apply where a rank happens to see them. At sync points (every
``sync_every`` steps, and at ``epoch_end``) rank 0 reads the newest map, checks
it against the job, picks the step it applies at and broadcasts map and step;
the other ranks never consult a map source. The apply step is at least one
sync interval ahead, and beyond the loader's prefetch depth, so no rank has
produced that step yet. A map that moves more than ``move_limit`` of the
shards waits for ``epoch_end`` (the safe point for large reshards). Without
torch.distributed the one process decides alone (``World.broadcast`` is the
identity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from producers.maps import JobShape, elastic_map, map_problem
from producers.schedule import Assignment
from producers.seams import MapSource
from producers.world import World
from shardsense.errors import InvalidShardMap
from shardsense.events import ShardMap, check_partition, moved_shards

__all__ = ["AgreedMap", "MapAgreement"]

log = logging.getLogger(__name__)

#: ``(apply_step, map)`` within the current epoch: what rank 0 decided and broadcast.
AgreedMap = tuple[int, ShardMap]


def _is_partition(m: ShardMap, num_shards: int) -> bool:
    try:
        check_partition(m.shards, num_shards)
    except InvalidShardMap:
        return False
    return True


class MapAgreement:
    """The decisions about maps; every public method is a collective under torch.distributed."""

    def __init__(
        self, job: JobShape, world: World, maps: MapSource, *, lead_steps: int, move_limit: float
    ) -> None:
        self.job = job
        self.world = world
        self.maps = maps
        self.lead_steps = lead_steps
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
        self, epoch: int, step: int, steps: int, position: int, newest: int,
        in_force_at: Callable[[int], Assignment],
    ) -> AgreedMap | None:
        """Mid-epoch: the newest acceptable map and its apply step, or ``None``."""
        decided = None
        if self.world.is_coordinator:
            m = self._candidate(newest)
            apply = max(step + self.lead_steps, position)
            if m is not None and apply < steps and (m.apply_epoch, m.apply_step) <= (epoch, apply):
                moved = moved_shards(in_force_at(apply).shards, m.shards)
                if moved <= self.move_limit * self.job.num_shards:
                    decided = (apply, m)  # larger reshards wait for epoch_end
        return self.world.broadcast(decided)

    def at_epoch_end(self, epoch: int, newest: int) -> ShardMap | None:
        """The newest acceptable map for step 0 of ``epoch + 1``, or ``None``."""
        decided = None
        if self.world.is_coordinator:
            m = self._candidate(newest)
            if m is not None and (m.apply_epoch, m.apply_step) <= (epoch + 1, 0):
                decided = m
        return self.world.broadcast(decided)

    # ------------------------------------------------------------ rank 0 only

    def _latest(self) -> ShardMap | None:
        try:
            return self.maps.latest()
        except Exception:
            log.exception("map source failed; the map in force stays")
            return None

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
