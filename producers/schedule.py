"""One epoch's schedule: a counter simulation of the GLOBAL consumption.

Every rank runs the same simulation (per-shard "consumed" counters, no sample
indices) and materialises only its own segments. That makes the schedule a
pure function of ``(shard sizes, epoch order, global batch, plan)`` where the
plan is the list of ``(apply_step, Assignment)`` in force this epoch; replaying
it after a restart, even with another world size, gives the same order.

Per step, ranks in order ``0..W-1`` take ``batch_sizes[r]`` samples from the
head of their own shard queue (shards sorted by the epoch's visiting order).
A rank whose queue runs dry steals the *last* queued shard of the rank with
the most samples left (lowest rank on ties); that keeps every rank at the same
step count. Shards are consumed as growing prefixes of their permutation, so a
shard that moves (map change or steal) carries its unconsumed rest with it.

Tail policy: the epoch has ``num_samples // global_batch`` steps and the last
``num_samples % global_batch`` samples are dropped. Because the visiting order
and the in-shard order are seeded by epoch, the dropped samples differ from
epoch to epoch. Cost: O(world) per step plus O(shards log shards) per applied
map; never per sample.

>>> sched = EpochSchedule([3, 3, 3], [0, 1, 2], 4, Assignment(1, ((0, 1), (2,)), (3, 1)))
>>> sched.steps, sched.segments(0, 0, record=(0, 1)), sched.segments(1, 0)
(2, [(0, 0, 3)], [(2, 0, 1)])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from producers.shards import Segment

__all__ = ["Assignment", "EpochSchedule"]


@dataclass(frozen=True)
class Assignment:
    """The part of a shard map the schedule needs: owners and per-rank batch sizes."""

    version: int
    shards: tuple[tuple[int, ...], ...]
    batch_sizes: tuple[int, ...]

    @property
    def world_size(self) -> int:
        return len(self.shards)


class EpochSchedule:
    """Simulates one epoch step by step; ``segments(rank, step)`` reads the result."""

    def __init__(
        self,
        sizes: Sequence[int],
        priority: Sequence[int],
        global_batch: int,
        first: Assignment,
    ) -> None:
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        if global_batch > sum(sizes):
            raise ValueError(
                f"global_batch ({global_batch}) exceeds the dataset length ({sum(sizes)})"
            )
        self._sizes = list(sizes)
        self._priority = list(priority)
        self.global_batch = global_batch
        self.steps = sum(sizes) // global_batch
        self.position = 0
        self._consumed = [0] * len(sizes)
        self._queues: list[deque[int]] = []
        self._rank_left: list[int] = []
        self._plan: dict[int, Assignment] = {}
        self._out: dict[tuple[int, int], list[Segment]] = {}
        self.current = first
        self.schedule(0, first)

    # ------------------------------------------------------------ plan

    def schedule(self, step: int, assignment: Assignment) -> None:
        """Make ``assignment`` apply from ``step``; that step must not be simulated yet."""
        if step < self.position:
            raise RuntimeError(
                f"cannot apply map v{assignment.version} at step {step}: the schedule "
                f"already simulated up to step {self.position - 1}"
            )
        if len(assignment.batch_sizes) != assignment.world_size:
            raise ValueError("assignment: one batch size per rank is required")
        if sum(assignment.batch_sizes) != self.global_batch:
            raise ValueError(
                f"assignment: batch sizes sum to {sum(assignment.batch_sizes)}, "
                f"not the global batch {self.global_batch}"
            )
        self._plan[step] = assignment

    def withdraw(self, from_step: int) -> list[int]:
        """Drop the assignments planned at ``from_step`` or later (a newer map replaces them).

        None of them may be simulated yet: a step some rank produced keeps its map.
        Returns the steps withdrawn.
        """
        if from_step < 1:
            raise ValueError(f"from_step must be >= 1 (step 0 always has a map), got {from_step}")
        gone = sorted(s for s in self._plan if s >= from_step)
        if gone and gone[0] < self.position:
            raise RuntimeError(
                f"cannot withdraw the map planned at step {gone[0]}: the schedule already "
                f"simulated up to step {self.position - 1}"
            )
        for s in gone:
            del self._plan[s]
        return gone

    def assignment_at(self, step: int) -> Assignment:
        """The assignment in force at ``step`` as planned so far."""
        return self._plan[max(s for s in self._plan if s <= step)]

    def planned(self) -> list[tuple[int, Assignment]]:
        """The plan, sorted by apply step (first entry at step 0)."""
        return sorted(self._plan.items(), key=lambda item: item[0])

    # ------------------------------------------------------------ simulation

    def advance_to(self, step: int) -> None:
        """Simulate (without recording) until ``step`` is the next step to run."""
        while self.position < min(step, self.steps):
            self._step(())

    def segments(self, rank: int, step: int, record: Iterable[int] = ()) -> list[Segment]:
        """Rank ``rank``'s segments at ``step``; simulates forward, recording ``record``.

        Each recorded ``(rank, step)`` can be read once; ``rank`` is always recorded.
        """
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} is outside 0..{self.steps - 1}")
        ranks = {rank, *record}
        while self.position <= step:
            self._step(ranks)
        try:
            return self._out.pop((rank, step))
        except KeyError:
            raise RuntimeError(
                f"segments of rank {rank} at step {step} were not recorded or were already read"
            ) from None

    def _apply(self, a: Assignment) -> None:
        sizes, consumed, prio = self._sizes, self._consumed, self._priority
        self._queues, self._rank_left = [], []
        for owned in a.shards:
            live = sorted((s for s in owned if consumed[s] < sizes[s]), key=prio.__getitem__)
            self._queues.append(deque(live))
            self._rank_left.append(sum(sizes[s] - consumed[s] for s in live))
        self.current = a

    def _steal(self, rank: int) -> None:
        left = self._rank_left
        donor = max(range(len(left)), key=lambda d: (left[d], -d))
        if left[donor] == 0:  # cannot happen while position < steps
            raise RuntimeError("no samples left to steal: schedule invariant broken")
        shard = self._queues[donor].pop()
        rest = self._sizes[shard] - self._consumed[shard]
        left[donor] -= rest
        left[rank] += rest
        self._queues[rank].append(shard)

    def _step(self, record: Iterable[int]) -> None:
        planned = self._plan.get(self.position)
        if planned is not None:
            self._apply(planned)
        wanted = set(record)
        sizes, consumed = self._sizes, self._consumed
        for r, need in enumerate(self.current.batch_sizes):
            segs: list[Segment] = []
            queue = self._queues[r]
            while need:
                if not queue:
                    self._steal(r)
                shard = queue[0]
                avail = sizes[shard] - consumed[shard]
                take = min(avail, need)
                if r in wanted:
                    segs.append((shard, consumed[shard], take))
                consumed[shard] += take
                self._rank_left[r] -= take
                need -= take
                if take == avail:
                    queue.popleft()
            if r in wanted:
                self._out[(r, self.position)] = segs
        self.position += 1
