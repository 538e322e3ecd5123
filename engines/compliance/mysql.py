"""MySQL/MariaDB discovery: information_schema catalog and comments; random primary-key-range samples."""

from __future__ import annotations

from typing import Any

from engines.backup.dumpers.mysql import quote_ident
from engines.compliance.base import CannotSample, ColumnInfo, Discoverer, TableInfo

CATALOG = """
SELECT c.table_name, c.column_name, c.data_type, c.column_comment, c.character_maximum_length, c.column_key,
       t.table_rows
FROM information_schema.columns c
JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = DATABASE() AND t.table_type = 'BASE TABLE'
ORDER BY c.table_name, c.ordinal_position
"""
TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "json", "enum", "set"}
DATE = {"date", "datetime", "timestamp"}
NUMBER = {"tinyint", "smallint", "mediumint", "int", "bigint", "decimal"}
DENIED = {1142, 1143}  # table / column access denied
TIMED_OUT = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
RANGES = 10  # random key ranges per sample


def family(data_type: str) -> str:
    """Which validators a MySQL column type gets."""
    t = data_type.lower()
    return "text" if t in TEXT else "date" if t in DATE else "number" if t in NUMBER else "other"


class MySQLDiscoverer(Discoverer):
    kind = "mysql"

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.connector.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def tables(self) -> list[TableInfo]:
        out: dict[str, TableInfo] = {}
        for name, col, dtype, comment, maxlen, key, rows in self._rows(CATALOG):
            info = out.setdefault(name, TableInfo(name, [], rows_estimate=int(rows or 0), ident=name))
            info.columns.append(ColumnInfo(col, dtype, family(dtype), comment or None,
                                           max_length=int(maxlen) if maxlen else None))
            if key == "PRI":
                info.key_columns.append(col)
        return list(out.values())

    def _bound_session(self) -> None:
        import pymysql

        for stmt in (f"SET SESSION max_statement_time = {float(self.timeout)}",
                     f"SET SESSION max_execution_time = {int(self.timeout * 1000)}"):
            try:
                self._rows(stmt)
            except pymysql.err.MySQLError:  # the other server's variable
                continue

    def _ranges(self, table: TableInfo, cols: str, n: int) -> list[tuple[Any, ...]]:
        """Rows from RANGES random starting keys of an integer primary key (covers the whole key space)."""
        name, key = quote_ident(table.ident), quote_ident(table.key_columns[0])
        lo, hi = self._rows(f"SELECT MIN({key}), MAX({key}) FROM {name}")[0]  # noqa: S608 - quoted identifiers
        if lo is None:
            return []
        per = max(1, n // RANGES)
        got: list[tuple[Any, ...]] = []
        for start in sorted(self.random.randint(int(lo), int(hi)) for _ in range(RANGES)):
            got += self._rows(f"SELECT {cols} FROM {name} WHERE {key} >= %s ORDER BY {key} LIMIT %s",  # noqa: S608
                              (start, per))
        return got[:n]

    def sample(self, table: TableInfo, columns: list[ColumnInfo], n: int) -> list[tuple[Any, ...]]:
        import pymysql

        cols = ", ".join(quote_ident(c.name) for c in columns)
        numeric_key = len(table.key_columns) == 1 and any(
            c.name == table.key_columns[0] and c.family == "number" for c in table.columns)
        try:
            self._bound_session()
            self._rows("START TRANSACTION READ ONLY")
            try:
                if numeric_key and (table.rows_estimate or 0) > n * 4:
                    return self._ranges(table, cols, n)
                order = "RAND()" if self.seed is None else f"RAND({int(self.seed)})"
                return self._rows(f"SELECT {cols} FROM {quote_ident(table.ident)} ORDER BY {order} LIMIT %s",  # noqa: S608
                                  (n,))
            finally:
                self._rows("COMMIT")
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code in DENIED:
                raise CannotSample(f"permission denied: {exc.args[1]}") from None
            if code in TIMED_OUT:
                raise CannotSample(f"sample of {table.name} exceeded the {self.timeout:g}s statement timeout") from None
            raise
