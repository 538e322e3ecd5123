"""PostgreSQL sources into ClickHouse: the SQL that formats a batch as ClickHouse TabSeparated text (PostgreSQL's
COPY text escaping is ClickHouse's TSV escaping: ``\\N`` for NULL, backslash escapes for tab, newline,
backslash), and the SQL of each row's canonical hash for validation (see ``clickhouse_types``).
Used by ``PostgresSource``; the formats are ``clickhouse_types``'."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from engines.migration.clickhouse_types import ChColumn
from engines.migration.model import Column

_QUOTED = {"text", "uuid", "date", "hex"}


def _text(expr: sql.Composable, fmt: str, source_type: str, scale: int = 0) -> sql.Composable:
    """``expr``'s text for ClickHouse (travel and canonical agree for every format but floats)."""
    tz = "with time zone" in source_type or source_type.startswith("timestamptz")
    if fmt == "bool":
        return sql.SQL("{}::int::text").format(expr)
    if fmt == "hex":
        return sql.SQL("encode({}, 'hex')").format(expr)
    if fmt == "datetime":
        return sql.SQL("to_char({}, 'YYYY-MM-DD HH24:MI:SS')").format(
            sql.SQL("({} AT TIME ZONE 'UTC')").format(expr) if tz else expr)
    if fmt == "datetime64":
        return sql.SQL("to_char({}, 'YYYY-MM-DD HH24:MI:SS.US')").format(
            sql.SQL("({} AT TIME ZONE 'UTC')").format(expr) if tz else expr)
    if fmt == "epoch_us":
        return sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint::text").format(expr)
    return sql.SQL("{}::text").format(expr)


def _float_bits(expr: sql.Composable, size: int) -> sql.Composable:
    """The IEEE bits of a float as a signed integer's text (ClickHouse: reinterpretAsInt64(reinterpretAsString))."""
    if size == 4:
        return sql.SQL("('x' || encode(float4send({}), 'hex'))::bit(32)::int::text").format(expr)
    return sql.SQL("('x' || encode(float8send({}), 'hex'))::bit(64)::bigint::text").format(expr)


def _element_type(column: Column) -> str:
    return column.source_type.removesuffix("[]")


def travel_expr(column: Column, ch: ChColumn) -> sql.Composable:
    """The column's value as ClickHouse TSV reads it (COPY adds the escaping)."""
    ident = sql.Identifier(column.name)
    if ch.fmt == "array":
        element = sql.SQL("e")
        item: sql.Composable = _text(element, ch.element or "text", _element_type(column), ch.scale)
        if ch.element in _QUOTED:  # quotes doubled, the only escape ClickHouse needs beyond COPY's
            item = sql.SQL("'''' || replace({}, '''', '''''') || ''''").format(item)
        return sql.SQL("'[' || coalesce((SELECT string_agg(coalesce({}, 'NULL'), ',' ORDER BY o)"
                       " FROM unnest({}) WITH ORDINALITY u(e, o)), '') || ']'").format(item, ident)
    if ch.fmt == "float":  # the IEEE bits (``clickhouse_types.float_columns``)
        return _float_bits(ident, ch.size)
    if ch.fmt in ("int", "uuid", "date"):
        return ident  # COPY's own text is ClickHouse's
    return _text(ident, ch.fmt, column.source_type, ch.scale)


def _framed(text: sql.Composable) -> sql.Composable:
    return sql.SQL("coalesce(octet_length({0})::text || ':' || {0}, 'N')").format(text)


def canonical_expr(column: Column, ch: ChColumn) -> sql.Composable:
    """The column's canonical text (``N`` for NULL, else ``length:text``), as ``ch_canonical`` computes it."""
    ident = sql.Identifier(column.name)
    if ch.fmt == "array":
        element = sql.SQL("e")
        text = _float_bits(element, ch.size) if ch.element == "float" \
            else _text(element, ch.element or "text", _element_type(column), ch.scale)
        joined = sql.SQL("coalesce((SELECT string_agg({}, ',' ORDER BY o) FROM unnest({}) WITH ORDINALITY u(e, o)),"
                         " '')").format(_framed(text), ident)
        return sql.SQL("octet_length({0})::text || ':' || {0}").format(joined)
    if ch.fmt == "float":
        return _framed(_float_bits(ident, ch.size))
    return _framed(_text(ident, ch.fmt, column.source_type, ch.scale))


def row_hash(columns: Sequence[Column], chs: Sequence[ChColumn]) -> sql.Composable:
    """A row's hash as a bigint: the first 8 bytes of md5 of the canonical text (ClickHouse: halfMD5)."""
    items = sql.SQL(", ").join(canonical_expr(c, h) for c, h in zip(columns, chs, strict=True))
    return sql.SQL("('x' || left(md5(concat_ws(chr(9), {})), 16))::bit(64)::bigint").format(items)
