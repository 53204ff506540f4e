"""The Kafka topics of one deployment: names come from settings, shapes live here.

Keys: ``"<job_id>/<rank>"`` on timings and predictions (per-rank ordering),
``job_id`` on shard maps (compaction keeps the latest map of each job).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicSpec", "timing_key", "topic_specs"]


@dataclass(frozen=True)
class TopicSpec:
    """What ``shardsense up`` creates; ``config`` goes to the broker unchanged."""

    role: str
    name: str
    partitions: int
    config: dict[str, str]
    doc: str


def topic_specs(
    *, timings: str, predictions: str, shard_maps: str, dead_letters: str, partitions: int = 4
) -> list[TopicSpec]:
    """The four topics, in the order data flows through them."""
    return [
        TopicSpec(
            "timings", timings, partitions, {"retention.ms": str(7 * 24 * 3600 * 1000)},
            "Batch-timing reports from training ranks, key '<job_id>/<rank>'.",
        ),
        TopicSpec(
            "predictions", predictions, partitions, {"retention.ms": str(24 * 3600 * 1000)},
            "Per-rank speed predictions from the stream processor, key '<job_id>/<rank>'.",
        ),
        TopicSpec(
            "shard_maps", shard_maps, 1, {"cleanup.policy": "compact"},
            "Versioned shard maps from the planner, compacted, key '<job_id>'.",
        ),
        TopicSpec(
            "dead_letters", dead_letters, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)},
            "Rejected inputs with reason and source offset, key '<job_id>'.",
        ),
    ]


def timing_key(job_id: str, worker_id: int) -> bytes:
    """The partitioning key of a rank's timing reports and predictions."""
    return f"{job_id}/{worker_id}".encode()
