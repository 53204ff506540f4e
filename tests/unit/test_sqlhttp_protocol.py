"""The SQL endpoint's pure parts: requests, settings, compression, errors, Native revisions."""

from __future__ import annotations

import base64
import gzip

import pytest

from dash_app.sqlhttp import native
from dash_app.sqlhttp.engine import engine_error
from dash_app.sqlhttp.protocol import (
    ClickHouseError,
    compress,
    content_type,
    credentials,
    decompress,
    error_body,
    negotiate_encoding,
    parse_request,
    sort_settings,
)

pytestmark = pytest.mark.unit

SESSION = {"max_execution_time": "10", "max_result_rows": "5001", "readonly": "1",
           "limit": "0", "max_threads": "2", "output_format_json_quote_64bit_integers": "1",
           "enable_http_compression": "1"}


def test_query_param_and_body_join_like_clickhouse() -> None:
    assert parse_request({"query": "SELECT"}, "1").sql == "SELECT\n1"
    assert parse_request({}, "SELECT 2").sql == "SELECT 2"
    assert parse_request({"query": "SELECT 3"}, "").sql == "SELECT 3"


def test_transport_parameters_are_not_settings() -> None:
    args = {"query": "SELECT 1", "database": "default", "default_format": "JSON",
            "session_id": "s", "session_timeout": "60", "query_id": "q", "user": "u",
            "password": "p", "wait_end_of_query": "1", "client_protocol_version": "54460",
            "enable_http_compression": "0", "param_x": "7", "max_threads": "2"}
    r = parse_request(args, "")
    assert r.settings == {"max_threads": "2"}
    assert (r.default_format, r.database, r.protocol_version, r.query_id) == (
        "JSON", "default", 54460, "q")
    assert r.params == {"x": "7"} and r.http_compression is False


def test_multipart_form_fields_carry_query_and_params() -> None:
    r = parse_request({"database": "default"}, "", {"query": "SELECT {x:UInt8}", "param_x": "1"})
    assert r.sql == "SELECT {x:UInt8}" and r.params == {"x": "1"}


def test_native_block_compression_is_refused_clearly() -> None:
    with pytest.raises(ClickHouseError, match="compress=1") as err:
        parse_request({"compress": "1"}, "SELECT 1")
    assert err.value.status == 501


def test_limits_only_tighten_and_output_settings_apply() -> None:
    assert sort_settings({"max_execution_time": "65"}, SESSION) == {}  # Grafana's deadline + 5
    assert sort_settings({"max_execution_time": "3"}, SESSION) == {"max_execution_time": "3"}
    assert sort_settings({"max_execution_time": "0"}, SESSION) == {}  # 0 = unlimited: no
    assert sort_settings({"max_result_rows": "10"}, SESSION) == {"max_result_rows": "10"}
    assert sort_settings({"limit": "100"}, SESSION) == {"limit": "100"}  # Grafana's row limit
    assert sort_settings({"limit": "100"}, {**SESSION, "limit": "50"}) == {}
    assert sort_settings({"output_format_json_quote_64bit_integers": "0"}, SESSION) == {
        "output_format_json_quote_64bit_integers": "0"}


@pytest.mark.parametrize(("name", "value"), [("readonly", "0"), ("readonly", "2"),
                                             ("max_threads", "64")])
def test_other_setting_changes_are_refused_as_readonly(name: str, value: str) -> None:
    with pytest.raises(ClickHouseError, match=f"Cannot modify '{name}'") as err:
        sort_settings({name: value}, SESSION)
    assert (err.value.code, err.value.name) == (164, "READONLY")


def test_same_values_and_unknown_names() -> None:
    assert sort_settings({"readonly": "1", "max_threads": "2"}, SESSION) == {}
    with pytest.raises(ClickHouseError) as err:
        sort_settings({"no_such_setting": "1"}, SESSION)
    assert (err.value.code, err.value.status) == (115, 404)


def test_credentials_three_ways() -> None:
    basic = "Basic " + base64.b64encode(b"ops:pw:with:colons").decode()
    assert credentials({"Authorization": basic}, {}) == ("ops", "pw:with:colons")
    assert credentials({"X-ClickHouse-User": "ops", "X-ClickHouse-Key": "pw"}, {}) == ("ops", "pw")
    assert credentials({}, {"user": "ops", "password": "pw"}) == ("ops", "pw")
    assert credentials({}, {}) is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "lz4", "xz", "bz2"])
def test_every_response_encoding_round_trips(encoding: str) -> None:
    import cramjam
    import lz4.frame

    data = b"number\n" + b"1234567890\n" * 500
    packed = compress(data, encoding, 3)
    unpack = {
        "gzip": gzip.decompress, "br": lambda b: bytes(cramjam.brotli.decompress(b)),
        "zstd": lambda b: bytes(cramjam.zstd.decompress(b)), "lz4": lz4.frame.decompress,
    }
    if encoding in unpack:
        assert unpack[encoding](packed) == data
    else:
        assert decompress(packed, encoding, len(data)) == data
    assert len(packed) < len(data)


def test_encoding_follows_the_clients_order() -> None:
    assert negotiate_encoding("lz4,zstd,br,gzip,deflate") == "lz4"  # clickhouse-connect
    assert negotiate_encoding("gzip") == "gzip"  # clickhouse-go (Grafana) over HTTP
    assert negotiate_encoding("deflate, gzip, br, zstd") == "deflate"  # curl --compressed
    assert negotiate_encoding("snappy, gzip;q=0, zstd") == "zstd"
    assert negotiate_encoding("") is None


def test_request_bodies_stop_at_the_limit() -> None:
    bomb = gzip.compress(b"a" * 10_000_000)
    assert len(decompress(bomb, "gzip", 1000)) == 1001
    with pytest.raises(ClickHouseError) as err:
        decompress(b"x", "br", 10)
    assert err.value.code == 48


def test_errors_look_like_clickhouse() -> None:
    err = ClickHouseError(164, "READONLY", "Cannot execute query in readonly mode.")
    assert error_body(err, "26.9.2.1") == (
        b"Code: 164. DB::Exception: Cannot execute query in readonly mode. (READONLY) "
        b"(version 26.9.2.1)\n")
    assert [ClickHouseError(c, "X", "").status for c in (164, 497, 516, 194, 60, 62, 159, 392)] == [
        500, 403, 403, 401, 404, 400, 408, 413]


def test_engine_errors_keep_code_and_name() -> None:
    e = engine_error(RuntimeError("Code: 60. DB::Exception: Unknown table expression identifier "
                                  "'nope'. In scope SELECT * FROM nope. (UNKNOWN_TABLE)"))
    assert (e.code, e.name) == (60, "UNKNOWN_TABLE")
    assert e.message == "Unknown table expression identifier 'nope'. In scope SELECT * FROM nope"


def test_content_types() -> None:
    assert content_type("JSONEachRow").startswith("application/json")
    assert content_type("TabSeparatedWithNames").startswith("text/tab-separated-values")
    assert content_type("Native") == content_type("Parquet") == "application/octet-stream"


# chDB's own Native output (revision 0), recorded with chDB 4.4 / ClickHouse 26.9:
# SELECT * FROM t with t (a UInt32, s LowCardinality(String), d DateTime('UTC'),
# n Nullable(Float64), arr Array(String), m Map(String, UInt8)), two rows.
TABLE_REV0 = bytes.fromhex(
    "060201610655496e74333201000000020000000173164c6f7743617264696e616c69747928537472696e6729"
    "0100000000000000000600000000000003000000000000000001780179020000000000000001020164084461"
    "746554696d658000926500529365016e114e756c6c61626c6528466c6f617436342901000000000000000000"
    "0000000000000440036172720d417272617928537472696e6729020000000000000002000000000000000161"
    "0162016d124d617028537472696e672c2055496e74382901000000000000000100000000000000016b01"
)


def _strip(data: bytes) -> bytes:
    """Undo at_revision(54405) for a one-block result: drop the BlockInfo."""
    assert data.startswith(b"\x01\x00\x02\xff\xff\xff\xff\x00")
    return data[8:]


def test_native_at_a_client_revision_adds_block_info_and_flags() -> None:
    out = native.at_revision(TABLE_REV0, 54460)
    assert out[:8] == b"\x01\x00\x02\xff\xff\xff\xff\x00"
    assert len(out) == len(TABLE_REV0) + 8 + 6  # BlockInfo, one flag per column
    # each column's name and type is followed by has_custom = 0
    for name, kind in [(b"a", b"UInt32"), (b"s", b"LowCardinality(String)"),
                       (b"m", b"Map(String, UInt8)")]:
        marker = bytes([len(name)]) + name + bytes([len(kind)]) + kind
        assert marker + b"\x00" in out
    at_54405 = native.at_revision(TABLE_REV0, 54405)  # clickhouse-connect's: no flags
    assert _strip(at_54405) == TABLE_REV0
    assert native.at_revision(TABLE_REV0, 0) == TABLE_REV0


def test_native_types_it_cannot_walk_are_refused() -> None:
    block = b"\x01\x01\x01d\x07Dynamic\x00"
    with pytest.raises(native.NotServed, match="Dynamic"):
        native.at_revision(block, 54460)
    with pytest.raises(native.NotServed, match="below"):
        native.at_revision(TABLE_REV0, 54000)
