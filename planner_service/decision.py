"""What the planner decides with, and what it decides: config, decisions, bandwidth (no I/O)."""

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

__all__ = ["BandwidthEstimator", "Decision", "Outcome", "PolicyConfig"]


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
