"""MySQL and MariaDB through PyMySQL; the one place that turns a registry entry into connection arguments."""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.config import DatabaseConfig
from engines.connectors.base import Connector, ServerInfo
from engines.errors import ConfigError


@dataclass(frozen=True)
class MySQLParams:
    """Where and as whom to connect: ``dsn`` (``mysql://user@host:port/dbname?unix_socket=...``) gives the
    defaults, the entry's own host/port/user/dbname fields win over it."""

    host: str
    port: int
    user: str
    database: str | None
    unix_socket: str | None = None


def mysql_params(db: DatabaseConfig) -> MySQLParams:
    """The connection parameters of a MySQL/MariaDB entry, ``dsn`` included."""
    host: str | None = None
    port: int | None = None
    user: str | None = None
    database: str | None = None
    socket: str | None = None
    if db.dsn:
        parts = urllib.parse.urlsplit(db.dsn)
        if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
            raise ConfigError([(f"databases.{db.id}.dsn", "a MySQL dsn looks like mysql://user@host:3306/dbname")])
        host, user = parts.hostname, urllib.parse.unquote(parts.username or "") or None
        try:
            port = parts.port
        except ValueError:
            raise ConfigError([(f"databases.{db.id}.dsn", "the port is not a number")]) from None
        database = urllib.parse.unquote(parts.path.lstrip("/")) or None
        sockets = urllib.parse.parse_qs(parts.query).get("unix_socket")
        socket = sockets[0] if sockets else None
    return MySQLParams(host=db.host or host or "127.0.0.1", port=db.port or port or 3306, user=db.user or user or "root",
                       database=db.dbname if db.dbname is not None else database, unix_socket=socket)


def connect_kwargs(db: DatabaseConfig, password: str | None) -> dict[str, Any]:
    """Keyword arguments both PyMySQL's and mysqlclient's ``connect`` take (timeouts: whole seconds)."""
    p = mysql_params(db)
    kwargs: dict[str, Any] = {"host": p.host, "port": p.port, "user": p.user, "password": password or "",
                              "database": p.database or None, "connect_timeout": max(1, math.ceil(db.connect_timeout)),
                              "charset": "utf8mb4"}
    if p.unix_socket:
        kwargs["unix_socket"] = p.unix_socket
    return kwargs


def client_args(db: DatabaseConfig, defaults_file: Path) -> list[str]:
    """Arguments of the mariadb / mariadb-dump clients (the password travels in ``defaults_file``, first)."""
    p = mysql_params(db)
    args = [f"--defaults-extra-file={defaults_file}", "-h", p.host, "-P", str(p.port), "-u", p.user]
    return args + ([f"--socket={p.unix_socket}"] if p.unix_socket else [])


class MySQLConnector(Connector):
    kind = "mysql"

    def _connect(self) -> Any:
        import pymysql

        db = self.db
        return pymysql.connect(**connect_kwargs(db, self.password), read_timeout=db.query_timeout,
                               write_timeout=db.query_timeout, autocommit=True)

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
