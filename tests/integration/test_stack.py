"""``shardsense up``: starts on loopback, and Ctrl-C leaves no process and no port behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardsense.net import free_port, port_is_free

pytestmark = pytest.mark.integration


def _up(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up", "--data-dir", str(tmp_path),
         "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line.rstrip())
            if needle in line:
                return lines
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"{needle!r} not seen; output:\n" + "\n".join(lines))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def test_up_then_ctrl_c_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    broker_port, console_port, sql_port = free_port(), free_port(), free_port()
    proc = _up(tmp_path, "--broker-port", str(broker_port), "--console-port", str(console_port),
               "--sql-port", str(sql_port))
    try:
        _wait_line(proc, "ShardSense stack ready", timeout=90)
        state = json.loads((tmp_path / "stack.json").read_text())
        assert _listening(broker_port) and _alive(state["broker_pid"])
        assert state["console_url"] == f"http://127.0.0.1:{console_port}/"
        assert _listening(console_port)
        assert state["sql_url"] == f"http://127.0.0.1:{sql_port}/" and _listening(sql_port)
        assert not _reachable_beyond_loopback(sql_port)
        assert not _reachable_beyond_loopback(broker_port)
        time.sleep(3)  # let the processor join its group: stop mid-flight, not before
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "ShardSense stack stopped" in out
    assert not _alive(state["broker_pid"])
    assert port_is_free(broker_port) and port_is_free(console_port) and port_is_free(sql_port)


def _reachable_beyond_loopback(port: int) -> bool:
    """Whether the port answers on a non-loopback address of this host."""
    try:
        addr = socket.gethostbyname(socket.gethostname())
    except OSError:
        return False
    if addr.startswith("127."):
        return False
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((addr, port)) == 0


def test_up_names_the_taken_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = _up(tmp_path, "--broker-port", str(port))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out
    assert "SHARDSENSE_BROKER_PORT" in out


def test_bad_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    proc = _up(tmp_path, "--console-port", "99999")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "SHARDSENSE_CONSOLE_PORT" in out


def test_schema_applies_idempotently(clickhouse_url: str) -> None:
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema

    client = connect(clickhouse_url)
    assert apply_schema(client) == []  # the session fixture applied it already
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {"batch_timings", "worker_features", "predictions", "planner_decisions",
            "shard_maps", "dead_letters", "schema_migrations"} <= tables
