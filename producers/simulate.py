"""Simulated training ranks: real timing reports from a synthetic speed model.

Used by the demo and the tests to drive the pipeline without torch. Each rank
has a base time per sample; lagging ranks are ``slowdown`` times slower.
Timings are reproducible from ``seed``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from shardsense.events import TimingReport

__all__ = ["SimulatedFleet"]


@dataclass
class SimulatedFleet:
    """``world_size`` ranks training in lockstep; ``slow_ranks`` are ``slowdown``x slower."""

    job_id: str
    world_size: int = 8
    slow_ranks: tuple[int, ...] = (2, 5)
    slowdown: float = 2.0
    batch_size: int = 32
    base_s_per_sample: float = 0.0005
    jitter: float = 0.05
    seed: int = 0
    step: int = 0
    epoch: int = 0
    steps_per_epoch: int = 200
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        bad = [r for r in self.slow_ranks if not 0 <= r < self.world_size]
        if bad:
            raise ValueError(f"slow_ranks {bad} are outside 0..{self.world_size - 1}")
        self._rng = random.Random(self.seed)

    def seconds_per_sample(self, rank: int) -> float:
        factor = self.slowdown if rank in self.slow_ranks else 1.0
        return self.base_s_per_sample * factor

    def reports(self, steps: int, batch_sizes: list[int] | None = None) -> list[TimingReport]:
        """``steps`` lockstep steps as one report per rank (many timings per message)."""
        sizes = batch_sizes or [self.batch_size] * self.world_size
        cols: list[dict[str, list[float | int]]] = [
            {k: [] for k in ("epoch", "step", "samples", "data_wait_s", "compute_s",
                             "map_version", "end_ts")}
            for _ in range(self.world_size)
        ]
        now = time.time()
        for _ in range(steps):
            for rank in range(self.world_size):
                noise = 1.0 + self._rng.gauss(0.0, self.jitter)
                compute = max(1e-6, sizes[rank] * self.seconds_per_sample(rank) * noise)
                c = cols[rank]
                c["epoch"].append(self.epoch)
                c["step"].append(self.step)
                c["samples"].append(sizes[rank])
                c["data_wait_s"].append(round(compute * 0.05, 9))
                c["compute_s"].append(round(compute, 9))
                c["map_version"].append(0)
                c["end_ts"].append(now)
            self.step += 1
            if self.step % self.steps_per_epoch == 0:
                self.epoch += 1
        return [
            TimingReport.new(self.job_id, rank, cols[rank], host="sim")
            for rank in range(self.world_size)
        ]
