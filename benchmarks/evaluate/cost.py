"""What the recurrence forecaster costs at fleet scale: one processor's whole load, timed.

The load of issue 13: ``ranks`` ranks at 5 steps/s, one report per rank per second
(5 timings each), one processor batch per second holding every rank's report;
every rank under a co-tenant burst (2x for 50 of every 150 steps, its own
phase), so schedules are live and refits run at their steady cadence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from stream_processors.recurrence import RecurrenceBank, Verdict

__all__ = ["RecurrenceCost", "recurrence_cost"]


@dataclass(frozen=True)
class RecurrenceCost:
    ranks: int
    seconds: int
    update_us_per_timing: float  # mean over the steady part (after the first fits)
    forecast_us: float  # one forecast() call
    batch_p99_ms: float  # update of one whole batch, p99 over the run
    batch_max_ms: float
    cpu_share: float  # of one core, update + one forecast per rank per batch
    fits_per_s: float
    memory_mib: float
    recurring: float  # share of ranks with a schedule at the end

    def line(self) -> str:
        return (f"recurrence cost at {self.ranks} ranks x 5 steps/s ({self.seconds} s): "
                f"update {self.update_us_per_timing:.2f} µs/timing, forecast "
                f"{self.forecast_us:.1f} µs, batch p99 {self.batch_p99_ms:.0f} ms "
                f"(max {self.batch_max_ms:.0f}), {self.fits_per_s:.0f} refits/s, "
                f"{self.cpu_share:.1%} of a core, {self.memory_mib:.1f} MiB, "
                f"{self.recurring:.0%} of ranks scheduled")


def recurrence_cost(ranks: int = 2048, seconds: int = 180, steps_per_s: int = 5,
                    seed: int = 0) -> RecurrenceCost:
    """Run the load for ``seconds`` simulated seconds (as fast as the CPU allows)."""
    rng = np.random.default_rng(seed)
    bank = RecurrenceBank(ranks)
    slots = np.repeat(np.arange(ranks), steps_per_s)
    phase = rng.integers(0, 150, ranks)
    update_s, forecast_s = [], []
    for sec in range(seconds):
        steps = sec * steps_per_s + np.tile(np.arange(steps_per_s), ranks)
        g = steps + np.repeat(phase, steps_per_s)
        rel = np.where(g % 150 < 50, 2.0, 1.0) * np.exp(rng.normal(0, 0.05, len(g)))
        t0 = time.perf_counter()
        bank.update(slots, steps // 200, steps % 200, rel)
        t1 = time.perf_counter()
        forecasts = bank.forecasts(np.arange(ranks))
        update_s.append(t1 - t0)
        forecast_s.append(time.perf_counter() - t1)
    up = np.asarray(update_s)
    steady = up[len(up) // 2 :]
    return RecurrenceCost(
        ranks, seconds, 1e6 * float(steady.mean()) / (ranks * steps_per_s),
        1e6 * float(np.mean(forecast_s)) / ranks, 1e3 * float(np.percentile(up, 99)),
        1e3 * float(up.max()), float((up.sum() + np.sum(forecast_s)) / seconds),
        bank.fits / seconds, bank.memory_bytes / 2**20,
        float(np.mean([f.verdict is Verdict.RECURRING for f in forecasts])))
