"""End-to-end throughput benchmark: producer -> Kafka -> processor -> rows in ClickHouse.

Runs the real Faust processor (with the learning hook) against the embedded
broker and an in-process chDB, unless ``--kafka-bootstrap``/``--clickhouse-url``
point elsewhere. Two phases in one run:

1. *capacity*: a backlog of ``--backlog`` timings is produced first, then the
   processor starts; rows/s while it drains (its maximum rate here).
2. *paced*: ``--rate`` timings/s for ``--seconds`` while the processor runs;
   achieved rows/s and report -> row latency (``ingest_ts - report_ts``) p50/p99.

Timings are packed ``--per-report`` to a message (the processor pays per message).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from shardsense.settings import Settings

__all__ = ["main", "payloads"]


def payloads(job: str, workers: int, per_report: int, seed: int = 0) -> list[bytes]:
    """Per worker, the JSON of a ``timings`` object (pre-encoded: the producer must not
    be what is measured). Each report still gets its own event id and timestamp."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(workers):
        n = per_report
        compute = (0.01 * (1 + 0.5 * (w == 0)) * rng.lognormal(0, 0.05, n)).round(6)
        cols = {
            "epoch": [0] * n, "step": list(range(n)), "samples": [32] * n,
            "data_wait_s": (compute * 0.1).round(6).tolist(), "compute_s": compute.tolist(),
            "map_version": [1] * n, "end_ts": [1.7e9 + i * 0.01 for i in range(n)],
        }
        out.append(json.dumps(cols, separators=(",", ":")).encode())
    return out


def _message(job: str, worker: int, timings_json: bytes) -> bytes:
    head = (f'{{"v":1,"kind":"timing_report","job_id":"{job}","worker_id":{worker},'
            f'"event_id":"{uuid.uuid4().hex}","ts":{time.time():.6f},"host":"bench","timings":')
    return head.encode() + timings_json + b"}"


def _produce(settings: Settings, bodies: list[bytes], total: int, rate: float) -> int:
    """Produce ``total`` timings (rate-limited if ``rate`` > 0); returns messages sent."""
    from confluent_kafka import Producer

    from shardsense.kafka import producer_config
    from shardsense.topics import job_key

    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    per = len(json.loads(bodies[0])["step"])
    messages = total // per
    start = time.perf_counter()
    for i in range(messages):
        if i == 1 and rate > 0:
            # A fresh idempotent producer's first delivery waits ~0.5 s for its
            # producer id (embedded broker); a trainer pays that once at start-up.
            # Pace from here, so the ~25 reports queued behind it in the first
            # half second are not what the latency percentiles measure.
            producer.flush(30)
            start = time.perf_counter() - per / rate
        if rate > 0:
            due = start + i * per / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        w = i % len(bodies)
        while True:
            try:
                producer.produce(settings.topic_timings, _message(settings.job_id, w, bodies[w]),
                                 key=job_key(settings.job_id))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return messages


def _count(client: Any, job: str) -> int:
    return int(client.query("SELECT count() FROM batch_timings WHERE job_id = {j:String}",
                            parameters={"j": job}).result_rows[0][0])


def _wait_rows(client: Any, job: str, expected: int, timeout: float) -> float:
    """Seconds until ``expected`` rows are in (raw table; dedup checked at the end)."""
    start = time.perf_counter()
    while _count(client, job) < expected:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"only {_count(client, job)} of {expected} rows after {timeout}s")
        time.sleep(0.05)
    return time.perf_counter() - start


def _stages(stats: dict[str, float], hook_stats: list[dict[str, float]]) -> str:
    """Where the processor's time went, per batch, from its own counters."""
    n = max(stats.get("batches", 0), 1)
    parts = [f"{stats.get('batches', 0):.0f} batches of {stats.get('timings', 0) / n:,.0f} "
             f"timings; per batch: route {1e3 * stats.get('route_s', 0) / n:.1f} ms, "
             f"store {1e3 * stats.get('store_s', 0) / n:.1f} ms, "
             f"hooks {1e3 * stats.get('hooks_s', 0) / n:.1f} ms"]
    for hs in hook_stats:
        parts.append(" + ".join(f"{k[:-2]} {1e3 * v / n:.1f} ms" for k, v in hs.items()
                                if k.endswith("_s")))
    return " (".join(parts) + ")" * (len(parts) - 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardsense throughput", description=__doc__.split("\n")[0])
    p.add_argument("--backlog", type=int, default=1_000_000, help="timings for phase 1")
    p.add_argument("--rate", type=float, default=100_000, help="timings/s for phase 2")
    p.add_argument("--seconds", type=float, default=10.0, help="length of phase 2")
    p.add_argument("--per-report", type=int, default=2000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--kafka-bootstrap", default="")
    p.add_argument("--clickhouse-url", default="")
    return p


def _settings(args: argparse.Namespace, bootstrap: str, tmp: str) -> Settings:
    """A fresh job with its own topics; no retrain (the bench measures the pipeline)."""
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env(
        {}, kafka_bootstrap=bootstrap, data_dir=tmp,
        clickhouse_url=args.clickhouse_url or f"chdb://{tmp}/ch", job_id=f"bench-{tag}",
        topic_timings=f"bench-{tag}.timings", topic_predictions=f"bench-{tag}.predictions",
        topic_shard_maps=f"bench-{tag}.maps", topic_dead_letters=f"bench-{tag}.dead",
        topic_partitions=args.partitions, processor_retrain_s=0,
    )


def _phases(args: argparse.Namespace, settings: Settings, client: Any,
            bodies: list[bytes]) -> tuple[float, float, int, float]:
    """Warm-up, then capacity and paced phases: (capacity, paced start time, paced, elapsed)."""
    # The ranks' producers are other processes: so are these (no shared GIL).
    ctx = multiprocessing.get_context("spawn")

    def produce(total: int, rate: float) -> float:
        started = time.perf_counter()
        child = ctx.Process(target=_produce, args=(settings, bodies, total, rate))
        child.start()
        child.join()
        return started

    produce(args.per_report, 0)  # warm-up: group joined, models imported
    _wait_rows(client, settings.job_id, args.per_report, timeout=120)
    base = _count(client, settings.job_id)
    backlog = args.backlog // args.per_report * args.per_report
    t0 = produce(backlog, 0)
    _wait_rows(client, settings.job_id, base + backlog, timeout=600)
    burst_s = time.perf_counter() - t0
    capacity = backlog / burst_s
    print(f"capacity: {backlog:,} timings produced unthrottled -> rows in "
          f"{burst_s:.1f}s = {capacity:,.0f} timings/s end-to-end")
    mark = time.time()
    paced = int(args.rate * args.seconds) // args.per_report * args.per_report
    t0 = produce(paced, args.rate)
    _wait_rows(client, settings.job_id, base + backlog + paced, timeout=300)
    return capacity, mark, paced, time.perf_counter() - t0


def _report(args: argparse.Namespace, settings: Settings, client: Any, stats: dict[str, Any],
            hook_stats: list[dict[str, float]], run: tuple[float, float, int, float]) -> None:
    """Latency, deduplication and per-stage figures from ClickHouse and the counters."""
    capacity, mark, paced, elapsed = run
    job = {"j": settings.job_id}
    lat = client.query(
        "SELECT quantile(0.5)(d), quantile(0.99)(d), max(d), count(),"
        " toFloat64(max(ingest_ts)) - toFloat64(min(report_ts)) FROM ("
        " SELECT toFloat64(ingest_ts) - toFloat64(report_ts) AS d, ingest_ts, report_ts"
        " FROM batch_timings WHERE job_id = {j:String} AND report_ts >"
        # the first report waits for the producer's id (see _produce): skip it
        "  (SELECT min(report_ts) FROM batch_timings WHERE job_id = {j:String}"
        "   AND report_ts >= fromUnixTimestamp64Micro({m:Int64})))",
        parameters={**job, "m": int(mark * 1e6)},
    ).result_rows[0]
    dedup = client.query(
        "SELECT count(), uniqExact(event_id, seq) FROM v_batch_timings"
        " WHERE job_id = {j:String}", parameters=job).result_rows[0]
    features = client.query(
        "SELECT count() FROM v_worker_features WHERE job_id = {j:String}",
        parameters=job).result_rows[0][0]
    print(f"paced: {paced:,} timings offered at {args.rate:,.0f}/s: second report sent -> "
          f"last row in {lat[4]:.1f}s = {lat[3] / lat[4]:,.0f} timings/s end-to-end "
          f"({elapsed:.1f}s with the producer's start)")
    print(f"report->row latency (paced phase after its first report, {lat[3]:,} rows): "
          f"p50 {lat[0]:.3f}s "
          f"p99 {lat[1]:.3f}s max {lat[2]:.3f}s")
    print(f"rows: {dedup[0]:,} deduplicated timings ({dedup[1]:,} unique ids), "
          f"{features:,} feature rows")
    print("processor: " + _stages(stats, hook_stats))
    ok = capacity >= 100_000 and lat[3] / lat[4] >= 0.95 * args.rate and lat[1] < 1.0
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "(other processes share these cores)")
    print(f"goal (capacity >= 100,000 timings/s, paced rate kept up, p99 < 1 s): "
          f"{'met' if ok else 'MISSED'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from shardsense.clickhouse import connect
    from shardsense.kafka import create_topics
    from shardsense.schema import apply_schema
    from stream_processors.app import ProcessorThread, create_app
    from stream_processors.service import default_hooks

    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="shardsense-bench-"))
        bootstrap = args.kafka_bootstrap
        if not bootstrap:
            from infra.broker import EmbeddedBroker
            from shardsense.net import free_port

            bootstrap = stack.enter_context(EmbeddedBroker(free_port())).bootstrap
        settings = _settings(args, bootstrap, tmp)
        create_topics(settings)
        client = connect(settings.resolved_clickhouse_url)
        apply_schema(client)
        bodies = payloads(settings.job_id, args.workers, args.per_report)
        hooks = default_hooks(settings, client)
        app = create_app(settings, client, hooks)
        proc = ProcessorThread(app).start()
        try:
            run = _phases(args, settings, client, bodies)
        finally:
            proc.stop()
            for h in hooks:
                getattr(h, "close", lambda: None)()
        stats: dict[str, Any] = getattr(app, "shardsense_stats", {})
        _report(args, settings, client, stats, [getattr(h, "stats", {}) for h in hooks], run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
