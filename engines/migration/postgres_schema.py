"""PostgreSQL targets after the load: primary keys, secondary indexes and constraints, built as
pg_restore --jobs does, from definitions checked by ``ddl`` (a source's text never runs as is)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from engines.errors import DbfleetError
from engines.migration import ddl
from engines.migration.model import MigrationFailed, MigrationPlan, Table

if TYPE_CHECKING:
    from engines.config import DatabaseConfig
    from engines.migration.postgres_target import PostgresTarget


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
    """schema.table of the target table, quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(table.target_schema), sql.Identifier(table.target_name))


def by_size(plan: MigrationPlan, cps: dict[int, dict[str, Any]]) -> list[Table]:
    """The plan's tables, the most rows copied first."""
    rows = {t.source: sum(cps.get(b.id, {}).get("rows", 0) for b in plan.batches if b.table == t.source)
            for t in plan.tables}
    return sorted(plan.tables, key=lambda t: -rows[t.source])


def not_built(plan: MigrationPlan, failed: list[str]) -> MigrationFailed:
    """The error of a finalize (or validate) whose schema objects could not all be built."""
    return MigrationFailed(f"migration {plan.id}: the rows are copied, but {len(failed)} index(es) or"
                           f" constraint(s) could not be built on the target: {'; '.join(failed[:10])}."
                           f" Fix the target (or the rows) and resume it, or plan with --no-indexes")


class PostgresSchema:
    """The schema half of ``PostgresTarget`` (a mixin: it uses the target's ``conn``)."""

    conn: Any
    lock_timeout: float

    def _exists(self, query: str, *args: Any) -> bool:
        return self.conn.execute(query, args).fetchone() is not None

    def on_new_connection(self, db: DatabaseConfig, plan: MigrationPlan, job: Callable[[Any], Any]) -> Any:
        """``job(target)`` on a target of its own (a parallel phase runs one per connection)."""
        with type(self).connect(db, plan.lock_timeout) as other:  # type: ignore[attr-defined]
            return job(other)

    def build_schema(self, plan: MigrationPlan, db: DatabaseConfig, cps: dict[int, dict[str, Any]],
                     checks: bool = True) -> list[str]:
        """Keys, indexes and constraints after the load, as pg_restore --jobs does: in phases whose locks do not
        conflict, each phase's jobs on ``parallel_workers`` connections at once (at most 4), largest tables
        first. 1: per table, primary key and constraints (ACCESS EXCLUSIVE); 2: every index on its own
        (SHARE locks share); 3: foreign keys added NOT VALID, one at a time (brief); 4 (``checks``; else
        validate does it): per table, validate them and ANALYZE. Returns what failed."""
        tables = by_size(plan, cps)

        def run(jobs: list[Callable[[PostgresTarget], Any]]) -> list[Any]:
            with ThreadPoolExecutor(max(1, min(plan.parallel_workers, 4, len(jobs) or 1))) as pool:
                return list(pool.map(lambda job: self.on_new_connection(db, plan, job), jobs))

        try:
            failed = [f for found in run([partial(_prepare_table, plan, t) for t in tables]) for f in found]
        except DbfleetError as exc:
            raise MigrationFailed(str(exc)) from None
        failed += [f for f in run([partial(_build_one, plan, t, o) for t in tables for o in t.schema
                                   if o["kind"] == "index"]) if f]
        failed += [f for t in tables for o in t.schema if o["kind"] == "fk" and (f := self.build(plan, t, o))]
        if not checks:
            return failed
        return failed + [f for found in run([partial(check_table, plan, t) for t in tables]) for f in found]

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


def _prepare_table(plan: MigrationPlan, table: Table, tgt: PostgresTarget) -> list[str]:
    return tgt.prepare_table(plan, table)


def _build_one(plan: MigrationPlan, table: Table, obj: dict[str, Any], tgt: PostgresTarget) -> str | None:
    return tgt.build(plan, table, obj)


def check_table(plan: MigrationPlan, table: Table, tgt: PostgresTarget) -> list[str]:
    """``tgt.check_table`` as a job for ``on_new_connection``."""
    return tgt.check_table(plan, table)
