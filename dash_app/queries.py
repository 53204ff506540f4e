"""What the console asks ClickHouse: SQL builders (pure) and one DataFrame per panel.

Every query reads the deduplicated ``v_*`` views (FINAL), so a replayed Kafka
message never counts twice (only ``max(end_ts)`` probes, which duplicates
cannot change, read the plain table), and binds the job id as a server-side
parameter.
Time windows are relative to the job's newest row rather than to now(), so a
finished job still shows its last minutes; only the rates (events/s) use now().

>>> "FROM v_batch_timings" in batch_series_sql()
True
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd

from shardsense.events import moved_shards

__all__ = [
    "STRAGGLER_SLOWDOWN",
    "TAKEN_DECISIONS",
    "Db",
    "batch_series",
    "batch_series_sql",
    "bucket_seconds",
    "decisions",
    "jobs",
    "live_kpis",
    "shard_map_versions",
    "step_series",
    "stragglers",
]

#: A worker is a straggler when its slowdown (time per sample / fleet median) exceeds this.
STRAGGLER_SLOWDOWN = 1.3
#: ``planner_decisions.decision`` values that published a shard map; others were not taken.
TAKEN_DECISIONS = ("published",)
#: Steps averaged on each side of a shard-map change for the realised before/after.
STEPS_AROUND_CHANGE = 50


class Db:
    """The console's handle on ClickHouse: named parameters in, DataFrames out.

    One lock serialises the console's queries: an HTTP client with a session
    refuses concurrent queries, and two cores gain nothing from parallel ones.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lock = threading.Lock()

    def df(self, sql: str, **params: Any) -> pd.DataFrame:
        with self.lock:
            frame: pd.DataFrame = self.client.query_df(sql, parameters=params or None)
        return frame


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame``, or an empty frame with ``columns``: chDB returns no columns for no rows.

    >>> list(_with_columns(pd.DataFrame(), ["a", "b"]).columns)
    ['a', 'b']
    """
    return frame if len(frame.columns) else pd.DataFrame(columns=columns)


def bucket_seconds(window_s: int, points: int = 150) -> int:
    """Bucket width that draws about ``points`` points per worker over ``window_s``.

    >>> bucket_seconds(600), bucket_seconds(60), bucket_seconds(3600)
    (4, 1, 24)
    """
    return max(1, round(window_s / points))


# ------------------------------------------------------------------ SQL builders

_LAST_END = "(SELECT max(end_ts) FROM batch_timings WHERE job_id = {job:String})"


def jobs_sql() -> str:
    """Jobs with any timing, prediction or plan, newest first."""
    parts = [
        f"SELECT job_id, max({ts}) AS last FROM {table} GROUP BY job_id"
        for table, ts in (
            ("batch_timings", "end_ts"),
            ("predictions", "ts"),
            ("planner_decisions", "ts"),
            ("shard_maps", "ts"),
        )
    ]
    union = " UNION ALL ".join(parts)
    return (
        f"SELECT job_id, max(last) AS last FROM ({union}) "
        "GROUP BY job_id ORDER BY last DESC LIMIT 500"
    )


def kpi_sql() -> str:
    """One row over the job's last 5 minutes: fleet, progress, ingest rate, idle time."""
    return f"""
SELECT
    uniqExact(worker_id) AS workers,
    argMax(epoch, end_ts) AS last_epoch,
    argMax(step, end_ts) AS last_step,
    argMax(map_version, end_ts) AS map_version,
    countIf(ingest_ts >= now64(6) - INTERVAL 60 SECOND) / 60 AS events_per_s,
    uniqExactIf(event_id, ingest_ts >= now64(6) - INTERVAL 60 SECOND) / 60 AS reports_per_s,
    dateDiff('millisecond', max(ingest_ts), now64(6)) / 1000 AS idle_s
FROM v_batch_timings
WHERE job_id = {{job:String}} AND end_ts >= {_LAST_END} - INTERVAL 300 SECOND
"""


def lag_sql() -> str:
    """End-to-end lag (batch end on the rank -> row in ClickHouse) over the last minute of data."""
    return """
SELECT quantile(0.5)(lag_s) AS lag_p50_s, quantile(0.95)(lag_s) AS lag_p95_s
FROM (
    SELECT dateDiff('microsecond', end_ts, ingest_ts) / 1e6 AS lag_s
    FROM v_batch_timings
    WHERE job_id = {job:String}
      AND ingest_ts >= (SELECT max(ingest_ts) FROM batch_timings WHERE job_id = {job:String})
                       - INTERVAL 60 SECOND
)
"""


def batch_series_sql() -> str:
    """Per worker and time bucket: actual batch time, the batch time predicted for it, samples.

    The prediction for a batch is the worker's latest prediction made before the
    batch ended (ASOF join), times the batch's sample count; NULL without one (a
    Nullable column's default, not ``SETTINGS join_use_nulls``: a read-only session,
    the SQL endpoint's, refuses settings in a query).
    """
    return f"""
SELECT
    b.worker_id AS worker_id,
    toStartOfInterval(b.end_ts, toIntervalSecond({{bucket:UInt32}})) AS t,
    avg(b.data_wait_s + b.compute_s) AS actual_s,
    avg(p.time_per_sample_s * b.samples) AS predicted_s,
    avg(b.samples) AS samples
FROM (
    SELECT worker_id, end_ts, samples, data_wait_s, compute_s
    FROM v_batch_timings
    WHERE job_id = {{job:String}} AND end_ts >= {_LAST_END} - toIntervalSecond({{window:UInt32}})
) AS b
ASOF LEFT JOIN (
    SELECT worker_id, ts, toNullable(time_per_sample_s) AS time_per_sample_s
    FROM v_predictions WHERE job_id = {{job:String}}
) AS p ON b.worker_id = p.worker_id AND b.end_ts >= p.ts
GROUP BY worker_id, t
ORDER BY worker_id, t
"""


def worker_now_sql() -> str:
    """Per worker over the last 30 s of data: median time per sample, current batch size."""
    return f"""
SELECT
    worker_id,
    median((data_wait_s + compute_s) / samples) AS time_per_sample_s,
    argMax(samples, end_ts) AS batch_size,
    max(end_ts) AS last_seen
FROM v_batch_timings
WHERE job_id = {{job:String}} AND samples > 0 AND end_ts >= {_LAST_END} - INTERVAL 30 SECOND
GROUP BY worker_id
"""


def latest_features_sql() -> str:
    return """
SELECT worker_id, argMax(slowdown, ts) AS feature_slowdown
FROM v_worker_features WHERE job_id = {job:String} GROUP BY worker_id
"""


def latest_predictions_sql() -> str:
    return """
SELECT worker_id, argMax(slowdown, ts) AS predicted_slowdown,
       argMax(straggler, ts) AS predicted_straggler,
       argMax(time_per_sample_s, ts) AS predicted_time_per_sample_s
FROM v_predictions WHERE job_id = {job:String} GROUP BY worker_id
"""


def _steps_sql() -> str:
    """One row per synchronous step: its time is the slowest worker's batch time."""
    return """
SELECT epoch, step, min(map_version) AS map_version,
       max(data_wait_s + compute_s) AS step_s, max(end_ts) AS t
FROM v_batch_timings WHERE job_id = {job:String}
GROUP BY epoch, step
"""


def step_series_sql() -> str:
    """Step time per time bucket, with the shard-map version in force."""
    return f"""
SELECT toStartOfInterval(t, toIntervalSecond({{bucket:UInt32}})) AS t,
       avg(step_s) AS step_s, max(map_version) AS map_version
FROM ({_steps_sql()}) GROUP BY t ORDER BY t
"""


def version_steps_sql() -> str:
    """Per map version: mean step time over its first and last N steps, and when it began."""
    return f"""
SELECT map_version, count() AS steps, min(t) AS first_t,
       avgIf(step_s, rn_first <= {{k:UInt32}}) AS first_k_s,
       avgIf(step_s, rn_last <= {{k:UInt32}}) AS last_k_s
FROM (
    SELECT *,
        row_number() OVER (PARTITION BY map_version ORDER BY epoch, step) AS rn_first,
        row_number() OVER (PARTITION BY map_version ORDER BY epoch DESC, step DESC) AS rn_last
    FROM ({_steps_sql()})
)
GROUP BY map_version ORDER BY map_version
"""


def shard_maps_sql() -> str:
    return """
SELECT map_version, ts, apply_epoch, apply_step, num_shards, global_batch_size,
       batch_sizes, shards, predicted_gain_s, move_cost_s, reason
FROM v_shard_maps WHERE job_id = {job:String} ORDER BY map_version
"""


def decisions_sql() -> str:
    return """
SELECT ts, decision, reason, algorithm, map_version, moved_shards, predicted_gain_s,
       move_cost_s, current_step_s, predicted_step_s, batch_sizes
FROM v_planner_decisions WHERE job_id = {job:String} ORDER BY ts DESC LIMIT 500
"""


# ------------------------------------------------------------------ panels


def jobs(db: Db) -> list[str]:
    """Job ids present in any table, most recently active first."""
    return [str(j) for j in _with_columns(db.df(jobs_sql()), ["job_id"])["job_id"]]


def live_kpis(db: Db, job: str) -> dict[str, Any]:
    """Headline numbers of the live page; ``workers == 0`` means no data for the job."""
    row = db.df(kpi_sql(), job=job).iloc[0].to_dict()
    if row["workers"]:
        row.update(db.df(lag_sql(), job=job).iloc[0].to_dict())
    else:
        row.update(lag_p50_s=float("nan"), lag_p95_s=float("nan"))
    return row


def batch_series(db: Db, job: str, window_s: int) -> pd.DataFrame:
    """Columns worker_id, t, actual_s, predicted_s (NaN without predictions), samples, share."""
    frame = db.df(batch_series_sql(), job=job, window=window_s, bucket=bucket_seconds(window_s))
    if frame.empty:
        return frame
    frame["predicted_s"] = pd.to_numeric(frame["predicted_s"], errors="coerce")
    totals = frame.groupby("t")["samples"].transform("sum")
    frame["share"] = frame["samples"] / totals.where(totals > 0)
    return frame


def stragglers(db: Db, job: str, threshold: float = STRAGGLER_SLOWDOWN) -> pd.DataFrame:
    """One row per worker, slowest first, with ``straggler`` set by slowdown or prediction.

    The slowdown is the processor's latest feature; where it has none yet, the
    console derives it from raw timings the same way (time per sample / median).
    """
    now = db.df(worker_now_sql(), job=job)
    if now.empty:
        return now
    med = float(now["time_per_sample_s"].median())
    now["measured_slowdown"] = now["time_per_sample_s"] / med if med > 0 else np.nan
    features = _with_columns(db.df(latest_features_sql(), job=job),
                             ["worker_id", "feature_slowdown"])
    predicted = _with_columns(
        db.df(latest_predictions_sql(), job=job),
        ["worker_id", "predicted_slowdown", "predicted_straggler", "predicted_time_per_sample_s"],
    )
    out = now.merge(features.astype({"worker_id": now["worker_id"].dtype}), on="worker_id",
                    how="left")
    out = out.merge(predicted.astype({"worker_id": now["worker_id"].dtype}), on="worker_id",
                    how="left")
    for col in ("feature_slowdown", "predicted_slowdown", "predicted_straggler"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    out["slowdown"] = out["feature_slowdown"].fillna(out["measured_slowdown"])
    total = out["batch_size"].sum()
    out["share"] = out["batch_size"] / total if total else np.nan
    flagged = out["predicted_straggler"].fillna(0).astype(int) == 1
    out["straggler"] = (out["slowdown"] > threshold) | flagged
    return out.sort_values(["straggler", "slowdown"], ascending=False).reset_index(drop=True)


def step_series(db: Db, job: str) -> pd.DataFrame:
    """Bucketed realised step time over the whole job, about 300 points."""
    span = db.df(
        "SELECT dateDiff('second', min(end_ts), max(end_ts)) AS s FROM batch_timings "
        "WHERE job_id = {job:String}",
        job=job,
    )
    seconds = int(span["s"].iloc[0] or 0)
    return db.df(step_series_sql(), job=job, bucket=bucket_seconds(seconds, points=300))


def shard_map_versions(db: Db, job: str) -> pd.DataFrame:
    """Every map version with predicted gain, move cost, moved shards and realised step times.

    ``before_s`` is the mean step time over the last N steps run under the
    previous version, ``after_s`` over the first N steps under this one.
    """
    maps = db.df(shard_maps_sql(), job=job)
    if maps.empty:
        return maps
    steps = _with_columns(
        db.df(version_steps_sql(), job=job, k=STEPS_AROUND_CHANGE),
        ["map_version", "steps", "first_t", "first_k_s", "last_k_s"],
    ).set_index("map_version")
    moved, before, after = [], [], []
    previous: Any = None
    for row in maps.itertuples():
        moved.append(0 if previous is None else moved_shards(previous, row.shards))
        previous = row.shards
        earlier = steps[steps.index < row.map_version]
        before.append(float(earlier["last_k_s"].iloc[-1]) if len(earlier) else np.nan)
        mine = steps["first_k_s"].get(row.map_version, np.nan)
        after.append(float(mine))
    maps["moved_shards"] = moved
    maps["before_s"] = before
    maps["after_s"] = after
    maps["realised_gain_s"] = maps["before_s"] - maps["after_s"]
    maps["first_t"] = maps["map_version"].map(steps["first_t"]) if len(steps) else pd.NaT
    return maps


def decisions(db: Db, job: str) -> pd.DataFrame:
    """Planner decisions, newest first, with ``taken`` telling published from declined."""
    frame = db.df(decisions_sql(), job=job)
    frame["taken"] = frame["decision"].isin(TAKEN_DECISIONS) if len(frame) else []
    return frame
