"""Materialized-view and partitioning advice for PostgreSQL; creating and refreshing the views (the conversion to
partitions is engines/tuning/pg_partition.py).

Materialized views: heavy, repeated aggregates (GROUP BY) without parameters — pg_stat_statements keeps
no parameter values, so a parameterised query cannot be materialized as it runs. Partitioning: large
append-mostly tables whose workload filters a time column by range.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, parse_sql
from psycopg import sql

from engines.tuning.base import Change, PartitionAdvice, TuningSettings, ViewAdvice
from engines.tuning.pg_plans import index_name
from engines.tuning.pg_workload import Statement, rows

TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


def _column_name(node: Any) -> str | None:
    """The column a plain column reference names (``t.c`` -> ``c``), or None."""
    if not isinstance(node, ast.ColumnRef):
        return None
    fields = tuple(node.fields or ())
    return str(fields[-1].sval) if fields and isinstance(fields[-1], ast.String) else None


def _group_columns(text: str) -> tuple[list[str], bool]:
    """Output names of the GROUP BY columns, and whether every GROUP BY item is a plain output column."""
    stmt: Any = parse_sql(text)[0].stmt
    outputs: dict[str, str] = {}
    for target in stmt.targetList or ():
        column = _column_name(target.val)
        if column:
            outputs[column] = str(target.name or column)
    names: list[str] = []
    for item in stmt.groupClause or ():
        column = _column_name(item)
        if column is None or column not in outputs:
            return names, False
        names.append(outputs[column])
    return names, bool(names)


def _is_aggregate(st: Statement) -> bool:
    stmt: Any = parse_sql(st.text)[0].stmt
    return isinstance(stmt, ast.SelectStmt) and bool(stmt.groupClause) and st.shape.params == 0


def view_advice(conn: Any, statements: list[Statement], settings: TuningSettings) -> list[ViewAdvice]:
    """Aggregates that ran at least ``mview_min_calls`` times and took ``mview_min_share_percent`` of the time."""
    total = sum(st.total_ms for st in statements) or 1.0
    out = []
    for st in statements:
        if not _is_aggregate(st) or st.calls < settings.mview_min_calls:
            continue
        share = 100.0 * st.total_ms / total
        if share < settings.mview_min_share_percent:
            continue
        name = f"mv_{st.queryid.lstrip('-')}"
        columns, unique = _group_columns(st.text)
        create = (sql.SQL("CREATE MATERIALIZED VIEW {} AS ").format(sql.Identifier(name)) + sql.SQL(st.text)).as_string(conn)
        statements_ = [create]
        note = None
        if unique:
            statements_.append(sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
                sql.Identifier(index_name(name, columns)), sql.Identifier(name),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(conn))
            statements_.append(sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}").format(sql.Identifier(name))
                               .as_string(conn))
        else:
            note = "a GROUP BY item is not a plain output column: no unique index, so REFRESH cannot be CONCURRENTLY"
        out.append(ViewAdvice(name, st.queryid, st.text, st.calls, round(st.total_ms, 1), statements_,
                              "0 * * * *", note or f"{share:.0f}% of the workload's time; refresh hourly by beat "
                              "and read the view instead"))
    return out


def _candidates(conn: Any, min_rows: int) -> list[tuple[str, str, int, str, Any, Any]]:
    """(schema, table, rows, time column, lowest, highest) of large append-mostly plain tables."""
    return rows(conn, """
        SELECT s.schemaname, s.relname, c.reltuples::bigint, a.attname,
               (st.histogram_bounds::text::text[])[1], (st.histogram_bounds::text::text[])[
                   array_length(st.histogram_bounds::text::text[], 1)]
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_stats st ON st.schemaname = s.schemaname AND st.tablename = s.relname AND st.attname = a.attname
        WHERE c.relkind = 'r' AND NOT c.relispartition AND c.reltuples >= %s
          AND format_type(a.atttypid, a.atttypmod) = ANY (%s)
          AND s.n_tup_upd + s.n_tup_del <= 0.05 * greatest(s.n_tup_ins, 1)""", (min_rows, list(TIME_TYPES)))


def partition_advice(conn: Any, statements: list[Statement], settings: TuningSettings) -> list[PartitionAdvice]:
    """Range-partitioning plans for tables whose time column the workload filters by range."""
    out = []
    for schema, table, nrows, column, low, high in _candidates(conn, settings.partition_min_rows):
        on_table = [st for st in statements if (schema, table) in st.shape.uses]
        pruning = [st for st in on_table if column in st.shape.uses[(schema, table)].range]
        if not pruning:
            continue
        days = _span_days(conn, low, high)
        interval, count = ("month", max(1, round(days / 30))) if days > 180 else ("week", max(1, round(days / 7)))
        share = 100.0 * sum(s.total_ms for s in pruning) / (sum(s.total_ms for s in on_table) or 1.0)
        new = f"{table}_partitioned"
        ddl = sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING DEFAULTS) PARTITION BY RANGE ({})").format(
            sql.Identifier(schema), sql.Identifier(new), sql.Identifier(schema), sql.Identifier(table),
            sql.Identifier(column)).as_string(conn)
        out.append(PartitionAdvice(schema, table, column, interval, count, int(nrows), [s.queryid for s in pruning],
                                   round(share, 1), [ddl], "a primary key or unique index must include "
                                   f"{column}; partitions of one {interval} each from {low} (pg_partman can create "
                                   "them ahead); dbfleet tune DB --apply --only partitions converts it online "
                                   "(batches, swap, revertible)"))
    return out


def _span_days(conn: Any, low: Any, high: Any) -> float:
    if low is None or high is None:
        return 0.0
    got = conn.execute("SELECT extract(epoch FROM %s::timestamptz - %s::timestamptz) / 86400", (high, low)).fetchone()
    return float(got[0] or 0.0)


def create_view(conn: Any, view: ViewAdvice, database_id: str) -> Change:
    """Run a view advice's statements (the view, then its unique index); reversible by DROP MATERIALIZED VIEW."""
    schema = str(conn.execute("SELECT current_schema()").fetchone()[0])
    drop = sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(view.name))
    change = Change("create_mview", database_id, {"schema": schema, "view": view.name, "queryid": view.queryid},
                    "kept", {"query": view.query, "refresh_schedule": view.refresh_schedule},
                    {"action": "drop_mview", "schema": schema, "view": view.name, "statement": drop.as_string(conn)},
                    "; ".join(view.statements))
    try:
        for statement in view.statements[:2]:  # the view and its unique index; the REFRESH line is for beat
            conn.execute(statement)
    except Exception as exc:
        change.status = "failed"
        change.evidence["reason"] = str(exc).strip().splitlines()[0][:300]
        conn.execute(drop)
    return change


def drop_view(conn: Any, reverse: dict[str, Any]) -> str:
    """Drop a materialized view an apply created (idempotent); the statement run."""
    drop = sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}.{}").format(sql.Identifier(reverse["schema"]),
                                                                    sql.Identifier(reverse["view"]))
    conn.execute(drop)
    return str(drop.as_string(conn))


def refresh_view(conn: Any, schema: str, view: str) -> dict[str, Any]:
    """``REFRESH MATERIALIZED VIEW CONCURRENTLY`` one view an apply created (readers are never blocked);
    a view without the unique index CONCURRENTLY needs is refreshed plainly and the result says so."""
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(view))
    found = conn.execute("SELECT ispopulated FROM pg_matviews WHERE schemaname = %s AND matviewname = %s",
                         (schema, view)).fetchone()
    if found is None:
        raise LookupError(f"no materialized view {schema}.{view} (reverted or dropped: its beat entry can go)")
    unique = conn.execute("SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n"
                          " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND i.indisunique"
                          " AND i.indpred IS NULL AND i.indisvalid", (schema, view)).fetchone()
    concurrently = bool(unique) and bool(found[0])  # CONCURRENTLY needs a populated view with a unique index
    head = "REFRESH MATERIALIZED VIEW CONCURRENTLY {}" if concurrently else "REFRESH MATERIALIZED VIEW {}"
    statement = sql.SQL(head).format(target)
    conn.execute(statement)
    return {"schema": schema, "view": view, "statement": statement.as_string(conn), "concurrently": concurrently}
