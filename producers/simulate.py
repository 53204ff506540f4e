"""Simulated training ranks: a reproducible speed model for demos and tests (no torch).

Each rank has a base time per sample; lagging ranks are ``slowdown`` times
slower from ``onset_step`` on, and every step has a little multiplicative
jitter. The ranks follow the current shard map's batch sizes, so a planner
that shrinks a slow rank's share really shortens the simulated step.

>>> fleet = SimulatedFleet(world_size=2, slow_ranks=(1,), slowdown=2.0, jitter=0.0)
>>> fleet.step_times([10, 10])
[0.005, 0.01]
>>> fleet.step_times([14, 6])  # a planner's 2:1 split evens the ranks out
[0.007, 0.006]
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["SimulatedFleet"]


@dataclass
class SimulatedFleet:
    """``world_size`` ranks in lockstep; ``slow_ranks`` lag ``slowdown``x from ``onset_step``."""

    world_size: int = 8
    slow_ranks: tuple[int, ...] = (2, 5)
    slowdown: float = 2.0
    onset_step: int = 0
    base_s_per_sample: float = 0.0005
    jitter: float = 0.05
    seed: int = 0
    step: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        bad = [r for r in self.slow_ranks if not 0 <= r < self.world_size]
        if bad:
            raise ValueError(f"slow_ranks: {bad} are outside 0..{self.world_size - 1}")
        if self.slowdown <= 0:
            raise ValueError(f"slowdown must be > 0, got {self.slowdown}")
        self._rng = random.Random(self.seed)

    def seconds_per_sample(self, rank: int, step: int | None = None) -> float:
        """The true (noise-free) speed of ``rank`` at ``step`` (default: the next step)."""
        step = self.step if step is None else step
        lagging = rank in self.slow_ranks and step >= self.onset_step
        return self.base_s_per_sample * (self.slowdown if lagging else 1.0)

    def step_times(self, batch_sizes: list[int]) -> list[float]:
        """Compute seconds of each rank for the next step; advances the step counter."""
        if len(batch_sizes) != self.world_size:
            raise ValueError(
                f"batch_sizes has {len(batch_sizes)} entries for {self.world_size} ranks"
            )
        times = []
        for rank, size in enumerate(batch_sizes):
            noise = max(0.5, 1.0 + self._rng.gauss(0.0, self.jitter)) if self.jitter else 1.0
            times.append(round(size * self.seconds_per_sample(rank) * noise, 9))
        self.step += 1
        return times
