"""``verify: execute``: timed executions of the affected queries, before and after an index is built.

pg_stat_statements keeps normalized text only (``$n`` for every constant), so parameter sets are sampled from
the table columns each ``$n`` is compared to (found by the pglast reading of the query); ``LIMIT $n`` gets 100
and ``OFFSET $n`` 0. A query with a parameter tied to no column is not timed (the report says which). Each
execution runs in a READ ONLY transaction with ``statement_timeout``: a query that would write is refused by
the server, never run. Each is timed by the server (``EXPLAIN (ANALYZE, TIMING OFF)``'s execution time: no
round trip). The measure of a query is the sum, over its sampled parameter sets, of the fastest of
``verify_repeats`` executions (the fastest is the least disturbed by other work on a shared machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pglast import ast, parse_sql
from psycopg import sql

from engines.tuning.base import TuningSettings
from engines.tuning.pg_workload import Statement
from engines.tuning.workload import Catalog, Table, UnsupportedQuery, _walk, shape

PREPARED = "dbfleet_verify_stmt"


@dataclass
class Sampled:
    """A query with its sampled parameter sets (as text literals), or why it cannot be timed."""

    queryid: str
    text: str
    calls: int
    params: list[list[str | None]] = field(default_factory=list)
    skipped: str | None = None


def _limits(text: str) -> dict[int, str]:
    """``$n`` of LIMIT (100) and OFFSET (0) clauses."""
    out: dict[int, str] = {}
    for node in _walk(parse_sql(text)):
        if isinstance(node, ast.SelectStmt):
            for clause, value in ((node.limitCount, "100"), (node.limitOffset, "0")):
                if isinstance(clause, ast.ParamRef) and clause.number:
                    out[int(clause.number)] = value
    return out


def sample(conn: Any, st: Statement, cat: Catalog, count: int) -> Sampled:
    """Up to ``count`` parameter sets for ``st``, each from one sampled row per table its parameters name."""
    got = Sampled(st.queryid, st.text, st.calls)
    try:
        parsed = shape(st.text, cat)
    except UnsupportedQuery as exc:
        got.skipped = str(exc)
        return got
    fixed = _limits(st.text)
    unmapped = [n for n in range(1, parsed.params + 1) if n not in parsed.param_columns and n not in fixed]
    if unmapped:
        names = ", ".join(f"${n}" for n in unmapped)
        got.skipped = f"parameter(s) {names} compare to no table column: no value to sample"
        return got
    rows_by_table: dict[Table, list[tuple[Any, ...]]] = {}
    tables: dict[Table, list[str]] = {}
    for table, column in parsed.param_columns.values():
        if column not in tables.setdefault(table, []):
            tables[table].append(column)
    for table, columns in tables.items():
        rows_by_table[table] = _rows(conn, table, columns, count)
    if any(not rows for rows in rows_by_table.values()):
        got.skipped = "a table its parameters name is empty: nothing to sample"
        return got
    for i in range(min(count, *(len(r) for r in rows_by_table.values())) if rows_by_table else 1):
        values: list[str | None] = []
        for n in range(1, parsed.params + 1):
            if n in fixed:
                values.append(fixed[n])
                continue
            table, column = parsed.param_columns[n]
            values.append(rows_by_table[table][i][tables[table].index(column)])
        got.params.append(values)
    return got


def _rows(conn: Any, table: Table, columns: list[str], count: int) -> list[tuple[Any, ...]]:
    """``count`` random rows' ``columns`` as text (a Bernoulli sample first on a large table)."""
    estimate = conn.execute("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = %s::regclass",
                            (sql.SQL("{}.{}").format(*map(sql.Identifier, table)).as_string(conn),)).fetchone()[0]
    percent = min(100.0, max(0.01, 100.0 * 50 * count / max(float(estimate), 1.0)))
    cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    return list(conn.execute(sql.SQL("SELECT {} FROM {}.{} TABLESAMPLE BERNOULLI ({}) ORDER BY random() LIMIT {}").format(
        cols, sql.Identifier(table[0]), sql.Identifier(table[1]), sql.Literal(percent), sql.Literal(count))).fetchall())


class Timer:
    """Times sampled executions on one autocommit session, each in a READ ONLY transaction."""

    def __init__(self, conn: Any, settings: TuningSettings) -> None:
        self.conn = conn
        self.settings = settings

    def measure(self, sampled: Sampled) -> float | str:
        """Seconds the parameter sets take (fastest of the repeats, summed), or why it could not run."""
        if sampled.skipped:
            return sampled.skipped
        total = 0.0
        try:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION READ ONLY")
                self.conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(f"{int(self.settings.verify_timeout_ms)}ms")))
                self.conn.execute("SET LOCAL plan_cache_mode = auto")  # custom plans for the sampled values
                self.conn.execute(sql.SQL("PREPARE {} AS ").format(sql.Identifier(PREPARED)) + sql.SQL(sampled.text))
                for values in sampled.params:
                    total += self._fastest(values)
        except Exception as exc:  # read-only refusal (a write), timeout, a value the type refuses
            return f"not timed: {str(exc).strip().splitlines()[0][:200]}"
        finally:
            self.conn.execute("DEALLOCATE ALL")  # a PREPARE outlives a rolled-back transaction
        return total

    def _fastest(self, values: list[str | None]) -> float:
        """Server-side execution time in seconds (EXPLAIN ANALYZE's, without per-node timing): the round trip
        and the client are left out, which dominate short queries on a busy machine."""
        args = sql.SQL(", ").join(sql.NULL if v is None else sql.Literal(v) for v in values)
        tail = sql.SQL("({})").format(args) if values else sql.SQL("")
        run = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) EXECUTE {}").format(sql.Identifier(PREPARED)) + tail
        self.conn.execute(run).fetchall()  # warm the caches once
        best = float("inf")
        for _ in range(max(1, int(self.settings.verify_repeats))):
            plan = self.conn.execute(run).fetchone()[0][0]
            best = min(best, float(plan["Execution Time"]) / 1000.0)
        return best


def timed(conn: Any, settings: TuningSettings, samples: list[Sampled]) -> dict[str, float | str]:
    """queryid -> seconds (or why not timed) for every sampled query."""
    timer = Timer(conn, settings)
    return {s.queryid: timer.measure(s) for s in samples}


def time_verdict(samples: list[Sampled], before: dict[str, float | str], after: dict[str, float | str],
                 threshold: float) -> tuple[bool, float, dict[str, Any]] | None:
    """(keep, percent saved, evidence) over the queries timed both times, weighted by calls; None when none was."""
    both = [s for s in samples if isinstance(before.get(s.queryid), float) and isinstance(after.get(s.queryid), float)]
    if not both:
        return None
    was = sum(s.calls * float(before[s.queryid]) for s in both)
    now = sum(s.calls * float(after[s.queryid]) for s in both)
    saved = 0.0 if was <= 0 else 100.0 * (1 - now / was)
    evidence = {"timed_queries": len(both), "parameter_sets": sum(len(s.params) for s in both),
                "time_before_ms": round(was * 1000, 3), "time_after_ms": round(now * 1000, 3),
                "time_savings_percent": round(saved, 1), "time_threshold_percent": threshold}
    return saved >= threshold, saved, evidence
