"""Console panels and read-only SQL against the session's real chDB.

The data is a simulated fleet's run through the real processor predictor and planner
policy (``benchmarks.console_fixture``), not an imitation of them.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.console_fixture import FixtureRun, write_run
from dash_app import ConsoleServer
from dash_app import queries as q
from dash_app.sqlguard import explain_error, readonly_client, run_readonly
from shardsense.clickhouse import connect
from shardsense.settings import Settings
from shardsense.tables import DEAD_LETTERS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fed(clickhouse_url: str) -> tuple[Any, str]:
    """The session client and a job id holding one fixture run."""
    client = connect(clickhouse_url)
    job = f"console-{uuid.uuid4().hex[:8]}"
    counts = write_run(client, job)
    assert counts["batch_timings"] > 1000
    return client, job


def test_live_panels_find_the_injected_stragglers(fed: tuple[Any, str]) -> None:
    client, job = fed
    db = q.Db(client)
    assert job in q.jobs(db)
    kpis = q.live_kpis(db, job)
    assert kpis["workers"] == 8 and kpis["events_per_s"] > 0
    assert 0 < kpis["lag_p50_s"] < 5
    strag = q.stragglers(db, job)
    assert set(strag.loc[strag["straggler"], "worker_id"]) == set(FixtureRun().stragglers)
    series = q.batch_series(db, job, 600)
    assert series["predicted_s"].notna().mean() > 0.9
    shares = series.groupby("t")["share"].sum()
    assert shares.round(6).eq(1.0).all()


def test_planner_panels_show_versions_and_declined_decisions(fed: tuple[Any, str]) -> None:
    client, job = fed
    db = q.Db(client)
    maps = q.shard_map_versions(db, job)
    assert list(maps["map_version"]) == list(range(1, len(maps) + 1)) and len(maps) >= 2
    assert (maps["moved_shards"].iloc[1:] > 0).all()
    # Each rebalance after an onset made steps faster.
    assert (maps["realised_gain_s"].iloc[1:] > 0).all()
    decisions = q.decisions(db, job)
    assert decisions["taken"].sum() == len(maps) - 1
    assert (~decisions["taken"]).sum() >= 3
    assert len(q.step_series(db, job)) > 50


def test_an_empty_job_gives_empty_frames(clickhouse_url: str) -> None:
    db = q.Db(connect(clickhouse_url))
    job = f"nothing-{uuid.uuid4().hex[:8]}"
    assert q.live_kpis(db, job)["workers"] == 0
    for frame in (q.batch_series(db, job, 600), q.stragglers(db, job), q.step_series(db, job),
                  q.shard_map_versions(db, job), q.decisions(db, job)):
        assert frame.empty


@pytest.fixture(scope="module")
def ro_client(clickhouse_url: str) -> Iterator[Any]:
    """The console's read-only session: a second chDB handle, limits 2 s and 100 rows."""
    client = readonly_client(clickhouse_url, timeout_s=2, max_rows=100)
    yield client
    client.close()


WRITES = [
    "INSERT INTO batch_timings (job_id, event_id) VALUES ('x', 'y')",
    "INSERT INTO FUNCTION file('console-test.csv', 'CSV') SELECT 1",
    "DROP TABLE dead_letters",
    "ALTER TABLE dead_letters DELETE WHERE 1",
    "TRUNCATE TABLE dead_letters",
    "CREATE TABLE console_x (a Int8) ENGINE = Memory",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 1000",
]


@pytest.mark.parametrize("sql", WRITES)
def test_readonly_session_refuses_writes_past_the_guard(
    clickhouse_url: str, ro_client: Any, sql: str
) -> None:
    """Even without the guard, the session itself refuses (Code 164 READONLY) on chDB."""
    writer = connect(clickhouse_url)
    before = writer.query("SELECT count() FROM dead_letters").result_rows
    with pytest.raises(Exception, match="READONLY") as err:
        ro_client.query_df(sql)
    assert "read-only" in explain_error(err.value)
    assert writer.query("SELECT count() FROM dead_letters").result_rows == before


def test_refused_sql_leaves_the_shared_writer_writable(
    clickhouse_url: str, ro_client: Any
) -> None:
    """A refused write on the console's session must not make the stack's client read-only."""
    for sql in WRITES:
        run_readonly(ro_client, sql, max_rows=10)
        with pytest.raises(Exception, match="READONLY"):
            ro_client.query_df(sql)
    writer = connect(clickhouse_url)
    job = f"writable-{uuid.uuid4().hex[:8]}"
    DEAD_LETTERS.insert(writer, [DEAD_LETTERS.row(
        job_id=job, event_id="e", ts=0.0, code="c", reason="r", source_topic="t",
        source_partition=0, source_offset=0, payload_bytes=1)])
    assert writer.query(f"SELECT count() FROM dead_letters WHERE job_id = '{job}'").result_rows \
        == [(1,)]
    assert ro_client.query("SELECT 1").result_rows == [(1,)]


def test_run_readonly_on_chdb(fed: tuple[Any, str], ro_client: Any) -> None:
    _, job = fed
    ok = run_readonly(ro_client, f"SELECT worker_id FROM v_batch_timings WHERE job_id = '{job}'",
                      max_rows=100)
    assert ok.ok and ok.truncated and len(ok.frame) == 100
    slow = run_readonly(ro_client, "SELECT count() FROM numbers(100000000000)", max_rows=100)
    assert "time limit" in slow.error
    assert "does not exist" in run_readonly(ro_client, "SELECT * FROM nope", max_rows=10).error
    refused = run_readonly(ro_client, "DROP TABLE batch_timings", max_rows=10)
    assert "read-only" in refused.error and "DROP" in refused.error


def _get(url: str, creds: str | None = None) -> int:
    request = urllib.request.Request(url)
    if creds:
        request.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_console_server_binds_loopback_and_asks_for_basic_auth(clickhouse_url: str) -> None:
    settings = Settings.from_env({}, clickhouse_url=clickhouse_url, console_auth="ops:pw")
    with ConsoleServer(settings, client=connect(clickhouse_url), port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert _get(server.url) == 401
        assert _get(server.url, "ops:nope") == 401
        assert _get(server.url, "ops:pw") == 200
        assert _get(server.url + "_dash-layout") == 401
        assert _get(server.url + "healthz") == 200
        assert server.app is not None and not server.app.server.debug
