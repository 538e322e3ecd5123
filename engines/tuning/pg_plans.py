"""Generic-plan costs of workload statements, and hypothetical indexes (HypoPG) to test them against.

PostgreSQL 15 has no ``EXPLAIN (GENERIC_PLAN)``: each statement is PREPAREd with its ``$n``
parameters (types inferred by the server) and explained with ``plan_cache_mode =
force_generic_plan``, so no parameter value is needed. Nothing executes: EXPLAIN without ANALYZE.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

from psycopg import sql

from engines.tuning.pg_workload import Statement

PREPARED = "dbfleet_tune_stmt"


def index_name(table: str, columns: list[str]) -> str:
    """A readable index name that fits in 63 bytes (a hash suffix keeps long ones distinct)."""
    base = re.sub(r"[^a-z0-9_]+", "_", "_".join([table, *columns]).lower()).strip("_") or "t"
    name = f"{base}_idx"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1("\0".join([table, *columns]).encode()).hexdigest()[:8]
    return f"{base[:50]}_{digest}_idx"


def create_index_sql(schema: str, table: str, columns: list[str], name: str | None = None,
                     concurrently: bool = True) -> sql.Composed:
    """``CREATE INDEX [CONCURRENTLY] name ON schema.table (cols)``, every identifier quoted by psycopg."""
    head = "CREATE INDEX CONCURRENTLY " if concurrently else "CREATE INDEX "
    target = sql.SQL("{}.{} ({})").format(sql.Identifier(schema), sql.Identifier(table),
                                          sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    if name is None:
        return sql.SQL(head + "ON {}").format(target)
    return sql.SQL(head + "{} ON {}").format(sql.Identifier(name), target)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


class Planner:
    """Plans workload statements on one session (hypothetical indexes are per session)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        conn.prepare_threshold = None  # psycopg must not hold prepared statements DEALLOCATE ALL would drop
        conn.execute("SET plan_cache_mode = force_generic_plan")
        self.failed: dict[str, str] = {}  # queryid -> why it cannot be planned

    def plan(self, st: Statement) -> dict[str, Any] | None:
        """The generic plan of ``st`` (its top node), or None when it cannot be prepared."""
        if st.queryid in self.failed:
            return None
        args = sql.SQL("({})").format(sql.SQL(", ").join([sql.NULL] * st.shape.params)) if st.shape.params else sql.SQL("")
        try:
            self.conn.execute(sql.SQL("PREPARE {} AS ").format(sql.Identifier(PREPARED)) + sql.SQL(st.text))
            row = self.conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE {}{}").format(
                sql.Identifier(PREPARED), args)).fetchone()
            return dict(row[0][0]["Plan"])
        except Exception as exc:  # a statement the server cannot prepare alone (untyped $n, dropped table)
            self.failed[st.queryid] = str(exc).strip().splitlines()[0][:200]
            return None
        finally:
            self.conn.execute("DEALLOCATE ALL")

    def cost(self, st: Statement) -> tuple[float, set[str]] | None:
        """(total cost, index names the plan uses) of ``st``'s generic plan."""
        plan = self.plan(st)
        if plan is None:
            return None
        used = {str(n["Index Name"]) for n in plan_nodes(plan) if "Index Name" in n}
        return float(plan["Total Cost"]), used

    def seq_scans(self, st: Statement) -> set[str]:
        """Names of the tables the plan of ``st`` reads with a sequential scan."""
        plan = self.plan(st)
        return {str(n["Relation Name"]) for n in plan_nodes(plan or {}) if n.get("Node Type") == "Seq Scan"}


class Hypothetical:
    """HypoPG's hypothetical indexes on the planner's session."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @staticmethod
    def available(conn: Any) -> tuple[bool, str | None]:
        """(installed, why not) for the hypopg extension in this database."""
        installed = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'hypopg'").fetchone()
        if installed:
            return True, None
        offered = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg'").fetchone()
        if offered:
            return False, ("hypopg missing: it is available on the server but not created in this database "
                           "(CREATE EXTENSION hypopg): index advice below is not proven by cost")
        return False, ("hypopg missing: the server has no hypopg extension (Debian: postgresql-<major>-hypopg): "
                       "index advice below is not proven by cost")

    def create(self, schema: str, table: str, columns: list[str]) -> tuple[int, str]:
        """(oid, name) of a new hypothetical B-tree index."""
        ddl = create_index_sql(schema, table, columns, concurrently=False).as_string(self.conn)
        oid, name = self.conn.execute("SELECT indexrelid, indexname FROM hypopg_create_index(%s)", (ddl,)).fetchone()
        return int(oid), str(name)

    def size(self, oid: int) -> int:
        """Estimated size in bytes of a hypothetical index."""
        return int(self.conn.execute("SELECT hypopg_relation_size(%s)", (oid,)).fetchone()[0])

    def drop(self, oid: int) -> None:
        """Forget one hypothetical index."""
        self.conn.execute("SELECT hypopg_drop_index(%s)", (oid,))

    def reset(self) -> None:
        """Forget every hypothetical index of the session."""
        self.conn.execute("SELECT hypopg_reset()")
