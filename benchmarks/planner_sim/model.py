"""The simulated job behind ``shardsense planner-sim``: scenarios, processor model, runtime.

See the package doc. Pure simulation (numpy, the planner's own policy and job
table); no I/O, no wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner_service.jobs import JobTable
from planner_service.policy import Outcome, PlanPolicy, PolicyConfig
from shardsense.events import Prediction, ShardMap

__all__ = ["JOB", "SCENARIOS", "PlannerFactory", "PlannerModel", "ProcessorModel", "Run",
           "Scenario", "SimConfig", "planner_factory", "simulate"]

JOB = "sim"


@dataclass(frozen=True)
class Scenario:
    """Slowdown factor per (rank, step): a persistent onset and/or a recurring burst.

    ``forecast`` > 0: the processor model forecasts the pattern's changes with
    that confidence (an oracle's forecast); ``phantom``: it forecasts them but
    they never happen (a wrong forecast: the trace stays flat).
    """

    name: str
    rank: int = -1
    factor: float = 1.0
    onset: int = 0
    period: int = 0  # > 0: recurring, ``factor`` for ``duty`` of every ``period`` steps
    duty: int = 0
    noise: float = 0.05  # half-width of uniform per-batch noise (0.2 = +-20%)
    steps: int = 0  # 0: SimConfig.steps
    forecast: float = 0.0
    phantom: bool = False

    def pattern(self, rank: int, step: int) -> float:
        """The pattern's factor (what a forecast says)."""
        if rank != self.rank or step < self.onset:
            return 1.0
        if self.period and (step - self.onset) % self.period >= self.duty:
            return 1.0
        return self.factor

    def slowdown(self, rank: int, step: int) -> float:
        """The true factor (a phantom pattern never happens)."""
        return 1.0 if self.phantom else self.pattern(rank, step)


SCENARIOS = {s.name: s for s in (
    Scenario("onset-2.5x", rank=1, factor=2.5, onset=40),
    Scenario("onset-3x", rank=3, factor=3.0, onset=100),
    Scenario("onset-2x-noisy", rank=2, factor=2.0, onset=60, noise=0.2),
    Scenario("none-noise", noise=0.2, steps=1000),
    Scenario("burst", rank=3, factor=2.0, onset=50, period=150, duty=50, steps=500),
    Scenario("burst-forecast", rank=3, factor=2.0, onset=50, period=150, duty=50, steps=500,
             forecast=0.9),
    Scenario("burst-phantom", rank=3, factor=2.0, onset=50, period=150, duty=50, steps=500,
             forecast=0.9, phantom=True),
)}


@dataclass(frozen=True)
class SimConfig:
    """The simulated job and the latencies around the planner (defaults: the bench's)."""

    world: int = 4
    global_batch: int = 64
    num_shards: int = 128
    steps_per_epoch: int = 200
    steps: int = 300
    s_per_sample: float = 0.003
    overhead_s: float = 0.008
    visible_after_s: float = 0.3  # batch end -> the processor has its timing
    processor_every_s: float = 0.5  # one prediction per rank per tick
    prediction_latency_s: float = 0.02
    map_latency_s: float = 0.1
    sync_every: int = 8
    lead_steps: int = 8
    relevel: bool = True
    ramp_alpha: float = 0.35
    alarm_ratio: float = 1.3
    seed: int = 0


@dataclass
class _Rank:
    level: float = math.nan
    error: float = 0.1
    straggler: bool = False
    onset: int = 0
    since: list[float] = field(default_factory=list)  # per-sample times since the onset


class ProcessorModel:
    """One prediction per rank per tick from the timings visible by then."""

    def __init__(self, cfg: SimConfig, scenario: Scenario) -> None:
        self.cfg, self.scenario = cfg, scenario
        self.ranks = [_Rank() for _ in range(cfg.world)]
        self.seen = 0  # steps already read

    def tick(self, now: float, ends: Sequence[float], per_sample: np.ndarray) -> list[Prediction]:
        upto = self.seen
        while upto < len(ends) and ends[upto] <= now - self.cfg.visible_after_s:
            upto += 1
        if upto == self.seen:
            return []
        new = per_sample[self.seen:upto]  # (steps, world)
        first, self.seen = self.seen, upto
        means = new.mean(axis=0)
        median = float(np.median(means))
        return [self._rank(r, first, new[:, r], float(means[r]) / median, now)
                for r in range(self.cfg.world)]

    def _rank(self, r: int, first: int, xs: np.ndarray, rel: float, now: float) -> Prediction:
        cfg, st = self.cfg, self.ranks[r]
        mean = float(xs.mean())
        if math.isnan(st.level):
            st.level = mean
        flip = (not st.straggler and rel >= cfg.alarm_ratio) or (
            st.straggler and rel < (1 + cfg.alarm_ratio) / 2)
        err = abs(mean - st.level) / st.level
        st.error = 0.8 * st.error + 0.2 * err
        if flip:
            st.straggler = not st.straggler
            onset = first + _change_point(xs)
            if cfg.relevel:
                st.onset, st.since = onset, [float(x) for x in xs[onset - first:]]
                st.level = float(np.mean(st.since))
        elif cfg.relevel and st.since:
            st.since = (st.since + [float(x) for x in xs])[-32:]
            st.level = float(np.mean(st.since))
        if not (cfg.relevel and (flip or st.since)):
            st.level += cfg.ramp_alpha * (mean - st.level)
        step = first + len(xs) - 1
        epoch, in_epoch = divmod(step, cfg.steps_per_epoch)
        onset_epoch_step = st.onset % cfg.steps_per_epoch if st.onset else 0
        offsets, levels = self._forecast(r, step)
        return Prediction(
            JOB, r, f"p{r}-{step}-{now:.3f}", now, time_per_sample_s=st.level,
            uncertainty_s=st.error * st.level, slowdown=rel, straggler=st.straggler,
            based_on_step=in_epoch, based_on_epoch=epoch, onset_step=onset_epoch_step,
            forecast_offsets=offsets, forecast_time_per_sample_s=levels,
            forecast_confidence=self.scenario.forecast if offsets else 0.0,
        )

    def _forecast(self, r: int, step: int) -> tuple[list[int], list[float]]:
        """The pattern's changes over the next epoch (the oracle's forecast)."""
        if self.scenario.forecast <= 0:
            return [], []
        offsets, levels = [], []
        now = self.scenario.pattern(r, step)
        for k in range(1, self.cfg.steps_per_epoch):
            f = self.scenario.pattern(r, step + k)
            if f != now:
                offsets.append(k)
                levels.append(f * self.cfg.s_per_sample)
                now = f
        return offsets, levels


def _change_point(xs: np.ndarray) -> int:
    """Index in ``xs`` that best splits it into two levels (0: the change came before)."""
    if len(xs) < 2:
        return 0
    costs = [np.var(xs[:k]) * k + np.var(xs[k:]) * (len(xs) - k) if k else np.var(xs) * len(xs)
             for k in range(len(xs))]
    return int(np.argmin(costs))


@dataclass
class PlannerModel:
    """One job's policy behind the service's evaluation schedule (:class:`JobTable`)."""

    jobs: JobTable

    @property
    def policy(self) -> PlanPolicy:
        job = self.jobs.get(JOB)
        assert job is not None
        return job.policy

    def on_predictions(self, preds: list[Prediction]) -> None:
        for p in preds:
            self.policy.observe_prediction(p)
        if preds:
            self.jobs.touch(JOB)

    def due(self) -> bool:
        return bool(self.jobs.due())


PlannerFactory = Callable[[Callable[[], float]], PlannerModel]


def planner_factory(config: PolicyConfig, debounce_s: float, interval_s: float
                    ) -> PlannerFactory:
    """Planners on ``config``; a huge ``debounce_s`` leaves only the timer (the old cadence)."""
    def make(clock: Callable[[], float]) -> PlannerModel:
        jobs = JobTable(config, debounce_s=debounce_s, interval_s=interval_s, idle_s=1e9,
                        clock=clock)
        jobs.policy(JOB, partition=0)
        return PlannerModel(jobs)
    return make


@dataclass
class _Loop:
    """The runtime side: the map in force per step and rank 0's view of the source."""

    cfg: SimConfig
    plan: list[tuple[int, ShardMap]]
    source: list[tuple[float, ShardMap]] = field(default_factory=list)

    def in_force(self, step: int) -> ShardMap:
        return [m for s, m in self.plan if s <= step][-1]

    def sync(self, step: int, now: float) -> None:
        """Rank 0 at a sync point: the newest visible map, for ``lead_steps`` later."""
        visible = [m for t, m in self.source if t <= now]
        if not visible:
            return
        m, newest = visible[-1], self.plan[-1][1].map_version
        apply = step + self.cfg.lead_steps
        at = m.apply_epoch * self.cfg.steps_per_epoch + m.apply_step
        if m.map_version > newest and at <= apply:
            self.plan.append((apply, m))


@dataclass
class Run:
    """What one simulated run recorded (steps are the run's global steps)."""

    batches: np.ndarray  # (steps, world)
    true: np.ndarray  # (steps, world) seconds per sample without noise
    arrivals: list[tuple[int, Prediction]] = field(default_factory=list)
    decisions: list[tuple[int, Any]] = field(default_factory=list)
    plan: list[tuple[int, ShardMap]] = field(default_factory=list)

    def step_s(self, batches: np.ndarray, overhead_s: float) -> float:
        """Total noise-free step time if ``batches`` had been trained."""
        return float((np.max(batches * self.true, axis=1) + overhead_s).sum())


def simulate(scenario: Scenario, cfg: SimConfig, make_planner: PlannerFactory) -> Run:
    """One run of ``scenario`` (``cfg.steps`` unless it says otherwise)."""
    steps = scenario.steps or cfg.steps
    rng = np.random.default_rng(cfg.seed)
    clock = [0.0]
    planner = make_planner(lambda: clock[0])
    per = cfg.num_shards // cfg.world
    first = ShardMap.build(JOB, 1, [list(range(r * per, (r + 1) * per)) for r in range(cfg.world)],
                           [cfg.global_batch // cfg.world] * cfg.world, worker_id=0,
                           num_samples=cfg.steps_per_epoch * cfg.global_batch)
    planner.policy.observe_map(first)
    loop = _Loop(cfg, [(0, first)])
    processor = ProcessorModel(cfg, scenario)
    true = np.array([[scenario.slowdown(r, t) for r in range(cfg.world)]
                     for t in range(steps)]) * cfg.s_per_sample
    run = Run(np.zeros((steps, cfg.world), dtype=np.int64), true, plan=loop.plan)
    per_sample = true * rng.uniform(1 - scenario.noise, 1 + scenario.noise, true.shape)
    ends: list[float] = []
    inbox: list[tuple[float, list[Prediction]]] = []
    next_tick = cfg.processor_every_s
    for t in range(steps):
        if t % cfg.sync_every == 0:
            loop.sync(t, clock[0])
        run.batches[t] = loop.in_force(t).batch_sizes
        clock[0] += float(np.max(per_sample[t] * run.batches[t])) + cfg.overhead_s
        ends.append(clock[0])
        while next_tick <= clock[0]:
            preds = processor.tick(next_tick, ends, per_sample)
            inbox.append((next_tick + cfg.prediction_latency_s, preds))
            next_tick += cfg.processor_every_s
        while inbox and inbox[0][0] <= clock[0]:
            preds = inbox.pop(0)[1]
            run.arrivals.extend((t, p) for p in preds)
            planner.on_predictions(preds)
        if planner.due():
            _evaluate(planner, run, loop, t, clock[0] + cfg.map_latency_s)
    return run


def _evaluate(planner: PlannerModel, run: Run, loop: _Loop, t: int, visible_at: float) -> None:
    d = planner.policy.evaluate()
    if d is None:
        return
    run.decisions.append((t, d))
    if d.outcome is Outcome.PUBLISHED and d.shard_map is not None:
        planner.policy.observe_map(d.shard_map)
        loop.source.append((visible_at, d.shard_map))


