"""``SqlServer``: the SQL endpoint in a thread of the process that owns the chDB path.

chDB lets one process open a path, so outside clients (curl, notebooks,
Grafana) reach the embedded ClickHouse only through that process: the stack
(``shardsense up``) and ``shardsense console`` start this beside the console.
Against an ``http(s)://`` ClickHouse it is not started; clients connect to
that server directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from dash_app.server import ThreadedServer
from dash_app.sqlguard import readonly_settings
from shardsense.settings import Settings, redact

__all__ = ["SqlServer", "endpoint_settings", "start_sql_server"]

log = logging.getLogger("shardsense.sql")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def endpoint_settings(settings: Settings) -> dict[str, Any]:
    """The console's read-only limits, the row limit exact, HTTP compression on.

    The console cuts its frame at the row limit itself; here ``limit`` does it
    (on the outermost result only), as ``result_overflow_mode='break'`` stops
    at a block boundary. Clients read ``enable_http_compression`` as set.
    """
    limits = readonly_settings(settings.console_sql_timeout_s, settings.console_sql_max_rows)
    readonly = limits.pop("readonly")
    return {**limits, "limit": settings.console_sql_max_rows, "enable_http_compression": 1,
            "readonly": readonly}


class SqlServer(ThreadedServer):
    """ClickHouse's HTTP interface, read-only, on ``sql_host:sql_port`` over the chDB path."""

    name = "sql"
    port_setting = "sql_port"

    def __init__(self, settings: Settings, *, host: str | None = None,
                 port: int | None = None) -> None:
        parts = urlsplit(settings.resolved_clickhouse_url)
        if parts.scheme != "chdb":
            raise ValueError("settings: the SQL endpoint serves chDB; connect to "
                             f"{redact(settings.resolved_clickhouse_url)} directly")
        super().__init__(host if host is not None else settings.sql_host,
                         port if port is not None else settings.sql_port)
        self.settings = settings
        self.path = parts.path
        self.engine: Any = None

    def wsgi_app(self) -> Callable[..., Iterable[bytes]]:
        from dash_app.sqlhttp.app import SqlApp
        from dash_app.sqlhttp.engine import Engine

        if self.engine is None:
            self.engine = Engine(self.path, endpoint_settings(self.settings))
        return SqlApp(self.engine, auth=self.settings.console_auth)

    def start(self) -> str:
        url = super().start()
        if self.host not in _LOOPBACK and not self.settings.console_auth:
            log.warning("SQL endpoint bound to %s without basic auth (set "
                        "SHARDSENSE_CONSOLE_AUTH)", self.host)
        return url

    def stop(self) -> None:
        super().stop()
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def start_sql_server(settings: Settings) -> SqlServer | None:
    """The endpoint, started, when ClickHouse is chDB; None (and one log line) otherwise."""
    if not settings.embedded_clickhouse:
        log.info("SQL endpoint not started: query %s directly",
                 redact(settings.resolved_clickhouse_url))
        return None
    server = SqlServer(settings)
    server.start()
    return server
