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
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from engines.errors import ConfigError, DbfleetError
from engines.migration import ddl
from engines.migration.checksum import python_checksum, sql_checksum
from engines.migration.model import Batch, MigrationPlan, Table
from engines.migration.sources import SESSION, pg_range

CONTROL = "_dbfleet_migration"
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
    "CREATE TABLE IF NOT EXISTS _dbfleet_migration.watermarks (migration_id text, table_name text, value text,"
    " PRIMARY KEY (migration_id, table_name))",
]


def key_text(table: Table, row: Sequence[Any]) -> str:
    """The row's key as JSON (for the reject table); raw bytes are shown as text."""
    return json.dumps([row[i].decode(errors="replace") if isinstance(row[i], bytes) else row[i]
                       for i, c in enumerate(table.columns) if c.name in table.key], default=str)


class _SourceFailed(Exception):
    """Carries an exception raised while reading the source out through the target's COPY."""


def index_name(table: Table, obj: dict[str, Any]) -> str:
    """The target name of a schema object: PostgreSQL's own (its definition holds it); a MySQL index is named
    per table there, so it becomes ``<table>_<index>`` (shortened with a hash to PostgreSQL's 63 bytes)."""
    if "sql" in obj or obj["kind"] != "index":
        return str(obj["name"])
    name = f"{table.target_name}_{obj['name']}"
    if len(name.encode()) <= 63:
        return name
    return name.encode()[:54].decode(errors="ignore") + "_" + hashlib.md5(name.encode()).hexdigest()[:8]  # noqa: S324


def target_ident(table: Table) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(table.target_schema), sql.Identifier(table.target_name))


class PostgresTarget:
    def __init__(self, conn: Any, lock_timeout: float = 60.0) -> None:
        self.conn = conn
        conn.autocommit = True
        conn.execute(SESSION)
        # a batch waits this long for a table lock, then fails (and the migration can be resumed)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))

    # ------------------------------------------------------------ prepare / rollback
    def prepare(self, plan: MigrationPlan, keyed_now: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Create the control tables, enum types and tables that do not exist (with their primary key only
        for the tables in ``keyed_now``; ``add_key`` builds the others' after the load); snapshot the ones
        that do exist."""
        created: list[str] = list(plan.created)
        with self.conn.transaction():
            for stmt in DDL:
                self.conn.execute(stmt)
            for table in plan.tables:
                self._create(plan, table, created, table.source in keyed_now)
        if plan.type == "incremental":  # upserts need the key; a base run that never finalized lacks it
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

    def _exists(self, query: str, *args: Any) -> bool:
        return self.conn.execute(query, args).fetchone() is not None

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
        if table.ranges_portable and not upsert and f"table:{table.target}" not in plan.created:
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

    def _reject(self, plan: MigrationPlan, batch: Batch, table: Table, key: str, exc: Exception, row: str) -> None:
        self.conn.execute("INSERT INTO _dbfleet_migration.rejects (migration_id, batch_id, table_name, key,"
                          " reason, row_text) VALUES (%s, %s, %s, %s, %s, %s)",
                          (plan.id, batch.id, table.source, key, str(exc).splitlines()[0][:500],
                           row[:2000].replace("\x00", "\\u0000")))

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
    def add_key(self, plan: MigrationPlan, table: Table) -> None:
        """The primary key of a table this migration created, if it has none yet (built after the load)."""
        if not table.key or f"table:{table.target}" not in plan.created or self._exists(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE i.indisprimary AND n.nspname = %s AND c.relname = %s",
                table.target_schema, table.target_name):
            return
        try:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                target_ident(table), sql.SQL(", ").join(sql.Identifier(k) for k in table.key)))
        except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation) as exc:
            detail = " ".join(filter(None, [str(exc).splitlines()[0], exc.diag.message_detail]))
            raise DbfleetError(f"{table.target}: the copied rows cannot take the primary key "
                               f"({', '.join(table.key)}): {detail}; remove the duplicates from the target (and"
                               " their cause) and resume the migration, or roll it back") from None

    def build(self, plan: MigrationPlan, table: Table, obj: dict[str, Any]) -> str | None:
        """One secondary index or constraint of a table this migration created, unless it is there (a
        foreign key is added NOT VALID: ``check_table`` validates it). Returns why it failed, or None."""
        if f"table:{table.target}" not in plan.created:
            return None
        name = index_name(table, obj)
        if obj["kind"] == "index":
            there = self._exists("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                 " WHERE n.nspname = %s AND c.relname = %s", table.target_schema, name)
        else:
            there = self._exists("SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN"
                                 " pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND"
                                 " c.relname = %s AND k.conname = %s", table.target_schema, table.target_name, name)
        if there:
            return None
        try:
            self.conn.execute(self._schema_sql(plan, table, obj, name))
        except ddl.UnsafeDefinition as exc:
            return f"{table.target} {obj['kind']} {name}: refused, {exc}"
        except psycopg.Error as exc:
            return f"{table.target} {obj['kind']} {name}: {str(exc).splitlines()[0]}"
        return None

    def _schema_sql(self, plan: MigrationPlan, table: Table, obj: dict[str, Any], name: str) -> sql.Composable:
        ident = target_ident(table)
        if "sql" in obj:  # a PostgreSQL source: its server's definition, parsed and checked (engines/migration/ddl.py)
            return self._source_definition(plan, table, obj, name)
        if obj["kind"] == "index":
            cols = [sql.SQL("(left({}, {}))").format(sql.Identifier(c), sql.Literal(obj["prefix"][c]))
                    if c in obj["prefix"] else sql.Identifier(c) for c in obj["columns"]]
            return sql.SQL("CREATE {}INDEX {} ON {} ({})").format(
                sql.SQL("UNIQUE " if obj["unique"] else ""), sql.Identifier(name), ident, sql.SQL(", ").join(cols))
        rules = ("CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION")
        actions = sql.SQL("").join(sql.SQL(" ON {} {}").format(sql.SQL(event), sql.SQL(obj[key]))
                                   for event, key in (("UPDATE", "on_update"), ("DELETE", "on_delete"))
                                   if obj.get(key) in rules)
        return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}){} NOT VALID").format(
            ident, sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(c) for c in obj["columns"]),
            target_ident(plan.table(obj["ref"])), sql.SQL(", ").join(sql.Identifier(c) for c in obj["ref_columns"]),
            actions)

    def _source_definition(self, plan: MigrationPlan, table: Table, obj: dict[str, Any], name: str) -> sql.SQL:
        """A PostgreSQL source's index or constraint definition as one checked statement on ``table``; raises
        ddl.UnsafeDefinition for anything else, or when it calls a function that is volatile (or unknown) here."""
        on = (table.target_schema, table.target_name)
        if obj["kind"] == "index":
            text, calls = ddl.index_statement(obj["sql"], (table.source_schema, table.source_name), on, name)
        else:
            ref = next((t for t in plan.tables if t.source == obj.get("ref")), None)
            text, calls = ddl.constraint_statement(obj["sql"], on, name, obj.get("contype", "f" if ref else None),
                                                   None if ref is None else (ref.target_schema, ref.target_name))
        bad = ddl.volatile(self.conn, calls)
        if bad:
            raise ddl.UnsafeDefinition(f"its definition calls {', '.join(bad)}, volatile or unknown on the target"
                                       " (a definition read from a source runs no function that may write)")
        return sql.SQL(text)

    def prepare_table(self, plan: MigrationPlan, table: Table) -> list[str]:
        """Finalize, first step (ACCESS EXCLUSIVE on the table): the primary key, the constraints other than
        foreign keys, identity sequences past the copied keys. Returns what failed."""
        self.add_key(plan, table)
        failed = [f for obj in table.schema if obj["kind"] == "constraint" and (f := self.build(plan, table, obj))]
        for c in table.columns:
            if c.identity:
                self.conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence(quote_ident({}) || '.' || quote_ident({}),"
                                          " {}), coalesce(max({}), 0) + 1, false) FROM {}").format(
                    sql.Literal(table.target_schema), sql.Literal(table.target_name), sql.Literal(c.name),
                    sql.Identifier(c.name), target_ident(table)))
        return failed

    def check_table(self, plan: MigrationPlan, table: Table) -> list[str]:
        """Finalize, last step (SHARE UPDATE EXCLUSIVE on the table): validate its foreign keys that are not
        (added NOT VALID, or left so by an earlier failed run), then ANALYZE. Returns what failed."""
        failed = []
        if f"table:{table.target}" in plan.created:
            for (name,) in self.conn.execute(
                    "SELECT k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND k.contype = 'f'"
                    " AND NOT k.convalidated", (table.target_schema, table.target_name)).fetchall():
                try:
                    self.conn.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                        target_ident(table), sql.Identifier(name)))
                except psycopg.Error as exc:
                    failed.append(f"{table.target} fk {name}: {str(exc).splitlines()[0]}")
        self.conn.execute(sql.SQL("ANALYZE {}").format(target_ident(table)))
        return failed

    def measure(self, plan: MigrationPlan, table: Table, batch: Batch | None, method: str = "sql") -> tuple[int, int]:
        """(count, checksum) of the target rows of ``batch`` (None: the whole table), computed by the server
        (``sql``, over each row's text) or here over the driver's values (``python``)."""
        where, params = (pg_range(table.key, batch) if batch else (sql.SQL("true"), []))
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        select = sql.SQL("SELECT {} FROM {} WHERE {}").format(cols, target_ident(table), where)
        if method == "sql":
            n, checksum = self.conn.execute(sql_checksum(select), params).fetchone()
            return int(n), int(checksum)
        with self.conn.cursor() as cur:
            cur.execute(select, params)
            return python_checksum(cur, [c.target_type for c in table.columns])

    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, int]]:
        """batch id -> rows, source checksum, rejects, and the server-side checksum of the range at write time
        (PostgreSQL -> PostgreSQL: the source's, computed the same way)."""
        rows = self.conn.execute("SELECT batch_id, rows, checksum, rejects, coalesce(target_checksum, checksum),"
                                 " escaped FROM _dbfleet_migration.checkpoints WHERE migration_id = %s",
                                 (plan.id,)).fetchall()
        return {int(b): {"rows": int(r), "checksum": int(c), "rejects": int(x), "written": int(w), "escaped": bool(e)}
                for b, r, c, x, w, e in rows}

    def rejects(self, plan: MigrationPlan) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT table_name, key, reason FROM _dbfleet_migration.rejects"
                                " WHERE migration_id = %s ORDER BY at", (plan.id,))
        return [{"table": t, "key": k, "reason": r} for t, k, r in cur.fetchall()]

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
