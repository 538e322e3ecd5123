"""MongoDB health from serverStatus and replSetGetStatus (driver-based; tested when a server URL is given)."""

from __future__ import annotations

from engines.health.deep import OK, CheckResult, HealthChecks, HealthContext, result

CHECKS = HealthChecks()


@CHECKS.check("connections")
def connections(ctx: HealthContext) -> CheckResult:
    conns = ctx.conn.conn.admin.command("serverStatus").get("connections", {})
    current, available = int(conns.get("current", 0)), int(conns.get("available", 0))
    warn = ctx.threshold("connections_percent", 80.0)
    return result("connections", round(100.0 * current / max(current + available, 1), 1), "%", warn,
                  max(warn, 95.0), f"{current} connections open, {available} left")


@CHECKS.check("replication_lag")
def replication_lag(ctx: HealthContext) -> CheckResult:
    try:
        status = ctx.conn.conn.admin.command("replSetGetStatus")
    except Exception as exc:
        if "not running with --replSet" in str(exc) or "NoReplicationEnabled" in str(exc):
            return CheckResult("replication_lag", OK, 0, "s", None, "not a replica set")
        raise
    members = status.get("members", [])
    primary = next((m for m in members if m.get("stateStr") == "PRIMARY"), None)
    if primary is None:
        return CheckResult("replication_lag", "critical", None, "s", None, "the replica set has no primary")
    lags = [(primary["optimeDate"] - m["optimeDate"]).total_seconds() for m in members
            if m.get("stateStr") == "SECONDARY" and m.get("optimeDate")]
    warn = ctx.threshold("replication_lag_seconds", 60.0)
    return result("replication_lag", max(lags, default=0.0), "s", warn, 5 * warn, "a secondary is behind")
