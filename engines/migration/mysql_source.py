"""MySQL/MariaDB as a migration source: information_schema discovery, key-range batches, rows read raw
(mysqlclient's C reader, or PyMySQL without decoding) and encoded into COPY text lines here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engines.config import DatabaseConfig
from engines.connectors import open_connector
from engines.connectors.mysql import connect_kwargs
from engines.errors import ConfigError
from engines.migration import sources, textpath
from engines.migration.base import Source, Target
from engines.migration.linehash import line_hash
from engines.migration.model import Batch, Column, MigrationPlan, MigrationType, Table
from engines.migration.postgres_target import key_text
from engines.migration.sources import (
    INT_TYPES,
    batches_from_bounds,
    check_found,
    check_types,
    dense_int_bounds,
    my_ident,
    my_range,
    mysql_driver,
    wanted,
)
from engines.migration.types import enum_values, map_mysql


class MySQLSource(Source):
    """A MySQL/MariaDB database: queries on PyMySQL, batch reads raw on a second connection."""

    kind = "mysql"

    def __init__(self, conn: Any, db: DatabaseConfig) -> None:
        self.conn = conn
        self.db = db
        self._raw: Any = None
        self.query("SET time_zone = '+00:00'")

    @classmethod
    @contextmanager
    def connect(cls, db: DatabaseConfig) -> Iterator[MySQLSource]:
        """The source over the database's connector (and its raw-read connection, closed with it)."""
        with open_connector(db) as c:
            source = cls(c.conn, db)
            try:
                yield source
            finally:
                source.close()

    def usable(self) -> bool:
        """Both connections answer."""
        try:
            self.ping()
            return True
        except Exception:  # noqa: BLE001 - any failure means: open new connections
            return False

    def plan_path(self, target: Target, kind: MigrationType, validation: bool) -> str:
        """Full copies into PostgreSQL: COPY text lines encoded here ("text"), else driver values."""
        return "text" if target.accepts_pg_copy and kind == MigrationType.FULL else "rows"

    def changed_rows(self, table: Table, batch: Batch, column: str, since: str | None,
                     until: str) -> list[tuple[Any, ...]]:
        """The batch's rows whose ``column`` is in (since, until]."""
        in_range, args = my_range(table.key, batch)
        changed, args = f"{my_ident(column)} <= %s", [*args, until]
        if since is not None:
            changed, args = changed + f" AND {my_ident(column)} > %s", [*args, since]
        names = ", ".join(my_ident(c.name) for c in table.columns)
        return self.query(f"SELECT {names} FROM {my_ident(table.source_name)} WHERE {in_range} AND {changed}",  # noqa: S608
                          args)

    def max_watermark(self, table: Table, column: str) -> str | None:
        """max(column) as text."""
        value = self.query(f"SELECT CAST(max({my_ident(column)}) AS CHAR) FROM {my_ident(table.source_name)}")[0][0]  # noqa: S608
        return None if value is None else str(value)

    def copy_text(self, target: Any, plan: MigrationPlan, table: Table, batch: Batch,
                  spec: Any) -> tuple[int, int, int, bool]:
        """Raw rows -> COPY text lines streamed into the target as they are read (PostgreSQL parses one chunk
        while the next is fetched). The checksum hashes the lines written; validation has PostgreSQL rebuild
        the same lines from the stored rows (escaped only when some line was). If the target rejects the
        batch, the kept lines are bisected to find the bad rows. Returns (rows, checksum, rejects, escaped)."""
        encoder = textpath.Encoder(spec, hashing=plan.validation)
        lines: list[bytes] = []
        total = 0
        raws: list[tuple[bytes | None, ...]] = []

        def chunks() -> Iterator[bytes]:
            nonlocal total
            for rows in self.raw_chunks(table, batch):
                data, chunk_lines, chunk_sum = encoder.encode(rows)
                lines.extend(chunk_lines)
                total += chunk_sum
                raws.extend(rows)
                yield data

        rejected, _ = target.copy_text(plan, table, batch, chunks(), lambda: lines, lambda i: key_text(table, raws[i]))
        if plan.validation:
            total -= sum(line_hash(lines[i]) for i in rejected)
        return len(lines) - len(rejected), total % 2 ** 64, len(rejected), encoder.escaped


    def close(self) -> None:
        """Close the raw-read connection (the connector closes the other)."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def ping(self) -> None:
        """Raise unless both connections (queries, raw reads) still answer."""
        self.conn.ping(reconnect=False)
        if self._raw is not None:
            self._raw.ping()

    def query(self, q: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Rows of a query on the query connection."""
        with self.conn.cursor() as cur:
            cur.execute(q, args)
            return list(cur.fetchall())

    def discover(self, only: list[str] | None) -> list[Table]:
        """Base tables of the connection's database, columns mapped with pgloader's casts."""
        schema = self.query("SELECT DATABASE()")[0][0]
        if not schema:
            raise ConfigError([("dbname", "the MySQL source needs a database (dbname)")])
        tables = []
        for name, estimate in self.query("SELECT table_name, coalesce(table_rows, 0) FROM information_schema.tables"
                                         " WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY 1",
                                         (schema,)):
            if not wanted(name, name, only):
                continue
            columns, enums = [], {}
            for col, data_type, column_type, nullable, extra in self.query(
                    "SELECT column_name, data_type, column_type, is_nullable = 'YES', extra FROM"
                    " information_schema.columns WHERE table_schema = %s AND table_name = %s"
                    " ORDER BY ordinal_position", (schema, name)):
                target, cast, identity, nullable = map_mysql(data_type, column_type, extra, bool(nullable))
                if target == "enum":
                    enums[col] = enum_values(column_type)
                    target = f"{name}_{col}"[:63]
                columns.append(Column(col, column_type, target, nullable, cast, identity))
            key = [r[0] for r in self.query(
                "SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = %s"
                " AND table_name = %s AND constraint_name = 'PRIMARY' ORDER BY ordinal_position", (schema, name))]
            check_types(name, [c for c in columns if c.name not in enums], source_types=False)
            tables.append(Table(name, schema, name, "public", name, columns, key, int(estimate), enums))
        check_found(only, tables)
        return tables

    def schema_objects(self, table: Table, migrated: set[str]) -> list[dict[str, Any]]:
        """Secondary indexes (prefix indexes as ``left(col, n)``; FULLTEXT and SPATIAL have no PostgreSQL
        equivalent and are left out) and foreign keys to migrated tables, as pgloader recreates them."""
        objects: list[dict[str, Any]] = []
        indexes: dict[str, dict[str, Any]] = {}
        for name, non_unique, column, sub_part, kind in self.query(
                "SELECT index_name, non_unique, column_name, sub_part, index_type FROM information_schema.statistics"
                " WHERE table_schema = DATABASE() AND table_name = %s AND index_name <> 'PRIMARY'"
                " ORDER BY index_name, seq_in_index", (table.source_name,)):
            if kind in ("FULLTEXT", "SPATIAL") or column is None:
                indexes[name] = {"skip": True}
                continue
            entry = indexes.setdefault(name, {"kind": "index", "name": name, "unique": not int(non_unique),
                                              "columns": [], "prefix": {}})
            if "skip" not in entry:
                entry["columns"].append(column)
                if sub_part is not None:
                    entry["prefix"][column] = int(sub_part)
        objects += [e for e in indexes.values() if "skip" not in e]
        fks: dict[str, dict[str, Any]] = {}
        for name, column, ref, ref_column, on_update, on_delete in self.query(
                "SELECT k.constraint_name, k.column_name, k.referenced_table_name, k.referenced_column_name,"
                " r.update_rule, r.delete_rule FROM information_schema.key_column_usage k JOIN"
                " information_schema.referential_constraints r ON r.constraint_schema = k.constraint_schema"
                " AND r.constraint_name = k.constraint_name AND r.table_name = k.table_name"
                " WHERE k.table_schema = DATABASE() AND k.table_name = %s AND k.referenced_table_name IS NOT NULL"
                " ORDER BY k.constraint_name, k.ordinal_position", (table.source_name,)):
            if ref not in migrated:
                continue
            fk = fks.setdefault(name, {"kind": "fk", "name": name, "columns": [], "ref": ref, "ref_columns": [],
                                       "on_update": on_update, "on_delete": on_delete})
            fk["columns"].append(column)
            fk["ref_columns"].append(ref_column)
        return objects + list(fks.values())

    def bounds(self, table: Table, batch_size: int, start_id: int) -> list[Batch]:
        """Dense integer keys by value, other keys by every batch_size-th key, keyless tables whole."""
        if not table.key:
            return [Batch(start_id, table.source, None, None, "all")]  # no key: one batch, read whole
        key_col = next(c for c in table.columns if c.name == table.key[0])
        if len(table.key) == 1 and key_col.target_type in (*INT_TYPES, "numeric(20)"):
            k = my_ident(key_col.name)
            if table.rows_estimate >= sources.ESTIMATED_ROWS:  # InnoDB counts by scanning; its statistics size ranges well
                low, high = self.query(f"SELECT min({k}), max({k}) FROM {my_ident(table.source_name)}")[0]  # noqa: S608
                count = table.rows_estimate
            else:
                low, high, count = self.query(
                    f"SELECT min({k}), max({k}), count(*) FROM {my_ident(table.source_name)}")[0]  # noqa: S608
            dense = dense_int_bounds(low, high, count, batch_size)
            if dense is not None:
                return batches_from_bounds(table.source, dense, start_id)
        keys = ", ".join(my_ident(k) for k in table.key)
        query = (f"SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS dbfleet_rn"  # noqa: S608
                 f" FROM {my_ident(table.source_name)}) s WHERE mod(dbfleet_rn, %s) = 1 ORDER BY {keys}")
        rows = self.query(query, (batch_size,))
        return batches_from_bounds(table.source, [list(r) for r in rows], start_id)

    def rows(self, table: Table, batch: Batch) -> Iterator[tuple[Any, ...]]:
        """The batch's rows as Python values (the typed path)."""
        where, params = my_range(table.key, batch)
        cols = ", ".join(my_ident(c.name) for c in table.columns)
        yield from self.query(f"SELECT {cols} FROM {my_ident(table.source_name)} WHERE {where}", params)  # noqa: S608

    def rows_by_keys(self, table: Table, keys: list[list[Any]]) -> list[tuple[Any, ...]]:
        """The rows whose key is one of ``keys`` (row comparison, key values bound as parameters)."""
        if not keys:
            return []
        cols = ", ".join(my_ident(c.name) for c in table.columns)
        one = "(" + ", ".join(["%s"] * len(table.key)) + ")"
        key = ", ".join(my_ident(k) for k in table.key)
        return self.query(f"SELECT {cols} FROM {my_ident(table.source_name)} WHERE ({key}) IN"  # noqa: S608
                          f" ({', '.join([one] * len(keys))})", [v for k in keys for v in k])

    def raw_chunks(self, table: Table, batch: Batch, size: int = 10000) -> Iterator[list[tuple[bytes | None, ...]]]:
        """The batch's rows as the server sends them (bytes, None for NULL), ``size`` rows at a time, on a
        second connection that converts nothing (mysqlclient's C reader, or PyMySQL without decoding)."""
        where, params = my_range(table.key, batch)
        cols = ", ".join(my_ident(c.name) for c in table.columns)
        with self.conn.cursor() as cur:  # PyMySQL escapes the range's values for either driver
            query = cur.mogrify(f"SELECT {cols} FROM {my_ident(table.source_name)} WHERE {where}", params)  # noqa: S608
        if self._raw is None:
            self._raw = self._open_raw()
        if isinstance(self._raw, _RawPyMySQL):
            yield from self._raw.chunks(query, size)
            return
        self._raw.query(query.encode())
        result = self._raw.use_result()
        while True:
            rows = result.fetch_row(maxrows=size)
            if not rows:
                return
            yield list(rows)

    def _open_raw(self) -> Any:
        db = self.db
        kwargs = connect_kwargs(db, db.password())  # the connector's arguments: dsn, socket and timeouts honoured
        if mysql_driver() == "pymysql":
            import pymysql

            return _RawPyMySQL(pymysql.connect(**kwargs, read_timeout=db.query_timeout, use_unicode=False,
                                               autocommit=True))
        from MySQLdb import _mysql

        raw = _mysql.connect(**kwargs, read_timeout=int(db.query_timeout))
        raw.query(b"SET time_zone = '+00:00'")
        return raw


class _RawPyMySQL:
    """PyMySQL reading bytes: opened with use_unicode=False, read without decoders."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")

    def chunks(self, query: str, size: int) -> Iterator[list[tuple[bytes | None, ...]]]:
        import pymysql

        self.conn.decoders = {}
        with self.conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(query)
            while rows := cur.fetchmany(size):
                yield list(rows)

    def ping(self) -> None:
        self.conn.ping(reconnect=False)

    def close(self) -> None:
        self.conn.close()
