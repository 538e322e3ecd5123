"""PostgreSQL workload and catalog reads for the index advisor: pg_stat_statements (deltas between
runs), user tables and columns, existing B-tree indexes, column statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engines.tuning.base import CannotTune
from engines.tuning.targets import Targets
from engines.tuning.workload import Catalog, QueryShape, Table, TableUse, UnsupportedQuery, shape

HIDDEN = "<insufficient privilege>"


@dataclass
class Statement:
    """One normalized statement of the workload with its calls in the analysed window."""

    queryid: str
    text: str
    calls: int
    total_ms: float
    shape: QueryShape


@dataclass
class ExistingIndex:
    """A valid, non-partial B-tree index on plain columns."""

    schema: str
    table: str
    name: str
    columns: list[str]


def rows(conn: Any, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """All rows of one catalog query."""
    return list(conn.execute(sql, params).fetchall())


def catalog(conn: Any) -> Catalog:
    """User tables (not system schemas) with their columns, and the session's search path."""
    found: dict[Table, list[str]] = {}
    for schema, table, column in rows(conn, """
            SELECT n.nspname, c.relname, a.attname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2, a.attnum"""):
        found.setdefault((schema, table), []).append(column)
    path = [s for (s,) in rows(conn, "SELECT unnest(current_schemas(false))")]
    return Catalog(found, tuple(path))


def existing_indexes(conn: Any) -> list[ExistingIndex]:
    """Valid, non-partial B-tree indexes whose keys are plain columns (expression indexes left out)."""
    out = []
    for schema, table, name, columns in rows(conn, """
            SELECT n.nspname, t.relname, c.relname,
                   array(SELECT a.attname FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(attnum, o)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.o)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = c.relam
            WHERE am.amname = 'btree' AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')"""):
        out.append(ExistingIndex(schema, table, name, list(columns)))
    return out


def distinct_counts(conn: Any) -> dict[tuple[str, str, str], float]:
    """Estimated distinct values per (schema, table, column) from pg_stats (negative: a fraction of rows)."""
    out: dict[tuple[str, str, str], float] = {}
    for schema, table, column, n_distinct, reltuples in rows(conn, """
            SELECT s.schemaname, s.tablename, s.attname, s.n_distinct, greatest(c.reltuples, 1)
            FROM pg_stats s JOIN pg_namespace n ON n.nspname = s.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
            WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')"""):
        nd = float(n_distinct or 0)
        out[(schema, table, column)] = -nd * float(reltuples) if nd < 0 else nd
    return out


def read_statements(conn: Any, cat: Catalog, memory: dict[str, Any], limit: int,
                    limits: list[str], targets: Targets | None = None) -> list[Statement]:
    """The heaviest statements of this database since the previous run (all of them on the first),
    narrowed to ``targets`` (optimization_targets) when given."""
    try:
        found = rows(conn, """
            SELECT s.queryid::text, s.query, s.calls, s.total_exec_time FROM pg_stat_statements s
            JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = current_database() AND s.queryid IS NOT NULL AND s.calls > 0""")
    except Exception as exc:
        if "pg_stat_statements" in str(exc):
            raise CannotTune("pg_stat_statements is not installed in this database: add it to "
                             "shared_preload_libraries and CREATE EXTENSION pg_stat_statements") from None
        raise
    window = _deltas(found, memory)
    if not window and found:
        window = [(q, t, int(c), float(ms)) for q, t, c, ms in found]
        limits.append("no statement ran since the previous analysis: cumulative counters used")
    hidden = sum(1 for _, text, _, _ in found if text == HIDDEN)
    if hidden:
        limits.append(f"{hidden} statements of other roles are hidden from this role (query text "
                      f"{HIDDEN!r}): advice covers only its own; GRANT pg_read_all_stats TO the dbfleet role")
    out: list[Statement] = []
    visible = [r for r in sorted(window, key=lambda r: -r[3]) if r[1] != HIDDEN]
    skipped = 0
    for n, (qid, text, calls, total) in enumerate(visible):
        if len(out) >= limit:
            limits.append(f"only the {limit} heaviest statements were analysed (max_queries); "
                          f"{len(visible) - n} lighter ones were not")
            break
        try:
            st = Statement(qid, text, calls, total, shape(text, cat))
        except UnsupportedQuery:
            continue  # DDL, utility statements, several statements in one: nothing to index
        if targets is None or targets.selects(qid, text, set(st.shape.uses), calls, total):
            out.append(st)
        else:
            skipped += 1
    if targets is not None and not targets.empty:
        limits.append(f"optimization_targets: {len(out)} statements selected, {skipped} others left out"
                      + ("" if out else " (no statement matches the targets: nothing to advise)"))
    return out


def _deltas(found: list[tuple[Any, ...]], memory: dict[str, Any]) -> list[tuple[str, str, int, float]]:
    """Calls and time since the previous run's snapshot (kept in ``memory``); counters that went
    back (a stats reset) count from zero."""
    previous = memory.get("statements") or {}
    snapshot, window = {}, []
    for qid, text, calls, total in found:
        calls, total = int(calls), float(total)
        snapshot[qid] = [calls, total]
        prev = previous.get(qid)
        if prev and calls >= prev[0]:
            d_calls, d_total = calls - prev[0], total - prev[1]
        else:
            d_calls, d_total = calls, total
        if d_calls > 0:
            window.append((qid, text, d_calls, d_total))
    memory["statements"] = snapshot
    return window


def add_qualstats(conn: Any, statements: list[Statement], limits: list[str]) -> int:
    """Add pg_qualstats' predicates (when it is installed) to the statements' table uses: it sees through
    views and functions the parser cannot follow. Returns how many column uses it added."""
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_qualstats'").fetchone():
        return 0
    try:
        found = rows(conn, """
            SELECT DISTINCT q.queryid::text, n.nspname, c.relname, a.attname, o.oprname
            FROM pg_qualstats() q JOIN pg_class c ON c.oid = q.lrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = q.lrelid AND a.attnum = q.lattnum
            JOIN pg_operator o ON o.oid = q.opno
            WHERE q.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND q.rrelid IS NULL AND q.queryid IS NOT NULL""")
    except Exception as exc:  # created but not in shared_preload_libraries
        limits.append(f"pg_qualstats is created but cannot be read ({str(exc).strip().splitlines()[0][:150]}): "
                      "add it to shared_preload_libraries")
        return 0
    by_id = {st.queryid: st for st in statements}
    added = 0
    for qid, schema, table, column, op in found:
        bucket = "eq" if op == "=" else "range" if op in ("<", ">", "<=", ">=") else None
        st = by_id.get(qid)
        if st is None or bucket is None:
            continue
        use = st.shape.uses.setdefault((schema, table), TableUse())
        if column not in getattr(use, bucket):
            use.add(bucket, column)
            added += 1
    return added
