"""``shardsense demo``: the stack, 8 simulated ranks of which 2 lag, and what ClickHouse saw.

Everything is real except the ranks' speeds: the embedded broker, the Faust
processor, chDB, and (when present) the planner and console. The ranks publish
timing reports exactly as the training runtime does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from infra.stack import Stack
from producers.simulate import SimulatedFleet
from shardsense.events import encode
from shardsense.kafka import producer_config
from shardsense.settings import Settings
from shardsense.topics import timing_key

__all__ = ["main", "summary"]

log = logging.getLogger(__name__)


def summary(client: Any, job_id: str) -> Table:
    """Per-rank rows, batches and mean time per sample, deduplicated (FINAL views)."""
    rows = client.query(
        "SELECT worker_id, count() AS batches, sum(samples) AS n_samples, "
        "round(1000 * sum(compute_s + data_wait_s) / sum(samples), 4) AS ms_per_sample "
        "FROM v_batch_timings WHERE job_id = {job:String} GROUP BY worker_id ORDER BY worker_id",
        parameters={"job": job_id},
    ).result_rows
    table = Table(title=f"ClickHouse: batch_timings for job {job_id!r}")
    for col in ("rank", "batches", "samples", "ms / sample", "vs fleet median"):
        table.add_column(col, justify="right")
    speeds = sorted(r[3] for r in rows)
    median = speeds[len(speeds) // 2] if speeds else 1.0
    for worker, batches, samples, ms in rows:
        ratio = ms / median if median else 0.0
        style = "bold red" if ratio > 1.3 else ""
        table.add_row(str(worker), str(batches), str(samples), f"{ms:.4f}", f"{ratio:.2f}x",
                      style=style)
    return table


def main(
    settings: Settings,
    *,
    seconds: float = 20.0,
    steps_per_report: int = 50,
    services: tuple[str, ...] = ("processor", "planner", "console"),
) -> int:
    """Run the demo for ``seconds`` of simulated training, then print the summary."""
    from confluent_kafka import Producer

    from stream_processors.app import ProcessorThread, create_app
    from stream_processors.service import default_hooks

    console = Console()
    stack = Stack(settings, tuple(x for x in services if x != "processor")).start()
    processor = None
    try:
        console.print(stack.banner().replace("Ctrl-C to stop", "demo running"))
        app = create_app(settings, stack.client, default_hooks(settings, stack.client))
        if stack.console_url:
            console.print(f"console: {stack.console_url}")
        if "processor" in services:
            processor = ProcessorThread(app, log_level="WARNING").start()
        fleet = SimulatedFleet(settings.job_id)
        producer = Producer(producer_config(settings))
        sent = 0
        with Progress(console=console) as progress:
            task = progress.add_task("simulated training", total=seconds)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                for report in fleet.reports(steps_per_report):
                    producer.produce(
                        settings.topic_timings, encode(report),
                        key=timing_key(report.job_id, report.worker_id),
                    )
                    sent += len(report)
                producer.poll(0)
                progress.update(task, completed=elapsed,
                                description=f"epoch {fleet.epoch} step {fleet.step}")
                time.sleep(0.5)
        producer.flush(10)
        _wait_for_rows(stack.client, settings.job_id, sent, timeout=30.0)
        console.print(summary(stack.client, settings.job_id))
        console.print(f"{sent} timings sent; ranks {list(fleet.slow_ranks)} were "
                      f"{fleet.slowdown}x slower")
        return 0
    finally:
        if processor is not None:
            processor.stop()
        stack.stop()


def _wait_for_rows(client: Any, job_id: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = int(client.query(
            "SELECT count() FROM v_batch_timings WHERE job_id = {job:String}",
            parameters={"job": job_id},
        ).result_rows[0][0])
        if count >= expected:
            break
        time.sleep(0.5)
    return count
