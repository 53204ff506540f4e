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
  first ``duty`` steps (default half) of every ``period`` steps, 1 otherwise,
  times a sawtooth ``ramp`` (a thermal throttle: 1x rising to ``ramp_peak``
  over ``ramp_period`` steps, then reset). The 10-step wave changes faster than
  any history-based predictor can follow, so only the clairvoyant oracle knows
  it; the recurring scenarios (issue 14: ``burst``, ``turns``, ``thermal``)
  repeat slowly enough that a forecaster could plan ahead of them.

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

import math
from dataclasses import dataclass, field

from benchmarks.loop.methods import DEFAULT_METHODS

__all__ = ["RECURRING_CYCLES", "SCENARIO_NAMES", "Scenario", "catalogue"]

#: Names in the order the bench runs them.
SCENARIO_NAMES = ("slow-2x", "onset-3x", "periodic", "none", "burst", "turns", "thermal")
#: Periods a recurring scenario runs for at least: the recurrence bank trusts a period
#: after ~3 (eval, docs/eval/RESULTS.md), so 3 left no trusted periods to plan ahead for.
RECURRING_CYCLES = 6


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
    duty: int = 0  # steps "on" per period; 0 = half the period
    ramp_rank: int | None = None
    ramp_peak: float = 1.0
    ramp_period: int = 0
    steps: int = 0  # training steps of a run of this scenario; 0 = the bench's --steps

    def level(self, rank: int, step: int) -> float:
        """Persistent slowdown factor of ``rank`` at ``step`` (a predictor can learn it)."""
        if rank == self.slow_rank and step >= self.onset:
            return self.slow_factor
        return 1.0

    def interference(self, rank: int, step: int) -> float:
        """Square wave (on for the first ``duty`` steps of each period) times the ramp."""
        factor = 1.0
        if rank in self.periodic_ranks:
            phase = self.phases[self.periodic_ranks.index(rank)] if self.phases else 0
            if (step + phase) % self.period < (self.duty or self.period // 2):
                factor = self.periodic_factor
        if rank == self.ramp_rank and self.ramp_period > 1:
            frac = (step % self.ramp_period) / (self.ramp_period - 1)
            factor *= 1.0 + (self.ramp_peak - 1.0) * frac
        return factor

    def cycle(self, rank: int) -> int:
        """Steps after which ``rank``'s interference repeats (1: it has none)."""
        n = self.period if rank in self.periodic_ranks else 1
        return math.lcm(n, self.ramp_period if rank == self.ramp_rank else 1)

    def delay(self, rank: int, step: int) -> float:
        """Seconds of injected work per sample for ``rank`` at ``step``."""
        return self.base_delay_s * self.level(rank, step) * self.interference(rank, step)

    def persistent_delay(self, rank: int, step: int) -> float:
        """Delay at the rank's *average* speed: the level, with the square wave averaged out.

        Speeds (samples/s) average, not delays: half the time at speed 1 and half
        at 1/f is a mean speed of (1 + 1/f) / 2 (averaged over one ``cycle``).
        """
        base = self.base_delay_s * self.level(rank, step)
        n = self.cycle(rank)
        if n == 1:
            return base
        mean_speed = sum(1.0 / self.interference(rank, t) for t in range(n)) / n
        return base / mean_speed

    @property
    def straggler(self) -> int | None:
        """The rank whose share the adaptation metric follows (None: nothing to adapt to)."""
        return self.slow_rank


def catalogue(world: int, steps: int, base_delay_s: float) -> dict[str, Scenario]:
    """The scenarios of issues 7 and 14 for ``world`` ranks and ``steps`` steps per run.

    The straggler is the last rank; the periodic pair are the two ranks below it
    (ranks 0 and 1 with two ranks), half a period apart so that one of them is
    always slowed. The recurring scenarios run at least ``RECURRING_CYCLES``
    periods.
    """
    if world < 2:
        raise ValueError(f"the bench needs at least 2 ranks, got {world}")
    last = world - 1
    pair = (max(0, world - 3), max(1, world - 2))
    period = 10
    return {
        "slow-2x": Scenario(
            "slow-2x", f"rank {last} 2x slower from the start", world, base_delay_s,
            slow_rank=last, slow_factor=2.0, steps=steps,
        ),
        "onset-3x": Scenario(
            "onset-3x", f"rank {last} 3x slower from step {steps // 3}", world, base_delay_s,
            slow_rank=last, slow_factor=3.0, onset=steps // 3, steps=steps,
        ),
        "periodic": Scenario(
            "periodic", f"ranks {pair[0]},{pair[1]} 2x slower half of every {period} steps "
            "(in turn; shorter than one sync interval: cannot help)", world, base_delay_s,
            periodic_ranks=pair, periodic_factor=2.0, period=period, phases=(0, period // 2),
            steps=steps,
        ),
        "none": Scenario("none", "no straggler", world, base_delay_s, steps=steps),
        **_recurring(world, steps, base_delay_s),
    }


def _recurring(world: int, steps: int, base_delay_s: float) -> dict[str, Scenario]:
    """Issue 14 item 2: co-tenant burst, two ranks taking turns, thermal-throttle ramp."""
    last = world - 1
    pair = (max(0, world - 3), max(1, world - 2))
    cycles = RECURRING_CYCLES
    return {
        "burst": Scenario(
            "burst", f"rank {last} 2x slower for 50 of every 150 steps (co-tenant burst, "
            "first at step 50)", world, base_delay_s, periodic_ranks=(last,),
            periodic_factor=2.0, period=150, duty=50, phases=(100,),
            steps=max(steps, cycles * 150),
        ),
        "turns": Scenario(
            "turns", f"ranks {pair[0]},{pair[1]} 2x slower in turn, 100 steps each "
            "(200-step period)", world, base_delay_s, periodic_ranks=pair, periodic_factor=2.0,
            period=200, phases=(0, 100), steps=max(steps, cycles * 200),
        ),
        "thermal": Scenario(
            "thermal", f"rank {last} slows from 1x to 2.5x over 200 steps, then resets "
            "(thermal throttle)", world, base_delay_s, ramp_rank=last, ramp_peak=2.5,
            ramp_period=200, steps=max(steps, cycles * 200),
        ),
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
    #: Steps per epoch: load_digits is repeated until an epoch is this long (real jobs
    #: run long epochs; the planner weighs a move's gain over one epoch).
    epoch_steps: int = 200
    sync_every: int = 8  # the runtime's default
    confirmations: int = 1
    timing: str = "auto"
    policy_smoothing: float = 1.0
    lr: float = 0.1
    seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS

    @property
    def global_batch(self) -> int:
        return self.batch_per_rank * self.world
