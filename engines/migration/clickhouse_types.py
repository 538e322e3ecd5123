"""Column mapping into ClickHouse, for the server version in use, and how each column travels and is compared.

Every migrated column gets a ClickHouse type and a *format*: how its values are written as tab-separated text
(what ``INSERT ... FORMAT TabSeparated`` reads, and what validation has ClickHouse print back: ``output_expr``).
The formats:

=============  ================================  ===============================================================
format         PostgreSQL types                  ClickHouse type, text sent
=============  ================================  ===============================================================
int            smallint, integer, bigint         Int16/Int32/Int64; decimal digits
bool           boolean                           UInt8; 0 / 1
float          real, double precision            Float32/Float64 (DEFAULT from __dbfleet_bits_<col>); the IEEE bits
decimal        numeric(p, s), p <= 38            Decimal(p, s); digits with s decimals
date           date                              Date; YYYY-MM-DD
datetime       timestamp(0) [with time zone]     DateTime('UTC'); YYYY-MM-DD hh:mm:ss
epoch_us       timestamp(1..6) on servers        Int64 microseconds since 1970-01-01 00:00 UTC (see below)
               without DateTime64
datetime64     timestamp(p) on 20.1 and later    DateTime64(p, 'UTC'); YYYY-MM-DD hh:mm:ss.f..f
uuid           uuid                              UUID; lowercase 8-4-4-4-12
hex            bytea                             String of lowercase hex digits
text           everything else (text, varchar,   String; PostgreSQL's text form (json/jsonb, numeric without
               json(b), unbounded numeric, ...)  precision, intervals, enums, ... arrive as their text)
array:F        T[] of the formats above          Array(Nullable(T)); elements joined (below)
=============  ================================  ===============================================================

Timestamps with sub-second precision on a server without DateTime64 (Debian's 18.16; DateTime64 came in
20.1): ``DateTime`` holds whole seconds, so it would lose the fraction. They become **Int64 microseconds since
the epoch (UTC)**: exact for every PostgreSQL timestamp (microsecond resolution, any year), eight bytes like
DateTime64(6), ordered and comparable like the timestamp, and converted in a query with
``toDateTime(intDiv(col, 1000000))`` (or ``fromUnixTimestamp64Micro`` after an upgrade). An ISO string
would be lossless too but three times larger and useless for ranges and arithmetic. ``timestamp(0)``
columns have no fraction by type and become ``DateTime('UTC')`` (its range, 1970 to 2105, like ``Date``'s:
a value outside it cannot be stored, and validation names its range). A naive ``timestamp`` is taken as
UTC wall-clock time. A server with DateTime64 gets ``DateTime64(p, 'UTC')``.

ClickHouse has no ``Nullable(Array(...))``: a NULL array arrives as an empty array (said in the plan's notes).

Validation: the worker hashes every line it sends (``linehash``, in C) into the batch's checkpoint; ClickHouse
prints the stored rows back with ``output_expr`` per column as TabSeparated, ``fixed`` makes its escaping
COPY's, and the same line hashes are summed per key range.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engines.connectors.clickhouse import quote_ident
from engines.migration.model import Column, Table

DATETIME64_SINCE = (20, 1)  # the first ClickHouse release with DateTime64
MOD = 2 ** 64
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_INTS = {"smallint": "Int16", "integer": "Int32", "bigint": "Int64"}
_FLOATS = {"real": "Float32", "double precision": "Float64"}
_TEXTS = re.compile(r"^(text|character varying(\(\d+\))?|varchar(\(\d+\))?|character(\(\d+\))?|char(\(\d+\))?|citext)$")
_TIMESTAMP = re.compile(r"^timestamp(?:\((\d)\))?(?: (with|without) time zone)?$|^(timestamptz)(?:\((\d)\))?$")
_NUMERIC = re.compile(r"^(?:numeric|decimal)\((\d+)(?:,\s*(\d+))?\)$")


@dataclass(frozen=True)
class ChColumn:
    """One column as ClickHouse holds it: ``type`` (with Nullable), ``fmt`` (module doc), ``element`` the format
    of an array's elements, ``size`` 4 or 8 for floats."""

    name: str
    type: str
    fmt: str
    nullable: bool  # the ClickHouse type is Nullable (never for arrays: a NULL array arrives as [])
    element: str | None = None
    size: int = 8
    scale: int = 0  # decimals (of a decimal column or array element; of a DateTime64's seconds)
    null_array: bool = False  # an array column the source lets be NULL

    @property
    def insert_name(self) -> str:
        """The column an INSERT writes: a float's IEEE bits go to a column of their own (``float_columns``)."""
        return f"__dbfleet_bits_{self.name}" if self.fmt == "float" else self.name


def float_columns(column: ChColumn, quote: Any) -> list[str]:
    """DDL of a float column: ClickHouse 18.16's text parser is not correctly rounded (a float read back may
    differ in its last bit), so the value travels as its IEEE bits (an integer, parsed exactly) into
    ``__dbfleet_bits_<name>`` and the column is computed from them by a DEFAULT (``reinterpretAsFloat64``)."""
    bits, width = quote(column.insert_name), column.size * 8
    value = f"reinterpretAsFloat{width}(reinterpretAsString({{}}))"
    if column.nullable:
        expr = f"if(isNull({bits}), NULL, {value.format(f'assumeNotNull({bits})')})"
        bits_type = f"Nullable(Int{width})"
    else:
        expr, bits_type = value.format(bits), f"Int{width}"
    return [f"{quote(column.name)} {column.type} DEFAULT {expr}", f"{bits} {bits_type}"]


def parse_version(text: str) -> tuple[int, ...]:
    """``SELECT version()``'s answer as numbers: '18.16.1' -> (18, 16, 1)."""
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)


def _scalar(target_type: str, version: tuple[int, ...]) -> tuple[str, str, int]:
    """(ClickHouse type, format, float size or decimal scale) of a non-array PostgreSQL type."""
    t = target_type.strip().lower()
    if t in _INTS:
        return _INTS[t], "int", 8
    if t in _FLOATS:
        return _FLOATS[t], "float", 4 if t == "real" else 8
    if t == "boolean":
        return "UInt8", "bool", 8
    if t == "date":
        return "Date", "date", 8
    if t == "uuid":
        return "UUID", "uuid", 8
    if t == "bytea":
        return "String", "hex", 8
    number = _NUMERIC.match(t)
    if number:
        precision, scale = int(number.group(1)), int(number.group(2) or 0)
        if 1 <= precision <= 38 and scale <= precision:
            return f"Decimal({precision}, {scale})", "decimal", scale
        return "String", "text", 8
    stamp = _TIMESTAMP.match(t)
    if stamp:
        digits = stamp.group(1) or stamp.group(4)
        precision = 6 if digits is None else int(digits)
        if precision == 0:
            return "DateTime('UTC')", "datetime", 8
        if version >= DATETIME64_SINCE:
            return f"DateTime64({precision}, 'UTC')", "datetime64", precision
        return "Int64", "epoch_us", 8
    return "String", "text", 8


def ch_column(column: Column, version: tuple[int, ...], in_key: bool = False) -> ChColumn:
    """The ClickHouse column for a source column (key columns are never Nullable: ORDER BY needs values)."""
    nullable = column.nullable and not in_key
    if column.target_type.endswith("[]"):
        kind, fmt, extra = _scalar(column.target_type[:-2], version)
        if fmt in ("hex", "datetime", "epoch_us", "datetime64", "float"):  # arrays of these: PostgreSQL's text
            return ChColumn(column.name, "Nullable(String)" if nullable else "String", "text", nullable)
        return ChColumn(column.name, f"Array(Nullable({kind}))", "array", False, fmt,
                        extra if fmt == "float" else 8, extra if fmt == "decimal" else 0, nullable)
    kind, fmt, extra = _scalar(column.target_type, version)
    return ChColumn(column.name, f"Nullable({kind})" if nullable else kind, fmt, nullable, None,
                    extra if fmt == "float" else 8, extra if fmt in ("decimal", "datetime64") else 0)


def ch_columns(table: Table, version: tuple[int, ...]) -> list[ChColumn]:
    return [ch_column(c, version, c.name in table.key) for c in table.columns]


def mapping_notes(columns: Sequence[ChColumn], table: Table) -> list[str]:
    """What a reader of the ClickHouse table must know: timestamps as microseconds, NULL arrays as []."""
    notes = []
    for c in columns:
        if c.fmt == "epoch_us":
            notes.append(f"{table.source}.{c.name}: Int64 microseconds since 1970-01-01 UTC (this ClickHouse has no"
                         " DateTime64; read with toDateTime(intDiv(col, 1000000)))")
        if c.null_array:
            notes.append(f"{table.source}.{c.name}: a NULL array arrives as [] (ClickHouse has no Nullable(Array))")
        if c.fmt == "hex":
            notes.append(f"{table.source}.{c.name}: bytea as lowercase hex text")
    return notes


# ------------------------------------------------------------------ validation: ClickHouse's output as the lines sent
def output_expr(column: ChColumn) -> str:
    """ClickHouse expression whose TabSeparated output is the text the column's values were sent as (floats: their
    bits; arrays: the literal with quotes doubled): with ``fixed`` applied to the output, the same bytes."""
    ident = quote_ident(column.name)
    if column.fmt == "float":
        bits = "reinterpretAsInt%d(reinterpretAsString(%s))"
        if column.nullable:
            return f"if(isNull({ident}), NULL, {bits % (column.size * 8, f'assumeNotNull({ident})')})"
        return bits % (column.size * 8, ident)
    if column.fmt == "array":
        if column.element in ("int", "bool", "decimal"):
            item = "ifNull(toString(e), 'NULL')"
        else:
            quote = "''''"  # a quote, in ClickHouse's quoting
            item = (f"if(isNull(e), 'NULL', concat({quote}, replaceAll(toString(assumeNotNull(e)), {quote},"
                    f" '{quote[1:-1] * 2}'), {quote}))")
        return f"concat('[', arrayStringConcat(arrayMap(e -> {item}, {ident}), ','), ']')"
    return ident


def fixed(data: bytes) -> bytes:
    """ClickHouse's TabSeparated output as PostgreSQL's COPY writes the same text: ClickHouse escapes a quote
    (backslash quote) and leaves a vertical tab raw, COPY the other way round; every other escape is the same."""
    return data.replace(b"\\'", b"'").replace(b"\x0b", b"\\v")


# ------------------------------------------------------------------ Python side (sources without SQL formatting)
def _epoch_us(value: dt.datetime) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    delta = aware - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def _float_bits(value: float, size: int) -> int:
    return int.from_bytes(struct.pack(">f" if size == 4 else ">d", value), "big", signed=True)


def value_text(value: Any, fmt: str, scale: int = 0) -> str:
    """A non-NULL value's text as ClickHouse reads it (unescaped) for ``fmt``."""
    if fmt == "bool":
        return "1" if value else "0"
    if fmt == "int":
        return str(int(value))
    if fmt == "float":
        return repr(float(value))
    if fmt == "decimal":
        return format(Decimal(value).quantize(Decimal(1).scaleb(-scale)), "f")
    if fmt == "date":
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if fmt == "datetime":
        return _utc(value).strftime("%Y-%m-%d %H:%M:%S")
    if fmt == "datetime64":  # scale: the precision
        return _utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:20 + scale]
    if fmt == "epoch_us":
        return str(_epoch_us(value))
    if fmt == "uuid":
        return str(uuid.UUID(str(value)))
    if fmt == "hex":
        return bytes(value).hex()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value)
    return str(value)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b",
                              "\f": "\\f", "\v": "\\v"})  # PostgreSQL COPY's escapes (and NUL's, which it has not)


def _array_literal(value: list[Any], column: ChColumn) -> str:
    """ClickHouse's array literal, quotes doubled: TSV escaping of the whole field (as PostgreSQL's COPY does it)
    gives what ClickHouse reads (its quoted strings take the same backslash escapes)."""
    items = []
    for e in value:
        if e is None:
            items.append("NULL")
        elif column.element in ("int", "bool", "float", "decimal"):
            items.append(value_text(e, column.element or "text", column.scale))
        else:
            items.append("'" + value_text(e, column.element or "text").replace("'", "''") + "'")
    return "[" + ",".join(items) + "]"


def tsv_line(row: Sequence[Any], columns: Sequence[ChColumn]) -> str:
    """One row as a ClickHouse TabSeparated line (with its newline)."""
    fields = []
    for v, c in zip(row, columns, strict=True):
        if c.fmt == "array":
            fields.append(_array_literal(v or [], c).translate(_TSV_ESCAPES))
        elif v is None:
            fields.append("\\N")
        elif c.fmt == "float":
            fields.append(str(_float_bits(v, c.size)))
        else:
            fields.append(value_text(v, c.fmt, c.scale).translate(_TSV_ESCAPES))
    return "\t".join(fields) + "\n"
