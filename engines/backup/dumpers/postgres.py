"""PostgreSQL: pg_dump (custom format, uncompressed: the pipeline compresses) in an exported snapshot."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg import sql

from engines.backup import tools
from engines.backup.dumpers.base import Dumper, DumpInfo, Fetch, RestoreOptions, Target, Write
from engines.connectors.postgres import PostgresConnector
from engines.errors import RestoreRefused, ToolFailed

TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2"""


def _passfile_line(password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def count_tables(conn: Any) -> dict[str, int]:
    """Exact row count of every user table, in the connection's current snapshot."""
    counts = {}
    for schema, name in conn.execute(TABLES_SQL).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts[f"{schema}.{name}"] = int(conn.execute(query).fetchone()[0])
    return counts


class PostgresDumper(Dumper):
    kind = "postgresql"

    def _connector(self, db: Any = None, password: str | None = None, dbname: str | None = None) -> PostgresConnector:
        if db is None:
            db, password = self.db, self.password
        if dbname:
            db = db.model_copy(update={"dbname": dbname})
        return PostgresConnector(db, password)

    def _conn_args(self, db: Any, dbname: str | None = None) -> list[str]:
        """libpq connection arguments without the password (it goes in a passfile)."""
        if db.dsn:
            from psycopg.conninfo import make_conninfo

            return ["-d", make_conninfo(db.dsn, **({"dbname": dbname} if dbname else {}))]
        args = ["-h", db.host, "-p", str(db.port or 5432)]
        if db.user:
            args += ["-U", db.user]
        return args + ["-d", dbname or db.dbname or "postgres"]

    def _env(self, directory: Path, password: str | None, db: Any) -> dict[str, str]:
        env = {"PGAPPNAME": "dbfleet", "PGCONNECT_TIMEOUT": str(max(2, int(db.connect_timeout)))}
        if password:
            env["PGPASSFILE"] = str(tools.secret_file(directory, "pgpass", _passfile_line(password)))
        elif db.passfile:
            env["PGPASSFILE"] = db.passfile
        return env

    def estimate_bytes(self) -> int | None:
        with self._connector() as c:
            return int(c.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def backup(self, write: Write) -> DumpInfo:
        with self._connector() as c, tools.private_dir() as tmp:
            info = c.describe()
            major = int(info.extra["version_num"]) // 10000
            pg_dump, version = tools.pg_tool("pg_dump", major)
            conn = c.conn  # autocommit: the explicit BEGIN below is the only transaction
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute("SET LOCAL statement_timeout = 0")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            counts: dict[str, int] = {}
            errors: list[BaseException] = []
            counter = threading.Thread(target=self._count_into, args=(conn, counts, errors), daemon=True)
            counter.start()
            env = self._env(tmp, self.password, self.db)
            args = [str(pg_dump), "--format=custom", "--compress=0", f"--snapshot={snapshot}",
                    "--no-password", *self._conn_args(self.db)]
            args += [f"--table={t}" for t in self.db.options.get("backup_tables", ())]  # a per-run subset
            with tools.ToolStream(args, env=env, what="pg_dump") as dump:
                write("dump", "pg_dump-custom", dump.stdout)
                dump.finish()
            counter.join()
            conn.execute("ROLLBACK")
            if errors:
                raise errors[0]
            warnings = self._globals(write, tmp, env, major)
        return DumpInfo(tool="pg_dump", tool_version=version, server_version=info.version,
                        row_counts=counts, row_counts_exact=True, warnings=warnings,
                        extra={"server_major": major, "dbname": info.extra.get("database")})

    @staticmethod
    def _count_into(conn: Any, counts: dict[str, int], errors: list[BaseException]) -> None:
        try:
            counts.update(count_tables(conn))
        except BaseException as exc:  # reported by the caller after pg_dump finishes
            errors.append(exc)

    def _globals(self, write: Write, tmp: Path, env: dict[str, str], major: int) -> list[str]:
        """Roles via pg_dumpall --globals-only --no-role-passwords, when the user may read them."""
        try:
            pg_dumpall, _ = tools.pg_tool("pg_dumpall", major)
            args = [str(pg_dumpall), "--globals-only", "--no-role-passwords", "--no-password"]
            conn = self._conn_args(self.db)
            args += ["-l" if a == "-d" and not self.db.dsn else a for a in conn]
            with tools.ToolStream(args, env=env, what="pg_dumpall --globals-only") as dump:
                write("globals", "sql", dump.stdout)
                dump.finish()
        except ToolFailed as exc:
            return [f"globals (roles) not saved: {exc}"]
        return []

    # -- restore ------------------------------------------------------------------------------
    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        dbname = self.target_dbname(target, options)
        created = self._prepare_target(target, dbname, options)
        try:
            major, pg_restore, version = self._restore_tool(target, dbname, manifest)
            with tools.private_dir() as tmp:
                env = self._env(tmp, target.password, target.db)
                args = self._restore_args(pg_restore, target, dbname, options) + [f"--jobs={max(1, options.jobs)}"]
                tools.run_tool(args + [str(files["dump"])], env=env, what="pg_restore")
                if options.globals and "globals" in files:
                    self._replay_globals(files["globals"], target, env, major)
        except BaseException:
            if created:
                self._drop(target, dbname)
            raise
        return {"target": target.db.id, "dbname": dbname, "created": created, "tool": version, "mode": "spooled"}

    def stream_restore(self, fetch: Fetch, manifest: dict[str, Any], workdir: Path, target: Target,
                       options: RestoreOptions) -> dict[str, Any] | None:
        """Into a new database: schema and data load while chunks arrive (pg_restore from stdin), then
        indexes and constraints with ``pg_restore --jobs`` from the spooled copy. Any failure, a
        corrupted chunk included, drops the database this call created."""
        dbname = self.target_dbname(target, options)
        if options.tables or options.clean or self._exists(target, dbname):
            return None  # existing targets get the spool-first path: verified before any write
        created = self._prepare_target(target, dbname, options)
        try:
            major, pg_restore, version = self._restore_tool(target, dbname, manifest)
            with tools.private_dir() as tmp:
                env = self._env(tmp, target.password, target.db)
                base = self._restore_args(pg_restore, target, dbname, options)
                copy = workdir / "dump"
                t0 = time.monotonic()
                with tools.ToolStream(base + ["--section=pre-data", "--section=data"], env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, what="pg_restore (schema, data)") as load, \
                        open(copy, "wb") as fh:
                    try:
                        fetch("dump", tools.Tee(fh, load.proc.stdin))  # type: ignore[arg-type]
                    except BrokenPipeError:
                        load.finish()  # raises with pg_restore's own error
                        raise
                    load.finish()
                t1 = time.monotonic()
                tools.run_tool(base + [f"--jobs={max(1, options.jobs)}", "--section=post-data", str(copy)], env=env,
                               what="pg_restore (indexes, constraints)")
                timings = {"load_seconds": round(t1 - t0, 3), "index_seconds": round(time.monotonic() - t1, 3)}
                if options.globals and any(s["name"] == "globals" for s in manifest["streams"]):
                    with open(workdir / "globals", "wb") as gh:
                        fetch("globals", gh)
                    self._replay_globals(workdir / "globals", target, env, major)
        except BaseException:
            self._drop(target, dbname)
            raise
        return {"target": target.db.id, "dbname": dbname, "created": created, "tool": version, "mode": "streamed",
                **timings}

    def _exists(self, target: Target, dbname: str) -> bool:
        with self._connector(target.db, target.password, "postgres") as admin:
            return bool(admin.conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone())

    def _restore_tool(self, target: Target, dbname: str, manifest: dict[str, Any]) -> tuple[int, Path, str]:
        """pg_restore for the newer of the target server and the dump's source server."""
        with self._connector(target.db, target.password, dbname) as c:
            major = max(int(c.describe().extra["version_num"]) // 10000,
                        int(manifest["dump"]["extra"].get("server_major", 0)))
        path, version = tools.pg_tool("pg_restore", major)
        return major, path, version

    def _restore_args(self, pg_restore: Path, target: Target, dbname: str, options: RestoreOptions) -> list[str]:
        args = [str(pg_restore), "--exit-on-error", "--no-password", *self._conn_args(target.db, dbname)]
        if options.clean:
            args += ["--clean", "--if-exists"]
        if options.no_owner:
            args += ["--no-owner", "--no-privileges"]
        for table in options.tables:
            schema, _, name = table.rpartition(".")
            args += (["--schema", schema] if schema else []) + ["--table", name]
        return args

    def _prepare_target(self, target: Target, dbname: str, options: RestoreOptions) -> bool:
        """Create the target database, or check that it is empty; True when created here."""
        with self._connector(target.db, target.password, "postgres") as admin:
            exists = admin.conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                admin.conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                return True
        if not options.clean and not options.tables:
            with self._connector(target.db, target.password, dbname) as c:
                tables = c.conn.execute(TABLES_SQL).fetchall()
            if tables:
                raise RestoreRefused(f"database {dbname!r} on {target.db.id!r} is not empty ({len(tables)} "
                                     "tables); restore into another target_dbname or pass clean=true")
        return False

    def _replay_globals(self, path: Path, target: Target, env: dict[str, str], major: int) -> None:
        psql, _ = tools.pg_tool("psql", major)
        tools.run_tool([str(psql), "-X", "-q", "--no-password", *self._conn_args(target.db, "postgres"),
                        "-f", str(path)], env=env, what="psql (globals)")

    def _drop(self, target: Target, dbname: str) -> None:
        with self._connector(target.db, target.password, "postgres") as admin:
            admin.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    def count_rows(self, target: Target, options: RestoreOptions) -> dict[str, int]:
        with self._connector(target.db, target.password, options.target_dbname) as c:
            c.conn.execute("SET statement_timeout = 0")
            return count_tables(c.conn)

    @contextmanager
    def scratch(self, manifest: dict[str, Any]) -> Iterator[tuple[Target, RestoreOptions]]:
        dbname = f"dbfleet_drill_{secrets.token_hex(4)}"
        target = Target(self.db, self.password)
        try:
            yield target, RestoreOptions(target_dbname=dbname, jobs=2)
        finally:
            self._drop(target, dbname)
