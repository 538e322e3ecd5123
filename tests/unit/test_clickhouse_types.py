"""ClickHouse column mapping by server version, TabSeparated lines and canonical row text (Python side; the
ClickHouse and PostgreSQL sides are compared against the real servers in test_clickhouse_target.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from engines.migration import clickhouse_types as cht
from engines.migration.model import Column


def _col(t: str, nullable: bool = True) -> Column:
    return Column("c", t, t, nullable)


def test_types_follow_the_server_version() -> None:
    assert cht.parse_version("18.16.1") == (18, 16, 1) and cht.parse_version("23.8.2.7") == (23, 8, 2)
    old, new = (18, 16, 1), (20, 1, 2)
    assert cht.ch_column(_col("timestamp with time zone", False), old).type == "Int64"
    assert cht.ch_column(_col("timestamp with time zone", False), new).type == "DateTime64(6, 'UTC')"
    assert cht.ch_column(_col("timestamp(3) without time zone"), new).type == "Nullable(DateTime64(3, 'UTC'))"
    assert cht.ch_column(_col("timestamp(0) with time zone"), old).type == "Nullable(DateTime('UTC'))"
    assert cht.ch_column(_col("numeric(12,3)"), old).type == "Nullable(Decimal(12, 3))"
    assert cht.ch_column(_col("numeric(60,2)"), old).type == "Nullable(String)"  # beyond Decimal's 38 digits
    assert cht.ch_column(_col("numeric"), old).type == "Nullable(String)"  # unbounded: exact as text
    assert cht.ch_column(_col("jsonb"), old).type == "Nullable(String)"
    arr = cht.ch_column(_col("text[]"), old)
    assert arr.type == "Array(Nullable(String))" and arr.null_array and not arr.nullable  # no Nullable(Array)
    assert cht.ch_column(_col("integer", True), old, in_key=True).type == "Int32"  # key columns: never Nullable


def test_tsv_lines_escape_like_copy_and_floats_travel_as_bits() -> None:
    cols = [cht.ch_column(Column(n, t, t), (18, 16)) for n, t in
            (("t", "text"), ("a", "text[]"), ("f", "double precision"), ("at", "timestamptz"), ("d", "numeric(6,2)"))]
    at = dt.datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=dt.timezone.utc)
    line = cht.tsv_line(("tab\there\\", ["a'b", None, "x\ny"], 1.5, at, Decimal("1.5")), cols)
    assert line == "tab\\there\\\\\t['a''b',NULL,'x\\ny']\t4609434218613702656\t1000005\t1.50\n"
    assert cht.tsv_line((None, None, None, None, None), cols) == "\\N\t[]\t\\N\t\\N\t\\N\n"


def test_clickhouse_output_is_made_copys_text() -> None:
    """ClickHouse escapes a quote and leaves a vertical tab raw; COPY (and tsv_line) the other way round."""
    assert cht.fixed(b"it\\'s\x0b\\\\\\'x\\b") == b"it's\\v\\\\'x\\b"
    col = cht.ch_column(_col("text"), (18, 16))
    assert cht.tsv_line(("a\bb\fc\vd\0",), [col]) == "a\\bb\\fc\\vd\\0\n"
    floats = cht.ch_column(Column("f", "real", "real", True), (18, 16))
    assert cht.output_expr(floats) == "if(isNull(`f`), NULL, reinterpretAsInt32(reinterpretAsString(assumeNotNull(`f`))))"
    quote = "\'\'\'\'"  # a quote in ClickHouse's quoting, doubled inside the literal
    assert f"replaceAll(toString(assumeNotNull(e)), {quote}, \'\'\'\'\'\')" in cht.output_expr(
        cht.ch_column(_col("text[]"), (18, 16)))
