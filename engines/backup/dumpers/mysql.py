"""MySQL/MariaDB: mariadb-dump (or mysqldump) --single-transaction, restored through the mariadb client."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engines.backup import tools
from engines.backup.dumpers.base import Dumper, DumpInfo, RestoreOptions, Target, Write, check_dbname
from engines.connectors.mysql import MySQLConnector, client_args
from engines.errors import RestoreRefused

DUMP_HINT = "install mariadb-client (Debian) or mysql-client"
TABLES_SQL = ("SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
              " AND table_type = 'BASE TABLE' ORDER BY table_name")
# created with a database a restore creates, dropped when the restore completes: a database holding it
# is a killed restore's leftover, which the retry drops and redoes
OWNER_TABLE = "dbfleet_restore_in_progress"


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (PyMySQL quotes values only; backticks are doubled, as MySQL does)."""
    if "\x00" in name:
        raise RestoreRefused(f"refusing identifier with a NUL byte: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def _cnf(password: str | None) -> str:
    lines = ["[client]"]
    if password:
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'password="{escaped}"')
    return "\n".join(lines) + "\n"


class MySQLDumper(Dumper):
    kind = "mysql"

    def _connector(self, target: Target | None = None, dbname: str | None = None) -> MySQLConnector:
        db, password = (self.db, self.password) if target is None else (target.db, target.password)
        return MySQLConnector(db.model_copy(update={"dbname": dbname or db.dbname,
                                                    "query_timeout": 3600}), password)

    def _args(self, cnf: Path, db: Any) -> list[str]:
        """Connection arguments; ``--defaults-extra-file`` must come first."""
        return client_args(db, cnf)

    def estimate_bytes(self) -> int | None:
        with self._connector() as c:
            return c.describe().size_bytes

    def _counts(self, conn: Any, dbname: str) -> dict[str, int]:
        with conn.cursor() as cur:
            cur.execute(TABLES_SQL, (dbname,))
            tables = [row[0] for row in cur.fetchall()]
            counts = {}
            for table in tables:
                cur.execute(f"SELECT COUNT(*) FROM {quote_ident(dbname)}.{quote_ident(table)}")  # noqa: S608 quoted
                counts[table] = int(cur.fetchone()[0])
        return counts

    def backup(self, write: Write) -> DumpInfo:
        if not self.db.dbname:
            raise RestoreRefused(f"database {self.db.id!r}: set dbname (the schema to back up)")
        tool = tools.first_tool("mariadb-dump", "mysqldump", hint=DUMP_HINT)
        version = tools.tool_version(tool)
        check_dbname(self.db.dbname, "dbname")
        with self._connector() as c, tools.private_dir(self.workdir) as tmp:
            server = c.describe().version
            with c.conn.cursor() as cur:  # counted in a consistent snapshot started next to the dump's own
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            counts = self._counts(c.conn, self.db.dbname)
            c.conn.rollback()
            cnf = tools.secret_file(tmp, "my.cnf", _cnf(self.password))
            args = [str(tool), *self._args(cnf, self.db), "--single-transaction", "--routines", "--triggers",
                    "--events", "--hex-blob", "--quick", "--default-character-set=utf8mb4", "--no-tablespaces",
                    "--", self.db.dbname, *self.db.options.get("backup_tables", ())]  # a per-run subset
            with tools.ToolStream(args, what=tool.name) as dump:
                write("dump", "sql", dump.stdout)
                dump.finish()
        return DumpInfo(tool=tool.name, tool_version=version, server_version=server, row_counts=counts,
                        row_counts_exact=False, extra={"dbname": self.db.dbname})

    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        dbname = self.target_dbname(target, options)
        created = self._prepare(target, dbname, options)
        client = tools.first_tool("mariadb", "mysql", hint=DUMP_HINT)
        try:
            with tools.private_dir(self.workdir) as tmp:
                cnf = tools.secret_file(tmp, "my.cnf", _cnf(target.password))
                tools.run_tool([str(client), *self._args(cnf, target.db), "--default-character-set=utf8mb4",
                                f"--database={dbname}"], stdin_path=files["dump"], what=client.name)
            if created:
                with self._connector(target, dbname="") as c, c.conn.cursor() as cur:
                    cur.execute(f"DROP TABLE {quote_ident(dbname)}.{quote_ident(OWNER_TABLE)}")
        except BaseException:
            if created:
                self._drop(target, dbname)
            raise
        return {"target": target.db.id, "dbname": dbname, "created": created}

    def _prepare(self, target: Target, dbname: str, options: RestoreOptions) -> bool:
        """Create the target (marked as owned by this restore) or check that it is empty; True when created."""
        with self._connector(target, dbname="") as c, c.conn.cursor() as cur:
            cur.execute(TABLES_SQL, (dbname,))
            tables = [row[0] for row in cur.fetchall()]
            if OWNER_TABLE in tables:  # a killed restore's half-loaded database: ours to drop and redo
                cur.execute(f"DROP DATABASE {quote_ident(dbname)}")
            cur.execute("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (dbname,))
            if not cur.fetchone()[0]:
                cur.execute(f"CREATE DATABASE {quote_ident(dbname)} CHARACTER SET utf8mb4")
                cur.execute(f"CREATE TABLE {quote_ident(dbname)}.{quote_ident(OWNER_TABLE)} (started TIMESTAMP)")
                return True
        if tables and not options.clean:
            raise RestoreRefused(f"database {dbname!r} on {target.db.id!r} is not empty ({len(tables)} tables); "
                                 "restore into another target_dbname or pass clean=true")
        return False

    def _drop(self, target: Target, dbname: str) -> None:
        with self._connector(target, dbname="") as c, c.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(dbname)}")

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        dbname = options.target_dbname or target.db.dbname or ""
        with self._connector(target, dbname=dbname) as c:
            return self._counts(c.conn, dbname)

    @contextmanager
    def scratch(self, manifest: dict[str, Any]) -> Iterator[tuple[Target, RestoreOptions]]:
        target = Target(self.db, self.password)
        dbname = f"dbfleet_drill_{secrets.token_hex(4)}"
        try:
            yield target, RestoreOptions(target_dbname=dbname)
        finally:
            self._drop(target, dbname)
