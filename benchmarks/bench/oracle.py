"""Oracle step times and the bench's metrics: pure numpy on known delays.

Every array here is ``(steps, world)`` (per-sample delays, batch sizes) or
``(steps,)`` (step times). The injected delay is the only per-sample work that
matters (see :mod:`benchmarks.bench.scenarios`), so the fastest a step can be is
``B / sum_r speed_r`` plus a fixed per-step overhead (gradient all-reduce,
Python, the optimiser) that no assignment can remove; that overhead is measured
from the static run of the same scenario (``median(measured - injected path)``).

>>> d = np.array([[1.0, 1.0, 1.0, 2.0]])           # one step, rank 3 2x slower
>>> float(clairvoyant(d, 64)[0]), float(critical_path(np.full((1, 4), 16), d)[0])
(18.285714285714285, 32.0)
>>> float(critical_path(np.full((1, 4), 16), d)[0] / clairvoyant(d, 64)[0])
1.75
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "adaptation_steps",
    "clairvoyant",
    "critical_path",
    "estimate_overhead",
    "ideal_shares",
    "persistent",
    "window_ratio",
]

Array = npt.NDArray[np.float64]


def ideal_shares(delays: npt.ArrayLike, global_batch: int) -> Array:
    """Fractional batch sizes proportional to speed (``1 / delay``), summing to ``B``."""
    speed = 1.0 / np.asarray(delays, dtype=np.float64)
    return np.asarray(global_batch * speed / speed.sum(axis=-1, keepdims=True))


def clairvoyant(delays: npt.ArrayLike, global_batch: int, overhead: float = 0.0) -> Array:
    """Step time knowing every rank's true speed at every step: ``B / sum(speeds)``."""
    speed = 1.0 / np.asarray(delays, dtype=np.float64)
    return np.asarray(global_batch / speed.sum(axis=-1) + overhead)


def persistent(
    delays: npt.ArrayLike, persistent_delays: npt.ArrayLike, global_batch: int,
    overhead: float = 0.0,
) -> Array:
    """Step time of shares set from the *persistent* speeds, run at the true ones.

    Knows each rank's level (also the onset of a straggler) and its average
    speed under interference, not the per-step square wave: the slowest rank of
    the step sets the pace. Equals :func:`clairvoyant` when nothing jitters.
    """
    shares = ideal_shares(persistent_delays, global_batch)
    return critical_path(shares, delays) + overhead


def critical_path(batch_sizes: npt.ArrayLike, delays: npt.ArrayLike) -> Array:
    """Injected time of each step: the slowest rank's ``batch * delay``."""
    b = np.asarray(batch_sizes, dtype=np.float64)
    return np.asarray((b * np.asarray(delays, dtype=np.float64)).max(axis=-1))


def estimate_overhead(measured: npt.ArrayLike, injected: npt.ArrayLike, skip: int = 5) -> float:
    """Per-step time beyond the injected path (median, after ``skip`` warm-up steps).

    >>> estimate_overhead([9.0, 3.0, 3.5, 2.5], [1.0, 1.0, 1.0, 1.0], skip=1)
    2.0
    """
    m = np.asarray(measured, dtype=np.float64)[skip:]
    i = np.asarray(injected, dtype=np.float64)[skip:]
    if m.size == 0:
        return 0.0
    return max(0.0, float(np.median(m - i)))


def adaptation_steps(
    batch_sizes: npt.ArrayLike, delays: npt.ArrayLike, rank: int, onset: int,
    global_batch: int, tolerance: float = 0.10, hold: int = 3,
) -> int | None:
    """Steps from ``onset`` until ``rank``'s batch is within ``tolerance`` of its ideal share.

    The share must then hold for ``hold`` consecutive steps (one lucky step
    does not count); ``None`` if it never gets there.

    >>> d = np.array([[1.0, 2.0]] * 6)
    >>> b = np.array([[16, 16], [16, 16], [21, 11], [21, 11], [21, 11], [21, 11]])
    >>> adaptation_steps(b, d, rank=1, onset=0, global_batch=32)
    2
    """
    b = np.asarray(batch_sizes, dtype=np.float64)[:, rank]
    ideal = ideal_shares(delays, global_batch)[:, rank]
    ok = np.abs(b - ideal) <= tolerance * ideal
    for t in range(onset, len(ok)):
        if ok[t : t + hold].all() and len(ok[t : t + hold]) == min(hold, len(ok) - t):
            return t - onset
    return None


def window_ratio(measured: npt.ArrayLike, reference: npt.ArrayLike, start: int = 0) -> float:
    """``sum(measured) / sum(reference)`` from step ``start`` on (nan when empty).

    >>> window_ratio([4.0, 2.0, 2.0], [1.0, 1.0, 1.0], start=1)
    2.0
    """
    m = np.asarray(measured, dtype=np.float64)[start:]
    r = np.asarray(reference, dtype=np.float64)[start:]
    if m.size == 0 or r.sum() <= 0:
        return float("nan")
    return float(m.sum() / r.sum())
