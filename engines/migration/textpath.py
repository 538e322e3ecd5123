"""MySQL -> PostgreSQL without building Python values: rows are read as text (PyMySQL decoders off),
written as text through COPY, and checksummed as text on both sides.

Each supported column has a source normaliser (MySQL's text -> the canonical text) and a PostgreSQL
expression producing the same canonical text from the stored value, so PostgreSQL itself computes the
target's checksum (``md5`` of the row's canonical text joined with U+001F, NULL as ``\\N``). A table
with any other column type (floats, whose text forms differ between the servers; fractional-second
datetimes; json...) takes the typed path instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql

from engines.migration.checksum import sql_aggregate
from engines.migration.model import Table

HALF = 2 ** 63
Norm = Callable[[Any], Any]


def _zero(v: Any) -> Any:
    return None if v is None or str(v).startswith("0000-00-00") else v


def _bool(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bytes):  # bit(1)
        return "1" if int.from_bytes(v, "big") else "0"
    return "0" if str(v) in ("0", "-0") else "1"


def _set_array(v: Any) -> Any:
    if v is None:
        return None
    parts = [p for p in str(v).split(",") if p]
    return "{" + ",".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts) + "}"


def _column(table: Table, i: int) -> tuple[Norm | None, Norm | None, sql.Composable] | None:
    """(text normaliser for the checksum, value for COPY, PostgreSQL canonical-text expression) or None."""
    c = table.columns[i]
    col = sql.Identifier(c.name)
    source, target = c.source_type.lower(), c.target_type
    if c.cast in ("bool", "bit_bool"):
        return _bool, _bool, sql.SQL("CASE WHEN {0} THEN '1' WHEN NOT {0} THEN '0' END").format(col)
    if c.cast == "set":
        return None, _set_array, sql.SQL("array_to_string({}, ',')").format(col)
    if target == "bytea":
        return (lambda v: None if v is None else bytes(v).hex()), None, sql.SQL("encode({}, 'hex')").format(col)
    if c.cast == "zero_date" and source == "date":
        return _zero, _zero, sql.SQL("{}::text").format(col)
    if c.cast == "zero_date" and source == "datetime":
        return _zero, _zero, sql.SQL("to_char({}, 'YYYY-MM-DD HH24:MI:SS')").format(col)
    if c.cast == "zero_date_utc" and source == "timestamp":
        return _zero, _zero, sql.SQL("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')").format(col)
    if source == "time":
        return None, None, sql.SQL("{}::text").format(col)
    if c.cast is None and (re.match(r"^(smallint|integer|bigint|text|varchar\(\d+\)|numeric\(\d+(,\d+)?\))$", target)
                           or c.name in table.enums):
        return None, None, sql.SQL("{}::text").format(col)
    return None


def plan_text(table: Table) -> list[tuple[Norm | None, Norm | None, sql.Composable]] | None:
    """The per-column text handling of ``table``, or None when a column needs the typed path."""
    cols = [_column(table, i) for i in range(len(table.columns))]
    return None if any(c is None for c in cols) else [c for c in cols if c is not None]


def source_rows(rows: Sequence[tuple[Any, ...]], spec: list[tuple[Norm | None, Norm | None, Any]]
                ) -> tuple[list[tuple[Any, ...]], list[int]]:
    """(rows to COPY, each row's hash of its canonical text) from rows read as text. A batch's checksum
    is the sum of the hashes of the rows written, modulo 2**64."""
    norms = [(i, n) for i, (n, _, _) in enumerate(spec) if n]
    writes = [(i, w) for i, (_, w, _) in enumerate(spec) if w]
    md5, hashes, out = hashlib.md5, [], []
    for raw in rows:
        canon = list(raw)
        for i, n in norms:
            canon[i] = n(canon[i])
        text = "\x1f".join("\\N" if v is None else (v if isinstance(v, str) else str(v)) for v in canon)
        hashes.append(int(md5(text.encode(), usedforsecurity=False).hexdigest()[:16], 16) + HALF)
        row = list(raw)
        for i, w in writes:
            row[i] = w(row[i])
        out.append(tuple(row))
    return out, hashes


def row_text(spec: list[tuple[Any, Any, sql.Composable]]) -> sql.Composed:
    """The PostgreSQL expression of a row's canonical text (columns joined by U+001F, NULL as \\N)."""
    return sql.SQL("concat_ws(chr(31), {})").format(
        sql.SQL(", ").join(sql.SQL("coalesce({}, '\\N')").format(e) for _, _, e in spec))


def checksum_sql(spec: list[tuple[Any, Any, sql.Composable]], source: sql.Composable,
                 where: sql.Composable) -> sql.Composed:
    """count and checksum of the canonical text of ``source`` rows matching ``where``, computed by PostgreSQL."""
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(sql_aggregate(row_text(spec)), source, where)
