"""When to publish a new shard map: gain vs cost, hysteresis and membership (no I/O).

:class:`PlanPolicy` is fed shard maps and predictions and asked to
:meth:`~PlanPolicy.evaluate` now and then; it returns a :class:`Decision`. The
rules, in order:

1. No base map, no fresh predictions, or base ranks not heard from yet (within
   the rank timeout of start-up) -> no decision (nothing to weigh yet).
2. Membership changed (a rank of the map fell silent for ``rank_timeout_s``, or a
   rank outside it / with batch 0 reports) -> publish at once: a gone rank stalls
   every synchronous step, so no cost is too high.
3. Otherwise weigh the candidate plan on smoothed (EWMA) predictions, judging
   the current map on speeds ``noise_z`` standard errors in its favour and the
   new one ``noise_z`` against it (the error comes from the EW variance of each
   rank's predictions, starting from a ``prior_cv`` prior, or its reported
   uncertainty, whichever is larger):
   ``gain = (current step - new step) * horizon_steps`` and
   ``cost = moved_shards * shard_bytes / bandwidth + warmup``. Skip unless the
   step time improves by more than ``min_improvement`` AND ``gain >= margin *
   cost``; publish only after ``confirmations`` consecutive winning evaluations.
   Noise guard + relative threshold + margin + confirmations keep noise from
   flapping maps; once published, the map is proportional to the speeds, so the
   next candidate's improvement is ~0 until the speeds really change.

A published map is ``base.map_version + 1`` and applies from
``(base.apply_epoch, max(base.apply_step, newest based_on_step))``: never before
its base, otherwise as soon as every rank agrees (the planner cannot know the
ranks' current epoch, and a position in the past means "next common step").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner_service.algorithms import (
    Plan,
    get_plan,
    lists_from_owner,
    owner_from_lists,
    step_time,
)
from planner_service.decision import BandwidthEstimator, Decision, Outcome, PolicyConfig
from shardsense.events import Prediction, ShardMap
from shardsense.ewma import EwmaVar

__all__ = ["BandwidthEstimator", "Decision", "Outcome", "PlanPolicy", "PolicyConfig"]

#: Horizon when neither the map (num_samples) nor the settings give one.
FALLBACK_HORIZON_STEPS = 1000
#: A margin never makes a rank look faster than this share of its predicted time.
MIN_TIME_SHARE = 1e-3
#: Smallest time per sample a prediction counts with (a zero would mean infinite speed).
MIN_TIME_PER_SAMPLE_S = 1e-9


@dataclass
class _Rank:
    """What the policy knows of one rank: smoothed time per sample and its noise."""

    time_per_sample: EwmaVar  # of the predicted seconds per sample
    seen: float  # clock of the last prediction
    straggler: bool
    uncertainty_s: float = 0.0  # the processor's latest uncertainty_s


@dataclass(frozen=True)
class _View:
    """The ranks one evaluation plans for, with their speeds (samples/s; 0 = gone)."""

    world: int
    live: tuple[int, ...]
    old_batch: np.ndarray
    gone: list[int]
    joined: list[int]
    speeds: np.ndarray  # as predicted
    fast: np.ndarray  # noise_z standard errors faster
    slow: np.ndarray  # noise_z standard errors slower


class PlanPolicy:
    """State of one job's planner: latest map, smoothed speeds, hysteresis streak."""

    def __init__(
        self, config: PolicyConfig, job_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.job_id = job_id
        self.clock = clock
        self.bandwidth = BandwidthEstimator(config.bandwidth_bps)
        self.base: ShardMap | None = None
        self._owner: np.ndarray | None = None
        self._since = clock()
        self._ranks: dict[int, _Rank] = {}
        self._last_step = 0
        self._streak = 0
        self._dirty = False
        self._last_live: tuple[int, ...] = ()
        self._expected = ""  # event id of the map we last proposed for publication

    # ------------------------------------------------------------ inputs

    def observe_map(self, shard_map: ShardMap) -> bool:
        """Adopt ``shard_map`` if it is the job's latest (same version: the later wins)."""
        if shard_map.job_id != self.job_id:
            return False
        if self.base is not None and shard_map.map_version < self.base.map_version:
            return False
        if self.base is None or shard_map.event_id != self.base.event_id:
            self.base = shard_map
            self._owner = owner_from_lists(shard_map.shards, shard_map.num_shards)
            self._since = max(self._since, self.clock())
            self._streak = 0
            # Our own map coming back needs no re-evaluation; anyone else's does.
            self._dirty = shard_map.event_id != self._expected
        return True

    def observe_prediction(self, p: Prediction) -> None:
        """Fold one prediction into the rank's EWMA (reset on straggler flips and rejoins)."""
        if p.job_id != self.job_id:
            return
        # A replayed prediction (restart) is as old as its timestamp, never newer than now.
        now = min(self.clock(), p.ts) if p.ts > 0 else self.clock()
        old = self._ranks.get(p.worker_id)
        per_sample_s = max(p.time_per_sample_s, MIN_TIME_PER_SAMPLE_S)
        stale = old is None or now - old.seen > self.config.rank_timeout_s
        if old is None or stale or old.straggler != p.straggler:
            smoothed = EwmaVar(self.config.smoothing)
            smoothed.reset(per_sample_s, self.config.prior_cv)  # until its own noise is known
            self._ranks[p.worker_id] = _Rank(smoothed, now, p.straggler, p.uncertainty_s)
        else:
            old.time_per_sample.update(per_sample_s)
            old.seen, old.uncertainty_s = max(old.seen, now), p.uncertainty_s
        self._last_step = max(self._last_step, p.based_on_step)
        self._dirty = True

    def set_bandwidth(self, bytes_moved: float, extra_wait_s: float) -> float:
        """Feed one measured transfer to the bandwidth estimate; returns the new estimate."""
        return self.bandwidth.observe(bytes_moved, extra_wait_s)

    # ------------------------------------------------------------ the decision

    def evaluate(self) -> Decision | None:
        """Weigh a new plan, or None when there is nothing (new) to weigh."""
        view = self._view()
        if view is None:
            return None
        base = self.base
        assert base is not None and self._owner is not None
        cap = base.max_batch_size
        if cap and cap * len(view.live) < base.global_batch_size:
            return self._decision(
                Outcome.SKIPPED, f"{len(view.live)} live ranks cannot hold the global batch "
                f"under max_batch_size {cap}; waiting for a new base map",
                map_version=base.map_version, world_size=view.world, moved_shards=0,
                predicted_gain_s=0.0, move_cost_s=0.0, current_step_s=0.0,
                predicted_step_s=0.0, batch_sizes=[],
            )
        plan = get_plan(self.config.algorithm, self._owner, view.speeds,
                        base.global_batch_size, cap)
        survivors = np.where(view.speeds > 0, view.old_batch, 0)
        common = dict(
            world_size=view.world, moved_shards=plan.moved,
            current_step_s=step_time(survivors, view.speeds),
            predicted_step_s=step_time(plan.batch_sizes, view.speeds),
            batch_sizes=plan.batch_sizes.tolist(),
        )
        if view.gone or view.joined:
            return self._publish(plan, self._membership_reason(view), 0.0, 0.0, common)
        return self._weigh(view, plan, survivors, common)

    def _view(self) -> _View | None:
        """Who is live and how fast, or None while there is nothing (new) to weigh."""
        base = self.base
        if base is None or self._owner is None or not self._ranks:
            return None
        now, timeout = self.clock(), self.config.rank_timeout_s
        fresh = {r for r, st in self._ranks.items() if now - st.seen <= timeout}
        world = max(base.world_size, max(fresh, default=-1) + 1)
        old_batch = np.zeros(world, dtype=np.int64)
        old_batch[: base.world_size] = base.batch_sizes
        gone = [r for r in range(world) if old_batch[r] > 0 and r not in fresh]
        if any(r not in self._ranks for r in gone) and now - self._since <= timeout:
            return None  # start-up: a rank of the map has not reported yet
        live = tuple(sorted(fresh))
        if not live or not (self._dirty or live != self._last_live):
            return None
        if len(live) > base.global_batch_size:
            return None  # cannot give every live rank a sample; wait for a new base map
        self._dirty, self._last_live = False, live
        speeds, fast, slow = np.zeros(world), np.zeros(world), np.zeros(world)
        for r in live:
            st = self._ranks[r]
            smoothed = st.time_per_sample
            # The error of the smoothed value, or the processor's own, whichever is larger.
            error = max(smoothed.stderr, st.uncertainty_s * math.sqrt(
                smoothed.alpha / (2 - smoothed.alpha)))
            margin = self.config.noise_z * error
            t = smoothed.value
            speeds[r] = 1.0 / t
            fast[r] = 1.0 / max(t - margin, MIN_TIME_SHARE * t)
            slow[r] = 1.0 / (t + margin)
        joined = [r for r in live if old_batch[r] == 0]
        return _View(world, live, old_batch, gone, joined, speeds, fast, slow)

    def _membership_reason(self, view: _View) -> str:
        timeout = self.config.rank_timeout_s
        return "membership:" + "".join(
            [f" rank {r} silent > {timeout:g}s;" for r in view.gone]
            + [f" rank {r} joined;" for r in view.joined]
        )

    def _weigh(
        self, view: _View, plan: Plan, survivors: np.ndarray, common: dict[str, Any]
    ) -> Decision:
        """Gain over the horizon vs move cost, beyond the noise; then the confirmations.

        Noise guard: the current map judged on speeds z standard errors in its
        favour, the new one z against it; noise alone never wins that comparison.
        """
        cfg, horizon = self.config, self._horizon()
        sure_current = step_time(survivors, view.fast)
        sure_new = step_time(plan.batch_sizes, view.slow)
        gain = (sure_current - sure_new) * horizon
        cost = plan.moved * cfg.shard_bytes / self.bandwidth.bps + cfg.warmup_s
        improvement = (sure_current - sure_new) / sure_current if sure_current > 0 else 0.0
        head = (f"step {common['current_step_s']:.4g}s -> {common['predicted_step_s']:.4g}s, "
                f"{improvement:+.1%} beyond {cfg.noise_z:g} s.e. of noise, over {horizon} steps")
        if np.array_equal(plan.batch_sizes, view.old_batch) and plan.moved == 0:
            return self._skip("plan unchanged", gain, cost, common)
        if improvement <= cfg.min_improvement:
            return self._skip(f"{head}: improvement below {cfg.min_improvement:.1%}", gain,
                              cost, common)
        if gain < cfg.gain_margin * cost:
            return self._skip(
                f"{head}: not worth moving: gain {gain:.3g}s < {cfg.gain_margin:g} x "
                f"cost {cost:.3g}s ({plan.moved} shards)", gain, cost, common,
            )
        self._streak += 1
        if self._streak < cfg.confirmations:
            assert self.base is not None
            return self._decision(
                Outcome.PENDING, f"{head}: confirmation {self._streak}/{cfg.confirmations}",
                map_version=self.base.map_version, predicted_gain_s=gain, move_cost_s=cost,
                **common,
            )
        return self._publish(plan, f"{head}: worth it", gain, cost, common)

    # ------------------------------------------------------------ helpers

    def _decision(self, outcome: Outcome, reason: str, **fields: Any) -> Decision:
        """A decision of this policy's algorithm, stamped by its clock."""
        return Decision(outcome, reason, algorithm=self.config.algorithm, ts=self.clock(),
                        **fields)

    def _horizon(self) -> int:
        assert self.base is not None
        if self.config.horizon_steps:
            return self.config.horizon_steps
        epoch = self.base.num_samples // self.base.global_batch_size
        return epoch if epoch > 0 else FALLBACK_HORIZON_STEPS

    def _skip(self, reason: str, gain: float, cost: float, common: dict[str, Any]) -> Decision:
        assert self.base is not None
        self._streak = 0
        return self._decision(Outcome.SKIPPED, reason, map_version=self.base.map_version,
                              predicted_gain_s=gain, move_cost_s=cost, **common)

    def _publish(
        self, plan: Plan, reason: str, gain: float, cost: float, common: dict[str, Any]
    ) -> Decision:
        """A decision carrying the next map; it becomes the base once it is on the topic."""
        base = self.base
        assert base is not None
        self._streak = 0
        self._dirty = True  # evaluate again (retry) unless the map is adopted meanwhile
        batch = plan.batch_sizes
        new_map = ShardMap.build(
            self.job_id,
            base.map_version + 1,
            lists_from_owner(plan.owner, int(batch.size)),
            batch.tolist(),
            num_shards=base.num_shards,
            apply_epoch=base.apply_epoch,
            apply_step=max(base.apply_step, self._last_step),
            num_samples=base.num_samples,
            max_batch_size=base.max_batch_size,
            predicted_gain_s=gain,
            move_cost_s=cost,
            reason=reason,
        )
        self._expected = new_map.event_id
        return self._decision(Outcome.PUBLISHED, reason, map_version=new_map.map_version,
                              predicted_gain_s=gain, move_cost_s=cost, shard_map=new_map,
                              **common)
