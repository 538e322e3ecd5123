"""The MySQL/MariaDB workload for index advice, read with a real SQL parser (sqlglot, MySQL dialect).

Sources, in order: ``performance_schema.events_statements_summary_by_digest`` (with one statement text per
digest from ``events_statements_history_long``: EXPLAIN needs values, a digest has ``?``), else the slow
log when it is written to a table (``log_output`` includes TABLE), grouped by the statement with its literals
taken out. Neither: no workload, and the report says what to turn on. Statement texts come from the server's
own logs; they are parsed, never matched with regexes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import sqlglot
from sqlglot import exp

from engines.tuning.pg_workload import Statement
from engines.tuning.targets import Targets
from engines.tuning.workload import QueryShape, Table, TableUse

Query = Callable[..., list[tuple[Any, ...]]]
EQ, RANGE = (exp.EQ, exp.NullSafeEQ), (exp.GT, exp.GTE, exp.LT, exp.LTE)


def _parse(text: str) -> exp.Expression | None:
    try:
        tree = sqlglot.parse_one(text, read="mysql")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
    return tree if isinstance(tree, (exp.Select, exp.Update, exp.Delete)) else None


def normalized(text: str) -> str | None:
    """The statement with every literal replaced by ``?`` (one workload entry per shape), or None when it is
    not a SELECT/UPDATE/DELETE the parser reads."""
    tree = _parse(text)
    if tree is None:
        return None
    return tree.transform(lambda n: exp.Placeholder() if isinstance(n, exp.Literal) else n).sql(dialect="mysql")


def shape(text: str, schema: str, columns: dict[Table, list[str]]) -> QueryShape | None:
    """Equality, range, join and sort columns per table of one statement (its top level)."""
    tree = _parse(text)
    if tree is None:
        return None
    aliases: dict[str, Table] = {}
    for t in tree.find_all(exp.Table):
        table = (t.db or schema, t.name)
        if table in columns:
            aliases[t.alias_or_name] = table
    out = QueryShape(kind=type(tree).__name__.upper(), uses={t: TableUse() for t in aliases.values()})

    def resolve(node: Any) -> tuple[Table, str] | None:
        if not isinstance(node, exp.Column):
            return None
        if node.table:
            table = aliases.get(node.table)
            return (table, node.name) if table and node.name in columns[table] else None
        owners = {t for t in aliases.values() if node.name in columns[t]}
        return (owners.pop(), node.name) if len(owners) == 1 else None

    conditions = [tree.args.get("where")] + [j.args.get("on") for j in tree.args.get("joins") or ()]
    for cond in conditions:
        for part in _conjuncts(cond.this if isinstance(cond, exp.Where) else cond):
            _predicate(part, resolve, out)
    for ordered in (tree.args.get("order") or exp.Order()).expressions:
        ref = resolve(ordered.this)
        if ref:
            out.uses[ref[0]].add("order", ref[1])
    return out


def _conjuncts(node: Any) -> list[Any]:
    if node is None:
        return []
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node.this] if isinstance(node, exp.Paren) else [node]


def _predicate(node: Any, resolve: Callable[[Any], tuple[Table, str] | None], out: QueryShape) -> None:
    if isinstance(node, exp.In) or isinstance(node, exp.Between):
        ref = resolve(node.this)
        if ref:
            out.uses[ref[0]].add("eq" if isinstance(node, exp.In) else "range", ref[1])
        return
    if not isinstance(node, EQ + RANGE):
        return
    left, right = resolve(node.this), resolve(node.expression)
    if left and right:
        if isinstance(node, EQ) and left[0] != right[0]:
            out.uses[left[0]].add("join", left[1])
            out.uses[right[0]].add("join", right[1])
        return
    ref, other = (left, node.expression) if left else (right, node.this)
    if ref is None or any(isinstance(n, exp.Column) for n in other.walk()):
        return
    out.uses[ref[0]].add("eq" if isinstance(node, EQ) else "range", ref[1])


def table_columns(q: Query, schema: str) -> dict[Table, list[str]]:
    """Columns of the schema's base tables."""
    found: dict[Table, list[str]] = {}
    for table, column in q("SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN"
                           " information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name ="
                           " c.table_name WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE'"
                           " ORDER BY c.table_name, c.ordinal_position", (schema,)):
        found.setdefault((schema, str(table)), []).append(str(column))
    return found


def read_workload(q: Query, schema: str, variables: dict[str, Any], memory: dict[str, Any], limits: list[str],
                  targets: Targets) -> list[Statement]:
    """The schema's statements since the previous run, from the digest table or the slow-log table."""
    raw = _from_digests(q, schema, limits) if _on(variables.get("performance_schema")) else None
    if raw is None:
        why = "performance_schema is OFF (a restart-only setting)"
        if "TABLE" not in str(variables.get("log_output", "")).upper() or not _on(variables.get("slow_query_log")):
            limits.append(f"indexes: no workload: {why} and the slow log is not written to a table (log_output="
                          f"{variables.get('log_output')}, slow_query_log={variables.get('slow_query_log')}); SET GLOBAL "
                          "log_output='FILE,TABLE', slow_query_log=ON and a small long_query_time, or enable "
                          "performance_schema at the next restart")
            return []
        limits.append(f"indexes: {why}: the workload is read from the slow log table (mysql.slow_log), which sees "
                      "only statements slower than long_query_time")
        raw = _from_slow_log(q, schema, memory)
    cols = table_columns(q, schema)
    out = []
    for qid, sample, calls, total_ms in sorted(raw, key=lambda r: -r[3]):
        got = shape(sample, schema, cols)
        if got is not None and got.uses and targets.selects(qid, sample, set(got.uses), calls, total_ms):
            out.append(Statement(qid, sample, calls, total_ms, got))
    return out


def _on(value: Any) -> bool:
    return str(value).upper() in ("ON", "1")


def _from_digests(q: Query, schema: str, limits: list[str]) -> list[tuple[str, str, int, float]] | None:
    """(digest, a statement text, calls, ms) per digest; None when the tables cannot be read."""
    try:
        rows = q("SELECT d.digest, d.count_star, d.sum_timer_wait / 1e9, (SELECT h.sql_text FROM"
                 " performance_schema.events_statements_history_long h WHERE h.digest = d.digest LIMIT 1)"
                 " FROM performance_schema.events_statements_summary_by_digest d WHERE d.schema_name = %s", (schema,))
    except Exception as exc:
        limits.append(f"indexes: the digest table cannot be read ({str(exc)[:120]})")
        return None
    missing = sum(1 for r in rows if r[3] is None)
    if missing:
        limits.append(f"indexes: {missing} digests have no statement text in events_statements_history_long "
                      "(enable the events_statements_history_long consumer): not analysed")
    return [(str(d), str(text), int(n), float(ms)) for d, n, ms, text in rows if text is not None]


def _from_slow_log(q: Query, schema: str, memory: dict[str, Any]) -> list[tuple[str, str, int, float]]:
    """Slow-log statements after the previous run's watermark, grouped by their literal-free form."""
    since = memory.get("slow_log_since") or "1970-01-02"
    rows = q("SELECT sql_text, start_time, TIME_TO_SEC(query_time) * 1000 FROM mysql.slow_log WHERE db = %s"
             " AND start_time > %s ORDER BY start_time", (schema, since))
    groups: dict[str, list[Any]] = {}
    for text, started, ms in rows:
        text = text.decode() if isinstance(text, bytes) else str(text)
        key = normalized(text)
        if key is None:
            continue
        entry = groups.setdefault(key, [text, 0, 0.0])
        entry[1] += 1
        entry[2] += float(ms)
        memory["slow_log_since"] = str(started)
    return [(hashlib.sha1(k.encode()).hexdigest()[:32], v[0], v[1], v[2]) for k, v in groups.items()]
