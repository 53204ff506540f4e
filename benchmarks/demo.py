"""``shardsense demo``: the stack plus 8 simulated ranks, 2 of them lagging 2x.

Everything is real except the ranks' speeds: the broker, the Faust processor
and its models, the planner, chDB and the console. Each simulated rank
publishes its batch timings through the same :class:`KafkaTimingSink` a
training rank uses and follows the shard maps through the same
:class:`KafkaMapSource`; rank 0 publishes the initial equal map. Within a few
epochs the planner shrinks the lagging ranks' share and the step time drops.
With ``--services none`` only the ranks run (against an external cluster).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from infra.stack import Stack
from producers.mapfeed import KafkaMapSource
from producers.maps import JobShape, elastic_map, map_problem
from producers.simulate import SimulatedFleet
from producers.telemetry import KafkaTimingSink
from shardsense.events import ShardMap
from shardsense.settings import Settings

__all__ = ["DemoConfig", "job_shape", "main", "summary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """The simulated job: 8 ranks, 2 at half speed, 100 steps of 256 samples per epoch."""

    world_size: int = 8
    slow_ranks: tuple[int, ...] = (2, 5)
    slowdown: float = 2.0
    num_shards: int = 256
    global_batch: int = 256
    steps_per_epoch: int = 100
    base_s_per_sample: float = 0.0002
    step_overhead_s: float = 0.002
    #: The simulated data set is small (64 KiB shards, a 0.1 s warm-up): with the
    #: planner's production defaults (8 MiB, 2 s) a 1.5 s epoch never pays a move.
    planner_shard_bytes: int = 65_536
    planner_warmup_ms: int = 100
    planner_interval_ms: int = 1000


def job_shape(settings: Settings, cfg: DemoConfig) -> JobShape:
    """The simulated job's geometry, which every map must fit."""
    return JobShape(settings.job_id, cfg.global_batch * cfg.steps_per_epoch, cfg.num_shards,
                    cfg.global_batch)


def main(
    settings: Settings,
    *,
    seconds: float = 30.0,
    services: tuple[str, ...] = ("processor", "planner", "console"),
    cfg: DemoConfig | None = None,
    keep: bool = False,
) -> int:
    """Run ``seconds`` of simulated training through the pipeline and report per epoch.

    One live view while it trains, then the per-epoch table and what ClickHouse
    holds, once; with ``keep`` the stack stays up for the console and SQL until Ctrl-C.
    """
    from stream_processors.app import ProcessorThread, create_app
    from stream_processors.service import default_hooks

    cfg = cfg or DemoConfig()
    settings = settings.replace(
        planner_shard_bytes=cfg.planner_shard_bytes,
        planner_warmup_ms=cfg.planner_warmup_ms,
        planner_interval_ms=cfg.planner_interval_ms,
    )
    console = Console()
    stack = Stack(settings, tuple(x for x in services if x != "processor")).start()
    processor = maps = None
    sinks: list[KafkaTimingSink] = []
    try:
        console.print(stack.banner().replace("Ctrl-C to stop", "demo running (Ctrl-C stops)"))
        if "processor" in services:
            app = create_app(settings, stack.client, default_hooks(settings, stack.client))
            processor = ProcessorThread(app, log_level="WARNING").start()
        maps = KafkaMapSource(settings)
        job = job_shape(settings, cfg)
        current = maps.wait_for_initial(15.0)
        if current is None or map_problem(current, job, cfg.world_size) is not None:
            # rank 0's job, as in the runtime: a first map, or one that fits after a restart
            version = 1 if current is None else current.map_version + 1
            current = elastic_map(job, version, cfg.world_size, current,
                                  reason="first map of the job (rank 0)")
            maps.publish(current)
        sinks = [KafkaTimingSink(settings, rank) for rank in range(cfg.world_size)]
        fleet = SimulatedFleet(cfg.world_size, cfg.slow_ranks, cfg.slowdown,
                               base_s_per_sample=cfg.base_s_per_sample)
        rows = _train(console, job, fleet, sinks, maps, current, cfg, seconds)
        console.print(_epoch_table(rows, cfg))
        if stack.client is not None:
            console.print(summary(stack.client, settings.job_id))
        if keep:
            _keep(console, stack)
        return 0
    finally:
        for sink in sinks:
            sink.close()
        if maps is not None:
            maps.close()
        if processor is not None:
            processor.stop()
        stack.stop()


def _keep(console: Console, stack: Stack) -> None:
    """Serve the console and SQL endpoint (the processor and planner run on) until Ctrl-C."""
    where = ", ".join(f"{name} {url}" for name, url in
                      (("console", stack.console_url), ("SQL", stack.sql_url)) if url)
    console.print(f"training done; the stack stays up ({where or 'no console'}). Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")


def _train(
    console: Console,
    job: JobShape,
    fleet: SimulatedFleet,
    sinks: list[KafkaTimingSink],
    maps: KafkaMapSource,
    current: ShardMap,
    cfg: DemoConfig,
    seconds: float,
) -> list[dict[str, Any]]:
    """Lockstep steps paced in real time; a newer map applies at the next epoch or step.

    Shown as one live view (progress and the latest epochs), gone when it ends.
    """
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    progress = Progress(console=console)
    task = progress.add_task("training", total=seconds)
    with Live(Group(progress), console=console, transient=True, refresh_per_second=4) as live:
        while time.monotonic() - started < seconds:
            step_times, versions = [], set()
            for step in range(cfg.steps_per_epoch):
                latest = maps.latest()
                if (latest is not None and latest.map_version > current.map_version
                        and map_problem(latest, job, cfg.world_size) is None):
                    current = latest
                versions.add(current.map_version)
                times = fleet.step_times(current.batch_sizes)
                step_time = max(times) + cfg.step_overhead_s
                now = time.time()
                for rank, sink in enumerate(sinks):
                    # a rank's own work, not its idle wait at the gradient barrier
                    sink.offer(len(rows), step, current.batch_sizes[rank], 0.0001, times[rank],
                               current.map_version, now)
                step_times.append(step_time)
                time.sleep(step_time)
                progress.update(task, completed=time.monotonic() - started,
                                description=f"epoch {len(rows)} step {step} "
                                            f"map v{current.map_version}")
            share = [b / cfg.global_batch for b in current.batch_sizes]
            rows.append({
                "epoch": len(rows), "versions": sorted(versions),
                "step_ms": 1000 * statistics.fmean(step_times),
                "slow_share": sum(share[r] for r in cfg.slow_ranks) / len(cfg.slow_ranks),
            })
            live.update(Group(progress, _epoch_table(rows[-6:], cfg)))
    return rows


def _epoch_table(rows: list[dict[str, Any]], cfg: DemoConfig) -> Table:
    speeds = [1 / cfg.slowdown if r in cfg.slow_ranks else 1.0 for r in range(cfg.world_size)]
    oracle_ms = 1000 * (cfg.global_batch * cfg.base_s_per_sample / sum(speeds)
                        + cfg.step_overhead_s)
    table = Table(title="per epoch (oracle = work / sum of true speeds)")
    for col in ("epoch", "map versions", "step ms", "vs oracle", "lagging share"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(str(row["epoch"]), ",".join(map(str, row["versions"])),
                      f"{row['step_ms']:.1f}", f"{row['step_ms'] / oracle_ms:.2f}x",
                      f"{100 * row['slow_share']:.1f}%")
    return table


def summary(client: Any, job_id: str) -> Table:
    """What ClickHouse holds for the job, deduplicated (the v_* views use FINAL)."""
    rows = client.query(
        "SELECT worker_id, count() AS batches, sum(samples) AS n_samples, "
        "round(1000 * sum(compute_s) / sum(samples), 4) AS ms_per_sample "
        "FROM v_batch_timings WHERE job_id = {job:String} GROUP BY worker_id ORDER BY worker_id",
        parameters={"job": job_id},
    ).result_rows
    preds = dict(client.query(
        "SELECT worker_id, argMax(slowdown, ts) FROM v_predictions "
        "WHERE job_id = {job:String} GROUP BY worker_id",
        parameters={"job": job_id},
    ).result_rows)
    table = Table(title=f"ClickHouse for job {job_id!r}")
    for col in ("rank", "batches", "samples", "ms / sample", "predicted slowdown"):
        table.add_column(col, justify="right")
    for worker, batches, samples, ms in rows:
        slow = preds.get(worker)
        style = "bold red" if slow is not None and slow > 1.3 else ""
        table.add_row(str(worker), str(batches), str(samples), f"{ms:.4f}",
                      "-" if slow is None else f"{slow:.2f}x", style=style)
    return table
