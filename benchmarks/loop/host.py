"""The product path's services, hosted by the bench's parent process for each run.

chDB lets one process open a path, so like ``shardsense up`` the parent owns
ClickHouse (one client), the embedded broker (a child process) and, per run,
the Faust processor (a thread, with ``default_hooks``: features, models,
served forecaster), the planner service (a thread) and the :class:`Tap`. Each
run gets its own job id and topics, so runs never see each other, and fresh
processor and planner instances, so each run starts like a new job on a fresh
stack. After the run the host stops them and reads what ClickHouse stored.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from benchmarks.loop.methods import METHODS, resolve_overlay
from benchmarks.loop.tap import Tap
from shardsense.settings import Settings

__all__ = ["BenchHost", "base_settings"]

log = logging.getLogger(__name__)

_TIMINGS_SQL = """
SELECT worker_id, epoch, step, samples, data_wait_s, compute_s, map_version,
       toUnixTimestamp64Micro(ingest_ts) / 1e6, toUnixTimestamp64Micro(end_ts) / 1e6
FROM v_batch_timings WHERE job_id = {job:String} ORDER BY worker_id, epoch, step
"""
_TIMING_NAMES = ("worker_id", "epoch", "step", "samples", "data_wait_s", "compute_s",
                 "map_version", "ingest_ts", "end_ts")
_DECISIONS_SQL = """
SELECT toUnixTimestamp64Micro(ts) / 1e6, decision, reason, map_version, batch_sizes,
       moved_shards, predicted_gain_s, move_cost_s
FROM v_planner_decisions WHERE job_id = {job:String} ORDER BY ts
"""
_DECISION_NAMES = ("ts", "decision", "reason", "map_version", "batch_sizes", "moved_shards",
                   "predicted_gain_s", "move_cost_s")


def base_settings(data_dir: str, env: dict[str, str] | None = None) -> Settings:
    """The stack's settings: the user's SHARDSENSE_* environment, on free loopback ports.

    ``processor_warm_start_rows=0``: a fresh stack has no history to replay; the
    bench's shared chDB holds other runs' rows, which would only cost start-up time.
    """
    from shardsense.net import free_port

    return Settings.from_env(env, broker_port=free_port(), data_dir=data_dir,
                             kafka_bootstrap="embedded", processor_warm_start_rows=0,
                             log_level="WARNING")


def changed_settings(s: Settings) -> dict[str, Any]:
    """Settings that differ from their defaults (what results.json records)."""
    out = {}
    for f in dataclasses.fields(Settings):
        value = getattr(s, f.name)
        if f.default is not dataclasses.MISSING and value != f.default:
            out[f.name] = value
    return out


class BenchHost:
    """Broker + chDB for the whole bench; processor, planner and tap per run."""

    def __init__(self, data_dir: str | None = None, env: dict[str, str] | None = None) -> None:
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="shardsense-bench-")
        root = data_dir or (self._tmp.name if self._tmp else ".")
        self.base = base_settings(root, env)
        self.base = self.base.replace(clickhouse_url=self.base.resolved_clickhouse_url)
        self.stack: Any = None
        self._run: dict[str, Any] | None = None

    def start(self) -> BenchHost:
        from infra.stack import Stack

        self.stack = Stack(self.base, services=()).start()
        return self

    def prepare(self, scenario: str, method: str, shard_bytes: int) -> Settings | None:
        """Start the services of one run (None: the method runs without them)."""
        m = METHODS[method]
        if m.path != "product":
            return None
        changes, pending = resolve_overlay(m.overlay, shard_bytes=shard_bytes)
        tag = f"{scenario}-{method}-{uuid.uuid4().hex[:6]}"
        s = self.base.replace(
            job_id=f"bench-{tag}", topic_timings=f"bench.{tag}.timings",
            topic_predictions=f"bench.{tag}.predictions",
            topic_shard_maps=f"bench.{tag}.shard-maps",
            topic_dead_letters=f"bench.{tag}.dead-letters",
            data_dir=str(Path(self.base.data_dir) / "runs" / tag), **changes,
        )
        self._run = self._start_services(s)
        self._run["info"] = {"settings": changed_settings(s), "pending_settings": pending}
        return s

    def _start_services(self, s: Settings) -> dict[str, Any]:
        from planner_service.service import Planner
        from shardsense.kafka import create_topics
        from stream_processors.app import ProcessorThread, create_app
        from stream_processors.service import default_hooks

        create_topics(s)
        run: dict[str, Any] = {"settings": s, "tap": Tap(s).start()}
        client = self.stack.client
        run["hooks"] = default_hooks(s, client)
        app = create_app(s, client, run["hooks"])
        assigned = threading.Event()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _on_assigned(sender: Any, *args: Any, signal: Any, **kw: Any) -> None:
            assigned.set()

        run["app"] = app
        run["processor"] = ProcessorThread(app, log_level="WARNING").start()
        run["planner"] = Planner(s, client=client).start()
        if not assigned.wait(60):
            log.warning("bench: the processor's partitions were not assigned within 60 s")
        if not run["planner"].ready.wait(30):
            log.warning("bench: the planner did not catch up on shard maps within 30 s")
        return run

    def finish(self) -> dict[str, Any] | None:
        """Stop the run's services; what the tap saw and ClickHouse stored (None: no run)."""
        run, self._run = self._run, None
        if run is None:
            return None
        s: Settings = run["settings"]
        run["planner"].stop()
        run["processor"].stop()
        for hook in run["hooks"]:
            close = getattr(hook, "close", None)
            if close is not None:
                close()
        run["tap"].stop()
        client = self.stack.client
        job = {"job": s.job_id}
        timings = client.query(_TIMINGS_SQL, parameters=job).result_rows
        decisions = client.query(_DECISIONS_SQL, parameters=job).result_rows
        tap: Tap = run["tap"]
        return {
            **run["info"], "job_id": s.job_id,
            "timings": {n: [row[i] for row in timings] for i, n in enumerate(_TIMING_NAMES)},
            "decisions": [dict(zip(_DECISION_NAMES, row, strict=True)) for row in decisions],
            "predictions": [
                {"arrived": round(t, 4), "worker_id": p.worker_id, "ts": round(p.ts, 4),
                 "time_per_sample_s": float(f"{p.time_per_sample_s:.5g}"),
                 "slowdown": round(p.slowdown, 4), "straggler": p.straggler,
                 "based_on_step": p.based_on_step, "served": p.model_versions.get("served", "")}
                for t, p in tap.predictions],
            "maps": [{"arrived": t, "map_version": m.map_version, "ts": m.ts,
                      "batch_sizes": m.batch_sizes, "apply_epoch": m.apply_epoch,
                      "apply_step": m.apply_step, "reason": m.reason} for t, m in tap.maps],
            "stats": {"processor": dict(run["app"].shardsense_stats),
                      "planner": dict(run["planner"].stats)},
        }

    def stop(self) -> None:
        """Stop any run's services, then the stack; safe to call twice."""
        try:
            self.finish()
        finally:
            if self.stack is not None:
                self.stack.stop()
                self.stack = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
