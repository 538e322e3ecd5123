"""PostgreSQL through psycopg 3."""

from __future__ import annotations

from typing import Any

from engines.connectors.base import Connector, ServerInfo


class PostgresConnector(Connector):
    kind = "postgresql"

    def conninfo(self) -> dict[str, Any]:
        """libpq keyword arguments (the password is passed separately, never in a DSN string)."""
        db = self.db
        kw: dict[str, Any] = {"connect_timeout": max(1, int(db.connect_timeout)),
                              "application_name": "dbfleet"}
        if db.dsn:
            kw["conninfo"] = db.dsn
        for key in ("host", "port", "dbname", "user", "passfile"):
            if getattr(db, key):
                kw[key] = getattr(db, key)
        if self.password is not None:
            kw["password"] = self.password
        kw["options"] = f"-c statement_timeout={int(db.query_timeout * 1000)}"
        return kw

    def _connect(self) -> Any:
        import psycopg

        kw = self.conninfo()
        conninfo = kw.pop("conninfo", "")
        return psycopg.connect(conninfo, autocommit=True, **kw)

    def _roundtrip(self) -> None:
        self.conn.execute("SELECT 1").fetchone()

    def describe(self) -> ServerInfo:
        row = self.conn.execute(
            "SELECT current_setting('server_version'), pg_is_in_recovery(),"
            " pg_database_size(current_database()), current_database(),"
            " current_setting('server_version_num')::int"
        ).fetchone()
        version, in_recovery, size, dbname, num = row
        return ServerInfo(version=version, role="replica" if in_recovery else "primary",
                          size_bytes=int(size), extra={"database": dbname, "version_num": num})
