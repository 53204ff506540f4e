"""A small fleet's timing reports, and producing them: the processor tests' input."""

from __future__ import annotations

import numpy as np
from confluent_kafka import Producer

from shardsense.events import TimingReport, encode
from shardsense.kafka import producer_config
from shardsense.settings import Settings
from shardsense.topics import job_key

__all__ = ["WORKERS", "fleet_reports", "produce"]

WORKERS = 4


def fleet_reports(job: str, rounds: int, start: int = 0, slow_from: int = 10**9,
                  per_report: int = 10, seed: int = 0) -> list[TimingReport]:
    """Reports of a 4-rank fleet; rank 2 runs 1.6x slower from round ``slow_from``."""
    rng = np.random.default_rng(seed + start)
    out = []
    for r in range(start, start + rounds):
        for w in range(WORKERS):
            f = 1.6 if (w == 2 and r >= slow_from) else 1.0
            comp = (0.032 * f * rng.lognormal(0, 0.05, per_report)).round(6).tolist()
            steps = list(range(r * per_report, (r + 1) * per_report))
            out.append(TimingReport.new(job, w, {
                "epoch": [0] * per_report, "step": steps, "samples": [32] * per_report,
                "data_wait_s": [0.001] * per_report, "compute_s": comp,
                "map_version": [1] * per_report,
                "end_ts": [1.7e9 + s * 0.05 for s in steps],
            }))
    return out


def produce(settings: Settings, reports: list[TimingReport]) -> None:
    producer = Producer(producer_config(settings))
    for r in reports:
        producer.produce(settings.topic_timings, encode(r),
                         key=job_key(r.job_id))
    assert producer.flush(20) == 0
