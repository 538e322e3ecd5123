"""PostgreSQL health: PgHero's checks, each one query, thresholds from the database's config.

Disk usage is not readable over SQL: take it from node_exporter (see docs/monitoring.md).
"""

from __future__ import annotations

from typing import Any

from engines.health import pg_wal
from engines.health.deep import OK, WARNING, CannotCheck, CheckResult, HealthChecks, HealthContext, result

CHECKS = HealthChecks()


def _rows(ctx: HealthContext, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return list(ctx.conn.conn.execute(sql, params or None).fetchall())


def _one(ctx: HealthContext, sql: str) -> tuple[Any, ...]:
    return _rows(ctx, sql)[0]


@CHECKS.check("connections")
def connections(ctx: HealthContext) -> CheckResult:
    used, limit = _one(ctx, "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity"
                            " WHERE backend_type = 'client backend'")
    pct = round(100.0 * used / limit, 1)
    warn = ctx.threshold("connections_percent", 80.0)
    r = result("connections", pct, "%", warn, max(warn, 95.0), f"{used} of {limit} connections in use: "
               "add a pooler (PgBouncer) or raise max_connections")
    r.hint = r.hint or f"{used} of {limit}"
    return r


@CHECKS.check("long_running_queries")
def long_running(ctx: HealthContext) -> CheckResult:
    limit = ctx.threshold("long_running_query_seconds", 60.0)
    n, longest = _rows(ctx, "SELECT count(*) FILTER (WHERE now() - query_start > make_interval(secs => %s)),"
                            " coalesce(max(extract(epoch FROM now() - query_start)), 0) FROM pg_stat_activity"
                            " WHERE state = 'active' AND pid <> pg_backend_pid()"
                            " AND backend_type = 'client backend'", (limit,))[0]
    status = OK if not n else ("critical" if float(longest) > 10 * limit else WARNING)
    hint = None if status == OK else (f"{n} queries running longer than {limit:.0f} s (longest "
                                      f"{float(longest):.0f} s): pg_cancel_backend(pid) or set statement_timeout")
    return CheckResult("long_running_queries", status, int(n), "queries", limit, hint)


@CHECKS.check("idle_in_transaction")
def idle_in_transaction(ctx: HealthContext) -> CheckResult:
    limit = ctx.threshold("idle_in_transaction_seconds", 60.0)
    longest = float(_one(ctx, "SELECT coalesce(max(extract(epoch FROM now() - state_change)), 0)"
                              " FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'")[0])
    return result("idle_in_transaction", round(longest, 1), "s", limit, 10 * limit,
                  "a session holds a transaction open while idle: it blocks vacuum and may hold locks; "
                  "set idle_in_transaction_session_timeout")


@CHECKS.check("blocked_queries")
def blocked(ctx: HealthContext) -> CheckResult:
    limit = ctx.threshold("lock_wait_seconds", 5.0)
    n, longest = _one(ctx, "SELECT count(*), coalesce(max(extract(epoch FROM now() - query_start)), 0)"
                           " FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND cardinality(pg_blocking_pids(pid)) > 0")
    status = OK if not n else ("critical" if float(longest) > 12 * limit else WARNING)
    hint = None if status == OK else (f"{n} sessions wait for locks (longest {float(longest):.0f} s); "
                                      "pg_blocking_pids(pid) names the holders")
    return CheckResult("blocked_queries", status, int(n), "sessions", 0, hint)


@CHECKS.check("cache_hit_ratio")
def cache_hit(ctx: HealthContext) -> CheckResult:
    hit, read = _one(ctx, "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()")
    total = int(hit) + int(read)
    if total < 1000:
        return CheckResult("cache_hit_ratio", OK, None, "%", None, "too few reads to judge yet")
    ratio = round(100.0 * int(hit) / total, 2)
    warn = ctx.threshold("cache_hit_ratio_percent", 95.0)
    return result("cache_hit_ratio", ratio, "%", warn, warn - 15, "reads miss shared_buffers: raise "
                  "shared_buffers or memory", higher_is_worse=False)


@CHECKS.check("replication_lag")
def replication_lag(ctx: HealthContext) -> CheckResult:
    in_recovery, lag = _one(ctx, "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN"
                                 " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
                                 " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
                                 " ELSE (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)"
                                 " FROM pg_stat_replication) END")
    warn = ctx.threshold("replication_lag_seconds", 60.0)
    r = result("replication_lag", round(float(lag or 0), 3), "s", warn, 5 * warn,
               "a standby is behind: check its network, disk and hot_standby_feedback")
    r.hint = r.hint or ("this server is a replica" if in_recovery else "largest lag of the standbys")
    return r


@CHECKS.check("inactive_replication_slots")
def inactive_slots(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT slot_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)"
                      " FROM pg_replication_slots WHERE NOT active")
    retained = sum(int(r[1]) for r in rows)
    hint = (f"inactive slots {', '.join(r[0] for r in rows)} retain {retained} bytes of WAL: "
            "drop them with pg_drop_replication_slot() or reconnect their consumer") if rows else None
    return CheckResult("inactive_replication_slots", WARNING if rows else OK, len(rows), "slots", 0, hint)


@CHECKS.check("transaction_id_age")
def xid_age(ctx: HealthContext) -> CheckResult:
    age = int(_one(ctx, "SELECT max(age(datfrozenxid)) FROM pg_database")[0])
    pct = round(100.0 * age / 2_147_483_648, 2)
    warn = ctx.threshold("xid_age_percent", 50.0)
    return result("transaction_id_age", pct, "%", warn, max(warn, 75.0),
                  f"oldest unfrozen transaction id is {age} old: VACUUM (FREEZE) the oldest tables before "
                  "wraparound forces a shutdown")


@CHECKS.check("sequences")
def sequences(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT schemaname || '.' || sequencename, 100.0 * last_value / max_value FROM pg_sequences"
                      " WHERE last_value IS NOT NULL AND increment_by > 0 ORDER BY 2 DESC LIMIT 5")
    worst = round(float(rows[0][1]), 2) if rows else 0.0
    warn = ctx.threshold("sequence_percent", 90.0)
    return result("sequences", worst, "%", warn, max(warn, 98.0), f"sequence {rows[0][0] if rows else ''} is "
                  f"{worst}% used: move the column to bigint")


@CHECKS.check("dead_tuples")
def dead_tuples(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT schemaname || '.' || relname, n_dead_tup, 100.0 * n_dead_tup /"
                      " nullif(n_live_tup + n_dead_tup, 0), last_autovacuum FROM pg_stat_user_tables"
                      " WHERE n_dead_tup > %s ORDER BY 3 DESC NULLS LAST LIMIT 5",
                 (int(ctx.threshold("dead_tuples_min", 10000)),))
    worst = round(float(rows[0][2] or 0), 1) if rows else 0.0
    warn = ctx.threshold("dead_tuples_percent", 20.0)
    hint = (f"{rows[0][0]} has {rows[0][1]} dead tuples ({worst}%), last autovacuum {rows[0][3]}: "
            "autovacuum is behind; tune autovacuum_vacuum_scale_factor or VACUUM it") if rows else ""
    return result("dead_tuples", worst, "%", warn, max(warn, 50.0), hint)


@CHECKS.check("largest_table")
def table_sizes(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
                      " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm')"
                      " AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 2 DESC LIMIT 5")
    largest = int(rows[0][1]) if rows else 0
    top = ", ".join(f"{name} {size}" for name, size in rows)
    return CheckResult("largest_table", OK, largest, "bytes", None, f"largest: {top}" if rows else None)


@CHECKS.check("invalid_indexes")
def invalid_indexes(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid")
    hint = (f"invalid indexes {', '.join(r[0] for r in rows)} (a failed CREATE INDEX CONCURRENTLY): "
            "DROP INDEX CONCURRENTLY and build again") if rows else None
    return CheckResult("invalid_indexes", WARNING if rows else OK, len(rows), "indexes", 0, hint)


@CHECKS.check("query_performance")
def query_performance(ctx: HealthContext) -> CheckResult:
    """Mean time per query id since the previous run vs a slowly moving baseline (pg_stat_statements)."""
    try:
        rows = _rows(ctx, "SELECT queryid::text, calls, total_exec_time FROM pg_stat_statements s"
                          " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
                          " AND queryid IS NOT NULL AND calls > 0")
    except Exception as exc:
        if "pg_stat_statements" in str(exc):
            raise CannotCheck("pg_stat_statements is not installed in this database: add it to "
                              "shared_preload_libraries and CREATE EXTENSION pg_stat_statements") from None
        raise
    allowed = ctx.threshold("query_regression_percent", 50.0)
    min_calls = int(ctx.threshold("query_min_calls", 5))
    state = ctx.memory.setdefault("queries", {})
    worst, regressed = 0.0, []
    for qid, calls, total in rows:
        prev = state.get(qid)
        entry = {"calls": int(calls), "total": float(total), "baseline": prev.get("baseline") if prev else None}
        if prev and int(calls) - prev["calls"] >= min_calls and float(total) >= prev["total"]:
            recent = (float(total) - prev["total"]) / (int(calls) - prev["calls"])
            base = entry["baseline"]
            if base is None or base <= 0:
                entry["baseline"] = recent
            else:
                change = 100.0 * (recent - base) / base
                worst = max(worst, change)
                if change > allowed:
                    regressed.append((qid, round(base, 3), round(recent, 3)))
                else:  # drift slowly with normal variation; a regression never becomes the baseline
                    entry["baseline"] = 0.8 * base + 0.2 * recent
        elif prev and int(calls) - prev["calls"] < min_calls:
            entry = prev  # not enough new calls: keep the old snapshot to measure a longer window
        state[qid] = entry
    regressed.sort(key=lambda r: r[2] / max(r[1], 1e-9), reverse=True)
    slower = "; ".join(f"queryid {q}: {b} ms -> {r} ms" for q, b, r in regressed[:3])
    hint = f"{slower} (the text: pg_stat_statements by queryid)" if regressed else None
    return CheckResult("query_performance", WARNING if regressed else OK, round(worst, 1), "%", allowed, hint)


pg_wal.register(CHECKS)  # WAL archive lag, failures, gaps, slot retention, wal stream (engines/health/pg_wal.py)
