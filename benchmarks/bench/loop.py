"""The bench's closed loop inside the job: timings -> predictor -> planner policy -> map.

The product path is Kafka -> Faust processor -> planner service -> compacted
topic. The bench keeps the same pieces but wires them in-process, which is far
more reproducible on a shared 2-core machine:

    ShardLoader timing (per batch, via the runtime's TimingSink seam)
      -> per sync interval one async all_gather of per-rank (seconds, samples)
      -> rank 0: :class:`EwmaPredictor` -> ``shardsense.events.Prediction``
      -> ``planner_service.policy.PlanPolicy`` (minmax plan + gain/cost hysteresis)
      -> ``InMemoryMapSource.publish`` -> the runtime's own sync point
         (rank 0 checks the map and broadcasts map + apply step to every rank).

Timing: with a DDP model attached, the runtime reports as ``compute_s`` the
rank's busy time (until its last gradient bucket is ready), not the
next()-to-next() time, in which every rank waits for the slowest in the
all-reduce and a straggler is invisible; ``shardsense bench --timing step``
measures with the latter, to show the difference.
"""

from __future__ import annotations

import statistics
import time

from planner_service.policy import Decision, Outcome, PlanPolicy, PolicyConfig
from producers.memory import InMemoryMapSource
from shardsense.events import Prediction, new_event_id
from shardsense.ewma import EwmaVar

__all__ = ["BenchSink", "EwmaPredictor", "InProcessPlanner"]

Key = tuple[int, int]  # (epoch, step within the epoch), as the loader reports them


class BenchSink:
    """A TimingSink that sums each window's (seconds, samples) for the next all_gather.

    ``versions`` keeps the map version of every offered step: the batch sizes
    each step really ran with, for the report.
    """

    def __init__(self) -> None:
        self.dropped = 0
        self.window = [0.0, 0.0]  # seconds (data wait + compute), samples
        self.versions: dict[Key, int] = {}

    def offer(
        self, epoch: int, step: int, samples: int, data_wait_s: float, compute_s: float,
        map_version: int, end_ts: float,
    ) -> None:
        self.versions[(epoch, step)] = map_version
        if epoch == 0 and step == 0:
            return  # one-off costs (DDP's first backward builds its buckets), not speed
        self.window[0] += data_wait_s + compute_s
        self.window[1] += samples

    def drain(self) -> list[float]:
        out, self.window = self.window, [0.0, 0.0]
        return out

    def close(self) -> None:
        return None


class EwmaPredictor:
    """Seconds per sample per rank: an EWMA of window means, reset on a confirmed level shift.

    A plain EWMA needs many windows to follow a step change; resetting to the
    newest window when ``confirm`` consecutive windows deviate by more than
    ``shift`` in the same direction follows a new straggler in two windows
    (the first one usually straddles the onset), while a square wave that flips
    faster than that averages out (its swings stay inside the band).
    :meth:`uncertainty` is the standard error of the smoothed value, from the
    EW variance of the windows around it (``prior_cv`` of the level after a
    reset): the planner's noise guard needs it.

    >>> p = EwmaPredictor(alpha=0.3, shift=0.4, confirm=2)
    >>> [round(p.update(0, x), 3) for x in (1.0, 1.0, 3.0, 3.2)]
    [1.0, 1.0, 1.6, 3.2]
    """

    def __init__(self, alpha: float = 0.3, shift: float = 0.4, confirm: int = 2,
                 prior_cv: float = 0.1) -> None:
        self.alpha, self.shift, self.confirm, self.prior_cv = alpha, shift, confirm, prior_cv
        self.smoothed: dict[int, EwmaVar] = {}
        self._pending: dict[int, list[float]] = {}

    def update(self, rank: int, time_per_sample_s: float) -> float:
        x = time_per_sample_s
        known = self.smoothed.get(rank)
        old = None if known is None else known.value
        pending = self._pending.setdefault(rank, [])
        if old is not None and abs(x / old - 1.0) > self.shift and (
            not pending or (pending[-1] > old) == (x > old)
        ):
            pending.append(x)
        else:
            pending.clear()
        if known is None or len(pending) >= self.confirm:
            known = self.smoothed[rank] = EwmaVar(self.alpha)
            pending.clear()
            return known.reset(x, self.prior_cv)
        return known.update(x)

    def uncertainty(self, rank: int) -> float:
        """Standard error of the smoothed value (:attr:`EwmaVar.stderr`)."""
        known = self.smoothed.get(rank)
        return 0.0 if known is None else known.stderr


class InProcessPlanner:
    """Rank 0's planner: predictions from gathered windows, the policy, maps to the source."""

    def __init__(
        self, maps: InMemoryMapSource, job_id: str, config: PolicyConfig,
        predictor: EwmaPredictor | None = None, straggler_slowdown: float = 1.5,
    ) -> None:
        self.maps = maps
        self.job_id = job_id
        self.policy = PlanPolicy(config, job_id)
        self.predictor = predictor or EwmaPredictor()
        self.straggler_slowdown = straggler_slowdown
        self.decisions: list[tuple[int, Decision]] = []

    def on_window(self, step: int, seconds: list[float], samples: list[float]) -> None:
        """Feed one window of every rank (``step``: the epoch step it ends at)."""
        latest = self.maps.latest()
        if latest is not None:
            self.policy.observe_map(latest)
        preds = {
            r: self.predictor.update(r, s / n)
            for r, (s, n) in enumerate(zip(seconds, samples, strict=True)) if n > 0
        }
        if not preds:
            return
        median = statistics.median(preds.values())
        now = time.time()
        for r, time_per_sample_s in preds.items():
            slowdown = time_per_sample_s / median if median > 0 else 1.0
            self.policy.observe_prediction(Prediction(
                self.job_id, r, new_event_id(), now, time_per_sample_s=time_per_sample_s,
                uncertainty_s=self.predictor.uncertainty(r), slowdown=slowdown,
                straggler=slowdown >= self.straggler_slowdown,
                based_on_step=step,
            ))
        decision = self.policy.evaluate()
        if decision is None:
            return
        self.decisions.append((step, decision))
        if decision.outcome is Outcome.PUBLISHED and decision.shard_map is not None:
            self.maps.publish(decision.shard_map)
            self.policy.observe_map(decision.shard_map)
