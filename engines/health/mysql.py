"""MySQL/MariaDB health: connections, aborted connections, slow queries, replication, InnoDB buffer pool."""

from __future__ import annotations

from typing import Any

from engines.health.deep import CRITICAL, OK, WARNING, CheckResult, HealthChecks, HealthContext, result

CHECKS = HealthChecks()


def _status(ctx: HealthContext) -> dict[str, str]:
    status: dict[str, str] = ctx.once("status", lambda: dict(ctx.conn._query("SHOW GLOBAL STATUS")))
    return status


@CHECKS.check("connections")
def connections(ctx: HealthContext) -> CheckResult:
    used, limit = int(_status(ctx)["Threads_connected"]), int(ctx.conn._query("SELECT @@max_connections")[0][0])
    warn = ctx.threshold("connections_percent", 80.0)
    return result("connections", round(100.0 * used / limit, 1), "%", warn, max(warn, 95.0),
                  f"{used} of {limit} connections in use: pool connections or raise max_connections")


def _rate(ctx: HealthContext, check: str, counter: str, threshold: str, default: float, hint: str) -> CheckResult:
    new = ctx.delta(counter, float(_status(ctx)[counter]))
    limit = ctx.threshold(threshold, default)
    if new is None:
        return CheckResult(check, OK, None, "since last check", limit, "first run: counting from now")
    return result(check, int(new), "since last check", limit, 10 * limit, hint)


@CHECKS.check("aborted_connections")
def aborted(ctx: HealthContext) -> CheckResult:
    return _rate(ctx, "aborted_connections", "Aborted_connects", "aborted_connections_per_check", 10,
                 "failed logins or clients dropping connections: check credentials and network")


@CHECKS.check("slow_queries")
def slow(ctx: HealthContext) -> CheckResult:
    return _rate(ctx, "slow_queries", "Slow_queries", "slow_queries_per_check", 10,
                 "queries slower than long_query_time: see the slow query log")


@CHECKS.check("replication_lag")
def replication(ctx: HealthContext) -> CheckResult:
    rows: list[dict[str, Any]] = []
    for stmt in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
        try:
            with ctx.conn.conn.cursor() as cur:
                cur.execute(stmt)
                names = [d[0] for d in cur.description or []]
                rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            break
        except Exception as exc:
            if "syntax" not in str(exc).lower():
                raise
    if not rows:
        return CheckResult("replication_lag", OK, 0, "s", None, "not a replica")
    r = rows[0]
    io = r.get("Replica_IO_Running", r.get("Slave_IO_Running"))
    sql = r.get("Replica_SQL_Running", r.get("Slave_SQL_Running"))
    lag = r.get("Seconds_Behind_Source", r.get("Seconds_Behind_Master"))
    if io != "Yes" or sql != "Yes":
        return CheckResult("replication_lag", CRITICAL, lag, "s", None,
                           f"replication stopped (IO {io}, SQL {sql}): {r.get('Last_Error') or 'see SHOW REPLICA STATUS'}")
    warn = ctx.threshold("replication_lag_seconds", 60.0)
    return result("replication_lag", float(lag or 0), "s", warn, 5 * warn, "the replica is behind its source")


@CHECKS.check("innodb_buffer_pool_hit_ratio")
def buffer_pool(ctx: HealthContext) -> CheckResult:
    st = _status(ctx)
    requests, reads = int(st.get("Innodb_buffer_pool_read_requests", 0)), int(st.get("Innodb_buffer_pool_reads", 0))
    if requests < 1000:
        return CheckResult("innodb_buffer_pool_hit_ratio", OK, None, "%", None, "too few reads to judge yet")
    warn = ctx.threshold("cache_hit_ratio_percent", 95.0)
    return result("innodb_buffer_pool_hit_ratio", round(100.0 * (1 - reads / requests), 2), "%", warn, warn - 15,
                  "reads miss the buffer pool: raise innodb_buffer_pool_size", higher_is_worse=False)


__all__ = ["CHECKS", "WARNING"]
