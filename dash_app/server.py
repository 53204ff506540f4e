"""Serving the console: a werkzeug server in a thread, optional basic auth, ``shardsense console``.

The embedded stack calls :class:`ConsoleServer` from the process that owns the
chDB path (passing its client); ``main`` runs the console as its own process
against a ClickHouse server. Debug mode is never switched on: no reloader, no
in-browser tracebacks, no debugger PIN.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from shardsense.errors import PortInUse
from shardsense.settings import Settings, env_name, redact

__all__ = ["BasicAuth", "ConsoleServer", "Credentials", "ThreadedServer", "main"]

log = logging.getLogger("shardsense.console")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Credentials:
    """One ``user:password``, checked in constant time.

    Both sides are hashed before ``hmac.compare_digest`` so the comparison takes
    the same time whatever the offered value's length or content.
    """

    def __init__(self, credentials: str) -> None:
        self._expected = self._digest(credentials)

    @staticmethod
    def _digest(credentials: str) -> bytes:
        token = base64.b64encode(credentials.encode()).decode()
        return hashlib.sha256(f"Basic {token}".encode()).digest()

    def accepts_header(self, header: str) -> bool:
        """Whether an ``Authorization: Basic ...`` header carries these credentials."""
        given = hashlib.sha256(header.strip().encode()).digest()
        return hmac.compare_digest(given, self._expected)

    def accepts(self, user: str, password: str) -> bool:
        return hmac.compare_digest(self._digest(f"{user}:{password}"), self._expected)


class BasicAuth:
    """WSGI middleware asking for ``user:password`` on every request (pages and callbacks).

    ``open_paths`` (the health probe) answer without credentials and reveal nothing.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        credentials: str,
        open_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.credentials = Credentials(credentials)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self.open_paths:
            return self.app(environ, start_response)
        if self.credentials.accepts_header(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", 'Basic realm="ShardSense console", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"Authentication required.\n"]


class _QuietHandler(WSGIRequestHandler):
    """Access lines at DEBUG only: the live page polls every few seconds."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


class ThreadedServer:
    """A WSGI app served by werkzeug (threaded) from a daemon thread, on ``host:port``.

    ``port=0`` picks a free port; :meth:`start` returns the URL once the socket
    listens, or raises :class:`PortInUse` naming ``port_setting``.
    """

    name = "server"
    port_setting = ""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._server.server_port}/"

    def wsgi_app(self) -> Callable[..., Iterable[bytes]]:
        """The app to serve, built on first start."""
        raise NotImplementedError

    def start(self) -> str:
        """Bind and serve in the background; the URL once the socket listens."""
        if self._server is not None:
            return self.url
        app = self.wsgi_app()
        try:
            self._server = make_server(
                self.host, self.port, app, threaded=True, request_handler=_QuietHandler
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use; stop what holds it or "
                f"pick another with {env_name(self.port_setting)} / "
                f"--{self.port_setting.replace('_', '-')}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"shardsense-{self.name}", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ConsoleServer(ThreadedServer):
    """The console (Dash) on ``console_host:console_port``."""

    name = "console"
    port_setting = "console_port"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: Any = None,
        app: Any = None,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        super().__init__(
            host if host is not None else self.settings.console_host,
            port if port is not None else self.settings.console_port,
        )
        self._client = client
        self.app = app

    def wsgi_app(self) -> Callable[..., Iterable[bytes]]:
        if self.app is None:
            from dash_app.app import create_app

            self.app = create_app(self.settings, self._client)
        server: Callable[..., Iterable[bytes]] = self.app.server
        return server

    def start(self) -> str:
        url = super().start()
        if self.host not in _LOOPBACK and not self.settings.console_auth:
            log.warning("console bound to %s without basic auth (set SHARDSENSE_CONSOLE_AUTH)",
                        self.host)
        return url

    def stop(self) -> None:
        super().stop()
        console = getattr(self.app, "console", None)
        if console is not None:
            console.close()


def main(settings: Settings | None = None) -> int:
    """``shardsense console``: serve until SIGINT/SIGTERM; 2 when ClickHouse cannot be opened."""
    from shardsense.clickhouse import connect

    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    url = settings.resolved_clickhouse_url
    try:
        client = connect(url)
        client.query("SELECT 1")
    except Exception as exc:
        hint = (" chDB lets one process open a path: while the embedded stack runs, it serves "
                "the console itself." if settings.embedded_clickhouse else "")
        log.error("console cannot open ClickHouse at %s: %s.%s", redact(url), exc, hint)
        return 2
    try:
        from shardsense.schema import apply_schema

        apply_schema(client)
    except Exception as exc:  # a read-only user cannot; the pages then show what exists
        log.warning("console did not apply the schema: %s", exc)
    from dash_app.sqlhttp import start_sql_server

    server, sql = ConsoleServer(settings, client=client), None
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("ShardSense console at %s (ClickHouse %s)", server.start(), redact(url))
        sql = start_sql_server(settings)
        if sql is not None:
            log.info("ClickHouse HTTP (read-only) at %s", sql.url)
        done.wait()
    finally:
        if sql is not None:
            sql.stop()
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
