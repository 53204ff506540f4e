"""A short run of a simulated fleet through the real writers, into ClickHouse, for the console.

The console's integration and browser tests, its screenshots and the empty
page's hint use this. Nothing here imitates a service: eight ranks of a
:class:`~producers.simulate.SimulatedFleet` train in lock-step (rank 3 slows
1.8x a fifth into the run, rank 5 1.5x halfway), rank 0's first map is the
runtime's own (``producers.maps.elastic_map``); their timing reports go
through the processor's ``Predictor`` (features, forecasts, onset alarms) and
its predictions through the planner's ``PlanPolicy``, every
``planner_every_s``, whose published maps the fleet follows from the next
step. Rows are built by :mod:`shardsense.tables` as the services build them;
dead letters come from ``ingest.route`` on three bad payloads.

Simulated time is compressed: the run ends now and started ``duration_s``
ago, so every time column is set from the simulation (``ingest_ts`` = report
time + a transport lag), which the live page's lag and rate panels read.

Usage: ``python -m benchmarks.console_fixture --clickhouse-url chdb:///tmp/demo --job-id demo``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from planner_service.policy import Decision, Outcome, PlanPolicy, PolicyConfig
from producers.maps import JobShape, elastic_map
from producers.simulate import SimulatedFleet
from shardsense.events import DeadLetter, Prediction, ShardMap, TimingReport, new_event_id
from shardsense.settings import Settings
from shardsense.tables import (
    BATCH_TIMINGS,
    DEAD_LETTERS,
    PLANNER_DECISIONS,
    PREDICTIONS,
    SHARD_MAPS,
    WORKER_FEATURES,
    FeatureRow,
    dead_letter_row,
    prediction_row,
    shard_map_row,
    timing_table,
)
from stream_processors.ingest import route
from stream_processors.predictor import Predictor

__all__ = ["FixtureRun", "main", "write_run"]

#: Payloads the processor rejects: each becomes one dead letter with its reason.
BAD_PAYLOADS = (b'{"v": 9}', b"{oops", b'{"v": 1, "kind": "timing_report", "job_id": "j"}')


@dataclass(frozen=True)
class FixtureRun:
    """The simulated job; ``lags`` maps rank -> (onset step, slowdown)."""

    workers: int = 8
    global_batch: int = 256
    num_shards: int = 64
    steps_per_epoch: int = 400
    duration_s: float = 180.0
    s_per_sample: float = 0.008
    lags: dict[int, tuple[int, float]] = field(
        default_factory=lambda: {3: (130, 1.8), 5: (330, 1.5)}
    )
    report_batches: int = 10
    planner_every_s: float = 10.0
    step_overhead_s: float = 0.004
    seed: int = 7

    @property
    def stragglers(self) -> list[int]:
        return sorted(self.lags)


@dataclass
class _LaggingFleet(SimulatedFleet):
    """A SimulatedFleet whose ranks lag from their own onset steps."""

    lags: dict[int, tuple[int, float]] = field(default_factory=dict)

    def seconds_per_sample(self, rank: int, step: int | None = None) -> float:
        step = self.step if step is None else step
        onset, slowdown = self.lags.get(rank, (0, 1.0))
        return self.base_s_per_sample * (slowdown if step >= onset else 1.0)


@dataclass
class _Rows:
    """What the writers produced, kept for one insert per table."""

    reports: list[TimingReport] = field(default_factory=list)
    ingest_lag_s: list[float] = field(default_factory=list)
    features: list[FeatureRow] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    maps: list[ShardMap] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class _Job:
    """The fleet, the processor's predictor and the planner's policy, on one simulated clock."""

    def __init__(self, job_id: str, run: FixtureRun, start: float, model_dir: str) -> None:
        self.run, self.now = run, start
        self.rng = np.random.default_rng(run.seed)
        self.fleet = _LaggingFleet(run.workers, (), base_s_per_sample=run.s_per_sample,
                                   seed=run.seed, lags=run.lags)
        settings = Settings.from_env({}, job_id=job_id, data_dir=model_dir)
        self.predictor = Predictor(settings)
        self.policy = PlanPolicy(PolicyConfig.from_settings(settings), job_id,
                                 clock=lambda: self.now)
        shape = JobShape(job_id, run.steps_per_epoch * run.global_batch, run.num_shards,
                         run.global_batch)
        first = elastic_map(shape, 1, run.workers, None, reason="first map of the job (rank 0)")
        self.rows = _Rows()
        self.current = self._adopt(first)
        self.pending: ShardMap | None = None
        self.buffers: list[list[tuple[Any, ...]]] = [[] for _ in range(run.workers)]

    def _adopt(self, m: ShardMap) -> ShardMap:
        """A map on the (simulated) topic: stamped now, stored, and the policy's base."""
        m = dataclasses.replace(m, ts=self.now)
        self.rows.maps.append(m)
        self.policy.observe_map(m)
        return m

    def step(self, step: int) -> None:
        """One lock-step training step of every rank; reports every ``report_batches``."""
        if self.pending is not None:
            self.current, self.pending = self.pending, None
        sizes = self.current.batch_sizes
        compute = self.fleet.step_times(sizes)
        wait = self.rng.gamma(4.0, 0.0025, self.run.workers)
        epoch, in_epoch = divmod(step, self.run.steps_per_epoch)
        for r in range(self.run.workers):
            end = self.now + float(wait[r]) + compute[r]
            self.buffers[r].append((epoch, in_epoch, sizes[r], float(wait[r]), compute[r],
                                    self.current.map_version, end))
        self.now += float(max(w + c for w, c in zip(wait, compute, strict=True)))
        self.now += self.run.step_overhead_s
        if len(self.buffers[0]) == self.run.report_batches:
            self._report()

    def _report(self) -> None:
        """Every rank's timing report, through the processor's predictor and the planner."""
        reports = []
        for r, rows in enumerate(self.buffers):
            columns = dict(zip(("epoch", "step", "samples", "data_wait_s", "compute_s",
                                "map_version", "end_ts"), map(list, zip(*rows, strict=True)),
                               strict=True))
            ts = rows[-1][-1] + 0.005
            reports.append(TimingReport(self.policy.job_id, r, new_event_id(), ts, columns,
                                        f"node{r // 4}"))
        self.buffers = [[] for _ in self.buffers]
        features, predictions = self.predictor.update(reports)
        self.rows.reports.extend(reports)
        self.rows.ingest_lag_s.extend(self.rng.uniform(0.03, 0.09, len(reports)).tolist())
        self.rows.features.extend(features)
        self.rows.predictions.extend(predictions)
        for p in predictions:
            self.policy.observe_prediction(p)

    def look(self) -> None:
        """One planner evaluation; a published map applies from the next step."""
        decision = self.policy.evaluate()
        if decision is None:
            return
        self.rows.decisions.append(decision)
        if decision.outcome is Outcome.PUBLISHED and decision.shard_map is not None:
            self.pending = self._adopt(decision.shard_map)


def _dead_letters(job: _Job, end: float) -> list[DeadLetter]:
    """The processor's own dead letters for ``BAD_PAYLOADS``, in the run's last minute."""
    routed = route([(raw, i % 2, 1000 + i) for i, raw in enumerate(BAD_PAYLOADS)],
                   topic="shardsense.timings", max_bytes=1 << 20)
    job_id = job.policy.job_id
    return [dataclasses.replace(d, job_id=job_id, ts=end - 60 + 20 * i)
            for i, d in enumerate(routed.dead)]


def _timings(rows: _Rows) -> Any:
    """The ingest path's Arrow rows plus ``ingest_ts`` (the column ClickHouse defaults)."""
    table = timing_table(rows.reports)
    lags = np.repeat([r.ts + lag for r, lag in zip(rows.reports, rows.ingest_lag_s,
                                                      strict=True)],
                     [len(r) for r in rows.reports])
    return table.append_column("ingest_ts", pa.array(np.round(lags * 1e6).astype(np.int64),
                                                     pa.timestamp("us")))


def write_run(
    client: Any, job_id: str, run: FixtureRun | None = None, *, end: float | None = None
) -> dict[str, int]:
    """Simulate one run of ``job_id`` ending at ``end`` (default now); rows written per table."""
    run = run or FixtureRun()
    end = time.time() if end is None else end
    with tempfile.TemporaryDirectory(prefix="shardsense-fixture-") as model_dir:
        job = _Job(job_id, run, end - run.duration_s, model_dir)
        next_look, step = job.now + run.planner_every_s, 0
        while job.now < end - 0.5:
            job.step(step)
            step += 1
            if job.now >= next_look:
                next_look += run.planner_every_s
                job.look()
    rows = job.rows
    rows.dead = _dead_letters(job, end)
    client.insert_arrow(BATCH_TIMINGS.name, _timings(rows))
    WORKER_FEATURES.insert(client, [f.values() for f in rows.features])
    PREDICTIONS.insert(client, [prediction_row(p) for p in rows.predictions])
    PLANNER_DECISIONS.insert(client, [d.row(job_id) for d in rows.decisions])
    SHARD_MAPS.insert(client, [shard_map_row(m) for m in rows.maps])
    DEAD_LETTERS.insert(client, [dead_letter_row(d) for d in rows.dead])
    return {
        BATCH_TIMINGS.name: sum(len(r) for r in rows.reports),
        WORKER_FEATURES.name: len(rows.features), PREDICTIONS.name: len(rows.predictions),
        PLANNER_DECISIONS.name: len(rows.decisions), SHARD_MAPS.name: len(rows.maps),
        DEAD_LETTERS.name: len(rows.dead),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Apply the schema and write one run; prints rows per table."""
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema

    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_fixture",
                                     description=__doc__.split("\n")[0])
    Settings.add_arguments(parser)
    settings = Settings.from_args(parser.parse_args(argv))
    client = connect(settings.resolved_clickhouse_url)
    apply_schema(client)
    counts = write_run(client, settings.job_id)
    print(f"job {settings.job_id}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
