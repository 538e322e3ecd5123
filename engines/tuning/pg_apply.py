"""Safe apply of index advice on PostgreSQL: one index at a time, proven on the real planner, rolled
back when it does not help, each change recorded with its evidence and how to reverse it.

Rules: only on a primary; ``lock_timeout`` and ``statement_timeout`` on the session; disk headroom of
``estimated size x disk_headroom_factor`` checked first (with the host's free space when the database
is on this machine); ``CREATE INDEX CONCURRENTLY`` and, for rollbacks and a failed build's invalid
leftover, ``DROP INDEX CONCURRENTLY``.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from psycopg import sql

from engines.tuning.base import Change, IndexAdvice, TuningSettings
from engines.tuning.pg_plans import Planner, create_index_sql
from engines.tuning.pg_verify import Sampled, sample, time_verdict, timed
from engines.tuning.pg_workload import Statement, catalog
from engines.tuning.workload import QueryShape, param_count

log = logging.getLogger("dbfleet.tuning")


def drop_index_sql(schema: str, index: str) -> sql.Composed:
    """``DROP INDEX CONCURRENTLY IF EXISTS schema.index``."""
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(index))


def set_timeouts(conn: Any, settings: TuningSettings) -> None:
    """Session ``lock_timeout`` and ``statement_timeout`` for every change statement."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(settings.lock_timeout_ms)}ms")))
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(settings.statement_timeout_ms)}ms")))


APPLY_LOCK = 0x64626674  # "dbft": one apply per database at a time (session advisory lock)


def take_apply_lock(conn: Any) -> bool:
    """True when this session now holds the database's apply lock (released when it closes)."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (APPLY_LOCK,)).fetchone()[0])


def is_primary(conn: Any) -> bool:
    """True when the server is not in recovery."""
    return not bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])


def free_bytes(conn: Any, local: bool) -> int | None:
    """Free space of the data directory's file system, when the database is on this machine and readable."""
    if not local:
        return None
    try:
        path = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
        return int(shutil.disk_usage(path).free)
    except Exception:  # no privilege to read data_directory, or another machine's path
        return None


def index_state(conn: Any, schema: str, index: str) -> bool | None:
    """True valid, False invalid, None absent."""
    row = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                       " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                       (schema, index)).fetchone()
    return None if row is None else bool(row[0])


def weighted(planner: Planner, statements: list[Statement]) -> tuple[float, list[tuple[str, float]]]:
    """Calls-weighted cost of ``statements`` on the real planner, and each one's plain cost."""
    each = []
    for st in statements:
        got = planner.cost(st)
        if got is not None:
            each.append((st.queryid, got[0]))
    calls = {st.queryid: st.calls for st in statements}
    return sum(calls[q] * c for q, c in each), each


def statements_of(advice: IndexAdvice) -> list[Statement]:
    """The advice's queries as statements the planner can re-plan."""
    return [Statement(q.queryid, q.query, q.calls, 0.0, QueryShape("SELECT", params=param_count(q.query)))
            for q in advice.queries]


class IndexApplier:
    """Builds advised indexes one by one on an autocommit session and proves each."""

    def __init__(self, conn: Any, database_id: str, settings: TuningSettings, local: bool) -> None:
        self.conn = conn
        self.database_id = database_id
        self.settings = settings
        self.local = local
        self.planner = Planner(conn)

    def apply(self, advice: IndexAdvice) -> Change:
        """Create, prove, keep or roll back one index; the change says which and why."""
        change = Change("create_index", self.database_id,
                        {"schema": advice.schema, "table": advice.table, "index": advice.name,
                         "columns": advice.columns}, "failed", {},
                        {"action": "drop_index", "schema": advice.schema, "index": advice.name,
                         "statement": drop_index_sql(advice.schema, advice.name).as_string(self.conn)},
                        advice.statement)
        if index_state(self.conn, advice.schema, advice.name) is not None:
            change.evidence["reason"] = f"an index named {advice.name} already exists: nothing done"
            change.status = "skipped"
            return change
        room = self.headroom(advice)
        if room:
            change.evidence["reason"] = room
            return change
        statements = statements_of(advice)
        before, before_each = weighted(self.planner, statements)
        samples = self.samples(statements)
        times_before = timed(self.conn, self.settings, samples) if samples else {}
        set_timeouts(self.conn, self.settings)
        try:
            self.conn.execute(create_index_sql(advice.schema, advice.table, advice.columns, advice.name))
        except Exception as exc:
            change.evidence["reason"] = f"CREATE INDEX CONCURRENTLY failed: {str(exc).strip().splitlines()[0][:300]}"
            duplicate = getattr(exc, "sqlstate", None) == "42P07"  # someone else's index by that name: not ours
            change.evidence["cleanup"] = "left alone (not built by this run)" if duplicate else self.cleanup(advice)
            return change
        after, after_each = weighted(self.planner, statements)
        change.evidence |= {"cost_before": round(before, 2), "cost_after": round(after, 2),
                            "queries_before": before_each, "queries_after": after_each,
                            "threshold_percent": self.settings.min_cost_savings}
        saved = 0.0 if before <= 0 else 100.0 * (1 - after / before)
        change.evidence["savings_percent"] = round(saved, 1)
        keep, why = saved >= self.settings.min_cost_savings, (
            f"the real planner shows {saved:.1f}% less cost, under the {self.settings.min_cost_savings:g}% threshold")
        change.evidence["decided_by"] = "plan cost"
        if samples and before > 0 and after >= before:
            # the planner does not use the new index for any of its queries: whatever the timed runs show is
            # cache warm-up or noise, not the index (MariaDB's path has the same rule: no use, no keep)
            keep, why = False, "the planner does not use the index for these queries (cost unchanged)"
            change.evidence["decided_by"] = "plan (index unused; timings not taken)"
        elif samples:
            keep, why = self.by_time(change, samples, times_before, keep, why)
        if keep:
            change.status = "kept"
            return change
        self.conn.execute(drop_index_sql(advice.schema, advice.name))
        change.status = "rolled_back"
        change.evidence["reason"] = f"{why}: dropped again"
        return change

    def samples(self, statements: list[Statement]) -> list[Sampled]:
        """Parameter sets for the timed executions (``verify: execute``), else none."""
        if self.settings.verify != "execute":
            return []
        cat = catalog(self.conn)
        return [sample(self.conn, st, cat, int(self.settings.verify_samples)) for st in statements]

    def by_time(self, change: Change, samples: list[Sampled], before: dict[str, float | str], keep: bool,
                why: str) -> tuple[bool, str]:
        """The decision on measured time when some query could be timed both times (else the cost decision)."""
        after = timed(self.conn, self.settings, samples)
        change.evidence["not_timed"] = {q: w for q, w in {**before, **after}.items() if isinstance(w, str)}
        verdict = time_verdict(samples, before, after, self.settings.min_time_savings)
        if verdict is None:
            change.evidence["decided_by"] = "plan cost (no query could be timed)"
            return keep, why
        keep, saved, evidence = verdict
        change.evidence |= evidence | {"decided_by": "measured time"}
        return keep, (f"timed executions of sampled parameters show {saved:.1f}% less time, under the "
                      f"{self.settings.min_time_savings:g}% threshold")

    def headroom(self, advice: IndexAdvice) -> str | None:
        """Why there is not room for the index (estimated size x factor), or None."""
        need = int((advice.estimated_bytes or 0) * self.settings.disk_headroom_factor)
        free = free_bytes(self.conn, self.local)
        if free is not None and need > free:
            return f"needs about {need} bytes free (estimated size x {self.settings.disk_headroom_factor:g}), has {free}"
        return None

    def cleanup(self, advice: IndexAdvice) -> str:
        """Drop the invalid index a failed concurrent build leaves behind."""
        state = index_state(self.conn, advice.schema, advice.name)
        if state is None:
            return "no index left behind"
        try:
            self.conn.execute(drop_index_sql(advice.schema, advice.name))
        except Exception as exc:  # e.g. the same lock timeout: never wait on the writers to clean up
            drop = drop_index_sql(advice.schema, advice.name).as_string(self.conn)
            return (f"the invalid index {advice.name} is still there ({str(exc).strip().splitlines()[0][:120]}): "
                    f"run {drop} (the index_hygiene invalid_indexes check lists it)")
        return f"dropped the {'invalid ' if state is False else ''}index {advice.name} the failed build left"


def revert_change(conn: Any, change: dict[str, Any], settings: TuningSettings) -> dict[str, Any]:
    """Run the reverse of one recorded change (idempotent: an index already gone is fine)."""
    reverse = change.get("reverse") or {}
    if reverse.get("action") in ("reset_setting", "set_setting"):
        from engines.tuning.pg_settings import revert_setting

        return {"change_id": change.get("change_id"), "statement": revert_setting(conn, reverse), "result": "reverted"}
    if reverse.get("action") == "drop_mview":
        from engines.tuning.pg_layout import drop_view

        return {"change_id": change.get("change_id"), "statement": drop_view(conn, reverse), "result": "dropped"}
    if reverse.get("action") == "unpartition":
        from engines.tuning.pg_partition import revert_partition

        return {"change_id": change.get("change_id"), "statement": "swap back to the original table",
                "result": revert_partition(conn, reverse, settings)}
    if reverse.get("action") != "drop_index":
        raise ValueError(f"change {change.get('change_id')} has no reversible action ({reverse.get('action')!r})")
    set_timeouts(conn, settings)
    existed = index_state(conn, reverse["schema"], reverse["index"]) is not None
    conn.execute(drop_index_sql(reverse["schema"], reverse["index"]))
    statement = drop_index_sql(reverse["schema"], reverse["index"]).as_string(conn)
    return {"change_id": change.get("change_id"), "statement": statement,
            "result": "dropped" if existed else "already gone"}
