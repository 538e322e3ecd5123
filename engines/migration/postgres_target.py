"""PostgreSQL as a migration target: schema, idempotent batch writes with an atomic checkpoint, rejects,
validation, finalize and rollback.

Every batch runs in one target transaction: claim the checkpoint row (a redelivered or concurrent copy
of the same batch finds it and skips), delete the batch's key range, COPY the rows, record count and
checksum. A worker killed mid-batch rolls the whole transaction back: nothing half-written survives.

Tables the migration creates get their primary key after the load (``add_key``, at finalize), as pg_dump
and pgloader do: a btree built once from sorted rows costs less than one maintained row by row. Their
batches skip the range delete: a batch without a checkpoint left nothing in a table only this migration
writes (its rows and its checkpoint commit together).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from engines.connectors import open_connector
from engines.errors import ConfigError
from engines.migration import ddl, postgres_database, postgres_retry, rejects
from engines.migration.base import Checkpoints, Source, Target
from engines.migration.checksum import python_checksum
from engines.migration.model import Batch, MigrationFailed, MigrationPlan, MigrationType, Table
from engines.migration.postgres_schema import PostgresSchema, index_name, not_built, target_ident
from engines.migration.postgres_validate import PostgresValidation, text_spec
from engines.migration.sources import SESSION, pg_range
from engines.migration.types import CASTS, converter

if TYPE_CHECKING:
    from engines.config import DatabaseConfig

__all__ = ["PostgresTarget", "index_name", "key_text", "target_ident"]

CONTROL = "_dbfleet_migration"
REJECTS_SHOWN = 100  # per batch, in its result and the migration store (the target's reject table has them all)
DDL = [
    "CREATE SCHEMA IF NOT EXISTS _dbfleet_migration",
    "CREATE TABLE IF NOT EXISTS _dbfleet_migration.checkpoints (migration_id text, batch_id int, table_name text,"
    " rows bigint, checksum numeric, rejects int DEFAULT 0, finished_at timestamptz DEFAULT now(),"
    " PRIMARY KEY (migration_id, batch_id))",
    "ALTER TABLE _dbfleet_migration.checkpoints ADD COLUMN IF NOT EXISTS target_checksum numeric",
    # False: the batch's COPY lines held no escaped byte (validation rebuilds them without escaping)
    "ALTER TABLE _dbfleet_migration.checkpoints ADD COLUMN IF NOT EXISTS escaped boolean NOT NULL DEFAULT true",
    "CREATE TABLE IF NOT EXISTS _dbfleet_migration.rejects (migration_id text, batch_id int, table_name text,"
    " key text, reason text, row_text text, at timestamptz DEFAULT now())",
    "ALTER TABLE _dbfleet_migration.rejects ADD COLUMN IF NOT EXISTS column_name text",
    "CREATE TABLE IF NOT EXISTS _dbfleet_migration.watermarks (migration_id text, table_name text, value text,"
    " PRIMARY KEY (migration_id, table_name))",
]


def key_text(table: Table, row: Sequence[Any]) -> str:
    """The row's key as JSON (for the reject table); raw bytes are shown as text."""
    return json.dumps([row[i].decode(errors="replace") if isinstance(row[i], bytes) else row[i]
                       for i, c in enumerate(table.columns) if c.name in table.key], default=str)


class _SourceFailed(Exception):
    """Carries an exception raised while reading the source out through the target's COPY."""


class PostgresTarget(PostgresSchema, PostgresValidation, Target):
    """A PostgreSQL database written over one psycopg connection (autocommit; a transaction per batch)."""

    kind = "postgresql"
    poolable = True
    accepts_pg_copy = True
    supports_incremental = True
    builds_schema = True

    def __init__(self, conn: Any, lock_timeout: float = 60.0) -> None:
        self.conn = conn
        self.lock_timeout = lock_timeout
        self.rejected: list[dict[str, Any]] = []  # the current batch's refused rows (table, key, column, reason)
        conn.autocommit = True
        conn.execute(SESSION)
        # a batch waits this long for a table lock, then fails (and the migration can be resumed)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))

    # ------------------------------------------------------------ prepare / rollback
    @classmethod
    @contextmanager
    def connect(cls, db: DatabaseConfig, lock_timeout: float = 60.0) -> Iterator[PostgresTarget]:
        """The target over the database's connector."""
        with open_connector(db) as t:
            yield cls(t.conn, lock_timeout)

    @classmethod
    def ensure_database(cls, db: DatabaseConfig, create: bool) -> bool:
        """Create the target database when it is missing and ``create`` (the role must be allowed to);
        otherwise a ConfigError with the command to run."""
        return postgres_database.ensure(db, create)

    def nonempty(self, tables: list[Table]) -> list[str]:
        """The existing target tables that hold at least one row."""
        full = []
        for table in tables:
            if self._exists("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                            table.target_schema, table.target_name) and self.conn.execute(
                    sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target_ident(table))).fetchone()[0]:
                full.append(table.target)
        return full

    def usable(self) -> bool:
        """Idle and answering."""
        from engines.migration.postgres_source import usable_pg

        return usable_pg(self.conn)

    def prepare(self, plan: MigrationPlan) -> list[str]:
        """Create the control tables, enum types and tables that do not exist; snapshot the ones that do
        exist. Tables copied by a streaming path get their primary key at finalize (``add_key``); the typed
        path reads each batch's range back as it writes it, so its tables get the key (and its index) now."""
        keyed_now = {t.source for t in plan.tables if plan.path != "pg-pg" and text_spec(plan, t) is None}
        created: list[str] = list(plan.created)
        with self.conn.transaction():
            for stmt in DDL:
                self.conn.execute(stmt)
            for table in plan.tables:
                self._create(plan, table, created, table.source in keyed_now)
            if plan.if_exists == "truncate":
                self._truncate(plan, created)
        if plan.type == MigrationType.INCREMENTAL.value:  # upserts need the key; a base run that never finalized lacks it
            for table in plan.tables:
                self.add_key(dataclasses.replace(plan, created=created), table)
        return created

    def _create(self, plan: MigrationPlan, table: Table, created: list[str], keyed: bool) -> None:
        for col, values in table.enums.items():
            type_name = next(c.target_type for c in table.columns if c.name == col)
            if not self._exists("SELECT 1 FROM pg_type WHERE typname = %s", type_name):
                self.conn.execute(sql.SQL("CREATE TYPE {}.{} AS ENUM ({})").format(
                    sql.Identifier(table.target_schema), sql.Identifier(type_name),
                    sql.SQL(", ").join(sql.Literal(v) for v in values)))
                created.append(f"type:{table.target_schema}.{type_name}")
        ident = target_ident(table)
        if f"table:{table.target}" in created:  # ours, from an earlier prepare of this migration (resume)
            return
        if self._exists("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                        table.target_schema, table.target_name):
            self._check_columns(table)
            snap = f"{plan.id}:{table.target_name}"[:63]
            if f"snapshot:{table.target}" not in created:
                self.conn.execute(sql.SQL("CREATE TABLE {}.{} AS TABLE {}").format(
                    sql.Identifier(CONTROL), sql.Identifier(snap), ident))
                created.append(f"snapshot:{table.target}")
            return
        self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.target_schema)))
        cols = []
        for c in table.columns:
            typ = (sql.SQL("{}.{}").format(sql.Identifier(table.target_schema), sql.Identifier(c.target_type))
                   if c.name in table.enums else ddl.type_sql(c.target_type))
            parts = [sql.Identifier(c.name), typ]
            if c.identity:
                parts.append(sql.SQL("GENERATED BY DEFAULT AS IDENTITY"))
            if not c.nullable:
                parts.append(sql.SQL("NOT NULL"))
            cols.append(sql.SQL(" ").join(parts))
        if keyed and table.key:
            cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in table.key)))
        self.conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, sql.SQL(", ").join(cols)))
        created.append(f"table:{table.target}")


    def _truncate(self, plan: MigrationPlan, created: list[str]) -> None:
        """``if_exists: truncate``: empty the existing target tables (snapshotted first, so rollback restores
        them), once per run (a resumed run keeps the batches it copied), in one statement (foreign keys
        between them do not hold it up)."""
        tables = [t for t in plan.tables if f"snapshot:{t.target}" in created and f"truncated:{t.target}" not in created]
        if not tables:
            return
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(target_ident(t) for t in tables)))
        except psycopg.errors.FeatureNotSupported as exc:
            detail = (exc.diag.message_detail or "").strip()
            raise MigrationFailed(f"cannot empty the target tables ({detail or exc}): migrate the referencing "
                                  "tables too, or empty them yourself and plan with --if-exists fail") from None
        created += [f"truncated:{t.target}" for t in tables]

    def _check_columns(self, table: Table) -> None:
        have = {r[0] for r in self.conn.execute(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0"
            " AND NOT a.attisdropped", (table.target_schema, table.target_name)).fetchall()}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise ConfigError([("target", f"existing table {table.target} lacks columns {', '.join(missing)}")])

    def rollback(self, plan: MigrationPlan) -> list[str]:
        """Drop what the migration created; restore tables it modified from their snapshots."""
        done = []

        def ident(name: str) -> sql.Composed:
            schema, _, rel = name.partition(".")
            return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(rel))

        with self.conn.transaction():
            tables = [obj for obj in reversed(plan.created) if obj.startswith("table:")]
            if tables:  # in one statement: foreign keys between them do not hold the drop up
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                    sql.SQL(", ").join(ident(t.partition(":")[2]) for t in tables)))
                done += tables
            for obj in reversed(plan.created):
                kind, _, name = obj.partition(":")
                rel = name.partition(".")[2]
                if kind == "type":
                    self.conn.execute(sql.SQL("DROP TYPE IF EXISTS {}").format(ident(name)))
                elif kind == "snapshot":
                    target = ident(name)
                    snap = sql.SQL("{}.{}").format(sql.Identifier(CONTROL), sql.Identifier(f"{plan.id}:{rel}"[:63]))
                    self.conn.execute(sql.SQL("TRUNCATE {}").format(target))
                    self.conn.execute(sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {}").format(
                        target, snap))
                    self.conn.execute(sql.SQL("DROP TABLE {}").format(snap))
                else:
                    continue
                done.append(obj)
            if self._exists("SELECT 1 FROM pg_namespace WHERE nspname = %s", CONTROL):
                for t in ("checkpoints", "rejects", "watermarks"):
                    self.conn.execute(sql.SQL("DELETE FROM {}.{} WHERE migration_id = %s").format(
                        sql.Identifier(CONTROL), sql.Identifier(t)), (plan.id,))
        return done

    # ------------------------------------------------------------ batches
    def claim(self, plan: MigrationPlan, batch: Batch) -> bool:
        """Inside the open transaction: True when this call owns the batch (no checkpoint yet)."""
        row = self.conn.execute(
            "INSERT INTO _dbfleet_migration.checkpoints (migration_id, batch_id, table_name, rows, checksum)"
            " VALUES (%s, %s, %s, 0, 0) ON CONFLICT DO NOTHING RETURNING 1", (plan.id, batch.id, batch.table)).fetchone()
        return row is not None

    def done(self, plan: MigrationPlan, batch: Batch) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT rows, checksum, rejects FROM _dbfleet_migration.checkpoints"
                                " WHERE migration_id = %s AND batch_id = %s", (plan.id, batch.id)).fetchone()
        return None if row is None else {"rows": int(row[0]), "checksum": int(row[1]), "rejects": int(row[2])}

    def clear_range(self, plan: MigrationPlan, table: Table, batch: Batch, upsert: bool) -> None:
        """Delete what an earlier run left in the batch's key range (only where ranges are portable, and in
        tables the migration did not create: those hold no rows of a batch without a checkpoint)."""
        if table.ranges_portable and not upsert and f"table:{table.target}" not in plan.created \
                and plan.if_exists != "append":
            where, params = pg_range(table.key, batch)
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(target_ident(table), where), params)

    def record(self, plan: MigrationPlan, batch: Batch, rows: int, checksum: int, rejects: int,
               target_checksum: int | None = None, escaped: bool = True) -> None:
        self.conn.execute("UPDATE _dbfleet_migration.checkpoints SET rows = %s, checksum = %s, rejects = %s,"
                          " target_checksum = %s, escaped = %s, finished_at = now()"
                          " WHERE migration_id = %s AND batch_id = %s",
                          (rows, checksum, rejects, target_checksum, escaped, plan.id, batch.id))

    def copy_rows(self, plan: MigrationPlan, table: Table, batch: Batch, rows: list[tuple[Any, ...]],
                  upsert: bool = False) -> tuple[list[tuple[Any, ...]], int]:
        """COPY converted rows; if the target rejects the batch, find the bad rows one by one (this batch
        only), write them to the reject table and keep the rest. Returns (rows written, rejects)."""
        try:
            with self.conn.transaction():
                self._copy(table, rows, upsert)
            return rows, 0
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.InvalidTextRepresentation):
            pass
        good, bad = [], 0
        for row in rows:
            try:
                with self.conn.transaction():
                    self._copy(table, [row], upsert)
                good.append(row)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                bad += 1
                self._reject(plan, batch, table, key_text(table, row), exc, json.dumps(row, default=str))
        return good, bad

    def _reject(self, plan: MigrationPlan, batch: Batch, table: Table, key: str, exc: Exception | None, row: str,
                why: tuple[str | None, str] | None = None) -> None:
        """Record a refused row: its key, column and reason (no value) for ``status``; the row's text stays
        in the target's reject table only (it is the user's data, in the user's database)."""
        column, reason = why or rejects.describe(exc or Exception(), table.columns)
        self.conn.execute("INSERT INTO _dbfleet_migration.rejects (migration_id, batch_id, table_name, key,"
                          " column_name, reason, row_text) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                          (plan.id, batch.id, table.source, key, column, reason,
                           row[:2000].replace("\x00", "\\u0000")))
        self.rejected.append({"table": table.source, "key": key, "column": column, "reason": reason})

    def copy_text(self, plan: MigrationPlan, table: Table, batch: Batch,
                  chunks: Iterable[bytes] | Callable[[Any], Any], lines: Callable[[], list[bytes]],
                  key_of: Callable[[int], str], binary: bool = False) -> tuple[list[int], int]:
        """COPY ``chunks`` (text, or ``binary``) as they come, or let ``chunks(pgconn)`` write the COPY's data
        itself (the C relay). If the target rejects them, the batch's COPY text lines (``lines()``, asked
        only then) are bisected: good halves are written, each bad line goes to the reject table. Returns
        (indexes of the rejected lines, rows written)."""
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(target_ident(table), cols)
        first = sql.SQL("{} (FORMAT binary)").format(stmt) if binary else stmt

        def from_source(copy: Any) -> None:  # the source's own errors are not rejects of the target
            try:
                if callable(chunks):
                    copy.write(b"")  # psycopg: the data is whole (signature, trailer): add nothing at the end
                    chunks(self.conn.pgconn)
                    return
                for chunk in chunks:
                    copy.write(chunk)
            except Exception as exc:
                raise _SourceFailed() from exc

        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                with cur.copy(first) as copy:
                    from_source(copy)
                written = int(cur.rowcount)
            return [], written
        except _SourceFailed as failed:
            raise failed.__cause__ from None  # type: ignore[misc]
        except (psycopg.DataError, psycopg.IntegrityError):
            for _ in () if callable(chunks) else chunks:  # read the rest: every line is needed to find the bad ones
                pass
        every = lines()
        bad: list[int] = []
        pending = [(0, len(every))]
        while pending:
            lo, hi = pending.pop()
            try:
                with self.conn.transaction(), self.conn.cursor().copy(stmt) as copy:
                    copy.write(b"\n".join(every[lo:hi]) + b"\n")
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if hi - lo == 1:
                    bad.append(lo)
                    self._reject(plan, batch, table, key_of(lo), exc, every[lo].decode(errors="replace"))
                else:
                    mid = (lo + hi) // 2
                    pending += [(mid, hi), (lo, mid)]
        return sorted(bad), len(every) - len(bad)

    def _copy(self, table: Table, rows: list[tuple[Any, ...]], upsert: bool) -> None:
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        dest: sql.Composable = target_ident(table)
        if upsert:  # incremental: stage, then insert-or-update by key
            stage = sql.Identifier(f"dbfleet_stage_{table.target_name}"[:63])
            self.conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                stage, dest))
            dest = stage
        with self.conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(dest, cols)) as copy:
            for row in rows:
                copy.write_row(row)
        if upsert:
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
            sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c.name))
                                      for c in table.columns if c.name not in table.key)
            self.conn.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}"
                                      " ON CONFLICT ({}) DO UPDATE SET {}").format(
                target_ident(table), cols, cols, dest, keys, sets))
            self.conn.execute(sql.SQL("TRUNCATE {}").format(dest))

    # ------------------------------------------------------------ finalize / validate

    def write_batch(self, plan: MigrationPlan, table: Table, batch: Batch, source: Source) -> dict[str, Any]:
        """The batch in one transaction with its checkpoint, by the plan's path; a batch already done is skipped."""
        with self.conn.transaction():
            # the batch and its checkpoint commit together or not at all, so a crash that loses a recent
            # commit only means the batch runs again: no need to wait for the WAL flush (finalize's commit,
            # a normal one, makes every batch durable before the migration reports success)
            self.conn.execute("SET LOCAL synchronous_commit = off")
            self.rejected = []
            if not self.claim(plan, batch):
                return {"batch": batch.id, "table": table.source, "skipped": True, **(self.done(plan, batch) or {})}
            upsert = plan.type == MigrationType.INCREMENTAL.value
            self.clear_range(plan, table, batch, upsert)
            written, escaped = None, True
            if plan.path == "pg-pg":
                n, checksum, rejects = source.copy_binary(self, plan, table, batch)
            elif (spec := text_spec(plan, table)) is not None:
                n, checksum, rejects, escaped = source.copy_text(self, plan, table, batch, spec)
            else:
                n, checksum, rejects = self._copy_typed(source, plan, table, batch, upsert)
                if table.ranges_portable and not upsert:
                    written = self._verify_written(plan, table, batch, n, checksum)
            self.record(plan, batch, n, checksum, rejects, written, escaped)
        return {"batch": batch.id, "table": table.source, "rows": n, "rejects": rejects, "skipped": False,
                "rejected": self.rejected[:REJECTS_SHOWN]}

    def _copy_typed(self, source: Source, plan: MigrationPlan, table: Table, batch: Batch,
                    upsert: bool) -> tuple[int, int, int]:
        convert = converter([c.cast for c in table.columns])
        casts = {i: CASTS[c.cast] for i, c in enumerate(table.columns) if c.cast}
        rows, bad = [], 0
        for raw in source.batch_rows(plan, table, batch):
            try:
                rows.append(convert(raw))
            except ValueError:  # a value no PostgreSQL type can hold: a reject, like the target's own
                bad += 1
                self._reject(plan, batch, table, key_text(table, raw), None, "",
                             rejects.cast_failure(raw, table.columns, casts))
        written, rejected = self.copy_rows(plan, table, batch, rows, upsert)
        n, checksum = python_checksum(written, [c.target_type for c in table.columns])
        return n, checksum, bad + rejected

    def _verify_written(self, plan: MigrationPlan, table: Table, batch: Batch, n: int, checksum: int) -> int:
        """Read the range back inside the batch's transaction: the target must hold exactly the mapped source
        rows (count and checksum of the values on both sides). Returns the server-side checksum of the range,
        which later validation recomputes to catch anything changed since."""
        if self.measure(plan, table, batch, "python") != (n, checksum):
            raise MigrationFailed(f"batch {batch.id} of {table.source}: the rows read back from the target differ "
                                  "from the source rows just written (a cast changed values)")
        return self.measure(plan, table, batch, "sql")[1]

    def finalize(self, plan: MigrationPlan, db: DatabaseConfig, cps: Checkpoints) -> list[str]:
        """Keys, indexes, constraints (``build_schema``; when validating, the foreign keys' validation and
        ANALYZE run in validate, beside the checksum scans); incremental watermarks."""
        failed = self.build_schema(plan, db, cps, checks=not plan.validation)
        if failed:
            raise not_built(plan, failed)
        if plan.type == MigrationType.INCREMENTAL.value:
            for table in plan.tables:
                if plan.until.get(table.source) is not None:
                    self.watermark(plan.base_id or plan.id, table.source, plan.until[table.source])
        return failed

    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, int]]:
        """batch id -> rows, source checksum, rejects, and the server-side checksum of the range at write time
        (PostgreSQL -> PostgreSQL: the source's, computed the same way)."""
        rows = self.conn.execute("SELECT batch_id, rows, checksum, rejects, coalesce(target_checksum, checksum),"
                                 " escaped FROM _dbfleet_migration.checkpoints WHERE migration_id = %s",
                                 (plan.id,)).fetchall()
        return {int(b): {"rows": int(r), "checksum": int(c), "rejects": int(x), "written": int(w), "escaped": bool(e)}
                for b, r, c, x, w, e in rows}

    def retry_rejects(self, plan: MigrationPlan, source: Source) -> dict[int, dict[str, Any]]:
        """The refused rows read again by key and written; checkpoints updated (``postgres_retry``)."""
        return postgres_retry.retry_rejects(self, plan, source)

    def rejects(self, plan: MigrationPlan) -> list[dict[str, Any]]:
        """The refused rows' table, key, column and reason (their values stay in the reject table's row_text)."""
        cur = self.conn.execute("SELECT table_name, key, column_name, reason FROM _dbfleet_migration.rejects"
                                " WHERE migration_id = %s ORDER BY at", (plan.id,))
        return [{"table": t, "key": k, "column": c, "reason": r} for t, k, c, r in cur.fetchall()]

    def last_watermark(self, migration_id: str, table: str) -> str | None:
        """The watermark the last incremental run of ``migration_id`` copied (None: no run has)."""
        try:
            return self.watermark(migration_id, table)
        except psycopg.errors.UndefinedTable:  # no earlier run has prepared this target
            return None

    def watermark(self, migration_id: str, table: str, value: str | None = None) -> str | None:
        """Read (or, with ``value``, record) the last watermark an incremental run of ``migration_id`` copied."""
        if value is not None:
            self.conn.execute("INSERT INTO _dbfleet_migration.watermarks VALUES (%s, %s, %s) ON CONFLICT"
                              " (migration_id, table_name) DO UPDATE SET value = EXCLUDED.value",
                              (migration_id, table, value))
            return value
        row = self.conn.execute("SELECT value FROM _dbfleet_migration.watermarks WHERE migration_id = %s"
                                " AND table_name = %s", (migration_id, table)).fetchone()
        return None if row is None else str(row[0])
