"""Exactly-once from the outside: every sample index each rank trained on, per epoch (pure).

>>> ranks = [{"indices": [[0, 1], [4, 5]]}, {"indices": [[2, 3], [6, 7]]}]
>>> exactly_once(ranks, epoch_of_step=[0, 0], global_batch=4, steps_per_epoch=2)["held"]
True
>>> ranks[1]["indices"][1] = [0, 7]
>>> exactly_once(ranks, epoch_of_step=[0, 0], global_batch=4, steps_per_epoch=2)["duplicates"]
1
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["exactly_once"]


def exactly_once(ranks: list[dict[str, Any]], epoch_of_step: list[int], global_batch: int,
                 steps_per_epoch: int) -> dict[str, Any]:
    """No index twice within an epoch; each full epoch yields ``steps x global_batch`` samples."""
    per_epoch: dict[int, list[int]] = {}
    for rank in ranks:
        for step, idx in enumerate(rank["indices"]):
            per_epoch.setdefault(epoch_of_step[step], []).extend(idx)
    counts = Counter(epoch_of_step)
    duplicates = sum(len(v) - len(set(v)) for v in per_epoch.values())
    full = [e for e, n in counts.items() if n == steps_per_epoch]
    short = [e for e in full if len(set(per_epoch[e])) != steps_per_epoch * global_batch]
    return {"duplicates": duplicates, "full_epochs": len(full), "short_epochs": len(short),
            "samples": sum(map(len, per_epoch.values())),
            "held": duplicates == 0 and not short}
