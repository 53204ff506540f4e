"""The SQL endpoint as a WSGI app: ClickHouse's HTTP interface, read-only, over chDB.

Every query passes the console's guard (:func:`dash_app.sqlguard.parse_sql`)
and runs in a read-only session of :class:`~dash_app.sqlhttp.engine.Engine`;
answers and errors are shaped as ClickHouse shapes them, so curl,
clickhouse-connect and clickhouse-go (Grafana's data source) read them as
they read a server's. ``/``, ``/ping`` and ``/replicas_status`` answer
``Ok.`` without credentials (health checks); queries need the console's
basic auth when it is set.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from dash_app.server import Credentials
from dash_app.sqlguard import parse_sql
from dash_app.sqlhttp import native
from dash_app.sqlhttp.engine import Engine, Result
from dash_app.sqlhttp.protocol import (
    ClickHouseError,
    QueryRequest,
    compress,
    content_type,
    credentials,
    decompress,
    error_body,
    negotiate_encoding,
    parse_request,
    sort_settings,
)
from shardsense.errors import SqlRefused

__all__ = ["MAX_QUERY_BYTES", "SqlApp"]

log = logging.getLogger("shardsense.sql")

#: Largest query accepted, compressed or not (ClickHouse parses at most 256 KiB by default).
MAX_QUERY_BYTES = 1 << 20
_HEALTH_PATHS = ("/", "/ping", "/replicas_status")
_NO_HANDLER = (
    "There is no handle {path}\n\nUse / or /ping for health checks.\n"
    "Send queries with POST / or GET /?query=... (read-only: SELECT, WITH, SHOW, DESCRIBE, "
    "EXPLAIN, EXISTS).\n"
)


class SqlApp:
    """WSGI callable answering ClickHouse HTTP requests from ``engine`` (``auth``: 'user:pass')."""

    def __init__(self, engine: Engine, *, auth: str = "") -> None:
        self.engine = engine
        self.credentials = Credentials(auth) if auth else None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        response = self.respond(request)
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        """The answer to one request; never raises."""
        query_id = request.args.get("query_id") or str(uuid.uuid4())
        try:
            if request.method not in ("GET", "POST", "HEAD"):
                return Response("Only GET, POST and HEAD are served.\n", 405,
                                {"Allow": "GET, POST, HEAD"})
            if request.path not in _HEALTH_PATHS:
                return Response(_NO_HANDLER.format(path=request.path), 404,
                                content_type="text/plain; charset=UTF-8")
            body = self._body(request)
            if request.path != "/" or ("query" not in request.args and not body):
                return Response("Ok.\n", 200, content_type="text/html; charset=UTF-8")
            self._authorize(request)
            return self._query(request, body, query_id)
        except ClickHouseError as err:
            return self._error(err, query_id)
        except Exception as exc:  # a bug here must not take the endpoint down
            log.exception("SQL endpoint: unexpected failure")
            return self._error(ClickHouseError(1001, "STD_EXCEPTION", str(exc)), query_id)

    def _authorize(self, request: Request) -> None:
        if self.credentials is None:
            return
        given = credentials(dict(request.headers.items()), request.args)
        if given is None:
            raise ClickHouseError(194, "REQUIRED_PASSWORD", "this endpoint needs the console's "
                                  "credentials (basic auth, X-ClickHouse-User/Key or ?user=)")
        if not self.credentials.accepts(*given):
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"{given[0] or 'default'}: "
                                  "Authentication failed: password is incorrect, or there is "
                                  "no user with such name")

    @staticmethod
    def _body(request: Request) -> str:
        """The POST body as text (query text; multipart bodies are read as a form)."""
        if request.method != "POST" or request.mimetype == "multipart/form-data":
            return ""
        if (request.content_length or 0) > MAX_QUERY_BYTES:
            raise _too_large()
        data = request.stream.read(MAX_QUERY_BYTES + 1)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            data = decompress(data, encoding, MAX_QUERY_BYTES)
        if len(data) > MAX_QUERY_BYTES:
            raise _too_large()
        return data.decode("utf-8", "replace")

    @staticmethod
    def _form(request: Request) -> dict[str, str] | None:
        if request.mimetype != "multipart/form-data":
            return None
        if request.files:
            raise ClickHouseError(48, "NOT_IMPLEMENTED", "external data (tables sent with the "
                                  "query) is not served")
        return dict(request.form.items())

    def _query(self, request: Request, body: str, query_id: str) -> Response:
        parsed = parse_request(dict(request.args.items()), body, self._form(request))
        try:
            checked = parse_sql(parsed.sql)
        except SqlRefused as refused:
            raise ClickHouseError(refused.code, refused.name, str(refused)) from None
        fmt = checked.format or parsed.default_format
        profile = sort_settings(parsed.settings, self.engine.settings)
        result = self.engine.run(checked.statement, parsed.default_format, parsed.params,
                                 parsed.database or "default", profile)
        data = result.data
        if fmt == "Native" and parsed.protocol_version:
            try:
                data = native.at_revision(data, parsed.protocol_version)
            except native.NotServed as exc:
                raise ClickHouseError(48, "NOT_IMPLEMENTED", str(exc)) from None
        log.debug("SQL endpoint: %d bytes of %s for %r", len(data), fmt, checked.statement[:200])
        return self._answer(request, parsed, result, data, fmt, query_id)

    def _answer(self, request: Request, parsed: QueryRequest, result: Result, data: bytes,
                fmt: str, query_id: str) -> Response:
        headers = self._headers(query_id)
        headers.update({
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Summary": json.dumps({
                "read_rows": str(result.rows_read), "read_bytes": str(result.bytes_read),
                "written_rows": "0", "written_bytes": "0",
                "total_rows_to_read": str(result.rows_read), "result_bytes": str(len(data)),
                "elapsed_ns": str(int(result.elapsed_s * 1e9)),
            }),
        })
        enabled = parsed.http_compression
        if enabled is None:
            enabled = self.engine.settings.get("enable_http_compression") == "1"
        accept = request.headers.get("Accept-Encoding", "") if enabled else ""
        encoding = negotiate_encoding(accept)
        if encoding:
            data = compress(data, encoding, parsed.compression_level)
            headers["Content-Encoding"] = encoding
        return Response(data, 200, headers, content_type=content_type(fmt))

    def _headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "X-ClickHouse-Server-Display-Name": self.engine.display_name,
        }

    def _error(self, err: ClickHouseError, query_id: str) -> Response:
        log.debug("SQL endpoint: %s %s", err.code, err.message)
        headers = {**self._headers(query_id), "X-ClickHouse-Exception-Code": str(err.code)}
        if err.code == 194:
            headers["WWW-Authenticate"] = 'Basic realm="ShardSense SQL", charset="UTF-8"'
        return Response(error_body(err, self.engine.version), err.status, headers,
                        content_type="text/plain; charset=UTF-8")


def _too_large() -> ClickHouseError:
    return ClickHouseError(392, "QUERY_IS_TOO_LARGE",
                           f"the query is larger than {MAX_QUERY_BYTES} bytes")
