"""PostgreSQL in-place masking: keyset batches (locked FOR UPDATE, or read without locks in the pipelined
loop), one UPDATE ... FROM unnest() per batch matching each row by its ctid and xmin (a TID scan, no index
descent; a row changed since it was read no longer matches, so the write is a compare-and-set), the
checkpoint updated in the same transaction."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from engines.compliance.anonymize.base import Checkpoint, ColumnShape, MaskTarget, RowsChanged, TableShape
from engines.errors import ConfigError

SHAPE = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       CASE WHEN a.atttypmod > 4 AND t.typname IN ('varchar', 'bpchar') THEN a.atttypmod - 4 END,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indnatts = 1
                AND i.indkey[0] = a.attnum AND i.indpred IS NULL),
       coalesce((SELECT k.i FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(n, i)
                  WHERE i.indrelid = c.oid AND i.indisprimary AND k.n = a.attnum), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
ORDER BY a.attnum
"""
CONTROL = """
CREATE SCHEMA IF NOT EXISTS dbfleet;
CREATE TABLE IF NOT EXISTS dbfleet.anonymize_checkpoints (
    job_id text PRIMARY KEY, table_name text NOT NULL, rules text NOT NULL, last_key jsonb,
    rows_done bigint NOT NULL DEFAULT 0, finished boolean NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())
"""


def split_name(table: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` (public)."""
    schema, dot, name = table.rpartition(".")
    return (schema if dot else "public"), name


def table_shape(conn: Any, table: str) -> TableShape:
    """Key, columns, nullability and single-column unique constraints of ``table`` (read in the current transaction)."""
    schema, name = split_name(table)
    rows = conn.execute(SHAPE, (schema, name)).fetchall()
    if not rows:
        raise ConfigError([("table", f"no table {table!r} in this database")])
    key = [r[0] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
    if not key:
        raise ConfigError([("table", f"{table} has no primary key: in-place masking batches by key ranges")])
    cols = {r[0]: ColumnShape(r[0], r[1], bool(r[2]), bool(r[4]), r[3]) for r in rows}
    return TableShape(table, key, cols, (schema, name))


class PostgresMaskTarget(MaskTarget):
    kind = "postgresql"

    def __init__(self, connector: Any) -> None:
        super().__init__(connector)
        self.conn = connector.conn
        self.conn.autocommit = False  # batches are explicit transactions
        self.locking = True  # batch() locks its rows FOR UPDATE (optimistic(True): compare-and-set writes only)
        self._versions: tuple[list[Any], list[Any]] = ([], [])  # ctid and xmin of the rows of the last batch()

    def describe(self, table: str) -> TableShape:
        try:
            return table_shape(self.conn, table)
        finally:
            self.conn.rollback()

    def _ensure_control(self) -> None:
        for stmt in CONTROL.strip().split(";\n"):
            self.conn.execute(stmt)
        self.conn.commit()

    def checkpoint(self, job_id: str) -> Checkpoint | None:
        self._ensure_control()
        row = self.conn.execute("SELECT last_key, rows_done, finished FROM dbfleet.anonymize_checkpoints"
                                " WHERE job_id = %s", (job_id,)).fetchone()
        self.conn.rollback()
        return Checkpoint(job_id, row[0], int(row[1]), bool(row[2])) if row else None

    def reset(self, job_id: str) -> None:
        self.conn.execute("DELETE FROM dbfleet.anonymize_checkpoints WHERE job_id = %s", (job_id,))
        self.conn.commit()

    def start(self, shape: TableShape, job_id: str, table: str, rules: str) -> None:
        self.conn.execute("INSERT INTO dbfleet.anonymize_checkpoints (job_id, table_name, rules) VALUES (%s, %s, %s)"
                          " ON CONFLICT (job_id) DO NOTHING", (job_id, table, rules))
        self.conn.commit()

    def _after(self, shape: TableShape, after: list[Any] | None) -> tuple[Any, list[Any]]:
        from psycopg import sql

        if after is None:
            return sql.SQL("TRUE"), []
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
        params = sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(shape.columns[k].sql_type)) for k in shape.key)
        return sql.SQL("({}) > ({})").format(keys, params), list(after)

    def optimistic(self, on: bool) -> bool:
        self.locking = not on
        return True

    def batch(self, shape: TableShape, columns: list[str], after: list[Any] | None, n: int) -> list[tuple[Any, ...]]:
        from psycopg import sql

        where, params = self._after(shape, after)
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
        stmt = sql.SQL("SELECT {}, {}, ctid::text, xmin::text FROM {} WHERE {} ORDER BY {} LIMIT {}{}").format(
            keys, sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(*shape.ident), where,
            keys, sql.Literal(n), sql.SQL(" FOR UPDATE" if self.locking else ""))
        raw = self.conn.execute(stmt, params).fetchall()
        if not raw:
            self._versions = ([], [])
            return []
        width = len(shape.key) + len(columns)
        cols = list(zip(*raw, strict=True))
        self._versions = (list(cols[width]), list(cols[width + 1]))
        return list(zip(*cols[:width], strict=True))

    def taken(self, shape: TableShape, column: str, values: list[Any]) -> set[Any]:
        from psycopg import sql

        stmt = sql.SQL("SELECT {c} FROM {t} WHERE {c} = ANY(%b::{ty}[])").format(
            c=sql.Identifier(column), t=sql.Identifier(*shape.ident), ty=sql.SQL(shape.columns[column].sql_type))
        return {r[0] for r in self.conn.execute(stmt, [values]).fetchall()}

    def write(self, shape: TableShape, columns: list[str], rows: list[tuple[Any, ...]], cp: Checkpoint,
              finished: bool) -> None:
        from psycopg import errors

        try:
            self._write(shape, columns, rows, cp, finished)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.conn.rollback()  # now, from this thread: a batch written after this one waits on its locks
            if isinstance(exc, errors.DeadlockDetected):  # two batches in flight whose fakes clashed
                raise RowsChanged(f"{shape.name}: two batches in flight deadlocked") from exc
            raise

    def _write(self, shape: TableShape, columns: list[str], rows: list[tuple[Any, ...]], cp: Checkpoint,
               finished: bool) -> None:
        from psycopg import sql

        names = [*shape.key, *columns]
        alias = [sql.Identifier(f"v{i}") for i in range(len(names))]
        arrays = sql.SQL(", ").join(sql.SQL("%b::{}[]").format(sql.SQL(shape.columns[c].sql_type)) for c in names)
        sets = sql.SQL(", ").join(sql.SQL("{} = u.{}").format(sql.Identifier(c), alias[len(shape.key) + i])
                                  for i, c in enumerate(columns))
        match = sql.SQL(" AND ").join(sql.SQL("t.{} = u.{}").format(sql.Identifier(k), alias[i])
                                      for i, k in enumerate(shape.key))
        # the batch and its checkpoint commit together or not at all: a server crash that loses the last
        # commits only means those batches run again, so the commit need not wait for the WAL flush
        # and each row is looked up once: a Memoize node (PostgreSQL 14+) over the TID scan only costs (~8 %)
        self.conn.execute("SET LOCAL synchronous_commit = off" + (
            "; SET LOCAL enable_memoize = off" if self.conn.info.server_version >= 140000 else ""))
        if rows:
            ctids, xmins = self._versions
            if len(ctids) != len(rows):
                raise RuntimeError("write() of rows that are not the last batch() of this target")
            # by ctid (a TID scan), rechecked on xmin (a row updated since it was read has a new version: no
            # match) and on the key (a slot reused after pruning): a compare-and-set, locked or not
            stmt = sql.SQL("UPDATE {} AS t SET {} FROM unnest(%b::text[]::tid[], %b::text[]::xid[], {})"
                           " AS u(dbfleet_tid, dbfleet_xmin, {}) WHERE t.ctid = u.dbfleet_tid"
                           " AND t.xmin = u.dbfleet_xmin AND {}").format(
                sql.Identifier(*shape.ident), sets, arrays, sql.SQL(", ").join(alias), match)
            cur = self.conn.execute(stmt, [ctids, xmins, *(list(col) for col in zip(*rows, strict=True))])
            if cur.rowcount != len(rows):
                raise RowsChanged(f"{shape.name}: {len(rows) - cur.rowcount} of {len(rows)} rows changed or went "
                                  "away since they were read")
        # compare-and-set from where the batch before left it: with batches written at once, this waits for
        # the one before to commit, and fails (no row) when it rolled back
        done = self.conn.execute("UPDATE dbfleet.anonymize_checkpoints SET last_key = %s::jsonb, rows_done = %s,"
                                 " finished = %s, updated_at = now() WHERE job_id = %s AND rows_done = %s",
                                 (json.dumps(cp.last_key, default=str), cp.rows_done, finished, cp.job_id,
                                  cp.rows_done - len(rows)))
        if done.rowcount != 1:
            raise RowsChanged(f"{shape.name}: the checkpoint of job {cp.job_id} is not where this batch starts "
                              "(the batch before it did not commit)")
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def fork(self) -> PostgresMaskTarget:
        twin = type(self.connector)(self.connector.db, self.connector.password)  # the secret stays in this process
        return PostgresMaskTarget(twin)

    def unique_violation(self, exc: BaseException) -> bool:
        from psycopg import errors

        return isinstance(exc, errors.UniqueViolation)
