"""Console query builders, panel logic on canned frames and page helpers."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dash_app import queries
from dash_app.components import fmt_ms, fmt_num, fmt_pct
from dash_app.pages.sql import EXAMPLES, example_sql, is_example, quick_chart, to_records
from dash_app.sqlguard import check_sql
from shardsense.events import moved_shards
from shardsense.settings import Settings

pytestmark = pytest.mark.unit

BUILDERS = [
    queries.kpi_sql, queries.lag_sql, queries.batch_series_sql, queries.worker_now_sql,
    queries.latest_features_sql, queries.latest_predictions_sql, queries.step_series_sql,
    queries.version_steps_sql, queries.shard_maps_sql, queries.decisions_sql,
]


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_panel_queries_read_deduplicated_views_for_one_job(builder: Any) -> None:
    sql = builder()
    assert "{job:String}" in sql
    # Every FROM of a ShardSense table goes through its FINAL view, except max(ts) probes.
    for table in re.findall(r"FROM\s+([a-z_]+)", sql):
        assert table.startswith("v_") or table == "batch_timings", (table, sql)
    bare = re.findall(r"FROM batch_timings WHERE job_id = \{job:String\}\)", sql)
    assert len(bare) == sql.count("FROM batch_timings"), "plain table only in max() probes"


def test_jobs_query_unions_every_table() -> None:
    sql = queries.jobs_sql()
    for table in ("batch_timings", "predictions", "planner_decisions", "shard_maps"):
        assert f"FROM {table}" in sql


@pytest.mark.parametrize("title", list(EXAMPLES))
def test_saved_examples_pass_the_guard_and_spot_their_own_text(title: str) -> None:
    sql = example_sql(title, "demo")
    assert check_sql(sql) == sql
    assert is_example(sql)
    assert not is_example(sql + " LIMIT 1")


def test_example_job_is_quoted() -> None:
    assert "job_id = 'a\\'b'" in example_sql("Planner decisions by outcome", "a'b")


def test_bucket_seconds_keeps_points_bounded() -> None:
    for window in (60, 600, 3600, 86_400):
        assert window / queries.bucket_seconds(window) <= 160


def test_moved_shards_counts_owner_changes() -> None:
    assert moved_shards([[0, 1], [2, 3]], [[0, 1], [2, 3]]) == 0
    assert moved_shards([[0, 1], [2, 3]], [[1, 0], [3, 2]]) == 0
    assert moved_shards([[0, 1], [2, 3]], [[2, 3], [0, 1]]) == 4
    assert moved_shards(np.array([[0, 1], [2, 3]]), [[0, 1, 2], [3]]) == 1


class CannedDb(queries.Db):
    """Answers each panel query from a frame chosen by a marker in its SQL."""

    def __init__(self, answers: dict[str, pd.DataFrame]) -> None:
        super().__init__(client=None)
        self.answers = answers

    def df(self, sql: str, **params: Any) -> pd.DataFrame:
        for marker, frame in self.answers.items():
            if marker in sql:
                return frame.copy()
        raise AssertionError(f"unexpected query {sql[:80]}")


def _now(tps: list[float]) -> pd.DataFrame:
    n = len(tps)
    return pd.DataFrame({
        "worker_id": range(n), "time_per_sample_s": tps, "batch_size": [32] * n,
        "last_seen": [pd.Timestamp("2026-01-01")] * n,
    })


def test_stragglers_from_measured_slowdown_when_no_features() -> None:
    db = CannedDb({
        "median((data_wait_s": _now([0.01, 0.01, 0.02, 0.01]),
        "feature_slowdown": pd.DataFrame({"worker_id": [], "feature_slowdown": []}),
        "predicted_slowdown": pd.DataFrame(
            {"worker_id": [], "predicted_slowdown": [], "predicted_straggler": [],
             "predicted_time_per_sample_s": []}),
    })
    out = queries.stragglers(db, "j", threshold=1.3)
    assert list(out.loc[out["straggler"], "worker_id"]) == [2]
    assert out.iloc[0]["worker_id"] == 2 and out.iloc[0]["slowdown"] == pytest.approx(2.0)
    assert out["share"].sum() == pytest.approx(1.0)


def test_stragglers_prefer_features_and_honour_predictions() -> None:
    db = CannedDb({
        "median((data_wait_s": _now([0.01, 0.01, 0.01, 0.01]),
        "feature_slowdown": pd.DataFrame({"worker_id": [1], "feature_slowdown": [1.5]}),
        "predicted_slowdown": pd.DataFrame(
            {"worker_id": [3], "predicted_slowdown": [1.2], "predicted_straggler": [1],
             "predicted_time_per_sample_s": [0.012]}),
    })
    out = queries.stragglers(db, "j", threshold=1.3).set_index("worker_id")
    assert set(out.index[out["straggler"]]) == {1, 3}
    assert out.loc[1, "slowdown"] == pytest.approx(1.5)
    assert out.loc[0, "slowdown"] == pytest.approx(1.0)


def test_stragglers_of_an_empty_job_are_empty() -> None:
    db = CannedDb({"median((data_wait_s": pd.DataFrame()})
    assert queries.stragglers(db, "none").empty


class ColumnlessDb(queries.Db):
    """chDB's answer to a query without rows: a frame without columns; aggregates give a row."""

    def __init__(self, rows: dict[str, pd.DataFrame] | None = None) -> None:
        super().__init__(client=None)
        self.rows = rows or {}

    def df(self, sql: str, **params: Any) -> pd.DataFrame:
        for marker, frame in self.rows.items():
            if marker in sql:
                return frame.copy()
        if "uniqExact(worker_id) AS workers" in sql:
            return pd.DataFrame({"workers": [0], "idle_s": [0.0]})
        if "dateDiff('second'" in sql:
            return pd.DataFrame({"s": [0]})
        return pd.DataFrame()


def test_every_panel_copes_with_a_fresh_database() -> None:
    db = ColumnlessDb()
    assert queries.jobs(db) == []
    assert queries.live_kpis(db, "j")["workers"] == 0
    for frame in (queries.batch_series(db, "j", 600), queries.stragglers(db, "j"),
                  queries.step_series(db, "j"), queries.shard_map_versions(db, "j"),
                  queries.decisions(db, "j")):
        assert frame.empty


def test_panels_cope_with_timings_but_no_features_predictions_or_steps() -> None:
    maps = pd.DataFrame({
        "map_version": [1], "ts": [pd.Timestamp("2026-01-01")], "apply_epoch": [0],
        "apply_step": [0], "num_shards": [4], "global_batch_size": [8],
        "batch_sizes": [[4, 4]], "shards": [[[0, 1], [2, 3]]], "predicted_gain_s": [0.0],
        "move_cost_s": [0.0], "reason": ["initial"],
    })
    db = ColumnlessDb({"median((data_wait_s": _now([0.01, 0.03]), "FROM v_shard_maps": maps})
    out = queries.stragglers(db, "j", threshold=1.3)
    assert list(out.loc[out["straggler"], "worker_id"]) == [1]
    assert out["predicted_slowdown"].isna().all()
    versions = queries.shard_map_versions(db, "j")
    assert versions["after_s"].isna().all() and list(versions["moved_shards"]) == [0]


def test_to_records_makes_json_friendly_rows() -> None:
    frame = pd.DataFrame({
        "t": pd.to_datetime(["2026-01-01 10:00:00"]), "arr": [np.array([1, 2])],
        "m": [{"a": "b"}], "x": [1.5],
    })
    (row,) = to_records(frame)
    assert row == {"t": "2026-01-01 10:00:00", "arr": "[1, 2]", "m": "{'a': 'b'}", "x": 1.5}


def test_quick_chart_picks_line_for_time_and_bars_for_categories() -> None:
    times = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=3, freq="min"), "n": [1, 2, 3]})
    assert quick_chart(times).data[0].type == "scatter"
    cats = pd.DataFrame({"code": ["a", "b"], "n": [3, 1]})
    assert quick_chart(cats).data[0].type == "bar"
    assert not quick_chart(pd.DataFrame({"a": ["x"], "b": ["y"]})).data
    assert not quick_chart(pd.DataFrame()).data


def test_formatters() -> None:
    assert fmt_ms(0.0123) == "12.3 ms"
    assert fmt_pct(0.25) == "25.0 %"
    assert fmt_num(np.int64(1200)) == "1,200"
    assert fmt_num(None) == fmt_ms(float("nan")) == "–"


def test_console_settings_come_from_env() -> None:
    s = Settings.from_env({
        "SHARDSENSE_CONSOLE_REFRESH_MS": "500", "SHARDSENSE_CONSOLE_SQL_TIMEOUT_S": "3",
        "SHARDSENSE_CONSOLE_SQL_MAX_ROWS": "100", "SHARDSENSE_CONSOLE_AUTH": "a:b",
    })
    assert (s.console_refresh_ms, s.console_sql_timeout_s, s.console_sql_max_rows) == (500, 3, 100)
    assert s.console_host == "127.0.0.1"
    assert "a:b" not in repr(s)
