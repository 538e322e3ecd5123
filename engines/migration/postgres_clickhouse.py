"""PostgreSQL sources into ClickHouse: the SQL that formats a batch as ClickHouse TabSeparated text (PostgreSQL's
COPY text escaping is ClickHouse's TSV escaping: ``\\N`` for NULL, backslash escapes for tab, newline,
backslash). Used by ``PostgresSource``; the formats are ``clickhouse_types``'."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from engines.migration.clickhouse_types import ChColumn
from engines.migration.model import Column

_QUOTED = {"text", "uuid", "date", "hex"}


def _text(expr: sql.Composable, fmt: str, source_type: str, scale: int = 0) -> sql.Composable:
    """``expr``'s text for ClickHouse."""
    tz = "with time zone" in source_type or source_type.startswith("timestamptz")
    if fmt == "bool":
        return sql.SQL("{}::int::text").format(expr)
    if fmt == "hex":
        return sql.SQL("encode({}, 'hex')").format(expr)
    if fmt == "datetime":
        return sql.SQL("to_char({}, 'YYYY-MM-DD HH24:MI:SS')").format(
            sql.SQL("({} AT TIME ZONE 'UTC')").format(expr) if tz else expr)
    if fmt == "datetime64":  # as many digits as DateTime64(p) prints
        return sql.SQL("to_char({}, {})").format(sql.SQL("({} AT TIME ZONE 'UTC')").format(expr) if tz else expr,
                                                 sql.Literal(f"YYYY-MM-DD HH24:MI:SS.FF{scale}"))
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


def psql_binary() -> str | None:
    """psql, PostgreSQL's client, when installed: it reads a COPY's rows in C (the Python loop over libpq's one
    message per row costs about 2 us a row, as much as the server spends on a narrow row)."""
    return shutil.which("psql")


# the source connection's session settings (engines.migration.sources.SESSION), for psql's own connection
_PGOPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3 -c bytea_output=hex"
              " -c IntervalStyle=postgres -c statement_timeout=0")


_PSQL_PARAMS = {"host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl",
                "passfile", "application_name", "options"}


def psql_copy(info: Any, statement: str, block: int = 1 << 20) -> Iterator[bytes]:
    """``statement`` (a ``COPY ... TO STDOUT``) run by psql on a connection like ``info``'s (a psycopg
    ConnectionInfo: its connection string, the password through the environment only), its output in blocks
    of whole lines. A failure raises with psql's message; closing early stops psql."""
    env = {**os.environ, "PGOPTIONS": _PGOPTIONS, "PGCLIENTENCODING": "UTF8", "PGCONNECT_TIMEOUT": "30"}
    if info.password:
        env["PGPASSWORD"] = info.password
    params = {k: v for k, v in info.get_parameters().items() if k in _PSQL_PARAMS}  # psql's libpq may be older
    proc = subprocess.Popen([str(psql_binary()), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                             psycopg.conninfo.make_conninfo(**params), "-c", statement],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    rest = b""
    try:
        while True:
            data = proc.stdout.read(block)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            yield data[:cut + 1]
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            reason = err.splitlines()[-1] if err else f"psql exited with {proc.returncode}"
            raise psycopg.OperationalError(f"COPY out of the source failed: {reason}")
        if rest:
            yield rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
