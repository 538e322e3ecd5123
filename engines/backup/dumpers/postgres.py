"""PostgreSQL: pg_dump (custom format, uncompressed: the pipeline compresses) in an exported snapshot."""

from __future__ import annotations

import hashlib
import logging
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engines.backup import tools
from engines.backup.dumpers.base import Dumper, DumpInfo, Fetch, RestoreOptions, Target, Write, check_dbname
from engines.backup.dumpers.pg_parallel import StreamedRestore, plan_supported, read_toc
from engines.backup.dumpers.pg_toc import Unsupported
from engines.connectors.postgres import PostgresConnector
from engines.errors import ConfigError, RestoreRefused, ToolFailed

TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2"""


# libpq keyword -> the environment variable client tools read it from
log = logging.getLogger("dbfleet.backup")

LIBPQ_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
             "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
             "sslcrl": "PGSSLCRL", "options": "PGOPTIONS", "application_name": "PGAPPNAME",
             "connect_timeout": "PGCONNECT_TIMEOUT", "target_session_attrs": "PGTARGETSESSIONATTRS",
             "service": "PGSERVICE", "gssencmode": "PGGSSENCMODE", "channel_binding": "PGCHANNELBINDING",
             "require_auth": "PGREQUIREAUTH", "krbsrvname": "PGKRBSRVNAME", "sslnegotiation": "PGSSLNEGOTIATION"}


def conn_params(db: Any, dbname: str | None = None) -> dict[str, str]:
    """The libpq keywords of ``db`` (its DSN parsed by libpq itself, then host/port/... fields), no password."""
    params: dict[str, str] = {}
    if db.dsn:
        params.update({k: str(v) for k, v in conninfo_to_dict(db.dsn).items() if v is not None})
    for key in ("host", "port", "dbname", "user"):
        if getattr(db, key):
            params[key] = str(getattr(db, key))
    if dbname:
        params["dbname"] = check_dbname(dbname)
    params.setdefault("dbname", "postgres")
    params.pop("password", None)
    unknown = sorted(set(params) - set(LIBPQ_ENV))
    if unknown:
        raise ConfigError([(f"databases.{db.id}.dsn", f"unsupported libpq keyword(s) {', '.join(unknown)} "
                            "for client tools")])
    return params


def passfile_text(params: dict[str, str], password: str, dbnames: list[str]) -> str:
    """libpq passfile lines for exactly these hosts, ports, databases and user (never ``*:*:*:*``)."""
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    hosts = [h if h and not h.startswith("/") else "localhost" for h in params.get("host", "").split(",")]
    ports = params.get("port", "5432").split(",")
    user = esc(params["user"]) if params.get("user") else "*"
    lines = []
    for i, host in enumerate(hosts):
        port = ports[i] if i < len(ports) else ports[-1]
        lines += [f"{esc(host)}:{esc(port or '5432')}:{esc(name)}:{user}:{esc(password)}" for name in dbnames]
    return "\n".join(dict.fromkeys(lines)) + "\n"


def dbname_arg(dbname: str) -> str:
    """``-d`` value for tools that expand it as a connection string: only the dbname keyword, quoted."""
    return make_conninfo(dbname=check_dbname(dbname, "dbname"))


def staging_name(dbname: str) -> str:
    """The clearly named database a restore into new database ``dbname`` writes to before the rename."""
    digest = hashlib.sha256(dbname.encode()).hexdigest()[:8]
    return f"dbfleet_restoring_{digest}_{dbname}".encode()[:63].decode(errors="ignore")


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

    def _env(self, directory: Path, password: str | None, db: Any, dbname: str | None = None) -> dict[str, str]:
        """Connection parameters as PG* variables and a private passfile: nothing on the command line."""
        params = conn_params(db, dbname)
        env = {"PGAPPNAME": "dbfleet", "PGCONNECT_TIMEOUT": str(max(2, int(db.connect_timeout)))}
        env |= {LIBPQ_ENV[k]: v for k, v in params.items()}
        if password:
            names = list(dict.fromkeys([params["dbname"], "postgres", "template1"]))
            path = tools.secret_file(directory, f"pgpass-{secrets.token_hex(4)}", passfile_text(params, password, names))
            env["PGPASSFILE"] = str(path)
        elif db.passfile:
            env["PGPASSFILE"] = db.passfile
        return env

    def estimate_bytes(self) -> int | None:
        with self._connector() as c:
            return int(c.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def backup(self, write: Write) -> DumpInfo:
        with self._connector() as c, tools.private_dir(self.workdir) as tmp:
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
            args = [str(pg_dump), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password"]
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
            args = [str(pg_dumpall), "--globals-only", "--no-role-passwords", "--no-password",
                    "-l", dbname_arg(env.get("PGDATABASE", "postgres"))]
            with tools.ToolStream(args, env=env, what="pg_dumpall --globals-only") as dump:
                write("globals", "sql", dump.stdout)
                dump.finish()
        except (ToolFailed, RestoreRefused) as exc:
            return [f"globals (roles) not saved: {exc}"]
        return []

    # -- restore ------------------------------------------------------------------------------
    def restore(self, files: dict[str, Path], manifest: dict[str, Any], target: Target,
                options: RestoreOptions) -> dict[str, Any]:
        dbname = self.target_dbname(target, options)
        into = self._prepare_target(target, dbname, options)
        try:
            major, pg_restore, version = self._restore_tool(target, into, manifest)
            with tools.private_dir(self.workdir) as tmp:
                env = self._env(tmp, target.password, target.db, into)
                args = self._restore_args(pg_restore, target, into, options) + [f"--jobs={max(1, options.jobs)}"]
                tools.run_tool(args + [str(files["dump"])], env=env, what="pg_restore")
                if options.globals and "globals" in files:
                    self._replay_globals(files["globals"], target, env, major)
            self._finish(target, into, dbname)
        except BaseException:
            if into != dbname:
                self._drop(target, into)
            raise
        return {"target": target.db.id, "dbname": dbname, "created": into != dbname, "tool": version,
                "mode": "spooled"}

    def stream_restore(self, fetch: Fetch, manifest: dict[str, Any], workdir: Path, target: Target,
                       options: RestoreOptions) -> dict[str, Any] | None:
        """Into a new database (the whole dump or a ``tables`` subset): the archive streams from the
        repository without a spool, scheduled per TOC entry (:mod:`pg_parallel`): schema first, then
        each table's rows, each index and constraint as soon as its tables are in, on ``jobs`` sessions.
        Everything goes into a staging database renamed to the target at the end; any failure, a
        corrupted chunk included, drops it; a killed restore leaves only it, dropped by the retry."""
        dbname = self.target_dbname(target, options)
        if options.clean or self._exists(target, dbname):
            return None  # existing targets get the spool-first path: verified before any write
        try:
            toc, toc_bytes = read_toc(fetch)  # the first chunks only, each verified
            plan_supported(toc)
        except Unsupported as exc:
            log.info("restore of %s: %s, loading in one pg_restore stream", dbname, exc)
            if options.tables:
                return None
            return self._stream_sequential(fetch, manifest, workdir, target, options)
        into = self._prepare_target(target, dbname, options)
        try:
            major, pg_restore, version = self._restore_tool(target, into, manifest)
            with tools.private_dir(workdir) as tmp:
                env = self._env(tmp, target.password, target.db, into)
                base = self._restore_args(pg_restore, target, into, RestoreOptions(no_owner=options.no_owner))
                select = [str(pg_restore), *self._select_args(options)]
                run = StreamedRestore(pg_restore=pg_restore, base_args=base, select_args=select, env=env,
                                      connect=lambda: self._connector(target.db, target.password, into),
                                      workdir=tmp, jobs=options.jobs, rows=manifest["dump"].get("row_counts"))
                detail = run.run(fetch, toc, toc_bytes)
                self._restore_globals(fetch, manifest, workdir, target, env, major, options)
            self._finish(target, into, dbname)
        except BaseException:
            self._drop(target, into)
            raise
        return {"target": target.db.id, "dbname": dbname, "created": True, "tool": version, "mode": "streamed",
                "scheduling": "toc", **detail}

    def _stream_sequential(self, fetch: Fetch, manifest: dict[str, Any], workdir: Path, target: Target,
                           options: RestoreOptions) -> dict[str, Any] | None:
        """Archives the TOC scheduler leaves alone (large objects, archive versions before 1.14): schema
        and data load from one pg_restore reading the stream, then indexes and constraints with
        ``pg_restore --jobs`` from the copy spooled meanwhile."""
        dbname = self.target_dbname(target, options)
        into = self._prepare_target(target, dbname, options)
        try:
            major, pg_restore, version = self._restore_tool(target, into, manifest)
            with tools.private_dir(workdir) as tmp:
                env = self._env(tmp, target.password, target.db, into)
                base = self._restore_args(pg_restore, target, into, options)
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
                self._restore_globals(fetch, manifest, workdir, target, env, major, options)
            self._finish(target, into, dbname)
        except BaseException:
            self._drop(target, into)
            raise
        return {"target": target.db.id, "dbname": dbname, "created": True, "tool": version, "mode": "streamed",
                **timings}

    def _restore_globals(self, fetch: Fetch, manifest: dict[str, Any], workdir: Path, target: Target,
                         env: dict[str, str], major: int, options: RestoreOptions) -> None:
        """Replay the backup's roles and tablespaces (``globals``) when asked and present."""
        if options.globals and any(s["name"] == "globals" for s in manifest["streams"]):
            with open(workdir / "globals", "wb") as gh:
                fetch("globals", gh)
            self._replay_globals(workdir / "globals", target, env, major)

    def _finish(self, target: Target, into: str, dbname: str) -> None:
        """Rename a complete staging database to the target name (fails if the name was taken meanwhile)."""
        if into == dbname:
            return
        with self._connector(target.db, target.password, "postgres") as admin:
            admin.conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(into),
                                                                              sql.Identifier(dbname)))

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
        args = [str(pg_restore), "--exit-on-error", "--no-password", "-d", dbname_arg(dbname)]
        if options.clean:
            args += ["--clean", "--if-exists"]
        return args + self._select_args(options)

    @staticmethod
    def _select_args(options: RestoreOptions) -> list[str]:
        """pg_restore options choosing which entries are restored."""
        args = []
        if options.no_owner:
            args += ["--no-owner", "--no-privileges"]
        for table in options.tables:
            schema, _, name = table.rpartition(".")
            args += (["--schema", schema] if schema else []) + ["--table", name]
        return args

    def _prepare_target(self, target: Target, dbname: str, options: RestoreOptions) -> str:
        """The database to write into: a fresh staging database when ``dbname`` does not exist (renamed
        by :meth:`_finish`), else ``dbname`` itself once it is checked to be empty."""
        with self._connector(target.db, target.password, "postgres") as admin:
            exists = admin.conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                staging = staging_name(dbname)
                # a staging database of this name is a killed restore's leftover: ours to drop and redo
                admin.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
                admin.conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging)))
                return staging
        if not options.clean and not options.tables:
            with self._connector(target.db, target.password, dbname) as c:
                tables = c.conn.execute(TABLES_SQL).fetchall()
            if tables:
                raise RestoreRefused(f"database {dbname!r} on {target.db.id!r} is not empty ({len(tables)} "
                                     "tables); restore into another target_dbname or pass clean=true")
        return dbname

    def _replay_globals(self, path: Path, target: Target, env: dict[str, str], major: int) -> None:
        psql, _ = tools.pg_tool("psql", major)
        tools.run_tool([str(psql), "-X", "-q", "--no-password", "-d", dbname_arg("postgres"), "-f", str(path)],
                       env=env, what="psql (globals)")

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
