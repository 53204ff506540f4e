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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from planner_service.algorithms import (
    ALGORITHMS,
    get_plan,
    lists_from_owner,
    owner_from_lists,
    step_time,
)
from shardsense.errors import ConfigError
from shardsense.events import Prediction, ShardMap
from shardsense.settings import Settings

__all__ = ["BandwidthEstimator", "Decision", "PlanPolicy", "PolicyConfig"]

#: Horizon when neither the map (num_samples) nor the settings give one.
FALLBACK_HORIZON_STEPS = 1000


@dataclass(frozen=True)
class PolicyConfig:
    """Planner knobs in natural units; defaults match :class:`Settings` (see its docs)."""

    algorithm: str = "minmax"
    shard_bytes: int = 8 * 1024 * 1024
    bandwidth_bps: float = 100e6
    warmup_s: float = 2.0
    min_improvement: float = 0.05
    gain_margin: float = 2.0
    confirmations: int = 2
    smoothing: float = 0.3
    rank_timeout_s: float = 60.0
    horizon_steps: int = 0
    noise_z: float = 2.0
    prior_cv: float = 0.1

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError("SHARDSENSE_PLANNER_ALGORITHM", f"unknown {self.algorithm!r}")
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigError("SHARDSENSE_PLANNER_SMOOTHING_PCT", "must be 1..100")

    @classmethod
    def from_settings(cls, s: Settings) -> PolicyConfig:
        return cls(
            algorithm=s.planner_algorithm,
            shard_bytes=s.planner_shard_bytes,
            bandwidth_bps=float(s.planner_bandwidth_bps),
            warmup_s=s.planner_warmup_ms / 1000.0,
            min_improvement=s.planner_min_improvement_pct / 100.0,
            gain_margin=s.planner_gain_margin_pct / 100.0,
            confirmations=s.planner_confirmations,
            smoothing=s.planner_smoothing_pct / 100.0,
            rank_timeout_s=float(s.planner_rank_timeout_s),
            horizon_steps=s.planner_horizon_steps,
        )


@dataclass(frozen=True)
class Decision:
    """One evaluation: ``decision`` is 'published', 'pending' or 'skipped', with why."""

    decision: str
    reason: str
    algorithm: str
    map_version: int
    world_size: int
    moved_shards: int
    predicted_gain_s: float
    move_cost_s: float
    current_step_s: float
    predicted_step_s: float
    batch_sizes: list[int]
    shard_map: ShardMap | None = None
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = field(default_factory=time.time)

    COLUMNS = (
        "job_id", "decision_id", "ts", "decision", "reason", "algorithm", "map_version",
        "world_size", "moved_shards", "predicted_gain_s", "move_cost_s", "current_step_s",
        "predicted_step_s", "batch_sizes",
    )

    def row(self, job_id: str) -> list[Any]:
        """Values for ClickHouse ``planner_decisions`` in :attr:`COLUMNS` order."""
        return [
            job_id, self.decision_id, datetime.fromtimestamp(self.ts, UTC), self.decision,
            self.reason, self.algorithm, self.map_version, self.world_size, self.moved_shards,
            self.predicted_gain_s, self.move_cost_s, self.current_step_s,
            self.predicted_step_s, self.batch_sizes,
        ]


class BandwidthEstimator:
    """Learns shard-fetch bandwidth from what a map change really cost.

    Each observation is the bytes moved onto a rank and the extra data-wait it
    caused; the estimate is an EWMA in log space (bandwidth is a ratio), clamped
    to a sane range. A transfer that caused no measurable wait counts as 1 ms.

    >>> est = BandwidthEstimator(100e6, weight=1.0)
    >>> round(est.observe(50e6, 1.0))
    50000000
    """

    def __init__(
        self, initial_bps: float, weight: float = 0.5, lo: float = 1e5, hi: float = 1e11
    ) -> None:
        self.bps = float(initial_bps)
        self.weight = weight
        self.lo, self.hi = lo, hi
        self.samples = 0

    def observe(self, bytes_moved: float, extra_wait_s: float) -> float:
        if bytes_moved > 0 and math.isfinite(extra_wait_s):
            sample = min(max(bytes_moved / max(extra_wait_s, 1e-3), self.lo), self.hi)
            log_bps = (1 - self.weight) * math.log(self.bps) + self.weight * math.log(sample)
            self.bps = math.exp(log_bps)
            self.samples += 1
        return self.bps


@dataclass
class _Rank:
    tps: float  # smoothed predicted seconds per sample
    seen: float  # clock of the last prediction
    straggler: bool
    var: float = 0.0  # EW variance of the raw predictions around the smoothed value
    unc: float = 0.0  # the processor's latest uncertainty_s


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
        tps = max(p.time_per_sample_s, 1e-9)
        stale = old is None or now - old.seen > self.config.rank_timeout_s
        if old is None or stale or old.straggler != p.straggler:
            prior = (self.config.prior_cv * tps) ** 2  # until the rank's own noise is known
            self._ranks[p.worker_id] = _Rank(tps, now, p.straggler, prior, p.uncertainty_s)
        else:
            a, delta = self.config.smoothing, tps - old.tps
            old.tps, old.seen = old.tps + a * delta, max(old.seen, now)
            old.var, old.unc = (1 - a) * (old.var + a * delta * delta), p.uncertainty_s
        self._last_step = max(self._last_step, p.based_on_step)
        self._dirty = True

    def set_bandwidth(self, bytes_moved: float, extra_wait_s: float) -> float:
        """Feed one measured transfer to the bandwidth estimate; returns the new estimate."""
        return self.bandwidth.observe(bytes_moved, extra_wait_s)

    # ------------------------------------------------------------ the decision

    def evaluate(self) -> Decision | None:
        """Weigh a new plan, or None when there is nothing (new) to weigh."""
        base, owner = self.base, self._owner
        if base is None or owner is None or not self._ranks:
            return None
        now = self.clock()
        timeout = self.config.rank_timeout_s
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
        joined = [r for r in live if old_batch[r] == 0]
        speeds, fast, slow = np.zeros(world), np.zeros(world), np.zeros(world)
        a, z = self.config.smoothing, self.config.noise_z
        for r in live:
            st = self._ranks[r]
            # Standard error of the smoothed value: EWMA keeps a/(2-a) of the variance.
            margin = z * math.sqrt(max(st.var, st.unc * st.unc) * a / (2 - a))
            speeds[r] = 1.0 / st.tps
            fast[r] = 1.0 / max(st.tps - margin, 1e-3 * st.tps)
            slow[r] = 1.0 / (st.tps + margin)
        cap = base.max_batch_size
        if cap and cap * len(live) < base.global_batch_size:
            return Decision(
                "skipped", f"{len(live)} live ranks cannot hold the global batch under "
                f"max_batch_size {cap}; waiting for a new base map", self.config.algorithm,
                base.map_version, world, 0, 0.0, 0.0, 0.0, 0.0, [],
            )
        plan = get_plan(self.config.algorithm, owner, speeds, base.global_batch_size, cap)
        survivors = np.where(speeds > 0, old_batch, 0)
        current = step_time(survivors, speeds)
        new = step_time(plan.batch_sizes, speeds)
        common = dict(
            algorithm=self.config.algorithm, world_size=world, moved_shards=plan.moved,
            current_step_s=current, predicted_step_s=new,
            batch_sizes=plan.batch_sizes.tolist(),
        )
        if gone or joined:
            why = "membership:" + "".join(
                [f" rank {r} silent > {timeout:g}s;" for r in gone]
                + [f" rank {r} joined;" for r in joined]
            )
            return self._publish(plan.owner, plan.batch_sizes, why, 0.0, 0.0, common)
        horizon = self._horizon()
        # Noise guard: the current map judged on speeds z standard errors in its favour,
        # the new one z against it; noise alone never wins that comparison.
        sure_current = step_time(survivors, fast)
        sure_new = step_time(plan.batch_sizes, slow)
        gain = (sure_current - sure_new) * horizon
        cost = plan.moved * self.config.shard_bytes / self.bandwidth.bps + self.config.warmup_s
        improvement = (sure_current - sure_new) / sure_current if sure_current > 0 else 0.0
        head = (f"step {current:.4g}s -> {new:.4g}s, {improvement:+.1%} beyond "
                f"{z:g} s.e. of noise, over {horizon} steps")
        if np.array_equal(plan.batch_sizes, old_batch) and plan.moved == 0:
            return self._skip("plan unchanged", gain, cost, common)
        if improvement <= self.config.min_improvement:
            return self._skip(
                f"{head}: improvement below {self.config.min_improvement:.1%}", gain, cost, common
            )
        if gain < self.config.gain_margin * cost:
            return self._skip(
                f"{head}: not worth moving: gain {gain:.3g}s < {self.config.gain_margin:g} x "
                f"cost {cost:.3g}s ({plan.moved} shards)", gain, cost, common,
            )
        self._streak += 1
        if self._streak < self.config.confirmations:
            return Decision(
                "pending", f"{head}: confirmation {self._streak}/{self.config.confirmations}",
                map_version=base.map_version, predicted_gain_s=gain, move_cost_s=cost, **common,
            )
        return self._publish(plan.owner, plan.batch_sizes, f"{head}: worth it", gain, cost, common)

    # ------------------------------------------------------------ helpers

    def _horizon(self) -> int:
        assert self.base is not None
        if self.config.horizon_steps:
            return self.config.horizon_steps
        epoch = self.base.num_samples // self.base.global_batch_size
        return epoch if epoch > 0 else FALLBACK_HORIZON_STEPS

    def _skip(self, reason: str, gain: float, cost: float, common: dict[str, Any]) -> Decision:
        assert self.base is not None
        self._streak = 0
        return Decision("skipped", reason, map_version=self.base.map_version,
                        predicted_gain_s=gain, move_cost_s=cost, **common)

    def _publish(
        self,
        owner: np.ndarray,
        batch: np.ndarray,
        reason: str,
        gain: float,
        cost: float,
        common: dict[str, Any],
    ) -> Decision:
        """A decision carrying the next map; it becomes the base once it is on the topic."""
        base = self.base
        assert base is not None
        self._streak = 0
        self._dirty = True  # evaluate again (retry) unless the map is adopted meanwhile
        world = int(batch.size)
        new_map = ShardMap.build(
            self.job_id,
            base.map_version + 1,
            lists_from_owner(owner, world),
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
        return Decision("published", reason, map_version=new_map.map_version,
                        predicted_gain_s=gain, move_cost_s=cost, shard_map=new_map, **common)
