"""The console in real headless Chromium (Debian's, driven by Playwright) on the session chDB.

The console is served by ConsoleServer from this process, sharing the session's
chDB client the way the embedded stack does; a fixture run with two injected
stragglers (ranks 3 and 5) through the real predictor and planner policy feeds it.
Needs ``apt-get install chromium``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.console_fixture import FixtureRun, write_run
from benchmarks.screenshots import chromium_missing, launch_chromium
from dash_app.server import ConsoleServer
from shardsense.clickhouse import connect
from shardsense.settings import Settings

pytestmark = pytest.mark.browser

WAIT_MS = 20_000


@pytest.fixture(scope="module")
def console(clickhouse_url: str) -> Iterator[dict[str, Any]]:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    client = connect(clickhouse_url)
    job = f"browser-{uuid.uuid4().hex[:8]}"
    write_run(client, job)
    settings = Settings.from_env(
        {}, clickhouse_url=clickhouse_url, job_id=job, console_refresh_ms=1000
    )
    with ConsoleServer(settings, client=client, port=0) as server:
        yield {"url": server.url, "job": job, "client": client}


@pytest.fixture(scope="module")
def browser(console: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()


class Problems(list[str]):
    """JavaScript errors and failed requests seen by a page."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    problems = Problems()
    tab.on("pageerror", lambda err: problems.append(f"pageerror: {err}"))
    tab.on("console", lambda msg: problems.append(f"console: {msg.text}")
           if msg.type == "error" else None)
    tab.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}")
           if r.status >= 400 else None)
    tab.problems = problems
    tab.set_default_timeout(WAIT_MS)
    yield tab
    context.close()


def _no_trouble(page: Any) -> None:
    assert page.problems == [], page.problems
    assert page.inner_text("#console-error") == ""
    assert "Traceback" not in page.content()


def test_live_page_highlights_the_injected_stragglers(page: Any, console: dict[str, Any]) -> None:
    page.goto(console["url"])
    page.wait_for_selector("#stragglers-table tr.straggler")
    rows = page.query_selector_all("#stragglers-table tr.straggler")
    highlighted = {r.get_attribute("data-worker") for r in rows}
    assert highlighted == {str(w) for w in FixtureRun().stragglers}
    assert all(float(r.get_attribute("data-slowdown")) > 1.3 for r in rows)
    assert page.locator("#stragglers-table tbody tr").count() == FixtureRun().workers
    summary = page.inner_text("#straggler-summary")
    assert re.search(r"rank 3 \(×1\.\d\d\)", summary) and "rank 5" in summary
    assert page.inner_text("#straggler-count").split()[-1] == "2"
    assert float(page.inner_text("#events-rate").split()[-1]) > 0
    assert re.search(r"\d (ms|s)$", page.inner_text("#lag-p50"))
    page.wait_for_selector("#batch-time-graph .main-svg")
    page.wait_for_selector("#share-graph .main-svg")
    # One solid (actual) and one dotted (predicted) line per worker.
    traces = page.locator("#batch-time-graph .scatterlayer .trace").count()
    assert traces == 2 * FixtureRun().workers
    _no_trouble(page)


def test_live_page_refreshes_without_reloading(page: Any, console: dict[str, Any]) -> None:
    page.goto(console["url"])
    page.wait_for_selector("#stragglers-table")
    page.evaluate("window.__notReloaded = true")
    first = page.inner_text("#live-updated")
    page.wait_for_function(
        "t => document.querySelector('#live-updated').innerText !== t", arg=first
    )
    assert page.evaluate("window.__notReloaded") is True
    _no_trouble(page)


def test_planner_page_lists_versions_and_declined_decisions(
    page: Any, console: dict[str, Any]
) -> None:
    page.goto(console["url"].rstrip("/") + "/planner")
    page.wait_for_selector("#maps-table")
    versions = [r.get_attribute("data-version")
                for r in page.query_selector_all("#maps-table tbody tr")]
    assert versions[-1] == "1" and len(versions) >= 3  # the first map is version 1
    assert versions == sorted(versions, key=int, reverse=True)
    maps_text = page.inner_text("#maps-table")
    assert "worth it" in maps_text and "first map of the job" in maps_text
    declined = page.inner_text("#declined-table")
    assert "skipped" in declined and "improvement below" in declined
    page.wait_for_selector("#step-graph .main-svg")
    assert page.locator("#step-graph .shapelayer path").count() == len(versions) - 1
    _no_trouble(page)


def _run_sql(page: Any, sql: str | None = None) -> str:
    """Run ``sql`` (default: what the box holds) and wait for this run's status line."""
    status = page.query_selector("#sql-status")
    run = int(status.get_attribute("data-run")) + 1 if status else 1
    if sql is not None:
        page.fill("#sql-input", sql)
    page.click("#sql-run")
    page.wait_for_selector(f'#sql-status[data-run="{run}"]')
    return str(page.inner_text("#sql-status"))


def test_sql_page_runs_a_query(page: Any, console: dict[str, Any]) -> None:
    page.goto(console["url"].rstrip("/") + "/sql")
    page.wait_for_selector("#sql-input")
    status = _run_sql(page)  # the saved example, filled in for the job
    assert status.startswith(f"{FixtureRun().workers} rows")
    page.wait_for_selector("#sql-table")
    page.wait_for_selector("#sql-chart .main-svg")
    job = console["job"]
    count = console["client"].query(
        f"SELECT count() FROM v_batch_timings WHERE job_id = '{job}'"
    ).result_rows[0][0]
    status = _run_sql(page, f"SELECT count() AS n FROM v_batch_timings WHERE job_id = '{job}'")
    assert status.startswith("1 rows")
    page.wait_for_function(
        "n => document.querySelector('#sql-table').innerText.includes(n)", arg=str(count)
    )
    # Arrays, maps and timestamps all reach the table as text.
    status = _run_sql(page, "SELECT 1 AS one, [1, 2] AS arr, map('k', 'v') AS m, now64() AS t")
    assert status.startswith("1 rows")
    page.wait_for_function("() => document.querySelector('#sql-table').innerText"
                           ".includes('[1, 2]')")
    _no_trouble(page)


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("INSERT INTO dead_letters (job_id, event_id) VALUES ('x', 'y')", "INSERT"),
        ("DROP TABLE batch_timings", "DROP"),
        ("ALTER TABLE batch_timings DELETE WHERE 1", "ALTER"),
    ],
)
def test_sql_page_refuses_writes_with_a_clear_message(
    page: Any, console: dict[str, Any], sql: str, verb: str
) -> None:
    client = console["client"]
    tables = "SELECT count() FROM system.tables WHERE database = currentDatabase()"
    before = (client.query(tables).result_rows, client.query(
        "SELECT count() FROM batch_timings").result_rows)
    page.goto(console["url"].rstrip("/") + "/sql")
    page.wait_for_selector("#sql-input")
    status = _run_sql(page, sql)
    assert "read-only" in status and f"{verb} statements are not run" in status
    assert page.locator("#sql-status.sql-error").count() == 1
    assert page.locator("#sql-table").count() == 0
    after = (client.query(tables).result_rows, client.query(
        "SELECT count() FROM batch_timings").result_rows)
    assert after == before
    _no_trouble(page)


def test_empty_job_shows_empty_states(page: Any, console: dict[str, Any]) -> None:
    job = f"nothing-{uuid.uuid4().hex[:8]}"
    page.goto(console["url"] + f"?job={job}")
    page.wait_for_selector("#live-empty")
    assert f"No batch timings for job '{job}' yet" in page.inner_text("#live-empty")
    assert page.locator("#stragglers-table").count() == 0
    _no_trouble(page)
    page.click("#nav-planner")  # client-side navigation keeps the selected job
    page.wait_for_selector("#maps-empty")
    assert job in page.inner_text("#maps-empty")
    page.wait_for_selector("#declined-empty")
    page.click("#nav-sql")
    page.wait_for_selector("#sql-input")
    page.wait_for_function(
        "j => document.querySelector('#sql-input').value.includes(j)", arg=job
    )
    assert _run_sql(page).startswith("0 rows")
    _no_trouble(page)
