"""In-place masking on MySQL/MariaDB and SQLite: the same keyset batches as PostgreSQL through DB-API
drivers (row-value comparisons, per-row UPDATEs), the checkpoint in a control table of the same database."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from engines.backup.dumpers.mysql import quote_ident as mysql_ident
from engines.backup.dumpers.sqlite import quote_ident as sqlite_ident
from engines.compliance.anonymize.base import CONTROL_TABLE, Checkpoint, ColumnShape, MaskTarget, TableShape
from engines.errors import ConfigError

CONTROL = (f"CREATE TABLE IF NOT EXISTS {CONTROL_TABLE} (job_id VARCHAR(200) PRIMARY KEY, table_name TEXT NOT NULL,"
           " rules TEXT NOT NULL, last_key TEXT, rows_done BIGINT NOT NULL DEFAULT 0,"
           " finished INTEGER NOT NULL DEFAULT 0)")


class DbApiMaskTarget(MaskTarget):
    """Shared SQL of the DB-API targets; subclasses give the connection, quoting, placeholder and catalog."""

    quote: Callable[[str], str]
    mark = "%s"

    def _exec(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.db.cursor()
        try:
            cur.execute(sql, tuple(args))
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def _begin(self) -> None:
        self._exec("BEGIN")

    def _ident(self, shape: TableShape) -> str:
        return type(self).quote(shape.name)

    def checkpoint(self, job_id: str) -> Checkpoint | None:
        self._exec(CONTROL)
        rows = self._exec(f"SELECT last_key, rows_done, finished FROM {CONTROL_TABLE} WHERE job_id = {self.mark}",  # noqa: S608
                          (job_id,))
        self.db.commit()
        return Checkpoint(job_id, json.loads(rows[0][0]) if rows[0][0] else None, int(rows[0][1]), bool(rows[0][2])) \
            if rows else None

    def reset(self, job_id: str) -> None:
        self._exec(f"DELETE FROM {CONTROL_TABLE} WHERE job_id = {self.mark}", (job_id,))  # noqa: S608
        self.db.commit()

    def start(self, shape: TableShape, job_id: str, table: str, rules: str) -> None:
        m = self.mark
        self._exec(f"INSERT INTO {CONTROL_TABLE} (job_id, table_name, rules) VALUES ({m}, {m}, {m})",  # noqa: S608
                   (job_id, table, rules))
        self.db.commit()

    def _after(self, shape: TableShape, after: list[Any] | None) -> tuple[str, list[Any]]:
        if after is None:
            return "1=1", []
        keys = ", ".join(type(self).quote(k) for k in shape.key)
        marks = ", ".join(self.mark for _ in shape.key)
        return f"({keys}) > ({marks})", list(after)

    def batch(self, shape: TableShape, columns: list[str], after: list[Any] | None, n: int) -> list[tuple[Any, ...]]:
        q = type(self).quote
        where, args = self._after(shape, after)
        keys = ", ".join(q(k) for k in shape.key)
        self._begin()
        return self._exec(f"SELECT {keys}, {', '.join(q(c) for c in columns)} FROM {self._ident(shape)}"  # noqa: S608
                          f" WHERE {where} ORDER BY {keys} LIMIT {int(n)}{self.lock}", args)

    lock = ""

    def taken(self, shape: TableShape, column: str, values: list[Any]) -> set[Any]:
        found: set[Any] = set()
        col = type(self).quote(column)
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            marks = ", ".join(self.mark for _ in chunk)
            found |= {r[0] for r in self._exec(f"SELECT {col} FROM {self._ident(shape)} WHERE {col} IN ({marks})",  # noqa: S608
                                               chunk)}
        return found

    def write(self, shape: TableShape, columns: list[str], rows: list[tuple[Any, ...]], cp: Checkpoint,
              finished: bool) -> None:
        q, m, n = type(self).quote, self.mark, len(shape.key)
        if rows:
            sets = ", ".join(f"{q(c)} = {m}" for c in columns)
            match = " AND ".join(f"{q(k)} = {m}" for k in shape.key)
            cur = self.db.cursor()
            cur.executemany(f"UPDATE {self._ident(shape)} SET {sets} WHERE {match}",  # noqa: S608
                            [(*r[n:], *r[:n]) for r in rows])
            cur.close()
        self._exec(f"UPDATE {CONTROL_TABLE} SET last_key = {m}, rows_done = {m}, finished = {m} WHERE job_id = {m}",  # noqa: S608
                   (json.dumps(cp.last_key, default=str), cp.rows_done, int(finished), cp.job_id))
        self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    db: Any


class SQLiteMaskTarget(DbApiMaskTarget):
    kind = "sqlite"
    quote = staticmethod(sqlite_ident)
    mark = "?"

    def __init__(self, connector: Any) -> None:
        super().__init__(connector)  # the connector's connection is read-only: open a writable one
        self.db = sqlite3.connect(connector.db.path, timeout=connector.db.query_timeout, isolation_level=None)

    def _begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def checkpoint(self, job_id: str) -> Checkpoint | None:
        self._begin()
        return super().checkpoint(job_id)

    def reset(self, job_id: str) -> None:
        self._begin()
        super().reset(job_id)

    def start(self, shape: TableShape, job_id: str, table: str, rules: str) -> None:
        self._begin()
        super().start(shape, job_id, table, rules)

    def describe(self, table: str) -> TableShape:
        info = self.db.execute(f"PRAGMA table_info({sqlite_ident(table)})").fetchall()
        if not info:
            raise ConfigError([("table", f"no table {table!r} in this database")])
        unique = set()
        for _, name, is_unique, *_ in self.db.execute(f"PRAGMA index_list({sqlite_ident(table)})").fetchall():
            cols = self.db.execute(f"PRAGMA index_info({sqlite_ident(name)})").fetchall()
            if is_unique and len(cols) == 1:
                unique.add(cols[0][2])
        key = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        if not key:
            raise ConfigError([("table", f"{table} has no primary key: in-place masking batches by key ranges")])
        cols = {r[1]: ColumnShape(r[1], r[2] or "", not r[3] and not r[5], r[1] in unique) for r in info}
        return TableShape(table, key, cols, table)

    def close(self) -> None:
        self.db.close()


class MySQLMaskTarget(DbApiMaskTarget):
    kind = "mysql"
    quote = staticmethod(mysql_ident)
    lock = " FOR UPDATE"

    def __init__(self, connector: Any) -> None:
        super().__init__(connector)
        self.db = connector.conn
        self.db.autocommit(False)

    def describe(self, table: str) -> TableShape:
        cols = self._exec("SELECT column_name, column_type, is_nullable, character_maximum_length"
                          " FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s"
                          " ORDER BY ordinal_position", (table,))
        if not cols:
            raise ConfigError([("table", f"no table {table!r} in this database")])
        stats = self._exec("SELECT index_name, column_name, non_unique FROM information_schema.statistics WHERE"
                           " table_schema = DATABASE() AND table_name = %s ORDER BY index_name, seq_in_index", (table,))
        self.db.commit()
        key = [c for idx, c, _ in stats if idx == "PRIMARY"]
        by_index: dict[str, list[str]] = {}
        for idx, c, non_unique in stats:
            if not int(non_unique):
                by_index.setdefault(idx, []).append(c)
        unique = {cs[0] for idx, cs in by_index.items() if len(cs) == 1}
        if not key:
            raise ConfigError([("table", f"{table} has no primary key: in-place masking batches by key ranges")])
        shape = {c: ColumnShape(c, t, n == "YES", c in unique, int(m) if m else None) for c, t, n, m in cols}
        return TableShape(table, key, shape, table)
