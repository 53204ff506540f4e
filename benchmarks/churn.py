"""Ranks come and go: the processor's memory follows the ranks live at once, not all ever seen.

``shardsense throughput --churn WAVES`` sends ``WAVES`` waves of new jobs
(``--ranks`` ranks each, the first of ``--ranks``), each for ``--churn-wave-s``
seconds, against one processor whose ``processor_rank_ttl_s`` is that wave
length, and samples the processor's RSS (``/proc/<pid>/status``) once a second.
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.fleetload import Fleet, run_fleet
from benchmarks.processes import ProcessorProcess
from shardsense.settings import Settings

__all__ = ["rss_bytes", "run_churn"]


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _waves(settings: Settings, fleet: Fleet, waves: int, wave_s: float, tag: str) -> None:
    """The generator's process: wave after wave of new jobs."""
    for w in range(waves):
        run_fleet(settings, fleet, wave_s, jobs=[f"{tag}-w{w}-{j}" for j in range(fleet.jobs)])


def run_churn(settings: Settings, root: Path, fleet: Fleet, waves: int, wave_s: float,
              console: Any) -> list[tuple[float, int]]:
    """Run the waves against one processor; returns ``(seconds, rss_bytes)`` samples."""
    from shardsense.kafka import create_topics

    tag = f"ch{uuid.uuid4().hex[:6]}"
    s = settings.replace(topic_timings=f"{tag}.timings", topic_predictions=f"{tag}.predictions",
                         topic_shard_maps=f"{tag}.maps", topic_dead_letters=f"{tag}.dead",
                         data_dir=str(root / tag))
    create_topics(s)
    proc = ProcessorProcess(s, f"chdb://{root / tag / 'ch'}", root / f"{tag}.log",
                            extra=("--processor-rank-ttl-s", str(max(1, round(wave_s))))).start()
    samples: list[tuple[float, int]] = []
    try:
        time.sleep(8.0)  # started and joined
        child = multiprocessing.get_context("spawn").Process(
            target=_waves, args=(s, fleet, waves, wave_s, tag))
        t0 = time.monotonic()
        child.start()
        while child.is_alive() or time.monotonic() - t0 < waves * wave_s + 15:
            samples.append((time.monotonic() - t0, rss_bytes(proc.pid)))
            time.sleep(1.0)
        child.join(30)
    finally:
        proc.signal(signal.SIGTERM, timeout=60)
    stats = proc.stats().get("hooks", [{}])[0]
    mib = [b / 2**20 for _, b in samples]
    console.print(
        f"churn: {waves} waves x {fleet.total_ranks:,} new ranks ({waves * fleet.total_ranks:,} "
        f"in all), {wave_s:g} s each, rank TTL {max(1, round(wave_s))} s: processor RSS "
        f"{mib[0]:.0f} MiB before, max {max(mib):.0f} MiB, last {mib[-1]:.0f} MiB; "
        f"rank state {stats.get('state_bytes', 0) / 2**20:.1f} MiB in "
        f"{stats.get('slot_capacity', 0):,.0f} slots at the end")
    per_wave = [max(b for t, b in samples if w * wave_s <= t < (w + 1) * wave_s) / 2**20
                for w in range(waves) if any(w * wave_s <= t < (w + 1) * wave_s
                                             for t, _ in samples)]
    console.print("RSS max per wave (MiB): " + ", ".join(f"{m:.0f}" for m in per_wave))
    return samples


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--churn", type=int, default=0, metavar="WAVES",
                   help="instead of fleets: WAVES waves of new jobs, the processor's RSS")
    p.add_argument("--churn-wave-s", type=float, default=6.0, help="seconds per churn wave")
