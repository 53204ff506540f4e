"""``shardsense planner-fleet``: the planner's memory and CPU while many jobs come and go.

A real ``shardsense planner`` process (its own chDB) on the embedded broker,
fed by a driver that plays the processor and rank 0 for ``--waves`` waves of
``--jobs`` jobs x ``--ranks`` ranks (10,000 ranks in all by default): each job
publishes its first map, then every rank sends a prediction every
``--every-s`` (one rank per job 2x slow, so every job also gets a map); after
``--live-s`` the wave falls silent and the next begins. The planner forgets a
job ``--idle-s`` after its last prediction, so its RSS must come back down
between waves instead of growing with every job it ever saw.

Prints, per phase: the planner's RSS (VmRSS), its CPU seconds per second, and
the predictions/s it was sent; and the jobs it reports forgotten. By default
the planner's ClickHouse is an address nobody listens on (its decision rows
are dropped), so the RSS is the planner's own; ``--chdb`` gives it a chDB. Side by side
in one run; the machine may be shared, so read the ratios (growth per wave,
CPU per 1k predictions).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shardsense.settings import Settings

__all__ = ["FleetConfig", "main"]


@dataclass(frozen=True)
class FleetConfig:
    waves: int = 4
    jobs: int = 50
    ranks: int = 50
    live_s: float = 20.0
    every_s: float = 1.0
    idle_s: int = 10
    partitions: int = 4
    chdb: bool = False  # False: an unreachable http ClickHouse (the planner's state alone)


def _proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of ``pid`` from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


class _Driver:
    """Rank 0's first maps and the processor's predictions for one wave of jobs."""

    def __init__(self, settings: Settings, cfg: FleetConfig) -> None:
        from confluent_kafka import Producer

        from shardsense.kafka import producer_config

        self.s, self.cfg = settings, cfg
        self.producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        self.sent = 0

    def start_wave(self, wave: int) -> list[str]:
        from shardsense.events import ShardMap, encode

        jobs = [f"fleet-w{wave}-j{j}" for j in range(self.cfg.jobs)]
        n = self.cfg.ranks
        for job in jobs:
            m = ShardMap.build(job, 1, [[r * 2, r * 2 + 1] for r in range(n)], [4] * n,
                               num_samples=4 * n * 1000, worker_id=0)
            self.producer.produce(self.s.topic_shard_maps, encode(m), key=job.encode())
        self.producer.flush(30)
        return jobs

    def predict(self, jobs: list[str], step: int) -> None:
        from shardsense.events import Prediction, encode, new_event_id

        topic = self.s.topic_predictions
        now = time.time()
        for job in jobs:
            key = job.encode()
            for rank in range(self.cfg.ranks):
                t = 0.02 if rank == 1 else 0.01
                p = Prediction(job, rank, new_event_id(), now, time_per_sample_s=t,
                               based_on_step=step, straggler=rank == 1)
                self.producer.produce(topic, encode(p), key=key)
                self.sent += 1
            self.producer.poll(0)
        self.producer.flush(30)


def _closed_port() -> int:
    from shardsense.net import free_port

    return free_port()


def _planner(s: Settings, data: Path, log: Path, cfg: FleetConfig) -> subprocess.Popen[bytes]:
    # Without chDB the decisions' inserts fail and are dropped: the RSS is the planner's
    # own; chDB's engine alone adds ~290 MiB to any process that opens it.
    url = f"chdb://{data}" if cfg.chdb else f"http://127.0.0.1:{_closed_port()}"
    env = {**os.environ, "SHARDSENSE_CLICKHOUSE_URL": url, "PYTHONUNBUFFERED": "1"}
    flags = ["--kafka-bootstrap", s.kafka_bootstrap, "--topic-predictions", s.topic_predictions,
             "--topic-shard-maps", s.topic_shard_maps, "--planner-job-idle-s", str(cfg.idle_s),
             "--planner-rank-timeout-s", str(cfg.idle_s), "--planner-learn-bandwidth", "0",
             "--log-level", "INFO"]
    return subprocess.Popen([sys.executable, "-m", "infra.cli", "planner", *flags], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _phase(name: str, seconds: float, pid: int, work: Callable[[int], None] | None,
           rows: list[list[str]], driver: _Driver) -> None:
    """Run ``work(step)`` every ``every_s`` for ``seconds``; one row of the planner's figures."""
    rss0, cpu0 = _proc_stats(pid)
    sent0, t0, peak, step = driver.sent, time.monotonic(), rss0, 0
    while time.monotonic() - t0 < seconds:
        tick = time.monotonic()
        if work is not None:
            work(step)
        step += 5
        peak = max(peak, _proc_stats(pid)[0])
        time.sleep(max(0.0, driver.cfg.every_s - (time.monotonic() - tick)))
    rss1, cpu1 = _proc_stats(pid)
    span = time.monotonic() - t0
    rate = (driver.sent - sent0) / span
    cpu = (cpu1 - cpu0) / span
    rows.append([name, f"{rss0:.0f}", f"{max(peak, rss1):.0f}", f"{rss1:.0f}", f"{rate:,.0f}",
                 f"{cpu:.2f}", f"{1e6 * cpu / rate:.0f}" if rate else "-"])


def run(cfg: FleetConfig, console: Console) -> list[list[str]]:
    from infra.broker import EmbeddedBroker
    from shardsense.kafka import create_topics
    from shardsense.net import free_port

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="planner-fleet-") as tmp, \
            EmbeddedBroker(free_port(), log_path=Path(tmp) / "tansu.log") as broker:
        s = Settings.from_env({}, kafka_bootstrap=broker.bootstrap,
                              topic_partitions=cfg.partitions, data_dir=tmp)
        create_topics(s)
        log = Path(tmp) / "planner.log"
        proc = _planner(s, Path(tmp) / "ch", log, cfg)
        try:
            while "ready:" not in log.read_text():
                time.sleep(0.2)
                if proc.poll() is not None:
                    raise RuntimeError("the planner exited:\n" + log.read_text()[-2000:])
            driver = _Driver(s, cfg)
            _phase("idle, before any job", 5.0, proc.pid, None, rows, driver)
            for wave in range(cfg.waves):
                jobs = driver.start_wave(wave)
                console.print(f"wave {wave}: {len(jobs)} jobs x {cfg.ranks} ranks")
                def work(step: int, wave_jobs: list[str] = jobs) -> None:
                    driver.predict(wave_jobs, step)

                _phase(f"wave {wave}: {len(jobs) * cfg.ranks:,} ranks live", cfg.live_s,
                       proc.pid, work, rows, driver)
                _phase(f"wave {wave}: silent ({cfg.idle_s} s idle expiry)",
                       cfg.idle_s + 2 * 1.0 + 2.0, proc.pid, None, rows, driver)
            text = log.read_text()
            rows.append(["forgotten jobs (log)", "", "", "", str(text.count("forgotten")), "",
                         ""])
            rows.append(["maps published (log)", "", "", "", str(text.count(" published v")),
                         "", ""])
        finally:
            proc.terminate()
            proc.wait(30)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardsense planner-fleet",
                                     description=__doc__.split("\n")[0])
    defaults = FleetConfig()
    for name in ("waves", "jobs", "ranks", "idle_s", "partitions"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            default=getattr(defaults, name))
    for name in ("live_s", "every_s"):
        parser.add_argument("--" + name.replace("_", "-"), type=float,
                            default=getattr(defaults, name))
    parser.add_argument("--chdb", action="store_true",
                        help="give the planner its own chDB (adds the engine's ~290 MiB)")
    args = parser.parse_args(argv)
    cfg = FleetConfig(**{k: getattr(args, k) for k in FleetConfig.__dataclass_fields__})
    console = Console(width=140)
    rows = run(cfg, console)
    table = Table(title=f"planner process: {cfg.waves} waves x {cfg.jobs} jobs x {cfg.ranks} "
                  f"ranks ({cfg.waves * cfg.jobs * cfg.ranks:,} ranks come and go)")
    for col in ("phase", "RSS MiB start", "peak", "end", "predictions/s", "CPU s/s",
                "CPU µs per prediction"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
