"""Reproducible slowdowns for ``shardsense bench``: a per-sample delay per (rank, step).

Why injected delays: the model (an MLP on load_digits) costs microseconds per
sample on this 2-core machine, far below the scheduling noise of four ranks
sharing two cores. So every rank sleeps ``delay(rank, step) * samples`` in each
step (``time.sleep``, no CPU used) and that sleep *is* the rank's work: it
scales with the samples the rank is given, like real compute, and it is known
exactly, which is what lets the oracles be computed instead of guessed.

A delay is ``base_delay_s * level(rank, step) * interference(rank, step)``:

* ``level`` is the *persistent* speed: a rank that is slow from the start or
  from an onset step on. A good predictor can learn it.
* ``interference`` is a square wave (a noisy neighbour): ``factor`` during the
  first half of every ``period`` steps, 1 otherwise. It changes faster than any
  history-based predictor can follow, so only the clairvoyant oracle knows it.

>>> s = catalogue(world=4, steps=300, base_delay_s=0.001)["onset-3x"]
>>> s.onset, s.delay(3, 99), s.delay(3, 100), s.delay(0, 100)
(100, 0.001, 0.003, 0.001)
>>> p = catalogue(4, 300, 0.001)["periodic"]
>>> [p.interference(1, t) for t in (0, 4, 5, 9)], [p.interference(2, t) for t in (0, 5)]
([2.0, 2.0, 1.0, 1.0], [1.0, 2.0])
>>> round(p.persistent_delay(1, 0) / 0.001, 4)  # average speed 0.75 of base
1.3333
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SCENARIO_NAMES", "Scenario", "catalogue"]

#: Names in the order the bench runs them.
SCENARIO_NAMES = ("slow-2x", "onset-3x", "periodic", "none")


@dataclass(frozen=True)
class Scenario:
    """One slowdown pattern over ``world`` ranks; every method runs the same one."""

    name: str
    title: str
    world: int
    base_delay_s: float
    slow_rank: int | None = None
    slow_factor: float = 1.0
    onset: int = 0
    periodic_ranks: tuple[int, ...] = ()
    periodic_factor: float = 1.0
    period: int = 10
    phases: tuple[int, ...] = field(default=())

    def level(self, rank: int, step: int) -> float:
        """Persistent slowdown factor of ``rank`` at ``step`` (a predictor can learn it)."""
        if rank == self.slow_rank and step >= self.onset:
            return self.slow_factor
        return 1.0

    def interference(self, rank: int, step: int) -> float:
        """Square-wave slowdown factor: on for the first half of each period."""
        if rank not in self.periodic_ranks:
            return 1.0
        phase = self.phases[self.periodic_ranks.index(rank)] if self.phases else 0
        on = (step + phase) % self.period < self.period // 2
        return self.periodic_factor if on else 1.0

    def delay(self, rank: int, step: int) -> float:
        """Seconds of injected work per sample for ``rank`` at ``step``."""
        return self.base_delay_s * self.level(rank, step) * self.interference(rank, step)

    def persistent_delay(self, rank: int, step: int) -> float:
        """Delay at the rank's *average* speed: the level, with the square wave averaged out.

        Speeds (samples/s) average, not delays: half the time at speed 1 and half
        at 1/f is a mean speed of (1 + 1/f) / 2.
        """
        base = self.base_delay_s * self.level(rank, step)
        if rank not in self.periodic_ranks:
            return base
        mean_speed = 0.5 * (1.0 + 1.0 / self.periodic_factor)
        return base / mean_speed

    @property
    def straggler(self) -> int | None:
        """The rank whose share the adaptation metric follows (None: nothing to adapt to)."""
        return self.slow_rank


def catalogue(world: int, steps: int, base_delay_s: float) -> dict[str, Scenario]:
    """The four scenarios of issue 7 for ``world`` ranks and ``steps`` steps per run.

    The straggler is the last rank; the periodic pair are the two ranks below it
    (ranks 0 and 1 with two ranks), half a period apart so that one of them is
    always slowed.
    """
    if world < 2:
        raise ValueError(f"the bench needs at least 2 ranks, got {world}")
    last = world - 1
    pair = (max(0, world - 3), max(1, world - 2))
    period = 10
    return {
        "slow-2x": Scenario(
            "slow-2x", f"rank {last} 2x slower from the start", world, base_delay_s,
            slow_rank=last, slow_factor=2.0,
        ),
        "onset-3x": Scenario(
            "onset-3x", f"rank {last} 3x slower from step {steps // 3}", world, base_delay_s,
            slow_rank=last, slow_factor=3.0, onset=steps // 3,
        ),
        "periodic": Scenario(
            "periodic", f"ranks {pair[0]},{pair[1]} 2x slower half of every {period} steps "
            "(in turn)", world, base_delay_s, periodic_ranks=pair, periodic_factor=2.0,
            period=period, phases=(0, period // 2),
        ),
        "none": Scenario("none", "no straggler", world, base_delay_s),
    }


@dataclass(frozen=True)
class BenchConfig:
    """Everything a rank needs to run the bench (picklable: it crosses the spawn)."""

    scenarios: tuple[str, ...] = SCENARIO_NAMES
    steps: int = 300
    world: int = 4
    base_delay_s: float = 0.003
    batch_per_rank: int = 16
    num_shards: int = 128
    sync_every: int = 4
    confirmations: int = 1
    timing: str = "auto"
    policy_smoothing: float = 1.0
    lr: float = 0.1
    seed: int = 0
    methods: tuple[str, ...] = ("static", "shardsense")

    @property
    def global_batch(self) -> int:
        return self.batch_per_rank * self.world
