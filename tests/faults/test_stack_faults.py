"""Issue 12 (stack): ``shardsense up`` killed -9 and restarted at once, and its broker child
killed while it runs; the trainers' clients and the planner carry on by themselves.

``up`` runs as a child process (processor + planner, embedded broker, its own chDB
path); the trainer side lives in this process: fake ranks on real sinks and rank 0's
map source. After each fault a slowdown change must end in a new map on rank 0, with
a version above every earlier one: after the restart, the planner finds an empty map
topic and rebuilds its base map from ClickHouse. Recovery times are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardsense.net import free_port
from tests.support.faults import FakeJob, Timeline, UpProcess, fault_settings, service_env

pytestmark = pytest.mark.faults

WORLD, SHARDS, BATCH = 3, 48, 48
RECOVER_S = 90.0
#: A quick planner (the loop's own speed is issue 11's business, not this test's).
PLANNER_ENV = {
    "SHARDSENSE_PLANNER_INTERVAL_MS": "200",
    "SHARDSENSE_PLANNER_SMOOTHING_PCT": "100", "SHARDSENSE_PLANNER_LEARN_BANDWIDTH": "0",
    "SHARDSENSE_PLANNER_WARMUP_MS": "0", "SHARDSENSE_PLANNER_SHARD_BYTES": "1",
    "SHARDSENSE_PROCESSOR_FORECASTER": "ewma", "SHARDSENSE_PROCESSOR_RETRAIN_S": "0",
}

#: Runs once ``up`` has exited (the chDB path is free again): the job's stored facts.
VERIFY = """
import json, sys
from shardsense.clickhouse import connect
c = connect(sys.argv[1]); p = {"j": sys.argv[2]}
print(json.dumps({
    "versions": [r[0] for r in c.query("SELECT map_version FROM v_shard_maps "
                 "WHERE job_id = {j:String} ORDER BY ts", parameters=p).result_rows],
    "steps": c.query("SELECT groupUniqArray(step) FROM v_batch_timings "
                     "WHERE job_id = {j:String} AND worker_id = 0", parameters=p).result_rows[0][0],
}))
"""


def test_up_kill9_immediate_restart_and_broker_child_death(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "stack"
    s = fault_settings(f"127.0.0.1:{port}", f"chdb://{data / 'clickhouse'}", tmp_path)
    env = {**PLANNER_ENV, **service_env(s, broker=False)}
    args = ("--broker-port", str(port), "--services", "processor,planner", "--log-level",
            "WARNING")
    up = UpProcess(data, *args, env=env).start()
    up.wait_for("ShardSense stack ready", RECOVER_S)
    job = FakeJob(s, WORLD, SHARDS, BATCH)
    maps, sinks = job.maps, job.sinks
    seen: list[int] = []

    def adapts(tl: Timeline, rank: int, slowdown: float, shrinks: bool) -> None:
        seen.append(job.adapts(tl, rank, slowdown, shrinks, RECOVER_S))

    try:
        steady = Timeline("steady state")
        adapts(steady, 2, 2.0, shrinks=True)
        time.sleep(2.0)  # the planner's ClickHouse sink writes every 0.5 s: let it store v2

        tl = Timeline("kill -9 of `shardsense up`, restarted at once (same ports, data dir)")
        up.kill9()
        tl.mark("up killed")
        up = UpProcess(data, *args, env=env).start()
        tl.watch("restarted up is ready", lambda: up.saw("ShardSense stack ready"), RECOVER_S)
        sent = sum(x.sent for x in sinks)
        tl.watch_all({
            "sinks deliver again": lambda: sum(x.sent for x in sinks) > sent,
            "rank 0 republished its map": lambda: maps.counts["republished"] >= 1,
        }, RECOVER_S)
        adapts(tl, 2, 1.0, shrinks=False)
        tl.report("restarted up is ready")
        print("\n".join(line for line in up.lines if "planner" in line), flush=True)
        assert not up.saw("Traceback"), "\n".join(up.lines[-40:])

        tl2 = Timeline("embedded broker child killed -9 while `up` runs")
        child = up.state()["broker_pid"]
        subprocess.run(["kill", "-9", str(child)], check=True)
        tl2.mark("broker child killed")
        tl2.watch("broker restarted by up", lambda: up.state().get("broker_pid") not in
                  (None, child), RECOVER_S)
        sent = sum(x.sent for x in sinks)
        republished = maps.counts["republished"]
        tl2.watch_all({
            "sinks deliver again": lambda: sum(x.sent for x in sinks) > sent,
            "rank 0 republished its map": lambda: maps.counts["republished"] > republished,
        }, RECOVER_S)
        adapts(tl2, 1, 2.5, shrinks=True)
        tl2.report("broker restarted by up")
    finally:
        job.stop()
        code = up.stop()
    assert code == 0, "\n".join(up.lines[-40:])
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    facts = json.loads(subprocess.run(
        [sys.executable, "-c", VERIFY, s.resolved_clickhouse_url, s.job_id],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    assert facts["versions"] == sorted(facts["versions"]), "stored versions went backwards"
    assert max(facts["versions"]) == seen[-1]
    assert facts["steps"], "no timing of rank 0 stored"
