"""The SQL endpoint over the session's real chDB, asked by real clients (curl, clickhouse-connect).

A Grafana-shaped request (clickhouse-go over HTTP: POST body, default_format=Native,
client_protocol_version, max_execution_time from its deadline, gzip, basic auth in
the URL) is sent by hand with the exact parameters clickhouse-go sets.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dash_app.sqlhttp import SqlServer, native
from shardsense.clickhouse import connect
from shardsense.net import free_port
from shardsense.settings import Settings

pytestmark = pytest.mark.integration

MAX_ROWS = 1000


def _server(clickhouse_url: str, **extra: Any) -> SqlServer:
    if not clickhouse_url.startswith("chdb:"):
        pytest.skip("the SQL endpoint serves chDB; a ClickHouse server is asked directly")
    settings = Settings.from_env({}, clickhouse_url=clickhouse_url, sql_port=free_port(),
                                 console_sql_max_rows=MAX_ROWS, **extra)
    server = SqlServer(settings)
    server.start()
    return server


@pytest.fixture(scope="module")
def job(clickhouse_url: str) -> str:
    """A job with 40 batch timings (4 workers x 10 steps), written by the stack's client."""
    job_id = f"sql-{uuid.uuid4().hex[:8]}"
    rows = [[job_id, w, f"e{w}-{s}", 0, 0, s, 32, 0.001, 0.01 * (2 if w == 3 else 1), 1,
             1_700_000_000_000_000 + s * 100_000, 1_700_000_000_000_000, "host-a"]
            for w in range(4) for s in range(10)]
    columns = ["job_id", "worker_id", "event_id", "seq", "epoch", "step", "samples",
               "data_wait_s", "compute_s", "map_version", "end_ts", "report_ts", "host"]
    connect(clickhouse_url).insert("batch_timings", rows, column_names=columns)
    return job_id


@pytest.fixture(scope="module")
def endpoint(clickhouse_url: str) -> Iterator[str]:
    server = _server(clickhouse_url)
    yield server.url
    server.stop()


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


@pytest.fixture(scope="module")
def curl() -> str:
    found = shutil.which("curl")
    if not found:
        pytest.skip("curl is not installed")
    return found


def _curl(curl: str, *args: str) -> str:
    return subprocess.run([curl, "-sS", "-g", *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def test_curl_get_post_format_default_format_database_params(
    curl: str, endpoint: str, job: str
) -> None:
    assert _curl(curl, endpoint) == "Ok.\n"
    assert _curl(curl, endpoint + "ping") == "Ok.\n"
    assert _curl(curl, endpoint + "?query=SELECT%201") == "1\n"
    body = f"SELECT worker_id, count() FROM v_batch_timings WHERE job_id = '{job}' GROUP BY 1 " \
           "ORDER BY 1 FORMAT CSV"
    assert _curl(curl, "--data-binary", body, endpoint) == "0,10\n1,10\n2,10\n3,10\n"
    count = f"SELECT count() c FROM batch_timings WHERE job_id = '{job}'"
    out = _curl(curl, "--data-binary", count,
                endpoint + "?default_format=JSONEachRow&database=default")
    assert out == '{"c":40}\n'
    out = _curl(curl, endpoint + "?query=SELECT%20{x:UInt8}*2,%20{s:String}&param_x=21"
                "&param_s=it%27s")
    assert out == "42\tit\\'s\n"
    assert _curl(curl, "--compressed", endpoint + "?query=SELECT%20number%20FROM%20numbers(3)") \
        == "0\n1\n2\n"


def test_curl_sees_clickhouse_style_refusals(curl: str, endpoint: str) -> None:
    out = _curl(curl, "-i", "--data-binary", "INSERT INTO batch_timings VALUES (1)", endpoint)
    assert "HTTP/1.1 500" in out and "X-ClickHouse-Exception-Code: 164" in out
    assert "Code: 164. DB::Exception: Refused: " in out and "(READONLY)" in out
    out = _curl(curl, "-i", endpoint + "?query=SELECT%201&readonly=0")
    assert "Cannot modify 'readonly' setting in readonly mode" in out
    out = _curl(curl, "-i", endpoint + "?query=SELECT%20*%20FROM%20`file`('/etc/passwd')")
    assert "HTTP/1.1 403" in out and "(ACCESS_DENIED)" in out and "root:" not in out
    out = _curl(curl, "-i", endpoint + "?query=SELECT%201%20SETTINGS%20max_execution_time=99")
    assert "Code: 164." in out  # the session's readonly=1 refuses it, not only the guard
    out = _curl(curl, "-i", endpoint + "?query=SELECT%201&database=system")
    assert "HTTP/1.1 403" in out
    assert "HTTP/1.1 404" in _curl(curl, "-i", endpoint + "play")


def test_clickhouse_connect_query_df_arrow_with_compression_and_session(
    endpoint: str, job: str
) -> None:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError, ProgrammingError

    client = clickhouse_connect.get_client(dsn=endpoint.rstrip("/"), compress=True)
    assert client.protocol_version == native.REVISION_LOW_CARDINALITY  # its probe read ours
    assert client.compression and "session_id" in client.params
    sql = f"SELECT worker_id, avg(compute_s) AS c FROM v_batch_timings WHERE job_id = '{job}' " \
          "GROUP BY worker_id ORDER BY worker_id"
    assert [r[0] for r in client.query(sql).result_rows] == [0, 1, 2, 3]
    frame = client.query_df(sql)
    assert frame["c"].idxmax() == 3 and len(frame) == 4
    table = client.query_arrow(f"SELECT job_id, host, end_ts FROM v_batch_timings "
                               f"WHERE job_id = '{job}'")
    assert table.num_rows == 40 and set(table.column("host").to_pylist()) == {"host-a"}
    raw = client.raw_query("SELECT number FROM numbers(5000)", fmt="CSV")
    assert raw.count(b"\n") == MAX_ROWS  # the console's row limit, exact
    with pytest.raises(DatabaseError, match="164"):
        client.command("INSERT INTO batch_timings (job_id) VALUES ('x')")
    with pytest.raises(ProgrammingError, match="readonly"):
        client.query("SELECT 1", settings={"max_threads": 64})
    client.close()


def test_a_grafana_shaped_request_gets_native_at_its_revision(endpoint: str) -> None:
    """clickhouse-go HTTP: default_format=Native, client_protocol_version=54460, gzip."""
    query = ("?default_format=Native&client_protocol_version=54460&database=default"
             "&max_execution_time=65")
    status, headers, body = _get(endpoint + query, b"SELECT 1",
                                 {"Accept-Encoding": "gzip", "Authorization": "Basic Og=="})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == (b"\x01\x00\x02\xff\xff\xff\xff\x00"  # BlockInfo
                                     b"\x01\x01\x011\x05UInt8\x00\x01")  # has_custom = 0
    hello = b"SELECT displayName(), version(), revision(), timezone()"
    status, headers, body = _get(endpoint + query, hello)
    assert status == 200 and headers["X-ClickHouse-Format"] == "Native"
    assert body.startswith(b"\x01\x00\x02\xff\xff\xff\xff\x00\x04\x01")
    status, _, body = _get(endpoint + query, b"SELECT name FROM system.tables WHERE database = "
                                             b"'default' FORMAT JSON")  # its schema browser
    assert status == 200 and b'"name": "batch_timings"' in body
    status, _, body = _get(endpoint + query, b"SHOW DATABASES")
    assert status == 200 and b"default" in body


def test_basic_auth_is_the_consoles(clickhouse_url: str) -> None:
    import clickhouse_connect

    server = _server(clickhouse_url, console_auth="ops:s3cret")
    try:
        url = server.url
        assert _get(url + "ping")[0] == 200  # health checks stay open
        status, headers, body = _get(url + "?query=SELECT%201")
        assert status == 401 and headers["X-ClickHouse-Exception-Code"] == "194"
        assert headers["WWW-Authenticate"].startswith("Basic")
        status, _, body = _get(url + "?query=SELECT%201&user=ops&password=wrong")
        assert status == 403 and b"(AUTHENTICATION_FAILED)" in body and b"s3cret" not in body
        assert _get(url + "?query=SELECT%201&user=ops&password=s3cret")[2] == b"1\n"
        assert _get(url + "?query=SELECT%202", headers={
            "X-ClickHouse-User": "ops", "X-ClickHouse-Key": "s3cret"})[2] == b"2\n"
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server._server.server_port,
                                               username="ops", password="s3cret")
        assert client.command("SELECT 3") == 3
        client.close()
    finally:
        server.stop()
