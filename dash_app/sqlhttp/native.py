"""ClickHouse's Native format at a client's protocol revision (``client_protocol_version``).

chDB writes Native at revision 0, as a file format: no block header, no
per-column serialization flag. HTTP clients that send ``client_protocol_version``
(clickhouse-go, so Grafana's data source; clickhouse-connect's probe) decode the
layout a server writes for that revision: each block starts with its
BlockInfo, and from revision 54454 each column's type is followed by a
``has_custom`` byte. :func:`at_revision` rewrites chDB's bytes into that layout.
Column data stay byte for byte; they are only walked to find where each column
ends, which needs the type: fixed-width numbers, strings, Nullable, Array, Map,
Tuple and LowCardinality are walked; Variant, Dynamic, JSON and aggregate
states are not served this way (the error says to ask for another format).

>>> at_revision(b"\\x01\\x01\\x05check\\x05UInt8\\x01", 54460)
b'\\x01\\x00\\x02\\xff\\xff\\xff\\xff\\x00\\x01\\x01\\x05check\\x05UInt8\\x00\\x01'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["REVISION_CUSTOM_SERIALIZATION", "REVISION_LOW_CARDINALITY", "NotServed", "at_revision"]

#: First revision whose clients read LowCardinality columns (chDB always writes them).
REVISION_LOW_CARDINALITY = 54405
#: First revision with a serialization byte after each column's type.
REVISION_CUSTOM_SERIALIZATION = 54454
#: BlockInfo as a server writes it: field 1 is_overflows=0, field 2 bucket_num=-1, end.
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"
_WIDTHS = {
    1: ("UInt8", "Int8", "Bool", "Enum8"),
    2: ("UInt16", "Int16", "Date", "Enum16", "BFloat16"),
    4: ("UInt32", "Int32", "Float32", "DateTime", "Date32", "IPv4", "Decimal32", "Time"),
    8: ("UInt64", "Int64", "Float64", "DateTime64", "Decimal64", "Time64"),
    16: ("UInt128", "Int128", "UUID", "IPv6", "Decimal128"),
    32: ("UInt256", "Int256", "Decimal256"),
}
_WIDTH = {name: width for width, names in _WIDTHS.items() for name in names}
_GEO = {"Point": "Tuple(Float64, Float64)", "Ring": "Array(Point)", "LineString": "Array(Point)",
        "Polygon": "Array(Ring)", "MultiLineString": "Array(LineString)",
        "MultiPolygon": "Array(Polygon)"}
_LC_ADDITIONAL_KEYS = 1 << 9
_LC_GLOBAL_DICTIONARY = 1 << 8
_NAMED_ELEMENT = re.compile(r"^(?:`(?:[^`\\]|\\.|``)*`|[A-Za-z_]\w*)\s+(\S.*)$", re.DOTALL)


class NotServed(Exception):
    """The bytes cannot be rewritten for this revision; the message says what to ask for."""


@dataclass(frozen=True)
class ChType:
    """A parsed ClickHouse type name: ``Array(Nullable(String))`` -> Array with one argument."""

    name: str
    args: tuple[str, ...] = ()

    def arg(self, i: int) -> ChType:
        return parse_type(self.args[i])


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments (quotes and parentheses respected)."""
    args, depth, start, quote, i = [], 0, 0, "", 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    args.append(text[start:].strip())
    return [a for a in args if a]


def parse_type(text: str) -> ChType:
    """``Map(String, UInt8)`` -> ChType('Map', ('String', 'UInt8')); geo types expanded.

    >>> parse_type("Tuple(a UInt8, `b c` Array(String))")
    ChType(name='Tuple', args=('UInt8', 'Array(String)'))
    """
    text = text.strip()
    if text in _GEO:
        return parse_type(_GEO[text])
    open_at = text.find("(")
    if open_at < 0:
        return ChType(text)
    name, args = text[:open_at], _split_args(text[open_at + 1 : -1])
    if name == "Tuple":
        args = [m.group(1) if (m := _NAMED_ELEMENT.match(a)) else a for a in args]
    return ChType(name, tuple(args))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise NotServed("Native data ended inside a column")
        self.pos += n

    def varint(self) -> int:
        shift = value = 0
        while True:
            if self.pos >= len(self.data):
                raise NotServed("Native data ended inside a length")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def uint64(self) -> int:
        start = self.pos
        self.take(8)
        return int.from_bytes(self.data[start : self.pos], "little")

    def string(self) -> str:
        n = self.varint()
        start = self.pos
        self.take(n)
        return self.data[start : self.pos].decode("utf-8", "replace")


def _skip_prefix(r: _Reader, t: ChType) -> None:
    """The serialization state written before a column's data (LowCardinality's version)."""
    if t.name == "LowCardinality":
        r.take(8)
    elif t.name in ("Array", "Nullable", "SimpleAggregateFunction"):
        _skip_prefix(r, t.arg(len(t.args) - 1))
    elif t.name in ("Tuple", "Map"):
        for i in range(len(t.args)):
            _skip_prefix(r, t.arg(i))


def _fixed_width(t: ChType) -> int | None:
    if t.name == "FixedString":
        return int(t.args[0])
    if t.name == "Decimal":
        precision = int(t.args[0])
        return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    if t.name == "Nothing":
        return 1
    if t.name.startswith("Interval"):
        return 8
    return _WIDTH.get(t.name)


def _skip_low_cardinality(r: _Reader, t: ChType, rows: int) -> None:
    """Granules: flags, [keys of the dictionary type], index count, indexes."""
    keys_type = t.arg(0)
    if keys_type.name == "Nullable":
        keys_type = keys_type.arg(0)
    done = 0
    while done < rows:
        flags = r.uint64()
        if flags & _LC_GLOBAL_DICTIONARY:
            raise NotServed("LowCardinality with a global dictionary")
        if flags & _LC_ADDITIONAL_KEYS:
            _skip_data(r, keys_type, r.uint64())
        count = r.uint64()
        r.take(count * (1 << (flags & 0xFF)))
        done += count


def _skip_data(r: _Reader, t: ChType, rows: int) -> None:
    """Move past ``rows`` values of type ``t`` (the prefix already read)."""
    width = _fixed_width(t)
    if width is not None:
        r.take(width * rows)
    elif t.name == "String":
        for _ in range(rows):
            r.take(r.varint())
    elif t.name == "Nullable":
        r.take(rows)
        _skip_data(r, t.arg(0), rows)
    elif t.name in ("Array", "Map"):
        total = 0
        for _ in range(rows):
            total = r.uint64()
        for i in range(len(t.args)):
            _skip_data(r, t.arg(i), total)
    elif t.name == "Tuple":
        for i in range(len(t.args)):
            _skip_data(r, t.arg(i), rows)
    elif t.name == "LowCardinality":
        _skip_low_cardinality(r, t, rows)
    elif t.name == "SimpleAggregateFunction":
        _skip_data(r, t.arg(len(t.args) - 1), rows)
    else:
        raise NotServed(
            f"columns of type {t.name} are not served in Native at a client_protocol_version; "
            "ask for another FORMAT (RowBinaryWithNamesAndTypes, JSON, Arrow) or cast the column"
        )


def at_revision(data: bytes, revision: int) -> bytes:
    """chDB's Native ``data`` (revision 0) laid out for a client at ``revision``."""
    if revision <= 0:
        return data
    if revision < REVISION_LOW_CARDINALITY:
        raise NotServed(f"client_protocol_version {revision} is below "
                        f"{REVISION_LOW_CARDINALITY} (LowCardinality); send 0 or a newer one")
    out, r = bytearray(), _Reader(data)
    flag = b"\x00" if revision >= REVISION_CUSTOM_SERIALIZATION else b""
    while r.pos < len(data):
        start = r.pos
        columns, rows = r.varint(), r.varint()
        out += _BLOCK_INFO + data[start : r.pos]
        for _ in range(columns):
            start = r.pos
            r.string()
            type_name = r.string()
            out += data[start : r.pos] + flag
            if rows:
                start = r.pos
                column = parse_type(type_name)
                _skip_prefix(r, column)
                _skip_data(r, column, rows)
                out += data[start : r.pos]
    return bytes(out)
