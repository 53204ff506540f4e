"""Issue 12, item 4: the processor, the planner and the console each die alone (kill -9).

Each runs as its own process (``shardsense processor|planner|console``). chDB lets one
process open a path, so beside the embedded stack each has what it needs from
ClickHouse (docs/ARCHITECTURE.md, "Process model"): the processor its own path (what
it writes and reads: timings, features, predictions, its warm start); the planner its
own path (its decisions and every map it sees) and the stack's read-only SQL endpoint
for the trainers' facts (``planner_facts_url``); the console the SQL endpoint. A
stopped service's own path is read by a child (:func:`query_elsewhere`): this pytest
process holds the session's.

* processor kill -9, restarted at once, under 2 real gloo ranks (``fault_rank.py``),
  the planner in this process;
* planner kill -9, restarted at once, beside ``up --services processor,sql``, fake ranks;
* console kill -9, restarted at once, over an SQL endpoint on the session's store.

The first two assert the four things of item 7: training finished, exactly-once held,
a speed change made after the restart was adapted to, and the ``v_*`` views hold every
timing (and map version) once. Recovery times are printed (``Timeline``), never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.broker import EmbeddedBroker
from planner_service.service import Planner
from shardsense.clickhouse import connect
from shardsense.kafka import create_topics
from shardsense.net import free_port
from shardsense.settings import Settings
from stream_processors.app import consumer_group
from tests.support.faults import (
    FakeJob,
    ServiceProcess,
    Timeline,
    UpProcess,
    committed,
    fault_settings,
    log_ends,
    query_elsewhere,
    service_env,
    stored_steps,
    wait_until,
)
from tests.support.gloo import GlooRanks, exactly_once_problems

pytestmark = pytest.mark.faults

RECOVER_S = 90.0
RANK_SCRIPT = Path(__file__).with_name("fault_rank.py")
GLOO_BATCH = 32  # fault_rank.GLOBAL_BATCH
#: A quick planner and a plain forecaster (the loop's speed is issue 11's business).
QUICK: dict[str, Any] = {
    "planner_interval_ms": 200, "planner_smoothing_pct": 100, "planner_learn_bandwidth": 0,
    "planner_warmup_ms": 0, "planner_shard_bytes": 1, "processor_forecaster": "ewma",
    "processor_retrain_s": 0,
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()


def _quick_env() -> dict[str, str]:
    return {k: str(v) for k, v in QUICK.items()}


def _wait_committed(s: Settings) -> None:
    """Every timing report on the broker is stored: the processor commits only after a store."""
    ends = {p: e for p, e in log_ends(s, s.topic_timings).items() if e}
    wait_until(lambda: all(committed(s, consumer_group(s), s.topic_timings).get(p, -1) >= e
                           for p, e in ends.items()), RECOVER_S, "the processor to commit all",
               every=0.5)


def test_processor_kill9_restart_under_real_gloo_ranks(
    broker: EmbeddedBroker, clickhouse_url: str, tmp_path: Path
) -> None:
    s = fault_settings(broker.bootstrap, clickhouse_url, tmp_path, **QUICK)
    create_topics(s)
    planner = Planner(s, client=connect(clickhouse_url)).start()
    store = tmp_path / "processor"
    store_url = f"chdb://{store / 'clickhouse'}"
    processor = ServiceProcess("processor", env=service_env(
        s, clickhouse_url=store_url, data_dir=str(store), log_level="WARNING",
        **_quick_env())).start()
    ranks = GlooRanks(RANK_SCRIPT, 2, tmp_path / "ranks", service_env(s)).start()
    try:
        tl = Timeline("processor kill -9, restarted at once (2 gloo ranks)")
        tl.watch("planner has predictions", lambda: planner.stats["predictions"] > 0, RECOVER_S)
        tl.watch("rank 0 trains", lambda: ranks.status().get("step") is not None, RECOVER_S)
        processor.kill9()
        tl.mark("processor killed")
        processor.start()
        time.sleep(1.0)  # predictions the dead one sent are in; the new one is importing
        before = planner.stats["predictions"]
        tl.watch("planner gets predictions from the restarted processor",
                 lambda: planner.stats["predictions"] > before, RECOVER_S)
        version = int(ranks.status()["map_version"])
        ranks.slow(1, 3.0)
        tl.mark("rank 1 made 3x slower")
        tl.watch("new map in force on rank 0", lambda: _shrunk(ranks.status(), version),
                 RECOVER_S)
        tl.report("processor killed")
        records = ranks.finish()
        _wait_committed(s)
    finally:
        ranks.kill()
        processor.stop()
        planner.stop()
    assert not exactly_once_problems(records, GLOO_BATCH), exactly_once_problems(
        records, GLOO_BATCH)
    assert all(r["sink"]["dropped"] == 0 for r in records), [r["sink"] for r in records]
    trained = {(rank, e, st) for rank, r in enumerate(records) for e, st, _v, _i in r["steps"]}
    rows = query_elsewhere(store_url, "SELECT worker_id, epoch, step, count() FROM "
                           "v_batch_timings WHERE job_id = {j:String} GROUP BY worker_id, "
                           "epoch, step", j=s.job_id)
    stored = {(int(w), int(e), int(st)): int(n) for w, e, st, n in rows}
    assert set(stored) == trained, (len(trained - set(stored)), len(set(stored) - trained))
    assert set(stored.values()) == {1}
    assert not processor.saw("Traceback"), "\n".join(processor.lines[-40:])


def _shrunk(status: dict[str, Any], version: int) -> bool:
    """Rank 0 trains under a newer map that gives it more than half (rank 1 shrank)."""
    return bool(status) and int(status["map_version"]) > version and \
        int(status["batch"]) > GLOO_BATCH // 2



def test_planner_kill9_restart_beside_the_stack(tmp_path: Path) -> None:
    """``up --services processor,sql`` owns the store; the planner has its own path and
    reads ``batch_timings`` through the stack's SQL endpoint (``planner_facts_url``)."""
    from planner_service.recovery import durable_facts
    from planner_service.sink import ClickHouseSink

    port, sql_port, data = free_port(), free_port(), tmp_path / "stack"
    s = fault_settings(f"127.0.0.1:{port}", f"chdb://{data / 'clickhouse'}", tmp_path, **QUICK)
    up = UpProcess(data, "--broker-port", str(port), "--sql-port", str(sql_port), "--services",
                   "processor,sql", "--log-level", "WARNING",
                   env=service_env(s, broker=False, **_quick_env())).start()
    up.wait_for("ShardSense stack ready", RECOVER_S)
    sql_url = f"http://127.0.0.1:{sql_port}"
    store = connect(sql_url)  # the stack's store, read-only
    planner_url = f"chdb://{tmp_path / 'planner' / 'clickhouse'}"
    planner = ServiceProcess("planner", env=service_env(
        s, clickhouse_url=planner_url, data_dir=str(tmp_path / "planner"), log_level="INFO",
        planner_facts_url=sql_url, **_quick_env())).start()
    job = FakeJob(s)
    try:
        seen = [job.adapts(Timeline("steady state"), 2, 2.0, True, RECOVER_S)]
        tl = Timeline("planner kill -9, restarted at once (its own chDB path)")
        planner.kill9()
        tl.mark("planner killed")
        planner.start()
        tl.watch("restarted planner ready", lambda: planner.saw("planner: ready"), RECOVER_S)
        seen.append(job.adapts(tl, 2, 1.0, False, RECOVER_S))
        tl.report("planner killed")
        print("\n".join(planner.lines[:12]), flush=True)  # the restart's log: where time goes
        # what the planner reads through the endpoint passes its guard (its maps are in its
        # own store, not in the stack's)
        stored, in_force = durable_facts(store, s.job_id, store)
        assert stored is None and seen[0] <= in_force <= seen[-1], (stored, in_force)
        sink = ClickHouseSink(sql_url)
        sink.transfer_waits(s.job_id, 1, seen[0], [0, 1, 2], 1)
        sink.close()
        job.stop()
        offered = set(job.ranks.offered_at)
        wait_until(lambda: all(offered <= steps for steps in
                               stored_steps(store, s.job_id).values()), RECOVER_S,
                   "every timing in the stack's store")
        twice = store.query("SELECT count() FROM (SELECT worker_id, step FROM v_batch_timings "
                            "WHERE job_id = {j:String} GROUP BY worker_id, step "
                            "HAVING count() > 1)", parameters={"j": s.job_id}).result_rows
    finally:
        job.stop()
        planner.stop()
        up.stop()
    assert twice == [(0,)]
    assert not planner.saw("Traceback"), "\n".join(planner.lines[-40:])
    assert not up.saw("Traceback"), "\n".join(up.lines[-40:])
    assert all(x.dropped == 0 for x in job.sinks), [x.stats() for x in job.sinks]
    versions = query_elsewhere(planner_url, "SELECT map_version, count() FROM v_shard_maps "
                               "WHERE job_id = {j:String} GROUP BY map_version "
                               "ORDER BY map_version", j=s.job_id)
    assert [v for v, _ in versions] == list(range(1, seen[-1] + 1)), versions
    assert {n for _, n in versions} == {1}, versions


def test_console_kill9_restart_reads_through_the_sql_endpoint(
    clickhouse_url: str, tmp_path: Path
) -> None:
    """``shardsense console`` with ``clickhouse_url`` = the store owner's SQL endpoint."""
    import urllib.request

    from benchmarks.console_fixture import write_run
    from dash_app.sqlhttp import SqlServer

    client = connect(clickhouse_url)
    job = f"console-{tmp_path.name[-12:]}"
    write_run(client, job)
    sql = SqlServer(Settings.from_env({}, clickhouse_url=clickhouse_url), port=free_port())
    sql_url = sql.start().rstrip("/")
    port = free_port()
    console = ServiceProcess("console", env={
        "SHARDSENSE_CLICKHOUSE_URL": sql_url, "SHARDSENSE_CONSOLE_PORT": str(port),
        "SHARDSENSE_JOB_ID": job, "SHARDSENSE_DATA_DIR": str(tmp_path), "SHARDSENSE_LOG_LEVEL":
        "INFO"})

    def answers(path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return bool(r.status == 200 and r.read())
        except OSError:
            return False

    def serving() -> bool:
        return all(answers(p) for p in ("/healthz", "/", "/_dash-layout"))

    try:
        console.start()
        wait_until(serving, RECOVER_S, "the console's pages")
        tl = Timeline("console kill -9, restarted at once")
        console.kill9()
        tl.mark("console killed")
        assert not answers("/healthz")
        console.start()
        tl.watch("restarted console serves its pages", serving, RECOVER_S)
        tl.report("console killed")
        live = _live_refresh(port, job)  # the live page's callback: its panels' queries
        assert "could not load" not in live and "No batch timings" not in live, live[:2000]
        assert not console.saw("Traceback"), "\n".join(console.lines[-40:])
        assert not console.saw("callback failed"), "\n".join(console.lines[-40:])
    finally:
        console.stop()
        sql.stop()


def _live_refresh(port: int, job: str) -> str:
    """The live page's refresh callback, as the browser posts it; the JSON answer."""
    import json
    import urllib.request

    outputs = [("live-cards", "children"), ("batch-time-graph", "figure"),
               ("stragglers-panel", "children"), ("share-graph", "figure"),
               ("live-updated", "children")]
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": "live-interval", "property": "n_intervals", "value": 1},
                   {"id": "job", "property": "value", "value": job},
                   {"id": "live-window", "property": "value", "value": 600}],
        "changedPropIds": ["live-interval.n_intervals"], "state": [],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_dash-update-component", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return str(r.read().decode())
