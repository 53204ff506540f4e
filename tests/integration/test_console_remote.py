"""A console run as its own process reads the stack's store through the SQL endpoint.

Every panel's queries must pass the endpoint's guard and its read-only session and
give what they give on the store's own client (the same fixture run, both ways);
the SQL page works there too. Found this way: ``SETTINGS join_use_nulls`` in a
panel query was refused by the read-only session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest

from benchmarks.console_fixture import write_run
from dash_app import queries as q
from dash_app.sqlguard import readonly_client, run_readonly
from dash_app.sqlhttp import SqlServer
from shardsense.clickhouse import connect
from shardsense.net import free_port
from shardsense.settings import Settings

pytestmark = pytest.mark.integration

#: Figures relative to now() (they move between the two reads).
NOW_DEPENDENT = ("events_per_s", "reports_per_s", "idle_s")
PANELS: dict[str, Callable[[q.Db, str], Any]] = {
    "jobs": lambda db, job: [j for j in q.jobs(db) if j == job],
    "live_kpis": lambda db, job: {k: v for k, v in q.live_kpis(db, job).items()
                                  if k not in NOW_DEPENDENT},
    "batch_series": lambda db, job: q.batch_series(db, job, 600),
    "stragglers": q.stragglers,
    "step_series": q.step_series,
    "shard_map_versions": q.shard_map_versions,
    "decisions": q.decisions,
}


@pytest.fixture(scope="module")
def remote(clickhouse_url: str) -> Iterator[tuple[Any, str, str]]:
    """The session client, the SQL endpoint's URL over the same store, a job in it."""
    client = connect(clickhouse_url)
    job = f"remote-{uuid.uuid4().hex[:8]}"
    write_run(client, job)
    server = SqlServer(Settings.from_env({}, clickhouse_url=clickhouse_url), port=free_port())
    url = server.start().rstrip("/")
    try:
        yield client, url, job
    finally:
        server.stop()


@pytest.mark.parametrize("panel", sorted(PANELS))
def test_every_panel_reads_the_same_through_the_endpoint(
    remote: tuple[Any, str, str], panel: str
) -> None:
    client, url, job = remote
    direct, far = PANELS[panel](q.Db(client), job), PANELS[panel](q.Db(connect(url)), job)
    if isinstance(direct, pd.DataFrame):
        assert len(direct) > 0
        pd.testing.assert_frame_equal(far.reset_index(drop=True),
                                      direct.reset_index(drop=True), check_dtype=False)
    else:
        assert far == direct


def test_the_sql_page_runs_through_the_endpoint(remote: tuple[Any, str, str]) -> None:
    client, url, job = remote
    ro = readonly_client(url, timeout_s=10, max_rows=100)
    sql = f"SELECT count() FROM v_batch_timings WHERE job_id = '{job}'"
    result = run_readonly(ro, sql, max_rows=100)
    assert not result.error and result.frame is not None
    assert int(result.frame.iloc[0, 0]) == client.query(sql).result_rows[0][0]
    refused = run_readonly(ro, "INSERT INTO dead_letters SELECT * FROM dead_letters", max_rows=1)
    assert refused.error
