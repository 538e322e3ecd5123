"""ClickHouse: the schema from system tables, then ``SELECT * FROM t FORMAT Native`` streamed per table.

Restores create a new database, replay each table's columns and engine there and stream every table
back with ``INSERT INTO t FORMAT Native`` (ClickHouse's own columnar format: types, NULLs, arrays and
decimals arrive exactly as they left). Views are not dumped (they would still read from the source
database); the dump says so in its warnings.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engines.backup.dumpers.base import Dumper, DumpInfo, RestoreOptions, Target, Write
from engines.connectors.clickhouse import ClickHouseConnector, ClickHouseHTTP, quote_ident, quote_str
from engines.errors import RestoreRefused

SKIP_ENGINES = ("View", "MaterializedView")  # no rows of their own; recreated by hand if needed
DUMP_TIMEOUT = 6 * 3600.0


def _column_sql(col: dict[str, Any]) -> str:
    text = f"{quote_ident(col['name'])} {col['type']}"
    if col.get("default_type"):  # DEFAULT, MATERIALIZED or ALIAS
        text += f" {col['default_type']} {col['default_expression']}"
    return text


def create_sql(database: str, table: dict[str, Any]) -> str:
    """CREATE TABLE in ``database`` from a dumped table's columns and full engine clause."""
    columns = ", ".join(_column_sql(c) for c in table["columns"])
    return f"CREATE TABLE {quote_ident(database)}.{quote_ident(table['name'])} ({columns}) ENGINE = {table['engine_full']}"


class ClickHouseDumper(Dumper):
    kind = "clickhouse"

    def _connector(self, target: Target | None = None) -> ClickHouseConnector:
        db, password = (self.db, self.password) if target is None else (target.db, target.password)
        return ClickHouseConnector(db.model_copy(update={"query_timeout": DUMP_TIMEOUT}), password)

    def _dbname(self) -> str:
        if not self.db.dbname:
            raise RestoreRefused(f"database {self.db.id!r}: set dbname (the ClickHouse database to back up)")
        return self.db.dbname

    def estimate_bytes(self) -> int | None:
        with self._connector() as c:
            return c.describe().size_bytes

    @staticmethod
    def _tables(conn: ClickHouseHTTP, dbname: str) -> list[dict[str, Any]]:
        tables = conn.rows("SELECT name, engine, engine_full FROM system.tables WHERE database = "  # noqa: S608 - quoted literal
                           f"{quote_str(dbname)} AND NOT is_temporary ORDER BY name", database=None)
        for t in tables:  # DESCRIBE keeps the column order (18.16's system.columns has no position)
            t["columns"] = [{k: c.get(k, "") for k in ("name", "type", "default_type", "default_expression")}
                            for c in conn.rows(f"DESCRIBE TABLE {quote_ident(dbname)}.{quote_ident(t['name'])}",
                                               database=None)]
        return tables

    @staticmethod
    def _count(conn: ClickHouseHTTP, dbname: str, table: str) -> int:
        return int(conn.execute(f"SELECT count() FROM {quote_ident(dbname)}.{quote_ident(table)}",  # noqa: S608 - quoted
                                database=None).strip())

    def backup(self, write: Write) -> DumpInfo:
        dbname = self._dbname()
        with self._connector() as c:
            conn: ClickHouseHTTP = c.conn
            version = conn.execute("SELECT version()").strip()
            tables = self._tables(conn, dbname)
            data = [t for t in tables if t["engine"] not in SKIP_ENGINES]
            warnings = [f"{t['engine']} {t['name']!r} not dumped (recreate it after a restore)"
                        for t in tables if t["engine"] in SKIP_ENGINES]
            for i, t in enumerate(data):
                t["stream"] = f"t{i:05d}"
            write("schema", "json", io.BytesIO(json.dumps({"database": dbname, "tables": data}).encode()))
            counts = {}
            for t in data:
                counts[t["name"]] = self._count(conn, dbname, t["name"])
                sql_text = f"SELECT * FROM {quote_ident(dbname)}.{quote_ident(t['name'])} FORMAT Native"  # noqa: S608 - quoted
                with conn.stream(sql_text, database=None, timeout=DUMP_TIMEOUT) as body:
                    write(t["stream"], "clickhouse-native", body)
        return DumpInfo(tool="clickhouse-http", tool_version=version, server_version=version, row_counts=counts,
                        row_counts_exact=False, warnings=warnings, extra={"dbname": dbname, "tables": len(data)})

    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        dbname = self.target_dbname(target, options)
        schema = json.loads(files["schema"].read_text())
        with self._connector(target) as c:
            conn: ClickHouseHTTP = c.conn
            created = self._prepare(conn, target, dbname, options)
            try:
                for t in schema["tables"]:
                    if options.clean:
                        conn.execute(f"DROP TABLE IF EXISTS {quote_ident(dbname)}.{quote_ident(t['name'])}",
                                     database=None)
                    conn.execute(create_sql(dbname, t), database=None)
                    with files[t["stream"]].open("rb") as fh:
                        conn.execute(f"INSERT INTO {quote_ident(dbname)}.{quote_ident(t['name'])} FORMAT Native",
                                     fh, database=None, timeout=DUMP_TIMEOUT)
            except BaseException:
                if created:
                    conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(dbname)}", database=None)
                raise
        return {"target": target.db.id, "dbname": dbname, "created": created, "tables": len(schema["tables"])}

    @staticmethod
    def _prepare(conn: ClickHouseHTTP, target: Target, dbname: str, options: RestoreOptions) -> bool:
        exists = conn.execute(f"SELECT count() FROM system.databases WHERE name = {quote_str(dbname)}",  # noqa: S608 - quoted
                              database=None).strip() != "0"
        if not exists:
            conn.execute(f"CREATE DATABASE {quote_ident(dbname)}", database=None)
            return True
        tables = int(conn.execute(f"SELECT count() FROM system.tables WHERE database = {quote_str(dbname)}",  # noqa: S608 - quoted
                                  database=None).strip())
        if tables and not options.clean:
            raise RestoreRefused(f"database {dbname!r} on {target.db.id!r} is not empty ({tables} tables); "
                                 "restore into another target_dbname or pass clean=true")
        return False

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        dbname = options.target_dbname or target.db.dbname or "default"
        with self._connector(target) as c:
            conn: ClickHouseHTTP = c.conn
            names = [t["name"] for t in self._tables(conn, dbname) if t["engine"] not in SKIP_ENGINES]
            return {name: self._count(conn, dbname, name) for name in names}

    @contextmanager
    def scratch(self, manifest: dict[str, Any]) -> Iterator[tuple[Target, RestoreOptions]]:
        target = Target(self.db, self.password)
        dbname = f"dbfleet_drill_{secrets.token_hex(4)}"
        try:
            yield target, RestoreOptions(target_dbname=dbname)
        finally:
            with self._connector(target) as c:
                c.conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(dbname)}", database=None)
