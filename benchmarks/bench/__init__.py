"""``shardsense bench``: real DDP training under injected stragglers, static vs ShardSense.

``benchmarks.bench.main(argv)`` is the command; see :mod:`benchmarks.bench.cli`.
Importing this package imports neither torch nor matplotlib.
"""

from __future__ import annotations

from benchmarks.bench.cli import main

__all__ = ["main"]
