"""What the migration sources share: key-range arithmetic, range conditions, identifier quoting, checks.

The sources themselves: ``postgres_source.PostgresSource``, ``mysql_source.MySQLSource`` (``base.Source``).
Identifiers are quoted by psycopg.sql for PostgreSQL; PyMySQL has no identifier quoting, so MySQL
names are quoted with backticks (doubled inside), the server's own rule.
"""

from __future__ import annotations

import os
from typing import Any

from psycopg import sql

from engines.errors import ConfigError
from engines.migration.ddl import UnsafeDefinition, safe_type
from engines.migration.model import Batch, Column, Table

# the same text forms on both sides (checksums compare row text); no statement timeout: a batch is bounded
# by its size, and the task's time limit bounds the rest; UTF-8 on the wire whatever the database's encoding
# (a SQL_ASCII database would otherwise make the driver send text parameters as bytes)
SESSION = ("SET client_encoding = 'UTF8'; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; "
           "SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'; SET statement_timeout = 0")


def wanted(name: str, short: str, only: list[str] | None) -> bool:
    """``name`` (or its ``short`` form) is among ``only`` (None or empty: every table)."""
    return not only or name in only or short in only


def batches_from_bounds(table: str, bounds: list[list[Any]], start_id: int) -> list[Batch]:
    """[None, b1), [b1, b2), ... [bn, None): the whole key space, whatever is inserted later."""
    if len(bounds) <= 1:
        return [Batch(start_id, table, None, None, "key")]
    edges: list[list[Any] | None] = [None, *bounds[1:], None]
    return [Batch(start_id + i, table, edges[i], edges[i + 1], "key") for i in range(len(edges) - 1)]


INT_TYPES = ("smallint", "integer", "bigint")
# tables estimated at least this large are split by the server's row estimate instead of count(*) (a full
# scan: MySQL 0.5 s per 2 M rows, PostgreSQL 50 ms per 1 M); batches may then hold somewhat more or fewer
# rows than asked
ESTIMATED_ROWS = 200_000


def dense_int_bounds(low: Any, high: Any, rows: int, batch_size: int) -> list[list[Any]] | None:
    """Boundaries by key value for a dense integer key (auto-increment, sequences): no key scan needed.
    None when the keys are too sparse for equal-width ranges to hold about batch_size rows each."""
    if not rows or low is None:
        return []
    span = int(high) - int(low) + 1
    if span > 4 * rows:
        return None
    width = max(1, -(-batch_size * span // rows))
    return [[v] for v in range(int(low), int(high) + 1, width)]


def pg_ident(table: Table) -> sql.Composed:
    """schema.table of a PostgreSQL source table, quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(table.source_schema), sql.Identifier(table.source_name))


def pg_range(key: list[str], batch: Batch) -> tuple[sql.Composable, list[Any]]:
    """A WHERE clause for ``batch`` and its parameters."""
    if batch.by == "ctid":
        parts, params = [], []
        if batch.lo is not None:
            parts.append(sql.SQL("ctid >= {}::tid").format(sql.Placeholder()))
            params.append(f"({batch.lo[0]},0)")
        if batch.hi is not None:
            parts.append(sql.SQL("ctid < {}::tid").format(sql.Placeholder()))
            params.append(f"({batch.hi[0]},0)")
        return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params
    if batch.by == "all" or not key:
        return sql.SQL("true"), []
    cols = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))
    marks = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(key)))
    parts, params = [], []
    if batch.lo is not None:
        parts.append(sql.SQL("{} >= {}").format(cols, marks))
        params += batch.lo
    if batch.hi is not None:
        parts.append(sql.SQL("{} < {}").format(cols, marks))
        params += batch.hi
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params



def my_ident(*names: str) -> str:
    """Backtick-quote MySQL identifiers (a backtick inside is doubled)."""
    return ".".join("`" + n.replace("`", "``") + "`" for n in names)


def my_range(key: list[str], batch: Batch) -> tuple[str, list[Any]]:
    """A MySQL WHERE clause for ``batch`` and its parameters."""
    if batch.by == "all" or not key:
        return "1=1", []
    cols = "(" + ", ".join(my_ident(k) for k in key) + ")"
    marks = "(" + ", ".join(["%s"] * len(key)) + ")"
    parts, params = [], []
    if batch.lo is not None:
        parts.append(f"{cols} >= {marks}")
        params += batch.lo
    if batch.hi is not None:
        parts.append(f"{cols} < {marks}")
        params += batch.hi
    return (" AND ".join(parts) or "1=1"), params


def mysql_driver() -> str:
    """The driver raw reads use: mysqlclient (C, about 5x faster) when installed, else PyMySQL.
    ``DBFLEET_MYSQL_DRIVER=pymysql`` forces PyMySQL; ``=mysqlclient`` fails when it is missing."""
    wanted = os.environ.get("DBFLEET_MYSQL_DRIVER", "auto").lower()
    if wanted not in ("auto", "mysqlclient", "pymysql"):
        raise ConfigError([("DBFLEET_MYSQL_DRIVER", f"{wanted!r}: use auto, mysqlclient or pymysql")])
    if wanted == "pymysql":
        return wanted
    try:
        import MySQLdb._mysql  # noqa: F401
    except ImportError:
        if wanted == "mysqlclient":
            raise ConfigError([("DBFLEET_MYSQL_DRIVER", "mysqlclient is not installed: pip install mysqlclient"
                                " (it builds against libmariadb-dev and pkg-config)")]) from None
        return "pymysql"
    return "mysqlclient"



def check_types(table: str, columns: list[Column], source_types: bool = True) -> None:
    """Refuse a column whose PostgreSQL type (and ``source_types``: its type on a PostgreSQL source), as the
    source reports it, is more than a type name: a hostile source's text would otherwise reach the
    target's CREATE TABLE and the checksum casts."""
    for c in columns:
        for text in {c.source_type, c.target_type} if source_types else {c.target_type}:
            try:
                safe_type(text)
            except UnsafeDefinition as exc:
                raise ConfigError([("source", f"{table}.{c.name}: {exc}; the source's catalog is not to be"
                                              " trusted, nothing was written")]) from None


def check_found(only: list[str] | None, tables: list[Table]) -> None:
    """Every table asked for was found."""
    if only:
        found = {t.source for t in tables} | {t.source_name for t in tables}
        missing = [t for t in only if t not in found]
        if missing:
            raise ConfigError([("tables_or_collections", f"no such source table: {', '.join(missing)}")])


