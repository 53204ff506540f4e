"""ClickHouse's HTTP interface, the parts a read-only endpoint speaks: pure functions.

What a request carries (query text from ``?query=`` and the body, ``FORMAT`` /
``default_format``, ``database``, ``param_*``, settings as URL parameters,
credentials three ways), how settings are sorted (transport parameters;
limits a client may only tighten; output-shaping settings; everything else
must equal the session's value, as ClickHouse itself answers a readonly=1
user), HTTP compression both ways, content types, and errors as ClickHouse
writes them (``Code: N. DB::Exception: ... (NAME) (version V)``, with the
status ClickHouse's ``exceptionCodeToHTTPStatus`` gives).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shardsense.errors import ShardSenseError

__all__ = [
    "ClickHouseError",
    "QueryRequest",
    "compress",
    "content_type",
    "credentials",
    "decompress",
    "error_body",
    "negotiate_encoding",
    "parse_request",
    "sort_settings",
]

#: Parameters the endpoint reads or ignores itself; never settings.
TRANSPORT = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "client_protocol_version",
    "wait_end_of_query", "buffer_size", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "http_native_compression_disable_checksumming_on_decompress", "role",
    "http_response_buffer_size", "http_wait_end_of_query", "stacktrace",
})
#: Limits a client may lower, never raise (0 means "no limit", so it keeps the session's).
TIGHTEN_ONLY = frozenset({"max_execution_time", "max_result_rows", "max_result_bytes", "limit"})
#: Settings that only shape the output (or the parsing of literals); harmless to apply.
OUTPUT_SETTINGS = frozenset({
    "offset", "extremes", "date_time_output_format", "date_time_input_format",
    "session_timezone", "join_use_nulls", "cast_string_to_dynamic_use_inference",
    "output_format_json_quote_64bit_integers", "output_format_json_quote_64bit_floats",
    "output_format_json_quote_denormals", "output_format_json_quote_decimals",
    "output_format_json_named_tuples_as_objects", "output_format_json_validate_utf8",
    "output_format_json_escape_forward_slashes", "output_format_write_statistics",
    "output_format_arrow_string_as_string", "output_format_arrow_low_cardinality_as_dictionary",
    "output_format_arrow_fixed_string_as_fixed_byte_array",
    "output_format_parquet_string_as_string", "output_format_decimal_trailing_zeros",
    "output_format_pretty_max_rows", "output_format_pretty_max_column_pad_width",
    "output_format_pretty_max_value_width", "output_format_pretty_color",
    "output_format_pretty_grid_charset", "output_format_pretty_row_numbers",
    "output_format_csv_crlf_end_of_line", "output_format_tsv_crlf_end_of_line",
    "format_csv_delimiter", "output_format_native_write_json_as_string",
})
_STATUS = {
    194: 401, 516: 403, 497: 403, 62: 400, 27: 400, 36: 400, 38: 400, 41: 400, 53: 400,
    60: 404, 46: 404, 47: 404, 50: 404, 81: 404, 115: 404, 73: 404, 392: 413, 48: 501,
    159: 408,
}
_CONTENT_TYPES = (
    ("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
    ("TSV", "text/tab-separated-values; charset=UTF-8"),
    ("CSV", "text/csv; charset=UTF-8"),
    ("JSON", "application/json; charset=UTF-8"),
    ("NDJSON", "application/json; charset=UTF-8"),
    ("XML", "application/xml; charset=UTF-8"),
    ("Markdown", "text/markdown; charset=UTF-8"),
    ("Pretty", "text/plain; charset=UTF-8"),
    ("Vertical", "text/plain; charset=UTF-8"),
    ("Values", "text/plain; charset=UTF-8"),
)
_COMPRESSORS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": lambda data, level: gzip.compress(data, compresslevel=level, mtime=0),
    "deflate": lambda data, level: zlib.compress(data, level),
    "xz": lambda data, level: lzma.compress(data, preset=min(level, 9)),
    "bz2": lambda data, level: bz2.compress(data, max(1, min(level, 9))),
}
#: Request-body decoders that stop at a size (a small compressed body can expand a lot).
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "gzip": lambda: zlib.decompressobj(wbits=31), "deflate": zlib.decompressobj,
    "xz": lzma.LZMADecompressor, "bz2": bz2.BZ2Decompressor,
}


def _optional_codecs() -> None:
    """zstd, lz4 (frame) and br when their packages are installed (they are dependencies)."""
    try:
        import cramjam

        _COMPRESSORS["br"] = lambda data, level: bytes(cramjam.brotli.compress(data, level))
        _COMPRESSORS["zstd"] = lambda data, level: bytes(cramjam.zstd.compress(data, level))
    except ImportError:  # pragma: no cover - cramjam is a dependency
        pass
    try:
        import lz4.frame

        _COMPRESSORS["lz4"] = lambda data, level: lz4.frame.compress(data)
        _DECOMPRESSORS["lz4"] = lz4.frame.LZ4FrameDecompressor
    except ImportError:  # pragma: no cover - lz4 comes with clickhouse-connect
        pass


_optional_codecs()


class ClickHouseError(ShardSenseError):
    """An answer in ClickHouse's error shape: ``code`` and ``name`` as ClickHouse uses them."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message

    @property
    def status(self) -> int:
        """The HTTP status ClickHouse answers this code with (500 when it has none)."""
        return _STATUS.get(self.code, 500)


def error_body(error: ClickHouseError, version: str) -> bytes:
    """``Code: 164. DB::Exception: ... (READONLY) (version 26.9.2.1)``, one line."""
    message = error.message.rstrip(".")
    text = f"Code: {error.code}. DB::Exception: {message}. ({error.name}) (version {version})\n"
    return text.encode()


@dataclass
class QueryRequest:
    """One query request: the SQL, how to answer it, and the settings it asks for."""

    sql: str
    default_format: str = "TabSeparated"
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    protocol_version: int = 0
    query_id: str = ""
    http_compression: bool | None = None  # None: the session's enable_http_compression
    compression_level: int = 3


def credentials(headers: Mapping[str, str], args: Mapping[str, str]) -> tuple[str, str] | None:
    """``(user, password)`` from Basic auth, X-ClickHouse-User/Key or ``?user=&password=``."""
    headers = {k.lower(): v for k, v in headers.items()}
    auth = headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ("", "\0invalid")
        return user, password
    if "x-clickhouse-user" in headers:
        return headers["x-clickhouse-user"], headers.get("x-clickhouse-key", "")
    if "user" in args:
        return args["user"], args.get("password", "")
    return None


def _int(args: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(args.get(name, default))
    except ValueError:
        raise ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                              f"Cannot parse parameter {name}={args[name]!r} as a number") from None


def parse_request(
    args: Mapping[str, str], body: str, form: Mapping[str, str] | None = None
) -> QueryRequest:
    """The request in ``args`` (URL parameters), ``body`` (POST text) and multipart ``form``.

    >>> r = parse_request({"query": "SELECT", "param_x": "1", "max_threads": "2"}, " 1")
    >>> r.sql, r.params, r.settings
    ('SELECT\\n 1', {'x': '1'}, {'max_threads': '2'})
    """
    values = {**args, **(form or {})}
    if values.get("compress", "0") not in ("0", ""):
        raise ClickHouseError(48, "NOT_IMPLEMENTED", "compress=1 (ClickHouse's own block "
                              "compression) is not served; use HTTP compression (Accept-Encoding)")
    head = values.get("query", "")
    sql = f"{head}\n{body}" if head and body else head or body
    settings = {k: v for k, v in args.items() if k not in TRANSPORT and not k.startswith("param_")}
    http_compression = values.get("enable_http_compression")
    return QueryRequest(
        sql=sql,
        default_format=values.get("default_format") or "TabSeparated",
        database=values.get("database") or None,
        settings=settings,
        params={k[6:]: v for k, v in values.items() if k.startswith("param_")},
        protocol_version=_int(values, "client_protocol_version", 0),
        query_id=values.get("query_id", ""),
        http_compression=None if http_compression is None else http_compression not in ("0", ""),
        compression_level=_int(values, "http_zlib_compression_level", 3),
    )


def sort_settings(
    asked: Mapping[str, str], session: Mapping[str, str]
) -> dict[str, str]:
    """The settings to apply for ``asked``, given the ``session``'s current values.

    Limits are lowered, never raised; output settings are applied; any other
    setting must already have the asked value (ClickHouse's answer to a
    readonly=1 user); unknown names are ClickHouse's UNKNOWN_SETTING.

    >>> sort_settings({"max_execution_time": "65", "limit": "10", "readonly": "1"},
    ...               {"max_execution_time": "10", "limit": "0", "readonly": "1"})
    {'limit': '10'}
    """
    applied: dict[str, str] = {}
    for name, value in asked.items():
        if name not in session:
            raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        if name in TIGHTEN_ONLY:
            lowered = _tighter(value, session[name])
            if lowered != session[name]:
                applied[name] = lowered
        elif name in OUTPUT_SETTINGS:
            if value != session[name]:
                applied[name] = value
        elif value != session[name]:
            raise ClickHouseError(164, "READONLY", f"Cannot modify '{name}' setting in readonly "
                                  "mode: this endpoint serves ClickHouse read-only")
    return applied


def _tighter(asked: str, current: str) -> str:
    """The lower of two limits, where 0 means none. ``_tighter('65', '10')`` -> '10'."""
    try:
        a, c = float(asked), float(current)
    except ValueError:
        raise ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                              f"Cannot parse limit value {asked!r}") from None
    if a <= 0 or (0 < c <= a):
        return current
    return asked


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse sends for output format ``fmt`` (binary ones: octet-stream)."""
    for prefix, kind in _CONTENT_TYPES:
        if fmt.startswith(prefix):
            return kind
    return "application/octet-stream"


def negotiate_encoding(accept: str) -> str | None:
    """The first encoding in an Accept-Encoding header this endpoint can write.

    >>> negotiate_encoding("lz4, zstd;q=0.9, gzip"), negotiate_encoding("identity")
    ('lz4', None)
    """
    for part in accept.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in _COMPRESSORS and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return name.strip().lower()
    return None


def compress(data: bytes, encoding: str, level: int) -> bytes:
    return _COMPRESSORS[encoding](data, level)


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """A request body sent with Content-Encoding ``encoding``, at most ``limit + 1`` bytes of it.

    >>> decompress(gzip.compress(b"SELECT 1"), "gzip", 100)
    b'SELECT 1'
    """
    codec = _DECOMPRESSORS.get(encoding)
    if codec is None:
        raise ClickHouseError(48, "NOT_IMPLEMENTED", f"request bodies with Content-Encoding "
                              f"{encoding!r} are not served; send gzip, deflate, xz, bz2 or lz4")
    try:
        out: bytes = codec().decompress(data, limit + 1)
        return out
    except Exception as exc:
        raise ClickHouseError(
            271, "CANNOT_DECOMPRESS", f"Cannot decompress the request body as {encoding}: {exc}"
        ) from None
