"""Read-only SQL for the console: a lexical guard in front of a read-only ClickHouse session.

User SQL runs on its own client (:func:`readonly_client`) whose session has
``readonly=1`` plus the time and row limits, set once when it is created, so
no query can lift them (ClickHouse refuses any setting change under
readonly=1). It is a separate client on purpose: with clickhouse-connect's
chDB backend, per-query settings on a statement it treats as an INSERT are
applied with SET and restored afterwards, and when readonly=1 makes that SET
or the restore fail, the session stays read-only for good (measured with
clickhouse-connect 1.12 / chDB 4.4). On the stack's shared client that would
stop the processor's writes.

The guard answers first, with a clear message, and covers what readonly does
not in chDB, where the query runs inside the stack process with its file-system
rights: ``SELECT ... INTO OUTFILE`` writes a file even under readonly=1,
``file()``/``url()`` read local files and reach the network, and chDB runs
``SELECT 1; SELECT 2`` as two statements.

>>> check_sql("SELECT 1;")
'SELECT 1'
>>> check_sql("DROP TABLE batch_timings")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dash_app.sqlguard.SqlRefused: Refused: this console is read-only, so DROP statements are not run...
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

__all__ = [
    "ALLOWED_STATEMENTS",
    "QueryResult",
    "SqlRefused",
    "check_sql",
    "explain_error",
    "readonly_client",
    "readonly_settings",
    "run_readonly",
]

log = logging.getLogger("shardsense.console")

#: First keywords a console query may start with.
ALLOWED_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")

#: Table functions that read files, run programs or reach other systems.
_OUTSIDE_FUNCTIONS = (
    "file", "url", "urlcluster", "s3", "s3cluster", "gcs", "azureblobstorage", "hdfs",
    "hdfscluster", "remote", "remotesecure", "cluster", "clusterallreplicas", "mysql",
    "postgresql", "sqlite", "mongodb", "redis", "jdbc", "odbc", "executable", "input",
    "iceberg", "deltalake", "hudi", "python", "filesystem",
)
_OUTSIDE = re.compile(r"\b(" + "|".join(_OUTSIDE_FUNCTIONS) + r")\s*\(", re.IGNORECASE)
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")
# Comments and quoted text, which must not count as keywords or statement ends.
_LEXEME = re.compile(
    r"--[^\n]*|#[^\n]*|/\*.*?(\*/|$)"  # comments
    r"|'(?:[^'\\]|\\.|'')*'?"  # string literals
    r"|\"(?:[^\"\\]|\\.)*\"?|`(?:[^`\\]|\\.)*`?",  # quoted identifiers
    re.DOTALL,
)

_READONLY_HINT = (
    "Refused by ClickHouse: this console is read-only (readonly=1), so writes, DDL "
    "and setting changes are not run."
)


class SqlRefused(ValueError):
    """A console query that is not run; ``str(err)`` is the message shown to the user."""


def _blank_out(sql: str) -> str:
    """``sql`` with comments and quoted text replaced by spaces (same length)."""
    return _LEXEME.sub(lambda m: " " * len(m.group(0)), sql)


def check_sql(sql: str) -> str:
    """The one statement in ``sql`` (trailing ``;`` dropped), or :class:`SqlRefused`.

    >>> check_sql("select 'a; b' -- ; DROP")
    "select 'a; b' -- ; DROP"
    >>> check_sql("SELECT 1; SELECT 2")
    Traceback (most recent call last):
    ...
    dash_app.sqlguard.SqlRefused: Refused: one statement at a time (found ';' followed by more SQL).
    """
    text = sql.strip()
    bare = _blank_out(text)
    while bare.rstrip().endswith(";"):
        cut = len(bare.rstrip()) - 1
        text, bare = text[:cut].rstrip(), bare[:cut].rstrip()
    if not bare.strip():
        raise SqlRefused("Enter a query, e.g. SELECT count() FROM v_batch_timings.")
    if ";" in bare:
        raise SqlRefused("Refused: one statement at a time (found ';' followed by more SQL).")
    first = _FIRST_WORD.search(bare)
    word = first.group(0).upper() if first else bare.split()[0]
    if word not in ALLOWED_STATEMENTS:
        raise SqlRefused(
            f"Refused: this console is read-only, so {word} statements are not run. "
            f"Allowed: {', '.join(w for w in ALLOWED_STATEMENTS if w != 'DESC')}."
        )
    if _OUTFILE.search(bare):
        raise SqlRefused("Refused: INTO OUTFILE writes a file; this console is read-only.")
    outside = _OUTSIDE.search(bare)
    if outside:
        raise SqlRefused(
            f"Refused: table function {outside.group(1)}() reaches files or other systems; "
            "the console only reads ClickHouse tables."
        )
    return text


def readonly_settings(timeout_s: int, max_rows: int) -> dict[str, Any]:
    """Time and row caps, then readonly=1 last: once it is set nothing else can be."""
    return {
        "max_execution_time": int(timeout_s),
        "max_result_rows": int(max_rows) + 1,  # one more, to tell "exactly N" from "cut"
        "result_overflow_mode": "break",
        "readonly": 1,
    }


def readonly_client(url: str, *, timeout_s: int, max_rows: int) -> Any:
    """A client of its own whose session is read-only with the console's limits.

    With ``chdb://`` it is a second handle on the engine this process already
    runs (chDB allows many handles, one path); with ``http(s)://`` its own
    session. A server user that is read-only already may not change settings
    at all: then its profile's limits apply. Fails closed: a session that does
    not report readonly mode raises.
    """
    import clickhouse_connect

    parts = urlsplit(url)
    dsn = f"chdb://{Path(parts.path).absolute()}" if parts.scheme == "chdb" else url
    try:
        client = clickhouse_connect.get_client(
            dsn=dsn, settings=readonly_settings(timeout_s, max_rows)
        )
    except Exception as exc:
        if parts.scheme == "chdb":
            raise
        log.warning("console SQL: limits not settable for this user (%s); using its profile", exc)
        client = clickhouse_connect.get_client(dsn=dsn)
    mode = client.query("SELECT value FROM system.settings WHERE name = 'readonly'").result_rows
    if not mode or str(mode[0][0]) == "0":
        client.close()
        raise RuntimeError("the console's SQL session is not read-only; SQL stays off")
    return client


def explain_error(exc: BaseException) -> str:
    """A short message for a failed query: readonly refusals and timeouts in plain words."""
    text = str(exc)
    if "Code: 164" in text or "READONLY" in text:
        return _READONLY_HINT
    if "UNKNOWN_TABLE" in text or "Code: 60." in text:
        name = re.search(
            r"Unknown table expression identifier '([^']+)'|Table (\S+) does not exist", text
        )
        what = next((g for g in name.groups() if g), "a table") if name else "a table"
        return (f"{what} does not exist. If this is a fresh database, the ShardSense schema "
                "is not applied yet (infra/migrations.py apply_schema).")
    if "Code: 159" in text or "TIMEOUT_EXCEEDED" in text:
        return "Stopped: the query ran past the console's time limit. Narrow it (WHERE, LIMIT)."
    match = re.search(r"Code: \d+\. DB::Exception: (.*?)(?: \(version [^)]*\))?(?:\. \(\w+\))?$",
                      text.strip().splitlines()[-1] if text.strip() else "")
    detail = match.group(1) if match else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"ClickHouse error: {detail[:500]}"


@dataclass
class QueryResult:
    """What the SQL page shows: rows, or a message why there are none."""

    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    error: str = ""
    truncated: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def run_readonly(
    client: Any, sql: str, *, max_rows: int, settings: dict[str, Any] | None = None
) -> QueryResult:
    """Run one checked user query on a :func:`readonly_client`; never raises.

    ``settings`` is for clients that are not read-only themselves (tests): pass
    :func:`readonly_settings`. ``result_overflow_mode='break'`` stops at a block
    boundary, so the frame is cut to ``max_rows`` here and ``truncated`` says so.
    """
    try:
        statement = check_sql(sql)
    except SqlRefused as refused:
        return QueryResult(error=str(refused))
    started = time.perf_counter()
    try:
        frame = client.query_df(statement, settings=settings)
    except Exception as exc:
        return QueryResult(error=explain_error(exc), elapsed_s=time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    truncated = len(frame) > max_rows
    return QueryResult(frame=frame.head(max_rows), truncated=truncated, elapsed_s=elapsed)
