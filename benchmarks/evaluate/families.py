"""The traces ``shardsense eval`` measures: synthetic fleet families and recorded runs.

A trace is seconds per sample, shape (ticks, workers). Synthetic families come
with their noiseless level (the noise floor and the truth of every change);
recorded runs (``shardsense bench --traces``) come with each step's samples, so
the closed loop can time them.

Families: ``step`` (one worker slows 1.3-2x), ``gradual`` (drifts 1.3-1.8x over
hundreds of ticks), ``leak`` (0.5-1.5% slower per tick until a periodic reset),
``periodic`` (short spikes every 15-60 ticks), ``shared`` (fleet-wide
fluctuation), ``noise``; and issue 14's recurring interference: ``burst`` (a
co-tenant: one worker 2x for 50 of every 150 ticks), ``turns`` (two workers 2x in
turn, 100 ticks each), ``thermal`` (one worker 1x -> 2.5x over 200 ticks, then
reset) and ``wave10`` (two workers 2x for 5 of every 10 ticks in turn: shorter
than a sync interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FAMILIES", "RECURRING", "Recorded", "load_recorded", "load_run", "make_fleet",
           "make_trace"]

FAMILIES = ("step", "gradual", "leak", "periodic", "shared", "noise", "burst", "turns",
            "thermal", "wave10")
#: The recurring-interference families of issue 14 (the bench's scenarios of the same names).
RECURRING = ("burst", "turns", "thermal", "wave10")


def make_trace(family: str, seed: int, ticks: int = 1500, workers: int = 8) -> np.ndarray:
    """Seconds per sample, shape (ticks, workers), for one synthetic fleet.

    >>> make_trace("noise", 0, ticks=10, workers=3).shape
    (10, 3)
    """
    clean, noise = make_fleet(family, seed, ticks, workers)
    return clean * noise


def _recurring(family: str, level: np.ndarray, t: np.ndarray,
               rng: np.random.Generator) -> None:
    """Issue 14's interference, in place, at a random phase; workers chosen at random."""
    workers = level.shape[1]
    w = rng.choice(workers, size=2, replace=False)
    phase = int(rng.integers(1000))
    if family == "burst":
        level[:, w[0]] *= np.where((t + phase) % 150 < 50, 2.0, 1.0)
    elif family == "turns":
        level[:, w[0]] *= np.where((t + phase) % 200 < 100, 2.0, 1.0)
        level[:, w[1]] *= np.where((t + phase + 100) % 200 < 100, 2.0, 1.0)
    elif family == "thermal":
        level[:, w[0]] *= 1.0 + 1.5 * ((t + phase) % 200) / 199
    elif family == "wave10":
        level[:, w[0]] *= np.where((t + phase) % 10 < 5, 2.0, 1.0)
        level[:, w[1]] *= np.where((t + phase + 5) % 10 < 5, 2.0, 1.0)


def make_fleet(family: str, seed: int, ticks: int = 1500,
               workers: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The noiseless level and the multiplicative noise (median 1) of a trace."""
    rng = np.random.default_rng(seed)
    t = np.arange(ticks)[:, None]
    base = 1e-3 * rng.uniform(0.8, 1.2, size=(1, workers))
    sigma = 0.05
    level = np.ones((ticks, workers))
    if family == "step":
        for w in rng.choice(workers, size=2, replace=False):
            onset = rng.integers(ticks // 4, 3 * ticks // 4)
            level[onset:, w] *= rng.uniform(1.3, 2.0)
    elif family == "gradual":
        for w in rng.choice(workers, size=2, replace=False):
            start = rng.integers(100, ticks // 2)
            span = rng.integers(200, 600)
            peak = rng.uniform(1.3, 1.8)
            level[:, w] *= 1 + (peak - 1) * np.clip((t[:, 0] - start) / span, 0, 1)
    elif family == "leak":
        for w in range(workers):
            if rng.random() < 0.6:
                period = rng.integers(40, 120)
                rate = rng.uniform(0.005, 0.015)
                level[:, w] *= 1 + rate * ((t[:, 0] + rng.integers(period)) % period)
    elif family == "periodic":
        for w in range(workers):
            if rng.random() < 0.6:
                period = rng.integers(15, 60)
                width = rng.integers(2, 6)
                amp = rng.uniform(1.5, 2.5)
                level[:, w] *= np.where((t[:, 0] + rng.integers(period)) % period < width, amp, 1)
    elif family == "shared":
        shock = np.zeros(ticks)
        for i in range(1, ticks):
            shock[i] = 0.98 * shock[i - 1] + rng.normal(0, 0.03)
        level *= np.exp(shock)[:, None]
    elif family == "noise":
        sigma = 0.10
    elif family in RECURRING:
        _recurring(family, level, t[:, 0], rng)
    else:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    noise = np.exp(rng.normal(0, sigma, size=(ticks, workers)))
    return base * level, noise


@dataclass(frozen=True)
class Recorded:
    """A recorded run: seconds per sample and samples, both (steps, workers)."""

    name: str
    per_sample_s: np.ndarray
    samples: np.ndarray

    @property
    def step_s(self) -> np.ndarray:
        """Each step's synchronous time as recorded (its slowest rank's work)."""
        return np.asarray((self.per_sample_s * self.samples).max(axis=1))


def load_run(path: str) -> Recorded:
    """A recorded run: CSV (also gzipped) or parquet with worker_id, step, samples,
    data_wait_s, compute_s (``shardsense bench --traces`` writes them)."""
    from pathlib import Path

    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    df = df[df["samples"] > 0]
    df = df.assign(tps=(df["data_wait_s"] + df["compute_s"]) / df["samples"])
    wide = df.pivot_table(index="step", columns="worker_id", values="tps", aggfunc="mean")
    n = df.pivot_table(index="step", columns="worker_id", values="samples", aggfunc="sum")
    keep = wide.notna().all(axis=1) & n.notna().all(axis=1)
    name = Path(path).name.split(".")[0]  # run.csv, run.csv.gz, run.parquet -> run
    return Recorded(name, wide[keep].to_numpy(), n[keep].to_numpy())


def load_recorded(path: str) -> np.ndarray:
    """A recorded run as (steps, workers) seconds per sample (CSV or parquet)."""
    return load_run(path).per_sample_s
