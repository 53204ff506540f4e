"""Which jobs a planner instance owns: the jobs of the prediction partitions it was assigned.

Topics are keyed by job id and co-partitioned (docs/EVENTS.md): job J's
predictions and shard maps live on partition ``p(J) = murmur2(J) % n`` of
their topics, with librdkafka's ``murmur2_random`` and Kafka's own
partitioner agreeing on it. Planner instances share the prediction topic in
one consumer group; the instance assigned partition p owns every job with
p(J) = p, and reads shard-map partition p from the beginning (compacted: the
latest map of each of those jobs). When the map topic has fewer partitions
(an older deployment's single-partition topic), a map's partition is
``p(J) % n_maps`` if that divides, else the instance reads them all and keeps
only its jobs' maps.

>>> partition_of(b"job-a", 4), partition_of(b"job-a", 7)
(0, 4)
>>> sorted(map_partitions({1, 3}, predictions=4, maps=4)), sorted(map_partitions({1, 3}, 4, 2))
([1, 3], [1])
>>> sorted(map_partitions({1}, predictions=4, maps=3))
[0, 1, 2]
"""

from __future__ import annotations

__all__ = ["map_partitions", "murmur2", "partition_of"]

_SEED, _M, _MASK = 0x9747B28C, 0x5BD1E995, 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def map_partitions(owned: set[int], predictions: int, maps: int) -> set[int]:
    """Shard-map partitions that hold the maps of the jobs on ``owned`` prediction partitions."""
    if maps < 1 or predictions < 1:
        raise ValueError(f"partition counts must be >= 1, got {predictions}, {maps}")
    if predictions % maps == 0:
        return {p % maps for p in owned}
    return set(range(maps)) if owned else set()
