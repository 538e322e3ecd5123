"""PostgreSQL -> PostgreSQL batches: COPY out of the source and into the target as it comes (binary
through the C relay, or text), with the source's row hashes taken in the same snapshot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from psycopg import sql

from engines.migration import relay, textpath
from engines.migration.checksum import STABLE_TYPES, pg_hash_items, pg_row_hash
from engines.migration.ddl import type_sql
from engines.migration.model import Batch, MigrationFailed, MigrationPlan, Table
from engines.migration.sources import pg_ident, pg_range

if TYPE_CHECKING:
    from engines.migration.postgres_source import PostgresSource
    from engines.migration.postgres_target import PostgresTarget


def copy_binary(src: PostgresSource, tgt: PostgresTarget, plan: MigrationPlan, table: Table,
             batch: Batch) -> tuple[int, int, int]:
    """COPY the range out of the source and into the target as it comes (binary, or text for types whose
    binary form differs between servers and for tables that existed before). When validating, the source
    server first counts and hashes the range (``pg_hash_items``) in the same snapshot as the COPY;
    validation has the target hash its rows the same way. Rows the target refuses (an existing table's
    constraint) go to the rejects, and the source hashes them again to take them out of the checksum."""
    conn = src.conn
    expected: tuple[int, int] | None = None
    # binary COPY costs the target a third less than text; types whose binary form names OIDs go as text,
    # and so does a table that existed before (its column types may differ: binary would reinterpret)
    binary = f"table:{table.target}" in plan.created and all(
        c.source_type == c.target_type and STABLE_TYPES.match(c.target_type) for c in table.columns)
    # binary batches go through the C relay when it is here; it also takes each row's hash out of the COPY's
    # own scan (an extra last column), so the source reads the rows once
    in_scan = binary and relay.available(conn.pgconn)
    with src.snapshot():  # one snapshot for the checksum and the rows copied
        where, args = pg_range(table.key, batch)
        if plan.validation and not in_scan:
            n, checksum = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
                pg_hash_items(table.columns, source=True), pg_ident(table), where), args).fetchone()
            expected = (int(n), int(checksum))
        kept: list[bytes] = []
        split: list[list[bytes]] = []

        def lines() -> list[bytes]:  # only when the target refused some rows: the batch as text lines
            if not split:
                text = kept if not binary else list(src.copy_chunks(table, batch))  # same snapshot
                split.append([line for chunk in text for line in chunk.split(b"\n")[:-1]])
            return split[0]

        def chunks(stream: Iterator[bytes]) -> Iterator[bytes]:
            for chunk in stream:
                if not binary:
                    kept.append(chunk)
                yield chunk

        def relayed(target: Any) -> None:
            nonlocal expected
            measured = src.relay_into(table, batch, target,
                                      pg_row_hash(table.columns, source=True) if plan.validation else None)
            if measured is not None:
                expected = measured

        source = None if in_scan else src.copy_chunks(table, batch, binary=binary)
        try:
            rejected, copied = tgt.copy_text(plan, table, batch, relayed if source is None else chunks(source), lines,
                                             lambda i: json.dumps(line_key(table, lines()[i])), binary)
        finally:
            if source is not None:
                source.close()  # a COPY the target gave up on: cancelled, so the connection is free again
        if rejected and expected is not None:
            n, checksum = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} AND {}").format(
                pg_hash_items(table.columns, source=True), pg_ident(table), where,
                rows_like(table, [lines()[i] for i in rejected])), args).fetchone()
            expected = (expected[0] - int(n), (expected[1] - int(checksum)) % 2 ** 64)
    if expected is None:
        return copied, 0, len(rejected)
    if copied != expected[0]:
        raise MigrationFailed(f"batch {batch.id} of {table.source}: {expected[0]} rows counted, {copied} copied")
    return copied, expected[1], len(rejected)


def line_key(table: Table, line: bytes) -> list[str | None]:
    """The key of a COPY line (every column for a table without one), as text."""
    fields = line.split(b"\t")
    names = [c.name for c in table.columns]
    return [textpath.unescape(fields[names.index(k)]) for k in (table.key or names)]


def rows_like(table: Table, lines: list[bytes]) -> sql.Composable:
    """A condition matching the source rows the ``lines`` came from: by key, or by every column's text for a
    table without one (each field read by its type's input function, as COPY read it)."""
    cols = [c for c in table.columns if not table.key or c.name in table.key]
    names = [c.name for c in table.columns]
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name))
                                                       for c in cols))
    wanted = []
    for line in lines:
        fields = line.split(b"\t")
        wanted.append(sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL("{}::{}::text").format(sql.Literal(textpath.unescape(fields[names.index(c.name)])),
                                           type_sql(c.source_type)) for c in cols)))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(sql.SQL("{} IS NOT DISTINCT FROM {}").format(row, w)
                                                        for w in wanted))
