"""Latency by stage for every change of a rank's speed (pure: no I/O, no torch).

Each stage of the loop is timed from the outside, in wall time and in steps
after the change (the ranks' own step clocks convert a wall time to a step):

=============  ==========================================================
``first_row``  first timing row of the rank at/after the change in ClickHouse
               (its ``ingest_ts``)
``alarm``      first prediction with ``straggler=true`` (tap arrival; onsets)
``at_level``   first prediction within 10% of the true level (tap arrival)
``decision``   first planner decision that publishes a map (its ``ts``)
``published``  that map on the shard-map topic (tap arrival)
``seen``       rank 0's map source has it (rank 0's clock)
``agreed``     rank 0's sync point scheduled it (rank 0's clock)
``in_force``   every rank trains under it (every rank's clock)
``share``      the rank's batch within 15% of its ideal share, holding 3 steps
               (issue 11's reaction target)
=============  ==========================================================

The *true level* is the rank's measured seconds per sample after the change,
under the batch size it had at the change (median of its stored timings).
A stage counts only inside the change's window: until the rank's next change.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from benchmarks.bench.analysis import delays
from benchmarks.bench.oracle import adaptation_steps
from benchmarks.bench.scenarios import Scenario

__all__ = ["STAGES", "Change", "RunView", "changes", "run_stages"]

STAGES = ("first_row", "alarm", "at_level", "decision", "published", "seen", "agreed",
          "in_force", "share")
#: A speed change is a jump of the rank's slowdown factor by at least this ratio.
JUMP = 1.25
LEVEL_TOLERANCE = 0.10
SHARE_TOLERANCE = 0.15


@dataclass(frozen=True)
class Change:
    """A rank's speed change at ``step`` (``kind`` onset or recovery), in force ``until``."""

    step: int
    rank: int
    kind: str
    before: float
    after: float
    until: int


def changes(scenario: Scenario, steps: int, jump: float = JUMP) -> list[Change]:
    """Every onset and recovery of the scenario; a rank slow from step 0 is an onset at 0.

    >>> from benchmarks.bench.scenarios import catalogue
    >>> [(c.step, c.rank, c.kind) for c in changes(catalogue(4, 300, 1e-3)["burst"], 450)]
    [(50, 3, 'onset'), (100, 3, 'recovery'), (200, 3, 'onset'), (250, 3, 'recovery'), \
(350, 3, 'onset'), (400, 3, 'recovery')]
    """
    if jump <= 1.0:
        raise ValueError(f"jump must be > 1, got {jump}")
    factors = delays(scenario, steps) / scenario.base_delay_s
    found: list[tuple[int, int, str, float, float]] = []
    for r in range(scenario.world):
        for t in range(steps):
            prev, now = (factors[t - 1, r] if t else 1.0), factors[t, r]
            if now >= prev * jump:
                found.append((t, r, "onset", float(prev), float(now)))
            elif now <= prev / jump:
                found.append((t, r, "recovery", float(prev), float(now)))
    out = []
    for t, r, kind, before, after in found:
        later = [u for u, q, *_ in found if q == r and u > t]
        out.append(Change(t, r, kind, before, after, min(later, default=steps)))
    return sorted(out, key=lambda c: (c.step, c.rank))


class RunView:
    """One product-path run's records, indexed by global step (the run's step count)."""

    def __init__(self, run: dict[str, Any]) -> None:
        ranks = run["ranks"]
        self.steps = len(run["step_s"])
        self.starts = [list(r["start_wall"][: self.steps]) for r in ranks]
        self.versions = np.array([r["versions"][: self.steps] for r in ranks])
        self.samples = np.array(run["batch_sizes"][: self.steps])  # (steps, world)
        self.spe = int(run["steps_per_epoch"])
        self.batch = int(run["global_batch"])
        watch = run.get("map_watch", {})
        self.seen = {int(v): x for v, x in watch.get("seen", {}).items()}
        self.agreed = {int(v): x for v, x in watch.get("agreed", {}).items()}
        product = run["product"]
        self.decisions = product["decisions"]
        self.maps = sorted(product["maps"], key=lambda m: m["arrived"])
        self.predictions = sorted(product["predictions"], key=lambda p: p["arrived"])
        t = product["timings"]
        self.rows = list(zip(t["worker_id"], np.asarray(t["epoch"]) * self.spe
                             + np.asarray(t["step"]), t["samples"], t["data_wait_s"],
                             t["compute_s"], t["map_version"], t["ingest_ts"], strict=True))

    def step_at(self, wall: float) -> int:
        """The step rank 0 was in at ``wall`` (-1 before the first)."""
        return bisect.bisect_right(self.starts[0], wall) - 1

    def wall_of(self, step: int) -> float:
        """When rank 0 started ``step`` (inf past the end)."""
        return self.starts[0][step] if step < self.steps else float("inf")

    def global_step(self, based_on_step: int, arrived: float) -> int:
        """An epoch-local step (as events carry it) as the run's step, given when it arrived."""
        k = max(0, (self.step_at(arrived) - based_on_step) // self.spe)
        return k * self.spe + based_on_step

    def in_force(self, version: int, start: int) -> int | None:
        """First step from ``start`` at which every rank trains under ``version`` or newer."""
        ok = np.asarray((self.versions >= version).all(axis=0))
        hits = np.flatnonzero(ok[start:])
        return int(hits[0]) + start if hits.size else None


def _stage(view: RunView, c: Change, t0: float, wall: float | None,
           step: int | None = None) -> dict[str, float] | None:
    if wall is None or wall == float("inf"):
        return None
    step = view.step_at(wall) if step is None else step
    if step >= c.until:
        return None
    return {"wall_s": round(wall - t0, 4), "steps": step - c.step}


def _true_level(view: RunView, c: Change, version: int) -> float | None:
    """Median seconds per sample of the rank after the change, under the version then."""
    rows = [r for r in view.rows if r[0] == c.rank and c.step < r[1] < c.until and r[2] > 0]
    same = [r for r in rows if r[5] == version]
    use = same if len(same) >= 3 else rows
    if not use:
        return None
    return float(statistics.median((r[3] + r[4]) / r[2] for r in use))


def _predictions(view: RunView, c: Change, t0: float) -> tuple[float | None, float | None,
                                                               float | None]:
    """(alarm, at-level arrival, true level) for the change's rank."""
    version = int(view.versions[c.rank][c.step])
    level = _true_level(view, c, version)
    alarm = at_level = None
    for p in view.predictions:
        if p["worker_id"] != c.rank or p["arrived"] < t0:
            continue
        if not c.step <= view.global_step(p["based_on_step"], p["arrived"]) < c.until:
            continue
        if alarm is None and p["straggler"] and c.kind == "onset":
            alarm = p["arrived"]
        if at_level is None and level and abs(p["time_per_sample_s"] / level - 1) <= (
                LEVEL_TOLERANCE):
            at_level = p["arrived"]
    return alarm, at_level, level


def _map_chain(view: RunView, c: Change, t0: float) -> dict[str, Any]:
    """Decision, publication, rank 0, agreement and force of the first map after ``t0``."""
    before = int(view.versions[c.rank][c.step])
    end = view.wall_of(c.until)
    decided = [d for d in view.decisions if t0 <= d["ts"] < end]
    pub = next((d for d in decided if d["decision"] == "published"), None)
    maps = [m for m in view.maps if m["map_version"] > before and t0 <= m["arrived"] < end]
    version = pub["map_version"] if pub else (maps[0]["map_version"] if maps else None)
    upto = [d for d in decided if pub is None or d["ts"] <= pub["ts"]]
    out: dict[str, Any] = {
        "version": version, "maps_in_window": len(maps),
        "evaluations": {k: sum(d["decision"] == k for d in upto)
                        for k in ("skipped", "pending", "published")},
        "decision": _stage(view, c, t0, pub["ts"] if pub else None),
    }
    first = next((m for m in maps if m["map_version"] == version), None)
    out["published"] = _stage(view, c, t0, first["arrived"] if first else None)
    out["first_map_batch"] = first["batch_sizes"][c.rank] if first else None
    seen, agreed = view.seen.get(version or -1), view.agreed.get(version or -1)
    out["seen"] = _stage(view, c, t0, seen[1], seen[0]) if seen else None
    out["agreed"] = _stage(view, c, t0, agreed[1], agreed[0]) if agreed else None
    step = view.in_force(version, c.step) if version is not None else None
    wall = max(s[step] for s in view.starts) if step is not None else None
    out["in_force"] = _stage(view, c, t0, wall, step)
    return out


def run_stages(scenario: Scenario, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every change of ``scenario`` in one product-path run, with each stage's latency."""
    view = RunView(run)
    d = delays(scenario, view.steps)
    out = []
    for c in changes(scenario, view.steps):
        t0 = view.starts[c.rank][c.step]
        rows = [r[6] for r in view.rows if r[0] == c.rank and c.step <= r[1] < c.until]
        alarm, at_level, level = _predictions(view, c, t0)
        chain = _map_chain(view, c, t0)
        window = slice(c.step, c.until)
        adapt = adaptation_steps(view.samples[window], d[window], c.rank, 0, view.batch,
                                 tolerance=SHARE_TOLERANCE)
        share = None
        if adapt is not None:
            share = _stage(view, c, t0, view.wall_of(c.step + adapt), c.step + adapt)
        ideal = float(view.batch / d[c.step, c.rank] / (1.0 / d[c.step]).sum())
        out.append({
            **asdict(c), "true_level_s": level, "ideal_batch": round(ideal, 2),
            "first_row": _stage(view, c, t0, min(rows, default=None)),
            "alarm": _stage(view, c, t0, alarm), "at_level": _stage(view, c, t0, at_level),
            **chain, "share": share,
            "settled_batch": int(view.samples[c.until - 1, c.rank]),
        })
    return out
