"""ClickHouse health from its system tables: parts per partition, merges, replicas, disk space.

Reachability and response time are the basic checks every kind gets (engines/health/basic.py).
"""

from __future__ import annotations

from typing import Any

from engines.health.deep import OK, CannotCheck, CheckResult, HealthChecks, HealthContext, result

CHECKS = HealthChecks()

# MergeTree's own limits: parts_to_delay_insert 150 slows inserts, parts_to_throw_insert 300 refuses them
PARTS_WARN, PARTS_CRIT = 150.0, 300.0


def _rows(ctx: HealthContext, sql_text: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ctx.conn.conn.rows(sql_text)
    return rows


@CHECKS.check("parts_per_partition")
def parts_per_partition(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT database, table, partition, count() AS parts FROM system.parts WHERE active"
                      " GROUP BY database, table, partition ORDER BY parts DESC LIMIT 1")
    if not rows:
        return CheckResult("parts_per_partition", OK, 0, "parts", PARTS_WARN, None)
    top = rows[0]
    warn = ctx.threshold("parts_per_partition", PARTS_WARN)
    return result("parts_per_partition", int(top["parts"]), "parts", warn, max(warn, PARTS_CRIT),
                  f"{top['database']}.{top['table']} partition {top['partition']} has {top['parts']} active parts:"
                  " merges are behind the inserts; insert bigger, less frequent batches")


@CHECKS.check("merges")
def merges(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT count() AS running, max(elapsed) AS longest FROM system.merges")
    running, longest = int(rows[0]["running"]), float(rows[0]["longest"] or 0.0)
    warn = ctx.threshold("merge_seconds", 3600.0)
    return result("merges", round(longest, 1), "s longest", warn, 4 * warn,
                  f"{running} merges running, the longest for {longest:.0f} s: check disk throughput")


@CHECKS.check("replicas")
def replicas(ctx: HealthContext) -> CheckResult:
    rows = _rows(ctx, "SELECT database, table, is_readonly, is_session_expired, absolute_delay, queue_size"
                      " FROM system.replicas")
    if not rows:
        return CheckResult("replicas", OK, 0, "s", None, "no replicated tables")
    broken = [f"{r['database']}.{r['table']}" for r in rows if int(r["is_readonly"]) or int(r["is_session_expired"])]
    if broken:
        return CheckResult("replicas", "critical", len(broken), "read-only tables", None,
                           f"read-only (ZooKeeper session lost?): {', '.join(broken[:5])}")
    warn = ctx.threshold("replication_lag_seconds", 60.0)
    delay = max(float(r["absolute_delay"]) for r in rows)
    return result("replicas", delay, "s", warn, 5 * warn,
                  f"a replica is {delay:.0f} s behind (queue {max(int(r['queue_size']) for r in rows)})")


@CHECKS.check("disk")
def disk(ctx: HealthContext) -> CheckResult:
    try:
        rows = _rows(ctx, "SELECT name, free_space, total_space FROM system.disks")
    except Exception as exc:
        if "system.disks" in str(exc) or "doesn't exist" in str(exc):
            raise CannotCheck("this server has no system.disks (ClickHouse 19.15 and later have it);"
                              " watch the data directory's disk from the host") from None
        raise
    used = [(r["name"], 100.0 * (1 - int(r["free_space"]) / int(r["total_space"]))) for r in rows
            if int(r["total_space"])]
    if not used:
        raise CannotCheck("system.disks reports no disk with a size")
    name, percent = max(used, key=lambda u: u[1])
    warn = ctx.threshold("disk_percent", 90.0)
    return result("disk", round(percent, 1), "%", warn, max(warn, 95.0),
                  f"disk {name} is {percent:.0f}% full: drop old partitions or add space")
