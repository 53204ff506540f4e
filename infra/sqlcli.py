"""``shardsense sql "SELECT ..."``: one read-only query, as a table, CSV, TSV or JSON.

It asks the running stack's SQL endpoint (``http://127.0.0.1:<sql_port>``,
with the console's credentials when they are set) or any ClickHouse URL
(``--url http(s)://...``, or ``chdb:///path`` when no stack holds that path).
The console's guard checks the query first, so a refused statement never
leaves this process: it exits 1 with the refusal, as does a query ClickHouse
rejects; the session is read-only with the console's limits as well.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any
from urllib.parse import quote, urlsplit

from shardsense.settings import Settings, redact

__all__ = ["FORMATS", "add_arguments", "default_url", "main"]

#: ``--format`` choices -> the ClickHouse output format asked for.
FORMATS = {"csv": "CSVWithNames", "tsv": "TSVWithNames", "json": "JSON", "jsonl": "JSONEachRow"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", default="-",
                        help="one read-only statement; '-' or nothing reads it from stdin")
    parser.add_argument("--url", default="",
                        help="ClickHouse to ask: http(s)://user:pass@host:port/db or "
                             "chdb:///path (default: the stack's SQL endpoint on sql_port, "
                             "or clickhouse_url when that is a server)")
    parser.add_argument("--format", choices=["table", *FORMATS], default="table",
                        help="table (default, rich), csv/tsv (with a header), json "
                             "(ClickHouse's JSON) or jsonl (one object per row)")


def default_url(settings: Settings) -> str:
    """The stack's endpoint (with the console's credentials), or the configured server."""
    if not settings.embedded_clickhouse:
        return settings.resolved_clickhouse_url
    host = settings.sql_host if settings.sql_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    auth = ""
    if settings.console_auth:
        user, _, password = settings.console_auth.partition(":")
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return f"http://{auth}{host}:{settings.sql_port}"


def _client(url: str, settings: Settings) -> Any:
    import clickhouse_connect  # noqa: F401  (it sets urllib3's level on import; we set it after)

    from dash_app.sqlguard import readonly_client

    if settings.log_level != "DEBUG":  # a refused connection is reported once, below
        for noisy in ("urllib3", "clickhouse_connect"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    return readonly_client(url, timeout_s=settings.console_sql_timeout_s,
                           max_rows=settings.console_sql_max_rows)


def _table(result: Any, max_rows: int) -> Any:
    from rich.table import Table

    rows = result.result_rows
    cut = len(rows) > max_rows
    shown = min(len(rows), max_rows)
    note = f"{shown:,} row{'' if shown == 1 else 's'}" + (" (cut at the row limit)" if cut else "")
    table = Table(caption=note, caption_justify="left")
    for name, kind in zip(result.column_names, result.column_types, strict=True):
        numeric = any(w in kind.name for w in ("Int", "Float", "Decimal"))
        table.add_column(name, justify="right" if numeric else "left")
    for row in rows[:max_rows]:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    return table


def _explain(exc: Exception, url: str) -> str:
    from dash_app.sqlguard import explain_error

    text = explain_error(exc)
    if "Cannot lock file" in str(exc) or "already runs chDB" in str(exc):
        text += (" chDB lets one process open a path: while the stack runs, ask its SQL "
                 "endpoint (leave out --url).")
    elif "Connection refused" in str(exc) or "NewConnectionError" in str(exc):
        text = (f"nothing answers at {redact(url)}; is `shardsense up` running (it serves "
                "SQL on sql_port)?")
    return text


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Print the answer to ``args.query``; 1 when it is refused or fails."""
    from rich.console import Console

    from dash_app.sqlguard import parse_sql
    from shardsense.errors import SqlRefused

    text = sys.stdin.read() if args.query == "-" else args.query
    try:
        checked = parse_sql(text)
    except SqlRefused as refused:
        print(f"shardsense sql: {refused}", file=sys.stderr)
        return 1
    url = args.url or default_url(settings)
    try:
        client = _client(url, settings)
        if checked.format or args.format != "table":
            fmt = None if checked.format else FORMATS[args.format]
            sys.stdout.buffer.write(client.raw_query(checked.statement, fmt=fmt))
            sys.stdout.flush()
        else:
            result = client.query(checked.statement)
            Console().print(_table(result, settings.console_sql_max_rows))
    except Exception as exc:
        print(f"shardsense sql: {_explain(exc, url)}", file=sys.stderr)
        return 1
    if urlsplit(url).scheme == "chdb":
        client.close()
    return 0
