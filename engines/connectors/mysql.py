"""MySQL and MariaDB through PyMySQL."""

from __future__ import annotations

from typing import Any

from engines.connectors.base import Connector, ServerInfo


class MySQLConnector(Connector):
    kind = "mysql"

    def _connect(self) -> Any:
        import pymysql

        db = self.db
        return pymysql.connect(
            host=db.host, port=db.port or 3306, user=db.user or "root",
            password=self.password or "", database=db.dbname,
            connect_timeout=db.connect_timeout, read_timeout=db.query_timeout,
            write_timeout=db.query_timeout, autocommit=True, charset="utf8mb4",
        )

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def _roundtrip(self) -> None:
        self._query("SELECT 1")

    def describe(self) -> ServerInfo:
        version, read_only, dbname = self._query("SELECT VERSION(), @@read_only, DATABASE()")[0]
        replica = self._replica_status()
        role = "replica" if replica else ("primary" if not read_only else "read-only")
        size = None
        if dbname:
            size = self._query(
                "SELECT COALESCE(SUM(data_length + index_length), 0)"
                " FROM information_schema.tables WHERE table_schema = %s", (dbname,))[0][0]
        flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
        return ServerInfo(version=version, role=role, size_bytes=int(size) if size is not None else None,
                          extra={"database": dbname, "flavor": flavor})

    def _replica_status(self) -> bool:
        import pymysql

        for stmt in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            try:
                return bool(self._query(stmt))
            except pymysql.err.ProgrammingError:
                continue
            except pymysql.err.OperationalError:  # no REPLICATION CLIENT privilege
                return False
        return False
