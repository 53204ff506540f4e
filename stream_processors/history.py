"""A job's stored ticks, read back to warm-start the predictor (restart, handover).

``worker_features`` holds one row per tick (``stream_processors.ticks``); the
latest ``per_rank`` of each rank of the asked jobs are enough to rebuild its
lags, its level and (by replaying them) its online models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["HISTORY_COLUMNS", "HISTORY_SQL", "job_history"]

#: The columns :func:`job_history` returns, in order (``Predictor.replay`` reads them).
HISTORY_COLUMNS = ("job_id", "worker_id", "epoch", "last_step", "time_per_sample_s",
                   "slowdown", "ewma_tps")

HISTORY_SQL = f"""
SELECT {", ".join(HISTORY_COLUMNS)} FROM (
    SELECT {", ".join(HISTORY_COLUMNS)}, ts FROM v_worker_features
    WHERE job_id IN {{jobs:Array(String)}}
    ORDER BY ts DESC
    LIMIT {{per_rank:UInt32}} BY job_id, worker_id
    LIMIT {{limit:UInt32}}
)
ORDER BY ts
"""


def job_history(client: Any, jobs: Iterable[str], per_rank: int = 64,
                limit: int = 20_000) -> list[tuple[Any, ...]]:
    """The latest ``per_rank`` ticks of every rank of ``jobs`` (at most ``limit``), oldest
    first."""
    if per_rank < 1 or limit < 1:
        raise ValueError(f"per_rank and limit must be >= 1, got {per_rank}, {limit}")
    wanted = sorted(jobs)
    if not wanted:
        return []
    result = client.query(HISTORY_SQL, parameters={"jobs": wanted, "per_rank": per_rank,
                                                   "limit": limit})
    return [tuple(row) for row in result.result_rows]
