"""Redis health: memory vs maxmemory, evictions, eviction policy, persistence, clients, replication, CPU.

CPU and memory are host figures that Redis exposes in INFO; for PostgreSQL and MySQL take them
from node_exporter.
"""

from __future__ import annotations

from typing import Any

from engines.health.deep import CRITICAL, OK, WARNING, CheckResult, HealthChecks, HealthContext, result

CHECKS = HealthChecks()


def _info(ctx: HealthContext) -> dict[str, Any]:
    info: dict[str, Any] = ctx.once("info", ctx.conn.info)
    return info


def _is_broker(ctx: HealthContext) -> bool:
    return "broker" in ctx.db.tags or bool(ctx.db.options.get("celery_broker"))


@CHECKS.check("memory")
def memory(ctx: HealthContext) -> CheckResult:
    info = _info(ctx)
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if not limit:
        return CheckResult("memory", OK, used, "bytes", None, "no maxmemory: bounded only by the host")
    warn = ctx.threshold("memory_percent", 80.0)
    return result("memory", round(100.0 * used / limit, 1), "%", warn, max(warn, 95.0),
                  f"{used} of {limit} bytes used: raise maxmemory or expire keys")


@CHECKS.check("evictions")
def evictions(ctx: HealthContext) -> CheckResult:
    new = ctx.delta("evicted_keys", float(_info(ctx).get("evicted_keys", 0)))
    if new is None:
        return CheckResult("evictions", OK, None, "keys since last check", 0, "first run: counting from now")
    status = (CRITICAL if _is_broker(ctx) else WARNING) if new else OK
    return CheckResult("evictions", status, int(new), "keys since last check", 0,
                       "keys were evicted under memory pressure" if new else None)


@CHECKS.check("maxmemory_policy")
def policy(ctx: HealthContext) -> CheckResult:
    value = str(_info(ctx).get("maxmemory_policy"))
    if _is_broker(ctx) and value != "noeviction":
        return CheckResult("maxmemory_policy", CRITICAL, value, None, "noeviction",
                           "a Celery broker must not evict: queued tasks would vanish; "
                           "CONFIG SET maxmemory-policy noeviction")
    return CheckResult("maxmemory_policy", OK, value, None, "noeviction" if _is_broker(ctx) else None)


@CHECKS.check("persistence")
def persistence(ctx: HealthContext) -> CheckResult:
    info = _info(ctx)
    rdb, aof = info.get("rdb_last_bgsave_status", "ok"), info.get("aof_last_write_status", "ok")
    if rdb != "ok" or aof != "ok":
        return CheckResult("persistence", CRITICAL, f"rdb {rdb}, aof {aof}", None, "ok",
                           "the last snapshot or AOF write failed: check disk space and permissions")
    mode = "aof" if info.get("aof_enabled") else ("rdb" if info.get("rdb_last_save_time") else "none")
    return CheckResult("persistence", OK, mode)


@CHECKS.check("connected_clients")
def clients(ctx: HealthContext) -> CheckResult:
    n = int(_info(ctx).get("connected_clients", 0))
    limit = int(ctx.conn.conn.config_get("maxclients").get("maxclients", 10000))
    warn = ctx.threshold("connections_percent", 80.0)
    return result("connected_clients", round(100.0 * n / limit, 2), "%", warn, max(warn, 95.0),
                  f"{n} of {limit} clients: check for connection leaks")


@CHECKS.check("replication_lag")
def replication(ctx: HealthContext) -> CheckResult:
    info = _info(ctx)
    if info.get("role") != "slave":
        return CheckResult("replication_lag", OK, 0, "s", None, f"primary with {info.get('connected_slaves', 0)} replicas")
    if info.get("master_link_status") != "up":
        return CheckResult("replication_lag", CRITICAL, None, "s", None, "link to the primary is down")
    warn = ctx.threshold("replication_lag_seconds", 60.0)
    return result("replication_lag", float(info.get("master_last_io_seconds_ago", 0)), "s", warn, 5 * warn,
                  "no data from the primary recently")


@CHECKS.check("cpu_usage")
def cpu(ctx: HealthContext) -> CheckResult:
    info = _info(ctx)
    busy = float(info.get("used_cpu_sys", 0)) + float(info.get("used_cpu_user", 0))
    spent, wall = ctx.delta("cpu_seconds", busy), ctx.delta("wall_seconds", ctx.now)
    if spent is None or not wall:
        return CheckResult("cpu_usage", OK, None, "%", None, "first run: measuring from now")
    warn = ctx.threshold("cpu_percent", 75.0)
    return result("cpu_usage", round(100.0 * spent / wall, 2), "%", warn, max(warn, 95.0),
                  "Redis is single-threaded: a busy core means slow commands (SLOWLOG GET)")

