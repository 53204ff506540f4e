"""A short, realistic run written straight into ClickHouse, for tests, demos and screenshots.

Eight ranks train in lock-step for a few minutes; rank 3 slows to 1.8x at 20 %
of the run and rank 5 to 1.5x at 50 %. The planner looks every 10 s and, like
planner_service, skips (with its reason), waits for a confirmation (pending),
or publishes a rebalanced shard map after each onset.
Rows have the shapes the processor and planner write (shardsense/schema/001_core.sql):
timing reports of 10 batches per event, one feature row per report, predictions
every report, a decision row per planner look, a shard-map row per version.
``ingest_ts`` is set explicitly (report time + transport lag) so that the lag
and events/s panels show what a live run would.

Usage: ``python -m dash_app.scenario --clickhouse-url chdb:///tmp/demo --job-id demo``.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["Scenario", "main", "rebalance", "write_scenario"]

_REPORT_BATCHES = 10
_DECISION_EVERY_S = 10.0
_HORIZON_STEPS = 200
_STEPS_PER_EPOCH = 400


@dataclass(frozen=True)
class Scenario:
    """Knobs of the synthetic run; ``slow`` maps rank -> (onset fraction, slowdown)."""

    workers: int = 8
    global_batch: int = 256
    num_shards: int = 64
    duration_s: float = 180.0
    tps_s: float = 0.008
    slow: dict[int, tuple[float, float]] = field(
        default_factory=lambda: {3: (0.2, 1.8), 5: (0.5, 1.5)}
    )
    seed: int = 7

    @property
    def stragglers(self) -> list[int]:
        return sorted(self.slow)


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` that sum to ``total`` (largest remainder).

    >>> _split(256, [1, 1, 1, 0.5])
    [73, 73, 73, 37]
    """
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out))[: total - int(out.sum())]:
        out[i] += 1
    return [int(x) for x in out]


def rebalance(shards: list[list[int]], targets: list[int]) -> list[list[int]]:
    """Move the fewest shards so that rank r owns ``targets[r]`` shards.

    >>> rebalance([[0, 1], [2, 3]], [1, 3])
    [[0], [2, 3, 1]]
    """
    out = [list(s) for s in shards]
    spare: list[int] = []
    for r, want in enumerate(targets):
        while len(out[r]) > want:
            spare.append(out[r].pop())
    for r, want in enumerate(targets):
        while len(out[r]) < want:
            out[r].append(spare.pop())
    return out


class _Writer:
    """Accumulates rows per table and inserts them in large blocks."""

    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "batch_timings": (
            "job_id", "worker_id", "event_id", "seq", "epoch", "step", "samples", "data_wait_s",
            "compute_s", "map_version", "end_ts", "report_ts", "ingest_ts", "host",
        ),
        "worker_features": (
            "job_id", "worker_id", "event_id", "ts", "last_step", "batches", "time_per_sample_s",
            "ewma_tps", "mean_tps", "p50_tps", "p90_tps", "trend", "wait_share", "slowdown",
        ),
        "predictions": (
            "job_id", "worker_id", "event_id", "ts", "based_on_step", "time_per_sample_s",
            "uncertainty_s", "slowdown", "straggler", "model_versions",
        ),
        "planner_decisions": (
            "job_id", "decision_id", "ts", "decision", "reason", "algorithm", "map_version",
            "world_size", "moved_shards", "predicted_gain_s", "move_cost_s", "current_step_s",
            "predicted_step_s", "batch_sizes",
        ),
        "shard_maps": (
            "job_id", "map_version", "event_id", "ts", "apply_epoch", "apply_step", "num_shards",
            "global_batch_size", "batch_sizes", "shards", "predicted_gain_s", "move_cost_s",
            "reason",
        ),
        "dead_letters": (
            "job_id", "event_id", "ts", "code", "reason", "source_topic", "source_partition",
            "source_offset", "payload_bytes",
        ),
    }

    def __init__(self) -> None:
        self.rows: dict[str, list[list[Any]]] = {t: [] for t in self.COLUMNS}

    def add(self, table: str, row: list[Any]) -> None:
        assert len(row) == len(self.COLUMNS[table]), table
        self.rows[table].append(row)

    def flush(self, client: Any) -> dict[str, int]:
        for table, rows in self.rows.items():
            if rows:
                client.insert(table, rows, column_names=list(self.COLUMNS[table]))
        return {t: len(r) for t, r in self.rows.items()}


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _eid() -> str:
    return uuid.uuid4().hex


def write_scenario(
    client: Any, job_id: str, scenario: Scenario | None = None, *, end: float | None = None
) -> dict[str, int]:
    """Write one run for ``job_id`` that ends at ``end`` (default now); rows per table."""
    sc = scenario or Scenario()
    rng = np.random.default_rng(sc.seed)
    end = time.time() if end is None else end
    start = end - sc.duration_s
    out = _Writer()
    n = sc.workers
    shards = [list(range(r * sc.num_shards // n, (r + 1) * sc.num_shards // n)) for r in range(n)]
    sizes = _split(sc.global_batch, [1.0] * n)
    version, step, t = 0, 0, start
    _publish(out, job_id, sc, version, shards, sizes, t, 0, 0.0, 0.0, "initial even split")
    pending: list[Any] | None = None  # (apply_step, shards, sizes) of a published map
    history: list[list[float]] = [[] for _ in range(n)]  # recent time per sample
    ewma = [sc.tps_s] * n
    buffers: list[list[list[Any]]] = [[] for _ in range(n)]
    next_look = start + _DECISION_EVERY_S
    step_times: list[float] = []
    streak = [0]
    while t < end - 0.5:
        if pending and step >= pending[0]:
            version, shards, sizes = version + 1, pending[1], pending[2]
            pending = None
        frac = (t - start) / sc.duration_s
        factor = [
            sc.slow[r][1] if r in sc.slow and frac >= sc.slow[r][0] else 1.0 for r in range(n)
        ]
        wait = rng.gamma(4.0, 0.0025, n)
        compute = np.array(sizes) * sc.tps_s * np.array(factor) * rng.lognormal(0, 0.06, n)
        step_s = float((wait + compute).max()) + 0.004  # the all-reduce waits for the slowest
        epoch, in_epoch = divmod(step, _STEPS_PER_EPOCH)  # rows carry the step within its epoch
        for r in range(n):
            done = t + float(wait[r] + compute[r])
            batch = [epoch, in_epoch, sizes[r], float(wait[r]), float(compute[r]), version, done]
            buffers[r].append(batch)
            history[r].append(float((wait[r] + compute[r]) / sizes[r]))
            if len(buffers[r]) == _REPORT_BATCHES:
                _report(out, job_id, r, buffers[r], history, ewma, rng)
                buffers[r] = []
        step_times.append(step_s)
        t += step_s
        step += 1
        if t >= next_look and pending is None:
            next_look += _DECISION_EVERY_S
            pending = _decide(out, job_id, sc, version, shards, sizes, ewma, step_times, t, step,
                              streak)
    for r in range(n):
        if buffers[r]:
            _report(out, job_id, r, buffers[r], history, ewma, rng)
    _dead_letters(out, job_id, end)
    return out.flush(client)


def _report(
    out: _Writer, job: str, rank: int, batches: list[list[Any]], history: list[list[float]],
    ewma: list[float], rng: np.random.Generator,
) -> None:
    """One timing report of ``batches`` plus the feature and prediction rows it causes."""
    eid, step = _eid(), batches[-1][1]
    report_ts = batches[-1][6] + 0.005
    ingest = report_ts + float(rng.uniform(0.03, 0.09))
    for seq, (epoch, st, samples, wait, compute, version, done) in enumerate(batches):
        out.add("batch_timings", [
            job, rank, eid, seq, epoch, st, samples, wait, compute, version,
            _us(done), _us(report_ts), _us(ingest), f"node{rank // 4}",
        ])
    recent = np.array(history[rank][-len(batches):])
    for x in recent:
        ewma[rank] = 0.7 * ewma[rank] + 0.3 * float(x)
    fleet = float(np.median([h[-1] for h in history if h]))
    waits = sum(b[3] for b in batches)
    total = waits + sum(b[4] for b in batches)
    window = np.array(history[rank][-50:])
    trend = float(np.polyfit(np.arange(len(window)), window, 1)[0]) if len(window) > 2 else 0.0
    slowdown = float(recent.mean()) / fleet
    ts = ingest + 0.01
    out.add("worker_features", [
        job, rank, eid, _us(ts), step, len(batches), float(recent.mean()), ewma[rank],
        float(window.mean()), float(np.percentile(window, 50)), float(np.percentile(window, 90)),
        trend, waits / total, slowdown,
    ])
    fleet_ewma = float(np.median(ewma))
    pred_slow = ewma[rank] / fleet_ewma
    out.add("predictions", [
        job, rank, _eid(), _us(ts + 0.02), step, ewma[rank], float(recent.std()), pred_slow,
        int(pred_slow > 1.3), {"online": "river-hatr-1", "batch": "xgb-3"},
    ])


def _decide(
    out: _Writer, job: str, sc: Scenario, version: int, shards: list[list[int]],
    sizes: list[int], ewma: list[float], step_times: list[float], t: float, step: int,
    streak: list[int],
) -> list[Any] | None:
    """A planner look, worded like planner_service.policy: skipped, pending or published.

    A rebalance must improve the step by 10 %, beat its move cost, and be seen
    on two looks in a row (``streak``) before it is published.
    """
    current = float(np.mean(step_times[-30:]))
    proposal = _split(sc.global_batch, [1.0 / e for e in ewma])
    # Scale the measured step by the modelled ratio, so noise in the max cancels out.
    modelled_now = max(b * e for b, e in zip(sizes, ewma, strict=True))
    predicted = current * max(b * e for b, e in zip(proposal, ewma, strict=True)) / modelled_now
    new_shards = rebalance(shards, _split(sc.num_shards, proposal))
    moved = sum(len(set(a) - set(b)) for a, b in zip(new_shards, shards, strict=True))
    gain = (current - predicted) * _HORIZON_STEPS
    cost = 0.05 * moved
    improvement = (current - predicted) / current
    head = (f"step {current:.4g}s -> {predicted:.4g}s ({improvement:+.1%}) "
            f"over {_HORIZON_STEPS} steps")
    decision, new_version = "skipped", version
    if improvement <= 0.1:
        reason = f"{head}: improvement below 10.0%"
    elif gain < cost:
        reason = (f"{head}: not worth moving: gain {gain:.3g}s < 1 x cost {cost:.3g}s "
                  f"({moved} shards)")
    else:
        streak[0] += 1
        if streak[0] < 2:
            decision, reason = "pending", f"{head}: confirmation {streak[0]}/2"
        else:
            decision, new_version, reason = "published", version + 1, f"{head}: worth it"
    if decision == "skipped":
        streak[0] = 0
    out.add("planner_decisions", [
        job, _eid(), _us(t), decision, reason, "proportional", new_version, sc.workers, moved,
        gain, cost, current, predicted, proposal,
    ])
    if decision != "published":
        return None
    streak[0] = 0
    apply_step = step + 2
    _publish(out, job, sc, new_version, new_shards, proposal, t + 0.05, apply_step, gain, cost,
             reason)
    return [apply_step, new_shards, proposal]


def _publish(
    out: _Writer, job: str, sc: Scenario, version: int, shards: list[list[int]],
    sizes: list[int], t: float, apply_step: int, gain: float, cost: float, reason: str,
) -> None:
    out.add("shard_maps", [
        job, version, _eid(), _us(t), *divmod(apply_step, _STEPS_PER_EPOCH), sc.num_shards,
        sc.global_batch, sizes, shards, gain, cost, reason,
    ])


def _dead_letters(out: _Writer, job: str, end: float) -> None:
    for i, (code, reason) in enumerate([
        ("bad_version", "schema version 9 is not supported (supported: 1)"),
        ("not_json", "payload is not valid JSON"),
        ("missing_field", "field 'event_id' is required"),
    ]):
        out.add("dead_letters", [job, _eid(), _us(end - 60 + 20 * i), code, reason,
                                 "shardsense.timings", i % 2, 1000 + i, 120 + i])


def main(argv: Sequence[str] | None = None) -> int:
    """Apply the schema and write one scenario run; prints rows per table."""
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema
    from shardsense.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m dash_app.scenario", description=__doc__)
    Settings.add_arguments(parser)
    settings = Settings.from_args(parser.parse_args(argv))
    client = connect(settings.resolved_clickhouse_url)
    apply_schema(client)
    counts = write_scenario(client, settings.job_id)
    print(f"job {settings.job_id}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
