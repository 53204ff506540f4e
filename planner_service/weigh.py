"""Weighing a candidate plan: the fleet as the policy sees it, the noise guard, gain vs cost.

Pure functions over numpy arrays and the policy's per-rank states, so each rule
is testable alone. The noise guard judges the map in force on speeds
``noise_z`` standard errors in its favour and the candidate ``noise_z``
against it; noise alone never wins that comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner_service.algorithms import Plan, step_time
from planner_service.decision import MoveCost, PolicyConfig
from planner_service.forecast import Segment, fleet_segments
from planner_service.ranks import RankState
from shardsense.events import ShardMap

__all__ = [
    "Candidate", "FleetView", "Weighed", "fleet_view", "speeds_of", "weigh_reactive",
    "weigh_schedule",
]

#: Horizon when neither the map (num_samples) nor the settings give one.
FALLBACK_HORIZON_STEPS = 1000
#: A margin never makes a rank look faster than this share of its predicted time.
MIN_TIME_SHARE = 1e-3


@dataclass(frozen=True)
class FleetView:
    """The ranks one evaluation plans for, now and over the forecast horizon."""

    world: int
    live: tuple[int, ...]
    now: int  # newest global step any live rank reported
    old_batch: np.ndarray  # the base map's batch sizes over ``world``
    gone: list[int]
    joined: list[int]
    rel_error: np.ndarray  # standard error / level, per rank
    onsets: list[int]  # global steps where live ranks' current levels began
    moves: list[tuple[int, int]]  # (began, last moved beyond noise) of live ranks' levels
    segments: list[Segment]  # [now, next trusted change), then the forecast's
    noise_z: float

    @property
    def speeds(self) -> np.ndarray:
        """Samples/s now (0 = gone)."""
        return speeds_of(self.segments[0].times)

    def guarded(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Speeds ``noise_z`` standard errors faster and slower than ``times`` say."""
        margin = self.noise_z * self.rel_error * times
        fast = speeds_of(np.maximum(times - margin, MIN_TIME_SHARE * times))
        return np.where(times > 0, fast, 0.0), speeds_of(times + margin)


def speeds_of(times: np.ndarray) -> np.ndarray:
    """Samples/s from seconds per sample (0 stays 0: not planned for)."""
    return np.where(times > 0, 1.0 / np.where(times > 0, times, 1.0), 0.0)


def fleet_view(ranks: Mapping[int, RankState], live: tuple[int, ...], base: ShardMap,
               steps_per_epoch: int, cfg: PolicyConfig) -> FleetView:
    """What one evaluation sees: membership against ``base``, levels now and ahead."""
    world = max(base.world_size, live[-1] + 1)
    old_batch = np.zeros(world, dtype=np.int64)
    old_batch[: base.world_size] = base.batch_sizes
    now = max(ranks[r].global_step(steps_per_epoch) for r in live)
    horizon = cfg.horizon_steps or steps_per_epoch or FALLBACK_HORIZON_STEPS
    trust = cfg.min_confidence if cfg.schedule_ahead else math.inf
    times = np.zeros(world)
    rel = np.zeros(world)
    changes: dict[int, list[tuple[int, float]]] = {}
    for r in live:
        st = ranks[r]
        times[r] = st.level_at(now, steps_per_epoch, trust)
        rel[r] = st.error() / st.level.value
        changes[r] = [(g, v) for g, v in st.changes(steps_per_epoch, trust) if g > now]
    confidence = {r: ranks[r].confidence for r in live}
    onsets = [o for r in live if (o := ranks[r].onset_global(steps_per_epoch)) is not None]
    moves = [(ranks[r].started_global(steps_per_epoch), ranks[r].moved_global(steps_per_epoch))
             for r in live]
    return FleetView(
        world, live, now, old_batch,
        gone=[r for r in range(world) if old_batch[r] > 0 and r not in live],
        joined=[r for r in live if old_batch[r] == 0], rel_error=rel, onsets=onsets, moves=moves,
        segments=fleet_segments(now, now + horizon, times, changes, confidence),
        noise_z=cfg.noise_z,
    )


@dataclass(frozen=True)
class Candidate:
    """A plan against the map it would replace, for the segment it is planned for."""

    plan: Plan
    current: ShardMap
    view: FleetView
    segment: Segment | None = None  # None: the levels now

    @property
    def times(self) -> np.ndarray:
        return (self.segment or self.view.segments[0]).times

    def survivors(self) -> np.ndarray:
        """The current map's batch sizes on the ranks still planned for."""
        batch = np.zeros(self.view.world, dtype=np.int64)
        batch[: self.current.world_size] = self.current.batch_sizes
        return np.where(self.times > 0, batch, 0)

    def unchanged(self) -> bool:
        return self.plan.moved == 0 and np.array_equal(self.plan.batch_sizes, self.survivors())

    def common(self) -> dict[str, Any]:
        """The decision fields every outcome shares."""
        speeds = speeds_of(self.times)
        return dict(world_size=self.view.world, moved_shards=self.plan.moved,
                    current_step_s=step_time(self.survivors(), speeds),
                    predicted_step_s=step_time(self.plan.batch_sizes, speeds),
                    batch_sizes=self.plan.batch_sizes.tolist())


@dataclass(frozen=True)
class Weighed:
    """Whether a candidate is worth publishing, why, and the gain and cost weighed."""

    worth: bool
    reason: str
    gain: float
    cost: float


def _guarded_steps(cand: Candidate, times: np.ndarray) -> tuple[float, float]:
    """(map in force on speeds in its favour, candidate on speeds against it)."""
    fast, slow = cand.view.guarded(times)
    return step_time(cand.survivors(), fast), step_time(cand.plan.batch_sizes, slow)


def weigh_reactive(cand: Candidate, view: FleetView, move_cost: MoveCost,
                   cfg: PolicyConfig) -> Weighed:
    """The plan for the levels now: gain over the steps until the next trusted change."""
    window = view.segments[0].steps
    sure_current, sure_new = _guarded_steps(cand, view.segments[0].times)
    gain = (sure_current - sure_new) * window
    cost = move_cost.cost(cand.plan.moved)
    improvement = (sure_current - sure_new) / sure_current if sure_current > 0 else 0.0
    c = cand.common()
    head = (f"step {c['current_step_s']:.4g}s -> {c['predicted_step_s']:.4g}s, "
            f"{improvement:+.1%} beyond {cfg.noise_z:g} s.e. of noise, over {window} steps")
    if cand.unchanged():
        return Weighed(False, "plan unchanged", gain, cost)
    if improvement <= cfg.min_improvement:
        return Weighed(False, f"{head}: improvement below {cfg.min_improvement:.1%}", gain,
                       cost)
    if gain < cfg.gain_margin * cost:
        return Weighed(False, f"{head}: not worth moving: gain {gain:.3g}s < "
                       f"{cfg.gain_margin:g} x cost {cost:.3g}s ({cand.plan.moved} shards)",
                       gain, cost)
    return Weighed(True, head, gain, cost)


def weigh_schedule(cand: Candidate, view: FleetView, move_cost: MoveCost,
                   cfg: PolicyConfig) -> Weighed | None:
    """A map for a forecast segment, by expected value; None if the segment needs none."""
    seg = cand.segment
    assert seg is not None
    if cand.unchanged():
        return None
    sure_current, sure_new = _guarded_steps(cand, seg.times)
    improvement = (sure_current - sure_new) / sure_current if sure_current > 0 else 0.0
    if improvement <= cfg.min_improvement:
        return None
    right = (sure_current - sure_new) * seg.steps
    now_current, now_new = _guarded_steps(cand, view.segments[0].times)
    loss = max(0.0, now_new - now_current) * (cfg.evidence_steps + cfg.lead_steps)
    cost = move_cost.cost(cand.plan.moved)
    p = seg.confidence
    expected = p * right - (1 - p) * (loss + cost) - cost
    c = cand.common()
    reason = (f"scheduled ahead for step {seg.start} ({seg.steps} steps forecast at "
              f"confidence {p:.2f}): step {c['current_step_s']:.4g}s -> "
              f"{c['predicted_step_s']:.4g}s, {improvement:+.1%} beyond {cfg.noise_z:g} s.e.; "
              f"expected gain {expected:.3g}s = {p:.2f} x {right:.3g}s - {1 - p:.2f} x "
              f"({loss:.3g}s if wrong + {cost:.3g}s) - {cost:.3g}s cost")
    worth = expected > 0 and expected >= cfg.gain_margin * cost
    return Weighed(worth, reason if worth else f"{reason}: not worth it", expected, cost)
