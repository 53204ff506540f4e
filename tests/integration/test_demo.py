"""End to end, one real run: the demo's lagging ranks shrink, and its tables answer SQL.

Runs ``shardsense demo --keep`` as a process (it owns its own chDB path): real
broker, Faust processor with its models, planner, console and SQL endpoint; only
the ranks' speeds are simulated, and a few malformed reports are sent to the
timings topic. While the stack is kept up, curl and clickhouse-connect ask its
SQL endpoint, and every question of docs/ANALYTICS.md is answered from what the
run wrote. Ctrl-C then stops it cleanly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shardsense.net import free_port, port_is_free

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "ANALYTICS.md"
SLOW_RANKS = {2, 5}  # DemoConfig's


def _script() -> str:
    """The installed ``shardsense`` console script (wherever its module lives)."""
    script = Path(sys.executable).with_name("shardsense")
    return str(script) if script.exists() else "shardsense"


def _read_until(proc: subprocess.Popen[str], needle: str, lines: list[str], timeout: float) -> None:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line.rstrip("\n"))
            if needle in line:
                return
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"{needle!r} not seen; output:\n" + "\n".join(lines[-80:]))


def _send_bad_reports(bootstrap: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for payload in (b"not json at all", b'{"v": 99, "kind": "timing_report"}', b"[1, 2]"):
        producer.produce("shardsense.timings", payload, key=b"default")
    assert producer.flush(30) == 0


def _questions() -> dict[str, str]:
    found = re.findall(r"<!-- query: ([\w-]+) -->\n```sql\n(.*?)```", DOC.read_text(), re.S)
    return dict(found)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo process, kept up after 20 s of training; its output and ports."""
    broker, console, sql = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [_script(), "demo", "--seconds", "20", "--keep",
         "--data-dir", str(tmp_path_factory.mktemp("demo")), "--broker-port", str(broker),
         "--console-port", str(console), "--sql-port", str(sql), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        _read_until(proc, "demo running", lines, timeout=120)
        _send_bad_reports(f"127.0.0.1:{broker}")
        _read_until(proc, "the stack stays up", lines, timeout=180)
        yield {"proc": proc, "lines": lines, "sql": f"http://127.0.0.1:{sql}/",
               "ports": (broker, console, sql)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_lagging_ranks_share_shrinks_shown_once(run: Any) -> None:
    out = "\n".join(run["lines"])
    start = out.index("demo running")
    assert "console     http://127.0.0.1:" in out[:start]  # the URLs come first
    assert "SQL         http://127.0.0.1:" in out[:start]
    assert out.count("per epoch (oracle") == 1, out  # the live view leaves one table
    rows = re.findall(r"│\s+(\d+) │\s+([\d,]+) │\s+[\d.]+ │\s+[\d.]+x │\s+([\d.]+)% │", out)
    assert rows, out
    shares = [float(r[2]) for r in rows]
    versions = [int(v) for r in rows for v in r[1].split(",")]
    assert shares[0] == pytest.approx(12.5), out
    assert max(versions) >= 2, "the planner never published a new map:\n" + out
    assert shares[-1] < 10.0, out  # 2 of 8 ranks at half speed: ideal share 7.1%


def test_curl_and_clickhouse_connect_ask_the_running_stack(run: Any) -> None:
    import clickhouse_connect

    curl = shutil.which("curl")
    if curl:
        out = subprocess.run([curl, "-sS", run["sql"] + "?query=SELECT%20count()%20FROM%20"
                              "v_batch_timings%20WHERE%20job_id='default'"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        assert int(out) > 1000
        out = subprocess.run([curl, "-sS", "--data-binary", "DROP TABLE batch_timings",
                              run["sql"]], capture_output=True, text=True, timeout=30).stdout
        assert out.startswith("Code: 164.")
    client = clickhouse_connect.get_client(dsn=run["sql"].rstrip("/"))
    frame = client.query_df("SELECT worker_id, count() AS n FROM v_predictions "
                            "WHERE job_id = 'default' GROUP BY worker_id")
    assert set(frame["worker_id"]) == set(range(8))
    client.close()


def _ask(run: Any, name: str) -> Any:
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=run["sql"].rstrip("/"))
    try:
        return client.query_df(_questions()[name])
    finally:
        client.close()


def test_the_analytics_doc_answers_from_the_run(run: Any) -> None:
    assert len(_questions()) >= 6
    strag = _ask(run, "straggler-minutes")
    assert set(strag["worker_id"].head(2)) == SLOW_RANKS
    assert (strag["straggler_minutes"].head(2) > 0).all()
    assert (strag["straggler_minutes"].iloc[2:] < strag["busy_minutes"].iloc[2:] / 2).all()
    error = _ask(run, "forecaster-error")
    assert len(error) >= 1 and (error["predictions"] > 0).all()
    assert (error["mean_abs_pct_error"] < 0.5).all()
    maps = _ask(run, "map-changes")
    assert list(maps["map_version"]) == sorted(maps["map_version"]) and len(maps) >= 2
    assert maps["realised_gain_ms_per_step"].iloc[1] > 0  # the planner's map made steps faster
    letters = _ask(run, "dead-letters")
    assert {"not_json"} <= set(letters["code"]) and letters["letters"].sum() >= 3
    slow = _ask(run, "slowest-ranks")
    assert set(slow["worker_id"]) == SLOW_RANKS and (slow["vs_median"] > 1.5).all()
    outcomes = _ask(run, "planner-outcomes")
    assert "published" in set(outcomes["decision"])
    fresh = _ask(run, "freshness")
    assert (fresh["batches"] > 0).all() and (fresh["lag_p50_s"] < 30).all()


def test_ctrl_c_stops_the_kept_stack(run: Any) -> None:
    proc = run["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0
    deadline = time.monotonic() + 20
    while not all(port_is_free(p) for p in run["ports"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(port_is_free(p) for p in run["ports"])
