"""The embedded single-machine stack behind ``shardsense up``.

One process owns everything that touches chDB (chDB allows one process per
path): the Faust processor runs in the main thread, the planner and the
console in threads beside it, all sharing one ClickHouse client. The
Kafka-protocol broker is a child process bound to 127.0.0.1 that dies with
us (PR_SET_PDEATHSIG) and is reaped on every exit path. With an external
bootstrap no broker is started; with an http:// ClickHouse each service can
also run as its own process (``shardsense processor|planner|console``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Protocol

from infra.broker import EmbeddedBroker
from infra.watchdog import BrokerWatchdog
from shardsense.clickhouse import connect
from shardsense.kafka import create_topics, wait_for_broker
from shardsense.schema import apply_schema
from shardsense.settings import Settings, redact

__all__ = ["SERVICES", "Stack", "up"]

log = logging.getLogger(__name__)

#: ``sql`` is the read-only SQL endpoint over the stack's chDB (started with the console too):
#: how services run as their own processes read the store this process owns.
SERVICES = ("processor", "planner", "console", "sql")


class _Service(Protocol):
    def stop(self) -> None: ...


class Stack:
    """Broker (if embedded), topics, schema, then the planner and console threads.

    The processor is not started here: it needs the main thread (``up``) or a
    :class:`~stream_processors.app.ProcessorThread` (tests, demo).
    """

    def __init__(
        self, settings: Settings, services: tuple[str, ...] = SERVICES,
        on_broker_lost: Any = None,
    ) -> None:
        """``on_broker_lost``: called if the embedded broker keeps dying (``up`` stops then)."""
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"services: unknown {sorted(unknown)}; choose from {SERVICES}")
        self.settings = settings
        self.services = services
        self.on_broker_lost = on_broker_lost
        self.broker: EmbeddedBroker | None = None
        self.watchdog: BrokerWatchdog | None = None
        self.client: Any = None
        self.console_url: str | None = None
        self.sql_url: str | None = None
        self._running: list[_Service] = []

    def start(self) -> Stack:
        s = self.settings
        try:
            if s.embedded_broker:
                data = Path(s.data_dir)
                data.mkdir(parents=True, exist_ok=True)
                self.broker = EmbeddedBroker(
                    s.broker_port, log_path=data / "broker.log", pid_path=data / "broker.pid"
                ).start()
            wait_for_broker(s)
            create_topics(s)
            self.watchdog = BrokerWatchdog(s, self.broker, on_restart=self._write_state,
                                           on_give_up=self.on_broker_lost).start()
            self.client = connect(s.resolved_clickhouse_url)
            applied = apply_schema(self.client)
            log.info("ClickHouse %s ready (applied %s)", redact(s.resolved_clickhouse_url), applied)
            if "planner" in self.services:
                self._running.append(self._start_planner())
            if "console" in self.services:
                self._running.append(self._start_console())
            if "sql" in self.services or "console" in self.services:
                self._start_sql()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def _start_planner(self) -> _Service:
        from planner_service.service import Planner

        planner = Planner(self.settings, client=self.client)
        planner.start()
        return planner

    def _start_console(self) -> _Service:
        from dash_app.server import ConsoleServer

        server = ConsoleServer(self.settings, client=self.client)
        self.console_url = server.start()
        return server

    def _start_sql(self) -> None:
        """The read-only ClickHouse HTTP endpoint, beside the console (chDB only)."""
        from dash_app.sqlhttp import start_sql_server

        server = start_sql_server(self.settings)
        if server is not None:
            self.sql_url = server.url
            self._running.append(server)

    def _write_state(self) -> None:
        """``<data_dir>/stack.json``: pids and ports, for operators and the shutdown test."""
        state = {
            "pid": os.getpid(),
            "broker_pid": self.broker.pid if self.broker else None,
            "bootstrap": self.settings.bootstrap_servers,
            "console_url": self.console_url,
            "sql_url": self.sql_url,
            "started": time.time(),
        }
        path = Path(self.settings.data_dir)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "stack.json.tmp"  # atomic: the watchdog rewrites it while others read
        tmp.write_text(json.dumps(state))
        tmp.replace(path / "stack.json")

    def stop(self) -> None:
        """Stop services in reverse order, then the broker; safe to call twice."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        while self._running:
            service = self._running.pop()
            try:
                service.stop()
            except Exception:
                log.exception("stopping %r failed", service)
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def banner(self) -> str:
        s = self.settings
        lines = [
            "ShardSense stack ready",
            f"  Kafka       {s.bootstrap_servers}" + (" (embedded)" if self.broker else ""),
            f"  ClickHouse  {redact(s.resolved_clickhouse_url)}",
            f"  job         {s.job_id}",
        ]
        if self.console_url:
            lines.append(f"  console     {self.console_url}")
        if self.sql_url:
            lines.append(f"  SQL         {self.sql_url} (ClickHouse HTTP, read-only)")
        lines.append("  Ctrl-C to stop")
        return "\n".join(lines)


def up(settings: Settings, services: tuple[str, ...] = SERVICES) -> int:
    """Run the stack until Ctrl-C / SIGTERM; every child process is reaped on the way out."""
    from stream_processors.app import create_app, run_worker
    from stream_processors.service import default_hooks

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # Faust installs its own once it runs
    stack = Stack(settings, tuple(x for x in services if x != "processor"),
                  on_broker_lost=lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        stack.start()
        print(stack.banner(), flush=True)
        if "processor" not in services:
            while True:
                time.sleep(3600)
        app = create_app(settings, stack.client, default_hooks(settings, stack.client))
        return run_worker(app, settings.log_level)
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
        print("ShardSense stack stopped", flush=True)
