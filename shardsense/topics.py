"""The Kafka topics of one deployment: names come from settings, shapes live here.

Every topic is keyed by job id (:func:`job_key`), and timings, predictions and
shard maps have the same partition count, so with one partitioner (murmur2,
Faust's and ``shardsense.kafka.producer_config``'s) job J lives on partition
p(J) of all three: the processor instance that owns p sees every rank of J
(its fleet median is exact) and the planner instance that owns p gets J's
predictions and maps. A rank's reports stay in order (a job is on one
partition); compaction keeps the latest map of each job. Scale-out is by job:
more partitions, more instances; one job's ranks must fit one instance.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicSpec", "job_key", "topic_specs"]


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
    """The four topics, in the order data flows through them.

    >>> [(t.role, t.partitions) for t in topic_specs(timings="t", predictions="p",
    ...     shard_maps="m", dead_letters="d", partitions=8)]
    [('timings', 8), ('predictions', 8), ('shard_maps', 8), ('dead_letters', 1)]
    """
    return [
        TopicSpec(
            "timings", timings, partitions, {"retention.ms": str(7 * 24 * 3600 * 1000)},
            "Batch-timing reports from training ranks, key '<job_id>'.",
        ),
        TopicSpec(
            "predictions", predictions, partitions, {"retention.ms": str(24 * 3600 * 1000)},
            "Per-rank speed predictions from the stream processor, key '<job_id>'.",
        ),
        TopicSpec(
            "shard_maps", shard_maps, partitions, {"cleanup.policy": "compact"},
            "Versioned shard maps from the planner, compacted, key '<job_id>'.",
        ),
        TopicSpec(
            "dead_letters", dead_letters, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)},
            "Rejected inputs with reason and source offset, key '<job_id>'.",
        ),
    ]


def job_key(job_id: str) -> bytes:
    """The partitioning key of every event about job ``job_id`` (UTF-8).

    >>> job_key("resnet50")
    b'resnet50'
    """
    return job_id.encode()
