"""``shardsense bench``: real DDP training under injected stragglers, static vs ShardSense.

``producers.bench.main(argv)`` is the command; see ``producers.bench.cli``.
Importing this package imports neither torch nor matplotlib.
"""

from __future__ import annotations

from producers.bench.cli import main

__all__ = ["main"]
