"""SQLite discovery: the schema (declared types), random rowid-range samples, a time bound by progress handler."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from engines.backup.dumpers.sqlite import TABLES_SQL, quote_ident
from engines.compliance.base import CannotSample, ColumnInfo, Discoverer, TableInfo

RANGES = 10


def family(declared: str) -> str:
    """SQLite type affinity of a declared type, mapped to a validator family (dates are text in SQLite)."""
    t = declared.upper()
    if "INT" in t:
        return "number"
    if "DATE" in t or "TIME" in t:
        return "date"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")) or not t:
        return "text"
    return "other"


class SQLiteDiscoverer(Discoverer):
    kind = "sqlite"

    def tables(self) -> list[TableInfo]:
        conn: sqlite3.Connection = self.connector.conn  # opened read-only (mode=ro) by the connector
        out = []
        for (name,) in conn.execute(TABLES_SQL).fetchall():
            info = conn.execute(f"PRAGMA table_info({quote_ident(name)})").fetchall()
            cols = [ColumnInfo(r[1], r[2] or "", family(r[2] or "")) for r in info]
            keys = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
            top = f"SELECT max(rowid) FROM {quote_ident(name)}"  # noqa: S608 - a quoted identifier
            count = conn.execute(top).fetchone() if self._rowid(name) else None
            out.append(TableInfo(name, cols, rows_estimate=int(count[0] or 0) if count else None, ident=name,
                                 key_columns=keys))
        return out

    def _rowid(self, name: str) -> bool:
        try:
            self.connector.conn.execute(f"SELECT rowid FROM {quote_ident(name)} LIMIT 0")  # noqa: S608
        except sqlite3.OperationalError:  # WITHOUT ROWID table
            return False
        return True

    def sample(self, table: TableInfo, columns: list[ColumnInfo], n: int) -> list[tuple[Any, ...]]:
        conn: sqlite3.Connection = self.connector.conn
        cols = ", ".join(quote_ident(c.name) for c in columns)
        name = quote_ident(table.ident)
        deadline = time.monotonic() + self.timeout
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            top = table.rows_estimate or 0
            if top <= n * 4:
                rows = conn.execute(f"SELECT {cols} FROM {name}").fetchall()  # noqa: S608 - small: read whole
                return self.random.sample(rows, min(n, len(rows)))
            per, got = max(1, n // RANGES), []
            for start in sorted(self.random.randint(1, top) for _ in range(RANGES)):
                got += conn.execute(f"SELECT {cols} FROM {name} WHERE rowid >= ? ORDER BY rowid LIMIT ?",  # noqa: S608
                                    (start, per)).fetchall()
            return got[:n]
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise CannotSample(f"sample of {table.name} exceeded the {self.timeout:g}s time bound") from None
            raise
        finally:
            conn.set_progress_handler(None, 0)
