"""A simulated fleet's timing reports, paced in real time and packed as the sink packs them.

:class:`Fleet` is jobs x ranks x steps/s. Every rank takes a step every
``1 / steps_per_s`` seconds (each its own phase), one rank per job is
``straggler_x`` slower, and each step's timing is queued and shipped by the
timing sink's own flush policy and packing (``producers.telemetry`` /
``producers.timingpack``): a report leaves when the policy says so, as the
payload ``pack_timings`` makes, keyed by job. Only the sender thread and the
producer are simulated, one event loop for all ranks, so thousands of ranks
fit one process.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardsense.settings import Settings

__all__ = ["Fleet", "FleetRun", "flush_policy", "run_fleet"]

#: Seconds per sample of a normal rank (32 samples per step: ~10 ms of compute).
BASE_S_PER_SAMPLE = 0.01 / 32
SAMPLES = 32


@dataclass(frozen=True)
class Fleet:
    """``jobs`` x ``ranks`` (per job) x ``steps_per_s``; reports at most every ``flush_s``."""

    jobs: int
    ranks: int
    steps_per_s: float
    flush_s: float = 1.0
    straggler_x: float = 1.5
    max_per_report: int = 2000

    def __post_init__(self) -> None:
        for name in ("jobs", "ranks", "steps_per_s", "flush_s", "max_per_report"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def total_ranks(self) -> int:
        return self.jobs * self.ranks

    @property
    def timings_per_s(self) -> float:
        return self.total_ranks * self.steps_per_s

    @property
    def reports_per_s(self) -> float:
        """Reports per second the policy sends in the steady state."""
        per_rank = self.steps_per_s if 1 / self.steps_per_s >= self.flush_s else 1 / self.flush_s
        return self.total_ranks * per_rank

    def __str__(self) -> str:
        return f"{self.jobs} x {self.ranks} x {self.steps_per_s:g}/s"


Policy = Callable[[float, int, float], "float | None"]


def _fixed_period(now: float, queued: int, last: float, *, flush_every_s: float,
                  max_per_report: int) -> float | None:
    """The sink's policy before it adapted: a report every ``flush_every_s`` or when full."""
    if queued <= 0:
        return None
    return 0.0 if queued >= max_per_report else max(0.0, last + flush_every_s - now)


def flush_policy(flush_s: float, max_per_report: int) -> Policy:
    """The sink's flush policy as ``(now, queued, last_report_at) -> seconds or None``:
    ``producers.telemetry.next_report_in`` where the sink has it."""
    import producers.telemetry as telemetry

    decide = getattr(telemetry, "next_report_in", _fixed_period)

    def policy(now: float, queued: int, last: float) -> float | None:
        wait: float | None = decide(now, queued, last, flush_every_s=flush_s,
                                    max_per_report=max_per_report)
        return wait
    return policy


@dataclass
class FleetRun:
    """What the generator sent."""

    reports: int = 0
    timings: int = 0
    started: float = 0.0
    stopped: float = 0.0
    cpu_s: float = 0.0
    late_s: float = 0.0  # the worst lag of the generator behind its schedule

    @property
    def duration_s(self) -> float:
        return max(self.stopped - self.started, 1e-9)


class _Rank:
    __slots__ = ("job", "last", "queue", "rank", "slow", "step")

    def __init__(self, job: str, rank: int, slow: float) -> None:
        self.job, self.rank, self.slow = job, rank, slow
        self.queue: list[tuple[int, int, int, float, float, int, float]] = []
        self.step = 0
        self.last = -math.inf


def run_fleet(settings: Settings, fleet: Fleet, seconds: float, jobs: list[str],
              seed: int = 0) -> FleetRun:
    """Send ``fleet``'s reports for ``seconds`` (blocking) as the jobs ``jobs``."""
    from confluent_kafka import Producer

    from producers.timingpack import pack_timings
    from shardsense.kafka import producer_config
    from shardsense.topics import job_key

    rng = np.random.default_rng(seed)
    policy = flush_policy(fleet.flush_s, fleet.max_per_report)
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    if len(jobs) != fleet.jobs:
        raise ValueError(f"jobs: {len(jobs)} names for a fleet of {fleet.jobs} jobs")
    ranks = [_Rank(job, r, fleet.straggler_x if r == 1 else 1.0)
             for job in jobs for r in range(fleet.ranks)]
    period = 1.0 / fleet.steps_per_s
    noise = rng.lognormal(0, 0.05, 4096)
    run = FleetRun(started=time.time())
    cpu0 = time.process_time()
    t0 = time.monotonic()
    # events: (due, kind 0 = step / 1 = flush check, rank index)
    events = [(t0 + period * float(rng.random()), 0, i) for i in range(len(ranks))]
    heapq.heapify(events)
    end = t0 + seconds
    n = 0

    def send(rank: _Rank, now: float) -> None:
        payloads, _bad = pack_timings(rank.job, rank.rank, rank.queue,
                                      max_per_report=fleet.max_per_report,
                                      max_bytes=settings.max_event_bytes, host="fleet")
        for payload, count in payloads:
            _produce(producer, settings.topic_timings, payload, job_key(rank.job))
            run.reports += 1
            run.timings += count
        rank.queue = []
        rank.last = now

    while events:
        due, kind, i = heapq.heappop(events)
        if due >= end:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            run.late_s = max(run.late_s, -delay)
        rank = ranks[i]
        if kind == 0:
            n += 1
            compute = BASE_S_PER_SAMPLE * SAMPLES * rank.slow * float(noise[n % 4096])
            rank.queue.append((0, rank.step, SAMPLES, 0.0002, compute, 1, time.time()))
            rank.step += 1
            heapq.heappush(events, (due + period, 0, i))
        wait = policy(due, len(rank.queue), rank.last)
        if wait == 0.0:
            send(rank, due)
        elif wait is not None and (kind == 1 or len(rank.queue) == 1):
            heapq.heappush(events, (due + wait, 1, i))  # one pending check per rank
        producer.poll(0)
    for rank in ranks:
        if rank.queue:
            send(rank, time.monotonic())
    producer.flush(60)
    run.stopped = time.time()
    run.cpu_s = time.process_time() - cpu0
    return run


def _produce(producer: Any, topic: str, payload: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, payload, key)
            return
        except BufferError:
            producer.poll(0.05)
