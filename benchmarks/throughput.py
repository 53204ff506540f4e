"""``shardsense throughput``: the largest fleet the processor keeps up with, and its costs.

A fleet is jobs x ranks x steps/s (``benchmarks.fleetload``): every rank's
timings are shipped by the timing sink's own flush policy and packing, keyed by
job. Fleets of growing size are paced in real time against ``--instances``
processor processes (``shardsense processor``, one consumer group, each its own
chDB path: chDB allows one process per path; with an ``http://`` ClickHouse
they would share one). A fleet is *kept up* when every timing is stored and the
report -> row p99 (ClickHouse ``ingest_ts - report_ts``) is under ``--goal-p99-s``;
report -> prediction published is measured by a consumer tapping the
predictions topic. Each run prints the processor's cost per stage (its own
counters) and the CPU it used; the scale-out runs print beside the single
instance's, measured in the same invocation on the same broker.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import churn
from benchmarks.fleetload import Fleet, FleetRun, run_fleet
from benchmarks.processes import ProcessorProcess, cpu_seconds, read_store
from shardsense.settings import Settings

__all__ = ["Result", "balanced_jobs", "main"]


def balanced_jobs(tag: str, n: int, partitions: int) -> list[str]:
    """``n`` job ids whose murmur2 partitions go round-robin over ``partitions``.

    Real job ids hash wherever they hash; a benchmark with a handful of jobs places
    them evenly, so two instances get equal shares.

    >>> from aiokafka.partitioner import murmur2
    >>> [(murmur2(j.encode()) & 0x7FFFFFFF) % 4 for j in balanced_jobs("t", 5, 4)]
    [0, 1, 2, 3, 0]
    """
    from aiokafka.partitioner import murmur2

    out: list[str] = []
    k = 0
    while len(out) < n:
        name = f"{tag}-{k}"
        if (murmur2(name.encode()) & 0x7FFFFFFF) % partitions == len(out) % partitions:
            out.append(name)
        k += 1
    return out


class PredictionTap:
    """Reads the predictions topic from its end: report -> prediction published latency,
    and which processor instance served each job (``model_versions["instance"]``).
    With ``keep``, every prediction is kept by event id (tests)."""

    def __init__(self, settings: Settings, keep: bool = False) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from shardsense.kafka import consumer_config

        # a short fetch wait: the embedded broker answers an empty fetch only at its end
        self.consumer = Consumer(consumer_config(settings, f"tap-{uuid.uuid4().hex[:8]}",
                                                 **{"fetch.wait.max.ms": 10}))
        self.consumer.assign([TopicPartition(settings.topic_predictions, p, OFFSET_END)
                              for p in range(settings.topic_partitions)])
        self.keep = keep
        self.latency_s: list[tuple[float, float]] = []  # (report ts, latency)
        self.instances: dict[str, set[str]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import orjson

        while not self._stop.is_set():
            for msg in self.consumer.consume(500, 0.005):
                if msg.error() or msg.value() is None:
                    continue
                now = time.time()
                p = orjson.loads(msg.value() or b"{}")
                self.latency_s.append((p["ts"], now - p["ts"]))
                where = p.get("model_versions", {}).get("instance", "?")
                self.instances.setdefault(p["job_id"], set()).add(where)
                if self.keep:
                    self.by_id[p["event_id"]] = p

    def instance_of(self, event_id: str) -> str | None:
        """The instance that published prediction ``event_id`` (with ``keep``)."""
        p = self.by_id.get(event_id)
        return None if p is None else str(p.get("model_versions", {}).get("instance"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


@dataclass
class Result:
    """One fleet against one set of instances."""

    fleet: Fleet
    instances: int
    sent: FleetRun
    stored: int = 0
    unique: int = 0
    row_p50: float = math.nan
    row_p99: float = math.nan
    pred_p50: float = math.nan
    pred_p99: float = math.nan
    cores: float = math.nan
    stages: dict[str, float] = field(default_factory=dict)
    split: list[int] = field(default_factory=list)  # jobs served per instance

    def kept_up(self, goal_s: float) -> bool:
        return self.stored == self.sent.timings == self.unique and self.row_p99 < goal_s


def _quantile(hist: dict[float, int], q: float) -> float:
    """The q-quantile of a {value: count} histogram."""
    total = sum(hist.values())
    if not total:
        return math.nan
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= q * total:
            return value
    return max(hist)


STORE_SQL = {
    "latency": "SELECT round(d, 3), count() FROM (SELECT event_id, min(toFloat64(ingest_ts))"
               " - any(toFloat64(report_ts)) AS d FROM batch_timings WHERE job_id LIKE {tag:String}"
               " AND report_ts >= fromUnixTimestamp64Micro({since:Int64}) GROUP BY event_id)"
               " GROUP BY 1",
    "counts": "SELECT count(), uniqExact(event_id, seq) FROM v_batch_timings"
              " WHERE job_id LIKE {tag:String}",
}


def _stores(chdb: list[str], tag: str, since: float) -> tuple[dict[float, int], int, int]:
    """Latency histogram and (rows, unique rows) over every instance's store."""
    hist: dict[float, int] = {}
    rows = unique = 0
    for url in chdb:
        got = read_store(url, STORE_SQL, {"tag": f"{tag}-f-%", "since": int(since * 1e6)})
        for value, count in got["latency"]:
            hist[float(value)] = hist.get(float(value), 0) + int(count)
        rows += int(got["counts"][0][0])
        unique += int(got["counts"][0][1])
    return hist, rows, unique


def _stages(stats: list[dict[str, Any]]) -> dict[str, float]:
    """Microseconds per report of each stage, and reports per batch, over all instances."""
    keys = ("route_s", "store_s", "hooks_s")
    pipe = {k: sum(s.get("pipeline", {}).get(k, 0.0) for s in stats) for k in
            ("batches", "reports", *keys)}
    hook = {k: sum(h.get(k, 0.0) for s in stats for h in s.get("hooks", [])) for k in
            ("update_s", "store_s", "publish_s")}
    n = max(pipe["reports"], 1)
    out = {f"{k[:-2]} µs": 1e6 * pipe[k] / n for k in ("route_s", "store_s")}
    out |= {f"{k[:-2]} µs" if k != "store_s" else "rows µs": 1e6 * v / n for k, v in hook.items()}
    out["reports/batch"] = pipe["reports"] / max(pipe["batches"], 1)
    return out


def _settings(bootstrap: str, root: Path, partitions: int, tag: str) -> Settings:
    return Settings.from_env(
        {}, kafka_bootstrap=bootstrap, data_dir=str(root), job_id=f"{tag}-default",
        clickhouse_url=f"chdb://{root}/unused", topic_timings=f"{tag}.timings",
        topic_predictions=f"{tag}.predictions", topic_shard_maps=f"{tag}.maps",
        topic_dead_letters=f"{tag}.dead", topic_partitions=partitions, processor_retrain_s=0,
    )


def _generate(settings: Settings, fleet: Fleet, seconds: float, jobs: list[str],
              out: Any) -> None:
    """The load generator's process: its own interpreter, like a fleet of real ranks."""
    out.put(run_fleet(settings, fleet, seconds, jobs=jobs))


def _ready(tap: PredictionTap, settings: Settings, instances: int, probes: list[str],
           timeout: float = 90.0) -> None:
    """Probe every partition until each answers and ``instances`` distinct instances do."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_fleet(settings, Fleet(jobs=len(probes), ranks=1, steps_per_s=20), 0.3, jobs=probes)
        time.sleep(1.0)
        served = {j: tap.instances.get(j, set()) for j in probes}
        if all(served.values()) and len(set().union(*served.values())) >= instances:
            return
    raise TimeoutError(f"only {tap.instances} answered probes of {probes}")


def run_one(bootstrap: str, root: Path, fleet: Fleet, instances: int, args: argparse.Namespace
            ) -> Result:
    """Start ``instances`` processors, pace ``fleet`` for ``args.seconds``, measure, stop."""
    from shardsense.kafka import create_topics

    tag = f"tp{uuid.uuid4().hex[:6]}"
    settings = _settings(bootstrap, root / tag, args.partitions, tag)
    create_topics(settings)
    chdb = [f"chdb://{root / tag / f'p{i}' / 'ch'}" for i in range(instances)]
    procs = [ProcessorProcess(settings.replace(data_dir=str(root / tag / f"p{i}")), url,
                              root / tag / f"p{i}.log").start() for i, url in enumerate(chdb)]
    tap = PredictionTap(settings)
    try:
        _ready(tap, settings, instances, balanced_jobs(f"{tag}-probe", args.partitions,
                                                       args.partitions))
        jobs = balanced_jobs(f"{tag}-f", fleet.jobs, args.partitions)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_generate, args=(settings, fleet, args.warmup + args.seconds,
                                                    jobs, queue))
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        child.start()
        sent: FleetRun = queue.get(timeout=args.warmup + args.seconds + 300)
        child.join(30)
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        time.sleep(3.0)  # the tail of the load reaches the stores
    finally:
        for p in procs:
            p.signal(signal.SIGTERM, timeout=60)
        tap.close()
    since = sent.started + args.warmup
    hist, stored, unique = _stores(chdb, tag, since)
    pred_hist: dict[float, int] = {}
    for ts, d in tap.latency_s:
        if ts >= since:
            pred_hist[round(d, 3)] = pred_hist.get(round(d, 3), 0) + 1
    served = [sum(1 for j in jobs if any(w.endswith(f":{p.pid}") for w in tap.instances.get(j, ())))
              for p in procs]
    return Result(fleet, instances, sent, stored, unique, _quantile(hist, 0.5),
                  _quantile(hist, 0.99), _quantile(pred_hist, 0.5), _quantile(pred_hist, 0.99),
                  cpu / max(sent.stopped - sent.started, 1e-9), _stages([p.stats() for p in procs]),
                  served)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardsense throughput", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=4, help="jobs in every fleet")
    p.add_argument("--ranks", default="128,256,512,1024,2048",
                   help="ranks per job, one fleet each, tried in order until one is not kept up")
    p.add_argument("--steps-per-s", type=float, default=5.0, help="steps per second per rank")
    p.add_argument("--flush-ms", type=int, default=1000,
                   help="the sink's least time between two reports of a rank (the sink's "
                        "telemetry flush setting); 1000 = one report per rank per second")
    p.add_argument("--instances", default="1,2", help="processor instances, one series each")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="measured load per fleet")
    p.add_argument("--warmup", type=float, default=5.0, help="load before the measured part")
    p.add_argument("--goal-p99-s", type=float, default=1.0)
    p.add_argument("--kafka-bootstrap", default="", help="an external broker (default: embedded)")
    churn.add_arguments(p)
    return p


def _table(results: list[Result], goal: float) -> Any:
    from rich.table import Table

    t = Table(title="Fleets paced in real time (report -> row: ClickHouse ingest_ts - report_ts)")
    for col in ("fleet", "reports/s", "timings/s", "inst.", "jobs per inst.", "stored",
                "row p50", "row p99", "pred. p50", "pred. p99", "cores", "µs per report "
                "(route/store/update/rows/publish)", "reports per batch", "kept up"):
        t.add_column(col, justify="right")
    for r in results:
        st = r.stages
        t.add_row(str(r.fleet), f"{r.sent.reports / r.sent.duration_s:,.0f}",
                  f"{r.sent.timings / r.sent.duration_s:,.0f}", str(r.instances),
                  "/".join(map(str, r.split)), f"{r.unique:,}/{r.sent.timings:,}",
                  f"{r.row_p50:.3f}", f"{r.row_p99:.3f}", f"{r.pred_p50:.3f}",
                  f"{r.pred_p99:.3f}", f"{r.cores:.2f}",
                  "/".join(f"{st.get(k, 0):.0f}" for k in ("route µs", "store µs", "update µs",
                                                           "rows µs", "publish µs")),
                  f"{st.get('reports/batch', 0):.0f}", "yes" if r.kept_up(goal) else "NO")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console

    console = Console(width=200)
    ranks = [int(x) for x in args.ranks.split(",")]
    series = [int(x) for x in args.instances.split(",")]
    results: list[Result] = []
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shardsense-tp-")))
        bootstrap = args.kafka_bootstrap
        if not bootstrap:
            from infra.broker import EmbeddedBroker
            from shardsense.net import free_port

            bootstrap = stack.enter_context(EmbeddedBroker(free_port())).bootstrap
        if args.churn:
            fleet = Fleet(args.jobs, ranks[0], args.steps_per_s, flush_s=args.flush_ms / 1000)
            churn.run_churn(_settings(bootstrap, root, args.partitions, "churn"), root, fleet,
                            args.churn, args.churn_wave_s, console)
            return 0
        for instances in series:
            for n in ranks:
                fleet = Fleet(args.jobs, n, args.steps_per_s, flush_s=args.flush_ms / 1000)
                console.print(f"[bold]{instances} instance(s)[/], fleet {fleet} "
                              f"({fleet.total_ranks:,} ranks) ...")
                r = run_one(bootstrap, root, fleet, instances, args)
                results.append(r)
                console.print(f"  row p99 {r.row_p99:.3f}s, prediction p99 {r.pred_p99:.3f}s, "
                              f"{r.unique:,}/{r.sent.timings:,} stored, {r.cores:.2f} cores")
                if not r.kept_up(args.goal_p99_s):
                    break
    console.print(_table(results, args.goal_p99_s))
    for instances in series:
        ok = [r for r in results if r.instances == instances and r.kept_up(args.goal_p99_s)]
        best = max(ok, key=lambda r: r.fleet.total_ranks, default=None)
        console.print(f"{instances} instance(s): largest fleet kept up "
                      + (f"{best.fleet} = {best.fleet.total_ranks:,} ranks, "
                         f"{best.sent.reports / best.sent.duration_s:,.0f} reports/s, "
                         f"row p99 {best.row_p99:.3f}s" if best else "none"))
    console.print(f"machine: {os.cpu_count()} cores shared with the load generator, the broker "
                  f"and other tenants (load average {os.getloadavg()[0]:.1f}); ratios in one "
                  "run are what count")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
