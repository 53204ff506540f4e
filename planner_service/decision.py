"""What the planner decides with, and what it decides: config, decisions, move cost (no I/O)."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from planner_service.algorithms import ALGORITHMS
from shardsense.errors import ConfigError
from shardsense.events import ShardMap
from shardsense.settings import Settings
from shardsense.tables import PLANNER_DECISIONS

__all__ = ["Decision", "MoveCost", "Outcome", "PolicyConfig"]


@dataclass(frozen=True)
class PolicyConfig:
    """Planner knobs in natural units; defaults match :class:`Settings` (see its docs).

    ``confirmations`` (evaluations in a row a plan must win, besides the
    evidence in steps) has no setting: the service counts evidence in batches;
    only the in-process bench ablation still asks for more than one.
    """

    algorithm: str = "minmax"
    shard_bytes: int = 0
    bandwidth_bps: float = 100e6
    warmup_s: float = 0.0
    min_improvement: float = 0.05
    gain_margin: float = 2.0
    evidence_steps: int = 2
    confirmations: int = 1
    smoothing: float = 0.3
    rank_timeout_s: float = 60.0
    horizon_steps: int = 0
    schedule_ahead: bool = True
    min_confidence: float = 0.5
    lead_steps: int = 16
    noise_z: float = 2.0
    prior_cv: float = 0.1

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError("SHARDSENSE_PLANNER_ALGORITHM", f"unknown {self.algorithm!r}")
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigError("SHARDSENSE_PLANNER_SMOOTHING_PCT", "must be 1..100")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("SHARDSENSE_PLANNER_FORECAST_CONFIDENCE_PCT", "must be 0..100")

    @classmethod
    def from_settings(cls, s: Settings) -> PolicyConfig:
        return cls(
            algorithm=s.planner_algorithm,
            shard_bytes=s.planner_shard_bytes,
            bandwidth_bps=float(s.planner_bandwidth_bps),
            warmup_s=s.planner_warmup_ms / 1000.0,
            min_improvement=s.planner_min_improvement_pct / 100.0,
            gain_margin=s.planner_gain_margin_pct / 100.0,
            evidence_steps=s.planner_evidence_steps,
            smoothing=s.planner_smoothing_pct / 100.0,
            rank_timeout_s=float(s.planner_rank_timeout_s),
            horizon_steps=s.planner_horizon_steps,
            schedule_ahead=bool(s.planner_schedule_ahead),
            min_confidence=s.planner_forecast_confidence_pct / 100.0,
            lead_steps=s.planner_lead_steps,
        )


class Outcome(StrEnum):
    """What one evaluation concluded (stored as ``planner_decisions.decision``)."""

    PUBLISHED = "published"  # a new map, on the topic once the service delivered it
    PENDING = "pending"  # worth it, but waiting for more confirmations
    SKIPPED = "skipped"  # not worth it (or impossible); the reason says which


@dataclass(frozen=True)
class Decision:
    """One evaluation: its :class:`Outcome`, why, and what was weighed."""

    outcome: Outcome
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

    def row(self, job_id: str) -> list[Any]:
        """The ClickHouse ``planner_decisions`` row (``shardsense.tables``)."""
        return PLANNER_DECISIONS.row(self, job_id=job_id, decision=self.outcome.value)


class MoveCost:
    """What moving shards costs: seconds per shard received, learnt from data-wait.

    The prior is ``shard_bytes / bandwidth_bps`` per shard (0 for the runtime's
    virtual shards, which move as index ranges), plus ``warmup_s`` per map
    change. Each observation is the extra data-wait a rank had over its first
    batches under a new map and the shards it received; the estimate is an
    EWMA of the seconds per shard (linear, so it can start at and return to 0),
    clamped to ``[0, hi]``. A move that caused no extra wait pulls it down.

    >>> cost = MoveCost(shard_bytes=0, bandwidth_bps=1e8, weight=0.5)
    >>> cost.cost(10)
    0.0
    >>> cost.observe(shards=4, extra_wait_s=0.2)
    0.025
    >>> round(cost.cost(10), 3)
    0.25
    """

    def __init__(
        self, shard_bytes: float, bandwidth_bps: float, warmup_s: float = 0.0,
        weight: float = 0.5, hi: float = 60.0,
    ) -> None:
        if bandwidth_bps <= 0:
            raise ValueError(f"bandwidth_bps must be > 0, got {bandwidth_bps}")
        self.shard_s = float(shard_bytes) / float(bandwidth_bps)
        self.warmup_s = float(warmup_s)
        self.weight, self.hi = weight, hi
        self.samples = 0

    def cost(self, moved_shards: int) -> float:
        """Seconds a map change that moves ``moved_shards`` shards costs (all ranks wait)."""
        return moved_shards * self.shard_s + (self.warmup_s if moved_shards else 0.0)

    def observe(self, shards: int, extra_wait_s: float) -> float:
        """Fold one rank's measured transfer in; returns the new seconds per shard."""
        if shards > 0 and math.isfinite(extra_wait_s):
            sample = min(max(extra_wait_s, 0.0) / shards, self.hi)
            self.shard_s += self.weight * (sample - self.shard_s)
            self.samples += 1
        return self.shard_s
