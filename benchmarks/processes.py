"""Processor instances as real processes, and reading their chDB stores afterwards.

chDB lets one process open a path, and a process only one path: every
``shardsense processor`` child here gets its own data dir and chDB path, and a
store is read by a fresh interpreter once its processor has exited
(:func:`read_store`). With an ``http://`` ClickHouse the instances would share
one store; here the union of the stores is the deployment's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shardsense.settings import Settings

__all__ = ["ProcessorProcess", "cpu_seconds", "read_store"]


class ProcessorProcess:
    """``shardsense processor`` in a child process; its output appended to ``log``."""

    def __init__(self, settings: Settings, chdb_url: str, log: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.log = log
        self.data_dir = settings.data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.flags = [
            "--kafka-bootstrap", settings.kafka_bootstrap, "--clickhouse-url", chdb_url,
            "--data-dir", settings.data_dir, "--job-id", settings.job_id,
            "--topic-timings", settings.topic_timings,
            "--topic-predictions", settings.topic_predictions,
            "--topic-shard-maps", settings.topic_shard_maps,
            "--topic-dead-letters", settings.topic_dead_letters,
            "--topic-partitions", str(settings.topic_partitions),
            "--processor-retrain-s", str(settings.processor_retrain_s), "--log-level", "INFO",
            *extra,
        ]

    def start(self) -> ProcessorProcess:
        from infra.broker import die_with_parent

        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "processor", *self.flags],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int, timeout: float = 30.0) -> int:
        """Send ``sig``, reap the process, return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"processor ignored signal {sig}\n{self.tail()}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "processor log tail:\n" + "\n".join(text.splitlines()[-lines:])

    def stats(self) -> dict[str, Any]:
        """The counters it wrote on a clean exit (``stream_processors.service.STATS_FILE``)."""
        from stream_processors.service import STATS_FILE

        path = Path(self.data_dir) / STATS_FILE
        return json.loads(path.read_text()) if path.exists() else {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_READ = """
import json, sys
from shardsense.clickhouse import connect
client = connect(sys.argv[1])
params, queries = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({k: client.query(q, parameters=params).result_rows for k, q in queries.items()},
                 default=str))
"""


def read_store(chdb_url: str, queries: dict[str, str], params: dict[str, Any],
               timeout: float = 120.0) -> dict[str, list[list[Any]]]:
    """Run ``queries`` against a chDB path nobody holds, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _READ, chdb_url, json.dumps(params),
                          json.dumps(queries)], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"reading {chdb_url} failed: {out.stderr[-2000:]}")
    result: dict[str, list[list[Any]]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
