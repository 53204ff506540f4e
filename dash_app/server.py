"""Serving the console: a werkzeug server in a thread, optional basic auth, ``shardsense console``.

The embedded stack calls :class:`ConsoleServer` from the process that owns the
chDB path (passing its client); ``main`` runs the console as its own process
against a ClickHouse server. Debug mode is never switched on: no reloader, no
in-browser tracebacks, no debugger PIN.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from shardsense.settings import Settings, redact

__all__ = ["BasicAuth", "ConsoleServer", "main"]

log = logging.getLogger("shardsense.console")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BasicAuth:
    """WSGI middleware asking for ``user:password`` on every request (pages and callbacks).

    Both sides are hashed before ``hmac.compare_digest`` so the comparison takes
    the same time whatever the header's length or content. ``open_paths`` (the
    health probe) answer without credentials and reveal nothing.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        credentials: str,
        open_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        token = base64.b64encode(credentials.encode()).decode()
        self._expected = hashlib.sha256(f"Basic {token}".encode()).digest()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self.open_paths:
            return self.app(environ, start_response)
        given = environ.get("HTTP_AUTHORIZATION", "").strip()
        if hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._expected):
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


class ConsoleServer:
    """The console served by werkzeug (threaded) from a daemon thread.

    ``port=0`` picks a free port; :meth:`start` returns the URL to open.
    """

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
        self.host = host if host is not None else self.settings.console_host
        self.port = port if port is not None else self.settings.console_port
        self._client = client
        self.app = app
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("console server is not running")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._server.server_port}/"

    def start(self) -> str:
        """Bind and serve in the background; the URL once the socket listens."""
        if self._server is not None:
            return self.url
        if self.app is None:
            from dash_app.app import create_app

            self.app = create_app(self.settings, self._client)
        self._server = make_server(
            self.host, self.port, self.app.server, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="shardsense-console", daemon=True
        )
        self._thread.start()
        if self.host not in _LOOPBACK and not self.settings.console_auth:
            log.warning("console bound to %s without basic auth (set SHARDSENSE_CONSOLE_AUTH)",
                        self.host)
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        console = getattr(self.app, "console", None)
        if console is not None:
            console.close()

    def __enter__(self) -> ConsoleServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    server = ConsoleServer(settings, client=client)
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("ShardSense console at %s (ClickHouse %s)", server.start(), redact(url))
        done.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
