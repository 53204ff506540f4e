"""The console's read-only SQL guard, result capping and basic auth, without ClickHouse."""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
import pytest

from dash_app.server import BasicAuth
from dash_app.sqlguard import (
    SqlRefused,
    check_sql,
    explain_error,
    readonly_settings,
    run_readonly,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  select 1 ;  ", "select 1"),
        ("SELECT 1;;", "SELECT 1"),
        ("SELECT 1; -- done", "SELECT 1"),
        ("-- why\nSELECT 1", "-- why\nSELECT 1"),
        ("/* lead */ WITH 2 AS x SELECT x", "/* lead */ WITH 2 AS x SELECT x"),
        ("SELECT 'a;b', 'INSERT INTO t', \"x;y\"", "SELECT 'a;b', 'INSERT INTO t', \"x;y\""),
        ("SELECT 'it''s; fine'", "SELECT 'it''s; fine'"),
        ("SELECT 'file(', profile(1)", "SELECT 'file(', profile(1)"),
        ("SHOW TABLES", "SHOW TABLES"),
        ("DESCRIBE TABLE batch_timings", "DESCRIBE TABLE batch_timings"),
        ("desc batch_timings", "desc batch_timings"),
        ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
        ("EXISTS TABLE batch_timings", "EXISTS TABLE batch_timings"),
        ("(SELECT 1)", "(SELECT 1)"),
    ],
)
def test_reads_pass(sql: str, expected: str) -> None:
    assert check_sql(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO batch_timings VALUES (1)",
        "insert into function file('/tmp/x.csv', 'CSV') select 1",
        "DROP TABLE batch_timings",
        "ALTER TABLE batch_timings DELETE WHERE 1",
        "CREATE TABLE x (a Int8) ENGINE = Memory",
        "TRUNCATE TABLE batch_timings",
        "OPTIMIZE TABLE batch_timings FINAL",
        "SYSTEM DROP DNS CACHE",
        "SET readonly = 0",
        "KILL QUERY WHERE 1",
        "GRANT ALL ON *.* TO x",
        "RENAME TABLE a TO b",
        "/* SELECT */ DELETE FROM batch_timings WHERE 1",
        "-- SELECT\nDROP TABLE t",
    ],
)
def test_writes_are_refused_with_the_statement_named(sql: str) -> None:
    with pytest.raises(SqlRefused) as err:
        check_sql(sql)
    message = str(err.value)
    assert "read-only" in message
    verb = sql.split("*/")[-1].split("\n")[-1].split()[0].upper()
    assert f"{verb} statements are not run" in message


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1; SELECT 2", "SELECT 1; DROP TABLE t", "SELECT ';'; INSERT INTO t VALUES (1)"],
)
def test_one_statement_only(sql: str) -> None:
    with pytest.raises(SqlRefused, match="one statement at a time"):
        check_sql(sql)


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", r"file\(\)"),
        ("SELECT * FROM url('http://x/', 'CSV')", r"url\(\)"),
        ("SELECT * FROM s3 ('bucket')", r"s3\(\)"),
        ("SELECT * FROM remote('h', system.one)", r"remote\(\)"),
        ("SELECT * FROM executable('x.sh', 'TSV', 'a Int8')", r"executable\(\)"),
        ("WITH x AS (SELECT * FROM mysql('h', 'd', 't', 'u', 'p')) SELECT * FROM x", r"mysql\(\)"),
    ],
)
def test_files_and_other_systems_are_refused(sql: str, match: str) -> None:
    with pytest.raises(SqlRefused, match=match):
        check_sql(sql)


@pytest.mark.parametrize("sql", ["", "   ", ";", "-- only a comment", "/* */ ;"])
def test_empty_input_asks_for_a_query(sql: str) -> None:
    with pytest.raises(SqlRefused, match="Enter a query"):
        check_sql(sql)


def test_readonly_settings_cap_time_and_rows_and_set_readonly_last() -> None:
    s = readonly_settings(7, 100)
    assert s == {"max_execution_time": 7, "max_result_rows": 101,
                 "result_overflow_mode": "break", "readonly": 1}
    assert list(s)[-1] == "readonly", "after readonly=1 no other setting can be applied"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)",
         "read-only"),
        ("Code: 159. DB::Exception: Timeout exceeded: elapsed 1000 ms. (TIMEOUT_EXCEEDED)",
         "time limit"),
        ("Code: 60. DB::Exception: Unknown table expression identifier 'nope' in scope. "
         "(UNKNOWN_TABLE)", "nope does not exist"),
        ("Code: 62. DB::Exception: Syntax error: failed at position 8. (SYNTAX_ERROR) "
         "(version 26.9.2.1)", "ClickHouse error: Syntax error: failed at position 8"),
    ],
)
def test_errors_are_explained(text: str, expect: str) -> None:
    assert expect in explain_error(RuntimeError(text))


class FakeClient:
    def __init__(self, frame: pd.DataFrame | None = None, error: Exception | None = None) -> None:
        self.frame = frame if frame is not None else pd.DataFrame({"a": [1]})
        self.error = error
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    def query_df(self, sql: str, settings: dict[str, Any] | None = None) -> pd.DataFrame:
        self.calls.append((sql, settings))
        if self.error:
            raise self.error
        return self.frame


def test_run_readonly_never_sends_a_refused_query() -> None:
    client = FakeClient()
    result = run_readonly(client, "DROP TABLE x", max_rows=10)
    assert not result.ok and "DROP" in result.error
    assert client.calls == []


def test_run_readonly_sends_the_checked_statement_and_cuts_rows() -> None:
    client = FakeClient(pd.DataFrame({"n": range(25)}))
    result = run_readonly(client, "SELECT n FROM t;", max_rows=10)
    assert result.ok and result.truncated and len(result.frame) == 10
    assert client.calls == [("SELECT n FROM t", None)]
    run_readonly(client, "SELECT 1", max_rows=10, settings=readonly_settings(3, 10))
    assert client.calls[-1][1] == readonly_settings(3, 10)


def test_run_readonly_exactly_at_the_limit_is_not_truncated() -> None:
    result = run_readonly(FakeClient(pd.DataFrame({"n": range(10)})), "SELECT n FROM t",
                          max_rows=10)
    assert result.ok and not result.truncated


def test_run_readonly_turns_errors_into_messages() -> None:
    boom = RuntimeError("Code: 164. DB::Exception: Cannot execute query in readonly mode.")
    result = run_readonly(FakeClient(error=boom), "SELECT 1", max_rows=10)
    assert not result.ok and "read-only" in result.error


def _call(app: BasicAuth, header: str | None) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def _inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"console"]


def _basic(creds: str) -> str:
    return "Basic " + base64.b64encode(creds.encode()).decode()


def test_basic_auth_lets_the_right_credentials_through() -> None:
    app = BasicAuth(_inner, "ops:s3cret:with:colons")
    assert _call(app, _basic("ops:s3cret:with:colons"))[0] == "200 OK"


def test_basic_auth_leaves_the_health_probe_open() -> None:
    app = BasicAuth(_inner, "ops:s3cret", open_paths=("/healthz",))
    seen: dict[str, str] = {}
    body = app({"PATH_INFO": "/healthz"}, lambda status, headers: seen.update(status=status))
    assert seen["status"] == "200 OK" and b"".join(body) == b"console"
    assert _call(app, None)[0].startswith("401")


@pytest.mark.parametrize("header", [None, "", _basic("ops:wrong"), _basic("ops"), "Bearer x"])
def test_basic_auth_refuses_everything_else(header: str | None) -> None:
    status, headers, body = _call(BasicAuth(_inner, "ops:s3cret"), header)
    assert status.startswith("401")
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert b"s3cret" not in body


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.result_rows = rows


class ModeClient:
    """Answers the readonly probe with ``mode``; records how it was made and closed."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        self.mode, self.kwargs, self.closed = mode, kwargs, False

    def query(self, sql: str) -> _Rows:
        assert "name = 'readonly'" in sql
        return _Rows([(self.mode,)])

    def close(self) -> None:
        self.closed = True


def test_readonly_client_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    import clickhouse_connect

    from dash_app.sqlguard import readonly_client

    made: list[ModeClient] = []

    def get_client(**kw: Any) -> ModeClient:
        made.append(ModeClient("0", **kw))
        return made[-1]

    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)
    with pytest.raises(RuntimeError, match="not read-only"):
        readonly_client("http://ch:8123", timeout_s=5, max_rows=10)
    assert made[-1].closed
    assert made[-1].kwargs["settings"] == readonly_settings(5, 10)


def test_readonly_client_falls_back_to_a_readonly_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clickhouse_connect

    from dash_app.sqlguard import readonly_client

    def get_client(**kw: Any) -> ModeClient:
        if "settings" in kw:
            raise RuntimeError("Setting max_execution_time is readonly")
        return ModeClient("1", **kw)

    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)
    client = readonly_client("https://reader:pw@ch:8443/db", timeout_s=5, max_rows=10)
    assert client.kwargs == {"dsn": "https://reader:pw@ch:8443/db"} and not client.closed
