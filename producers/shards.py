"""Virtual shards: a map-style dataset seen as ``num_shards`` contiguous index ranges.

Nothing is copied: shard ``s`` is ``range(starts[s], starts[s] + sizes[s])`` over
``range(len(dataset))``. Both the order in which a rank visits its shards and the
order inside each shard are seeded by ``(seed, epoch)``, so every rank derives
the same order without talking to the others, and a different one each epoch.

>>> vs = VirtualShards(10, 3)
>>> vs.sizes, vs.starts
([4, 3, 3], [0, 4, 7])
>>> order = EpochOrder(vs, seed=0, epoch=0)
>>> sorted(order.indices([(0, 0, 4), (1, 0, 3), (2, 0, 3)]))
[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["EpochOrder", "Segment", "VirtualShards"]

#: ``(shard, start, count)``: positions ``start .. start+count-1`` of the shard's
#: seeded permutation; consumption of a shard is always a growing prefix of it.
Segment = tuple[int, int, int]
#: Shards per block of random sort keys: one generator and one argsort per block
#: (a generator per shard cost ~30 µs each); only the blocks a rank reads are drawn.
KEY_BLOCK = 64


class VirtualShards:
    """Balanced contiguous index ranges (the first ``n % k`` shards get one more)."""

    def __init__(self, num_samples: int, num_shards: int) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
        if num_shards > num_samples:
            raise ValueError(
                f"num_shards ({num_shards}) must not exceed the dataset length ({num_samples})"
            )
        self.num_samples = num_samples
        self.num_shards = num_shards
        base, extra = divmod(num_samples, num_shards)
        self.sizes = [base + (1 if s < extra else 0) for s in range(num_shards)]
        self.starts = [0] * num_shards
        for s in range(1, num_shards):
            self.starts[s] = self.starts[s - 1] + self.sizes[s - 1]

    def __len__(self) -> int:
        return self.num_shards

    def __repr__(self) -> str:
        return f"VirtualShards(num_samples={self.num_samples}, num_shards={self.num_shards})"


class EpochOrder:
    """The seeded orders of one epoch; shard permutations are built lazily and cached.

    Only the shards (and key blocks) a rank actually reads are drawn, so a rank
    pays for its own data, not for the whole dataset.
    """

    def __init__(self, shards: VirtualShards, seed: int, epoch: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.shards = shards
        self.seed = seed
        self.epoch = epoch
        visit = np.random.default_rng([seed, epoch, 0]).permutation(shards.num_shards)
        #: ``priority[s]``: position of shard ``s`` in this epoch's visiting order.
        self.priority: list[int] = [0] * shards.num_shards
        for pos, s in enumerate(visit.tolist()):
            self.priority[s] = pos
        self._perms: dict[int, list[int]] = {}

    def permutation(self, shard: int) -> list[int]:
        """Absolute sample indices of ``shard`` in this epoch's seeded order.

        A Python list: the per-step hot path then slices lists, not numpy arrays.
        """
        perm = self._perms.get(shard)
        if perm is None:
            self._draw_block(shard // KEY_BLOCK)
            perm = self._perms[shard]
        return perm

    def _draw_block(self, block: int) -> None:
        """Permutations of a block of ``KEY_BLOCK`` shards: one generator, one argsort."""
        vs = self.shards
        first = block * KEY_BLOCK
        sizes = vs.sizes[first : first + KEY_BLOCK]
        lo = vs.starts[first]
        keys = np.random.default_rng([self.seed, self.epoch, 1, block]).random(
            sum(sizes), dtype=np.float32
        )
        # by shard, then by key: keys are in [0, 1), so shard j's sort keys are in [j, j+1)
        owner = np.repeat(np.arange(len(sizes), dtype=np.float64), sizes)
        flat = (lo + np.argsort(owner + keys, kind="stable")).tolist()
        at = 0
        for j, size in enumerate(sizes):
            self._perms[first + j] = flat[at : at + size]
            at += size

    def indices(self, segments: Sequence[Segment]) -> list[int]:
        """Materialise segments into sample indices (the only per-sample work)."""
        out: list[int] = []
        for shard, start, count in segments:
            out.extend(self.permutation(shard)[start : start + count])
        return out
