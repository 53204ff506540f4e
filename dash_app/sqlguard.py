"""Read-only user SQL (console, SQL endpoint): an allowlist guard before a read-only session.

User SQL runs on its own client (:func:`readonly_client`) whose session has
``readonly=1`` plus the time and row limits, set once when it is created, so
no query can lift them (ClickHouse refuses any setting change under
readonly=1). It is a separate client on purpose: with clickhouse-connect's
chDB backend, per-query settings on a statement it treats as an INSERT are
applied with SET and restored afterwards, and when readonly=1 makes that SET
or the restore fail, the session stays read-only for good (measured with
clickhouse-connect 1.12 / chDB 4.4). On the stack's shared client that would
stop the processor's writes.

The guard (:func:`check_sql`) answers first, with a clear message, and covers
what readonly does not in chDB, where the query runs inside the stack process
with its file-system rights: under readonly=1 chDB still runs
``SELECT file('/etc/passwd')`` and ``DESCRIBE file(...)``, ``SELECT ... INTO
OUTFILE`` writes a file, and ``SELECT 1; SELECT 2`` runs as two statements.
It reads the query with ClickHouse's own lexing rules (:mod:`dash_app.sqltokens`)
and fails closed: one statement, whose kind is allowed; a table function only
from :data:`TABLE_FUNCTIONS`; ``system`` tables only from
:data:`SYSTEM_TABLES`; no function of a family that reads files, runs programs
or reaches other systems (:data:`OUTSIDE_FAMILIES`, matched by prefix so that
``fileCluster`` and ``icebergLocal`` are caught with ``file`` and ``iceberg``);
no ``{name:Identifier}`` parameter (it would name any table).

>>> check_sql("SELECT 1;")
'SELECT 1'
>>> check_sql("DROP TABLE batch_timings")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
shardsense.errors.SqlRefused: Refused: this console is read-only, so DROP statements are not run...
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

from dash_app.sqltokens import Token, is_name, tokenize
from shardsense.errors import SqlRefused

__all__ = [
    "ALLOWED_STATEMENTS",
    "OUTSIDE_FAMILIES",
    "SYSTEM_TABLES",
    "TABLE_FUNCTIONS",
    "CheckedSql",
    "QueryResult",
    "SqlRefused",
    "check_sql",
    "explain_error",
    "parse_sql",
    "readonly_client",
    "readonly_settings",
    "run_readonly",
]

log = logging.getLogger("shardsense.console")

#: First keywords a query may start with.
ALLOWED_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
#: What may follow SHOW (SHOW CREATE also needs one of _SHOW_CREATE next).
_SHOW_WHAT = frozenset({
    "TABLES", "DATABASES", "COLUMNS", "FIELDS", "CREATE", "DICTIONARIES", "FUNCTIONS",
    "ENGINES", "SETTINGS", "SETTING", "CHANGED", "INDEX", "INDEXES", "INDICES", "KEYS",
    "FULL", "EXTENDED", "TEMPORARY",
})
_SHOW_CREATE = frozenset({"TABLE", "VIEW", "DATABASE", "DICTIONARY", "TEMPORARY"})
#: Table functions a query may read (lower case): generated rows and inline data only.
TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom", "generate_series",
    "generateseries", "values", "view",
})
#: ``system`` tables a query may read: catalogue, parts, metrics; never users, grants,
#: quotas, named collections, query logs or processes (queries of others).
SYSTEM_TABLES = frozenset({
    "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "tables", "columns",
    "databases", "parts", "parts_columns", "detached_parts", "projections",
    "projection_parts", "data_skipping_indices", "merges", "mutations", "moves", "disks",
    "storage_policies", "settings", "settings_changes", "merge_tree_settings", "functions",
    "table_functions", "table_engines", "database_engines", "formats", "data_type_families",
    "aggregate_function_combinators", "codecs", "collations", "time_zones", "build_options",
    "contributors", "licenses", "keywords", "metrics", "events", "asynchronous_metrics",
    "errors", "warnings", "clusters", "replicas",
})
#: Name prefixes (lower case) of functions that read files, run programs, reach other
#: systems or read tables named by a string; refused wherever they are called.
OUTSIDE_FAMILIES = (
    "file", "url", "s3", "gcs", "oss", "cosn", "azure", "hdfs", "hive", "iceberg", "deltalake",
    "hudi", "paimon", "remote", "cluster", "mysql", "postgres", "mongo", "redis", "sqlite",
    "jdbc", "odbc", "executable", "python", "arrow", "input", "kafka", "nats", "rabbit",
    "ytsaurus", "bigquery", "prometheus", "timeseries", "merge", "loop", "dictionary",
    "dictget", "dicthas", "dictis", "joinget", "hascolumnintable", "catboost", "naivebayes",
    "evalml", "eval", "ai", "fuzz", "getclienthttpheader", "getserversetting", "getmacro",
    "viewif", "viewexplain",
)
#: Words after which the next ``name(`` is a table function, and those that end a FROM list.
_TABLE_WORDS = frozenset({"FROM", "JOIN", "TABLE", "DESCRIBE", "DESC", "FUNCTION"})
_CLAUSE_WORDS = frozenset({
    "WHERE", "PREWHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "SETTINGS", "FORMAT", "UNION",
    "INTERSECT", "EXCEPT", "WINDOW", "QUALIFY", "OFFSET", "FETCH", "SELECT",
})
_ENDS = ("punct", ";"), ("punct", "\\G")

_READONLY_HINT = (
    "Refused by ClickHouse: this console is read-only (readonly=1), so writes, DDL "
    "and setting changes are not run."
)


def _denied(message: str) -> SqlRefused:
    return SqlRefused(message, code=497, name="ACCESS_DENIED")


@dataclass(frozen=True)
class CheckedSql:
    """One statement that passed the guard, and the output format its FORMAT clause names."""

    statement: str
    format: str | None = None


def _statement(sql: str, tokens: list[Token]) -> tuple[str, list[Token]]:
    """The text and tokens of the one statement (trailing ``;`` dropped)."""
    while tokens and (tokens[-1].kind, tokens[-1].text) in _ENDS:
        sql = sql[: tokens[-1].start].rstrip()
        tokens = tokens[:-1]
    if not tokens:
        raise SqlRefused("Enter a query, e.g. SELECT count() FROM v_batch_timings.",
                         code=62, name="SYNTAX_ERROR")
    if any((t.kind, t.text) in _ENDS for t in tokens):
        raise SqlRefused("Refused: one statement at a time (found ';' followed by more SQL).",
                         code=62, name="SYNTAX_ERROR")
    return sql, tokens


def _check_kind(tokens: list[Token]) -> None:
    """The statement is one of ALLOWED_STATEMENTS (and SHOW shows something harmless)."""
    words = [t for t in tokens if not t.is_punct("(")]
    if not words:
        raise SqlRefused("Refused: no statement found.", code=62, name="SYNTAX_ERROR")
    first = words[0].upper or words[0].text
    if first not in ALLOWED_STATEMENTS:
        raise SqlRefused(
            f"Refused: this console is read-only, so {first} statements are not run. "
            f"Allowed: {', '.join(w for w in ALLOWED_STATEMENTS if w != 'DESC')}."
        )
    if first == "SHOW":
        what = [t.upper for t in words[1:3]] + ["", ""]
        if what[0] not in _SHOW_WHAT or (what[0] == "CREATE" and what[1] not in _SHOW_CREATE):
            shown = " ".join(t.text for t in words[:3])
            raise _denied(f"Refused: {shown} is not served; SHOW lists tables, databases, "
                          "columns, settings and how tables are created.")
    if any(t.upper == "INTO" for t in tokens):
        raise SqlRefused("Refused: INTO OUTFILE writes a file; this console is read-only.")


def _check_call(token: Token, table_position: bool) -> None:
    """A call to ``token``: a table function must be allowed, any call not reach outside."""
    name = token.text.lower()
    if table_position and name not in TABLE_FUNCTIONS:
        raise _denied(
            f"Refused: table function {token.text}() is not served; the console reads "
            f"ClickHouse tables and {', '.join(sorted(TABLE_FUNCTIONS))}."
        )
    if not table_position and name.startswith(OUTSIDE_FAMILIES):
        raise _denied(
            f"Refused: {token.text}() reaches files or other systems; the console only "
            "reads ClickHouse tables."
        )


def _check_system_table(table: Token) -> None:
    if table.text.lower() not in SYSTEM_TABLES:
        raise _denied(
            f"Refused: system.{table.text} is not served (it may hold secrets or other "
            "users' queries); system tables served: one, tables, columns, parts, settings, ..."
        )


def _check_names(tokens: list[Token]) -> None:
    """Walk the statement: calls, table-function positions, system tables, parameters."""
    depth, from_depths, table_next = 0, set(), False
    for i, tok in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        word = tok.upper
        if tok.is_punct("("):
            depth += 1
            continue
        if tok.is_punct(")"):
            from_depths.discard(depth)
            depth, table_next = depth - 1, False
            continue
        if word in _TABLE_WORDS:
            array_join = word == "JOIN" and i > 0 and tokens[i - 1].upper == "ARRAY"
            table_next = not array_join
            (from_depths.discard if array_join else from_depths.add)(depth)
            continue
        if word in _CLAUSE_WORDS:
            from_depths.discard(depth)
        if tok.is_punct(",") and depth in from_depths:
            table_next = True
            continue
        if tok.is_punct("{") and _is_identifier_parameter(tokens[i + 1 : i + 4]):
            raise _denied("Refused: {name:Identifier} parameters could name any table.")
        if is_name(tok) and after is not None and after.is_punct("("):
            _check_call(tok, table_next)
        table = tokens[i + 2] if i + 2 < len(tokens) else None
        system = is_name(tok) and tok.text.lower() == "system"
        if system and after is not None and after.is_punct(".") and table and is_name(table):
            _check_system_table(table)
        # a dotted name (db.table, db.function) keeps the position it started in
        dotted = tok.is_punct(".") or (is_name(tok) and after is not None and after.is_punct("."))
        table_next = table_next and dotted


def _is_identifier_parameter(tokens: list[Token]) -> bool:
    """``name : Identifier`` (the inside of a query parameter placeholder)."""
    return (len(tokens) == 3 and is_name(tokens[0]) and tokens[1].is_punct(":")
            and tokens[2].upper == "IDENTIFIER")


def _format_clause(tokens: list[Token]) -> str | None:
    """The output format a trailing ``FORMAT name [SETTINGS ...]`` clause names."""
    for i in range(len(tokens) - 2, 0, -1):
        if tokens[i].upper == "FORMAT" and is_name(tokens[i + 1]):
            rest = tokens[i + 2 :]
            if not rest or rest[0].upper == "SETTINGS":
                return tokens[i + 1].text
    return None


def parse_sql(sql: str) -> CheckedSql:
    """The one statement in ``sql`` and its FORMAT, or :class:`SqlRefused` saying why not.

    >>> parse_sql("SELECT 1 FORMAT JSON;")
    CheckedSql(statement='SELECT 1 FORMAT JSON', format='JSON')
    >>> parse_sql("SELECT * FROM `file`('/etc/passwd')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shardsense.errors.SqlRefused: Refused: table function file() is not served; ...
    """
    text, tokens = _statement(sql.strip(), tokenize(sql.strip()))
    _check_kind(tokens)
    _check_names(tokens)
    return CheckedSql(text, _format_clause(tokens))


def check_sql(sql: str) -> str:
    """The one statement in ``sql`` (trailing ``;`` dropped), or :class:`SqlRefused`.

    >>> check_sql("select 'a; b' -- ; DROP")
    "select 'a; b' -- ; DROP"
    >>> check_sql("SELECT 1; SELECT 2")
    Traceback (most recent call last):
    ...
    shardsense.errors.SqlRefused: Refused: one statement at a time (found ';' followed by more SQL).
    """
    return parse_sql(sql).statement


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
        if parts.scheme == "chdb" or "readonly" not in str(exc).lower():
            raise  # only a read-only user's refusal to take the limits falls back
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
                "is not applied yet (shardsense migrate, or shardsense.schema.apply_schema).")
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
