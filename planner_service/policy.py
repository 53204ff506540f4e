"""When to publish a new shard map, and for which step: gain vs cost, evidence, forecasts (no I/O).

:class:`PlanPolicy` is one job's planner state. It is fed shard maps and
predictions and asked to :meth:`~PlanPolicy.evaluate` when they arrive; it
returns a :class:`Decision`. The rules, in order:

1. No base map, no fresh predictions, or base ranks not heard from yet (within
   the rank timeout of start-up) -> no decision (nothing to weigh yet).
2. Membership changed (a rank of the map fell silent for ``rank_timeout_s``, or a
   rank outside it / with batch 0 reports) -> publish at once: a gone rank stalls
   every synchronous step, so no cost is too high.
3. React: weigh the plan for the levels now against the map in force, judging
   the map in force on speeds ``noise_z`` standard errors in its favour and the
   new one ``noise_z`` against it (:mod:`planner_service.ranks` says where the
   errors come from): ``gain = (current step - new step) * window`` (the window
   is the horizon, or the steps until a trusted forecast change), ``cost =``
   :class:`MoveCost`. Skip unless the step time improves by more than
   ``min_improvement`` AND ``gain >= margin * cost``; publish once the plan has
   ``evidence_steps`` batches of evidence: counted from the onset step of the
   newest level change (the processor's alarm) after the map in force was
   planned, or else from the first evaluation the plan won; it must win at
   every evaluation meanwhile, and a level that began since must have stopped
   ramping (a forecaster climbing to a new level is not at it yet). Where the
   step counter stands still, each winning evaluation counts as a batch.
4. Schedule ahead (``schedule_ahead``, ranks' forecasts trusted at
   ``min_confidence``): once the last published map is in force, the first
   forecast segment whose plan beats the map in force gets its map now, applying
   at the segment's start. It is weighed by expected value: ``confidence *
   gain if right - (1 - confidence) * (loss until the reactive path corrects a
   miss + cost) - cost``, with the same noise guard and thresholds.

Steps are global (:mod:`planner_service.ranks`); a map's apply point is
``(step // steps_per_epoch, step % steps_per_epoch)``. A reactive map applies
from the newest step any rank reported (a point in the past means "next step
all ranks agree on"); a map is counted in force ``lead_steps`` after that, or
at its apply step if later, and the next scheduled map waits for that (the
runtime keeps only the newest map per job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner_service.algorithms import get_plan, lists_from_owner, owner_from_lists
from planner_service.decision import Decision, MoveCost, Outcome, PolicyConfig
from planner_service.ranks import RankState, global_step
from planner_service.weigh import (
    Candidate,
    FleetView,
    Weighed,
    fleet_view,
    speeds_of,
    weigh_reactive,
    weigh_schedule,
)
from shardsense.events import Prediction, ShardMap

__all__ = ["Decision", "MoveCost", "Outcome", "PlanPolicy", "PolicyConfig"]

#: A rank silent this many rank timeouts, and holding no batch, is forgotten.
FORGET_AFTER_TIMEOUTS = 2


@dataclass(frozen=True)
class _Proposal:
    """A map we proposed, until it comes back from the topic."""

    event_id: str
    in_force: tuple[ShardMap, np.ndarray]  # what was in force when it was proposed
    apply: int  # global step it applies from (later than planned_at: scheduled ahead)
    from_step: int  # global step from which it is in force at the latest
    planned_at: int  # newest global step it was planned at


class PlanPolicy:
    """State of one job's planner: latest map, per-rank levels, evidence, proposals."""

    def __init__(
        self, config: PolicyConfig, job_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.job_id = job_id
        self.clock = clock
        self.move_cost = MoveCost(config.shard_bytes, config.bandwidth_bps, config.warmup_s)
        self.base: ShardMap | None = None
        self._owner: np.ndarray | None = None
        self._previous: tuple[ShardMap, np.ndarray] | None = None  # in force until _base_apply
        self._base_apply = 0  # global step the base applies from (future: scheduled ahead)
        self._base_from = 0  # global step from which the base is surely in force
        self._planned_at = 0
        self._since = clock()
        self.last_input = clock()
        self._ranks: dict[int, RankState] = {}
        #: (first winning step, wins, evidence start of the last win, wins since it)
        self._streak: tuple[int, int, int, int] | None = None
        self._dirty = False
        self._last_live: tuple[int, ...] = ()
        self._proposal: _Proposal | None = None

    # ------------------------------------------------------------ inputs

    @property
    def steps_per_epoch(self) -> int:
        b = self.base
        return b.num_samples // b.global_batch_size if b is not None else 0

    def observe_map(self, shard_map: ShardMap) -> bool:
        """Adopt ``shard_map`` if it is the job's latest (same version: the later wins)."""
        if shard_map.job_id != self.job_id:
            return False
        if self.base is not None and shard_map.map_version < self.base.map_version:
            return False
        if self.base is None or shard_map.event_id != self.base.event_id:
            mine = self._proposal if (
                self._proposal and self._proposal.event_id == shard_map.event_id) else None
            self.base = shard_map
            self._owner = owner_from_lists(shard_map.shards, shard_map.num_shards)
            if mine is not None:  # our own map back from the topic: in force later
                ahead = mine.apply > mine.planned_at
                self._previous = mine.in_force if ahead else None
                self._base_apply, self._base_from = mine.apply, mine.from_step
                self._planned_at = mine.planned_at
            else:  # someone else's (rank 0): in force as published
                self._previous, self._base_apply, self._base_from = None, 0, 0
                self._planned_at = global_step(shard_map.apply_epoch, shard_map.apply_step,
                                               self.steps_per_epoch)
            self._proposal = None
            self._since = max(self._since, self.clock())
            self._streak = None
            self._dirty = mine is None  # our own map coming back needs no re-evaluation
            self.last_input = self.clock()
        return True

    def observe_prediction(self, p: Prediction) -> None:
        """Fold one prediction into its rank (a new level restarts the rank's smoothing)."""
        if p.job_id != self.job_id:
            return
        # A replayed prediction (restart) is as old as its timestamp, never newer than now.
        now = min(self.clock(), p.ts) if p.ts > 0 else self.clock()
        cfg = self.config
        old = self._ranks.get(p.worker_id)
        if old is None or now - old.seen > cfg.rank_timeout_s:
            wraps = max((st.wraps for st in self._ranks.values()), default=0)
            self._ranks[p.worker_id] = RankState.first(p, now, cfg.smoothing, cfg.prior_cv,
                                                       wraps=wraps)
        elif old.new_level(p):
            self._ranks[p.worker_id] = RankState.first(p, now, cfg.smoothing, cfg.prior_cv, old)
        else:
            old.fold(p, now, cfg.noise_z * cfg.prior_cv / 2, cfg.noise_z)
        self._dirty = True
        self.last_input = self.clock()

    def observe_transfer(self, shards: int, extra_wait_s: float) -> float:
        """Feed one rank's measured move (shards received, extra data-wait); seconds per shard."""
        return self.move_cost.observe(shards, extra_wait_s)

    @property
    def ranks(self) -> int:
        """Ranks the policy holds state for (bounded: silent ranks out of the map are dropped)."""
        return len(self._ranks)

    # ------------------------------------------------------------ the decision

    def evaluate(self) -> Decision | None:
        """Weigh a new plan, or None when there is nothing (new) to weigh."""
        live = self._live()
        if live is None:
            return None
        base = self.base
        assert base is not None and self._owner is not None
        cfg = self.config
        view = fleet_view(self._ranks, live, base, self.steps_per_epoch, cfg)
        current, owner = self._in_force(view.now)
        if base.max_batch_size and base.max_batch_size * len(live) < base.global_batch_size:
            return self._decision(
                Outcome.SKIPPED, f"{len(live)} live ranks cannot hold the global batch under "
                f"max_batch_size {base.max_batch_size}; waiting for a new base map",
                map_version=base.map_version, world_size=view.world, moved_shards=0,
                predicted_gain_s=0.0, move_cost_s=0.0, current_step_s=0.0,
                predicted_step_s=0.0, batch_sizes=[])
        plan = get_plan(cfg.algorithm, owner, view.speeds, base.global_batch_size,
                        base.max_batch_size)
        cand = Candidate(plan, current, view)
        if view.gone or view.joined:
            reason = _membership_reason(view.gone, view.joined, cfg.rank_timeout_s)
            return self._publish(cand, Weighed(True, reason, 0.0, 0.0), view.now)
        weighed = weigh_reactive(cand, view, self.move_cost, cfg)
        if weighed.worth:
            return self._confirm(cand, weighed, view)
        self._streak = None
        if cfg.schedule_ahead and view.now >= self._base_from and current is base:
            ahead = self._schedule(view, owner)
            if ahead is not None:
                return ahead
        return self._skip(cand, weighed)

    def _live(self) -> tuple[int, ...] | None:
        """The live ranks, or None while there is nothing (new) to weigh."""
        base = self.base
        if base is None or self._owner is None or not self._ranks:
            return None
        now, timeout = self.clock(), self.config.rank_timeout_s
        self._forget(now, base)
        fresh = {r for r, st in self._ranks.items() if now - st.seen <= timeout}
        gone = [r for r, b in enumerate(base.batch_sizes) if b > 0 and r not in fresh]
        if any(r not in self._ranks for r in gone) and now - self._since <= timeout:
            return None  # start-up: a rank of the map has not reported yet
        live = tuple(sorted(fresh))
        if not live or not (self._dirty or live != self._last_live):
            return None
        if len(live) > base.global_batch_size:
            return None  # cannot give every live rank a sample; wait for a new base map
        self._dirty, self._last_live = False, live
        return live

    def _forget(self, now: float, base: ShardMap) -> None:
        """Drop ranks long silent that hold no batch (bounded memory as ranks come and go)."""
        limit = FORGET_AFTER_TIMEOUTS * self.config.rank_timeout_s
        for r in [r for r, st in self._ranks.items() if now - st.seen > limit]:
            if r >= base.world_size or base.batch_sizes[r] == 0:
                del self._ranks[r]

    def _in_force(self, now: int) -> tuple[ShardMap, np.ndarray]:
        """The map the ranks train under at global step ``now``, and its shard owners."""
        assert self.base is not None and self._owner is not None
        if self._previous is not None and now < self._base_apply:
            return self._previous
        self._previous = None
        return self.base, self._owner

    def _confirm(self, cand: Candidate, weighed: Weighed, view: FleetView) -> Decision:
        """Publish once the plan has enough evidence in batches, else say it is pending."""
        cfg = self.config
        first, wins, last_since, held = self._streak or (view.now, 0, view.now, 0)
        if first > view.now:  # steps went back (a rank restarted from a checkpoint)
            first, wins, held = view.now, 0, 0
        wins += 1
        onsets = [o for o in view.onsets if o > self._planned_at]
        since = min(first, max(onsets)) if onsets else first
        # ... but not before the last move of a level that began since: a ramp is not a level
        since = max([since, *(m for b, m in view.moves if b > self._planned_at)])
        held = held + 1 if since == last_since else 1
        self._streak = (first, wins, since, held)
        evidence = view.now - since + 1  # batches since..now, both counted
        if view.now <= since:  # a step counter that stands still: count the wins since
            evidence = max(evidence, held)
        if evidence >= cfg.evidence_steps and wins >= cfg.confirmations:
            why = f"{weighed.reason}: worth it, {evidence} batches of evidence since step {since}"
            return self._publish(cand, Weighed(True, why, weighed.gain, weighed.cost), view.now)
        assert self.base is not None
        return self._decision(
            Outcome.PENDING, f"{weighed.reason}: evidence {evidence}/{cfg.evidence_steps} "
            f"batches since step {since}", map_version=self.base.map_version,
            predicted_gain_s=weighed.gain, move_cost_s=weighed.cost, **cand.common())

    def _schedule(self, view: FleetView, owner: np.ndarray) -> Decision | None:
        """The first forecast segment worth a map of its own, published now for its start."""
        assert self.base is not None
        cfg = self.config
        for seg in view.segments[1:]:
            if seg.confidence < cfg.min_confidence:
                continue
            plan = get_plan(cfg.algorithm, owner, speeds_of(seg.times),
                            self.base.global_batch_size, self.base.max_batch_size)
            cand = Candidate(plan, self.base, view, seg)
            weighed = weigh_schedule(cand, view, self.move_cost, cfg)
            if weighed is None:
                continue  # this change needs no other map: look further ahead
            if not weighed.worth:
                return self._skip(cand, weighed)
            return self._publish(cand, weighed, seg.start, from_step=max(
                seg.start, view.now + cfg.lead_steps))
        return None

    # ------------------------------------------------------------ helpers

    def _decision(self, outcome: Outcome, reason: str, **fields: Any) -> Decision:
        """A decision of this policy's algorithm, stamped by its clock."""
        return Decision(outcome, reason, algorithm=self.config.algorithm, ts=self.clock(),
                        **fields)

    def _skip(self, cand: Candidate, weighed: Weighed) -> Decision:
        assert self.base is not None
        return self._decision(Outcome.SKIPPED, weighed.reason, map_version=self.base.map_version,
                              predicted_gain_s=weighed.gain, move_cost_s=weighed.cost,
                              **cand.common())

    def _publish(self, cand: Candidate, weighed: Weighed, apply: int,
                 from_step: int | None = None) -> Decision:
        """A decision carrying the next map; it becomes the base once it is on the topic."""
        base, view = self.base, cand.view
        assert base is not None
        self._streak = None
        self._dirty = True  # evaluate again (retry) unless the map is adopted meanwhile
        spe = self.steps_per_epoch
        in_force = self._in_force(view.now)
        at = global_step(in_force[0].apply_epoch, in_force[0].apply_step, spe)
        apply = max(apply, at)
        epoch, step = divmod(apply, spe) if spe > 0 else (base.apply_epoch, apply)
        batch = cand.plan.batch_sizes
        new_map = ShardMap.build(
            self.job_id, base.map_version + 1, lists_from_owner(cand.plan.owner, int(batch.size)),
            batch.tolist(), num_shards=base.num_shards, apply_epoch=epoch, apply_step=step,
            num_samples=base.num_samples, max_batch_size=base.max_batch_size,
            predicted_gain_s=weighed.gain, move_cost_s=weighed.cost, reason=weighed.reason,
        )
        start = view.now + self.config.lead_steps if from_step is None else from_step
        self._proposal = _Proposal(new_map.event_id, in_force, apply, max(start, apply),
                                   view.now)
        return self._decision(Outcome.PUBLISHED, weighed.reason, map_version=new_map.map_version,
                              predicted_gain_s=weighed.gain, move_cost_s=weighed.cost,
                              shard_map=new_map, **cand.common())


def _membership_reason(gone: list[int], joined: list[int], timeout: float) -> str:
    return "membership:" + "".join(
        [f" rank {r} silent > {timeout:g}s;" for r in gone]
        + [f" rank {r} joined;" for r in joined]
    )

