"""What any planner could gain per scenario, before measuring one (pure numpy).

Issue 14's targets ask a method to beat static by 25% and to close 70% of the
gap between static and the clairvoyant oracle. The first is out of reach when
even the oracle does not take 25% off static: a 2x burst on one of 4 ranks for
a third of the time is such a case (the oracle's whole run is 0.79x static on
the injected work, less with the fixed per-step overhead). The *lagged oracle*
knows every rank's true speed but applies it ``lag`` steps late, and changes
shares only every ``hold`` steps (the runtime's sync interval): it bounds any
purely reactive loop whose map takes ``lag`` steps to be in force (one sync
interval is the floor of the runtime's agreement).

>>> from benchmarks.bench.scenarios import catalogue
>>> f = bounds(catalogue(4, 300, 1e-3)["burst"], 450, 64, overhead=0.0, lags=(8,), hold=8)
>>> round(f["static_vs_clairvoyant"], 3), f["beat_static_25_feasible"]
(1.273, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.bench.analysis import delays
from benchmarks.bench.oracle import clairvoyant, critical_path, ideal_shares, persistent
from benchmarks.bench.scenarios import Scenario

__all__ = ["bounds", "lagged"]

BEAT_STATIC = 0.25
CLOSE_GAP = 0.70


def lagged(d: np.ndarray, global_batch: int, lag: int, overhead: float = 0.0,
           hold: int = 1) -> np.ndarray:
    """Step times under shares set every ``hold`` steps, ideal for speeds ``lag`` steps earlier.

    >>> d = np.array([[1.0, 1.0]] * 2 + [[1.0, 3.0]] * 4)
    >>> lagged(d, 4, lag=2).round(2).tolist()
    [2.0, 2.0, 6.0, 6.0, 3.0, 3.0]
    >>> lagged(d, 4, lag=1, hold=2).round(2).tolist()
    [2.0, 2.0, 6.0, 6.0, 3.0, 3.0]
    """
    if lag < 0 or hold < 1:
        raise ValueError(f"lag must be >= 0 and hold >= 1, got lag={lag}, hold={hold}")
    world = d.shape[1]
    source = (np.arange(len(d)) // hold) * hold - lag
    shares = np.full(d.shape, global_batch / world)
    known = source >= 0
    shares[known] = ideal_shares(d[source[known]], global_batch)
    return critical_path(shares, d) + overhead


def bounds(scenario: Scenario, steps: int, global_batch: int, *, overhead: float,
           lags: Sequence[int], hold: int = 1) -> dict[str, Any]:
    """Static / oracle ratios, the best gain over static, and what a lagged oracle closes."""
    d = delays(scenario, steps)
    pd = delays(scenario, steps, persistent_only=True)
    equal = np.full(d.shape, global_batch / scenario.world)
    work_static = critical_path(equal, d).sum()
    work_clair = clairvoyant(d, global_batch).sum()
    static = work_static + overhead * steps
    clair = work_clair + overhead * steps
    gap = static - clair
    out: dict[str, Any] = {
        "scenario": scenario.name, "steps": steps, "overhead_ms": 1e3 * overhead, "hold": hold,
        "static_vs_clairvoyant_work": float(work_static / work_clair),
        "static_vs_clairvoyant": float(static / clair),
        "static_vs_persistent": float(static / persistent(d, pd, global_batch,
                                                          overhead).sum()),
        "best_gain_vs_static": float(1.0 - clair / static),
    }
    out["beat_static_25_feasible"] = bool(out["best_gain_vs_static"] >= BEAT_STATIC)
    out["lagged"] = {}
    for lag in lags:
        t = float(lagged(d, global_batch, lag, overhead, hold).sum())
        out["lagged"][str(lag)] = {
            "vs_clairvoyant": t / clair,
            "gap_closed": float((static - t) / gap) if gap > 1e-12 else None,
        }
    return out
