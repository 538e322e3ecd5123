"""Elasticsearch health: cluster status, unassigned shards, JVM heap, disk vs watermarks (driver-based)."""

from __future__ import annotations

from engines.health.deep import CRITICAL, OK, WARNING, CheckResult, HealthChecks, HealthContext, result

CHECKS = HealthChecks()


@CHECKS.check("cluster_status")
def cluster(ctx: HealthContext) -> list[CheckResult]:
    health = ctx.conn.conn.cluster.health()
    colour = str(health.get("status"))
    status = {"green": OK, "yellow": WARNING}.get(colour, CRITICAL)
    unassigned = int(health.get("unassigned_shards", 0))
    return [CheckResult("cluster_status", status, colour, None, "green",
                        None if status == OK else "replicas or primaries are not allocated"),
            CheckResult("unassigned_shards", WARNING if unassigned else OK, unassigned, "shards", 0,
                        "GET _cluster/allocation/explain says why" if unassigned else None)]


@CHECKS.check("heap")
def heap(ctx: HealthContext) -> CheckResult:
    nodes = ctx.conn.conn.nodes.stats(metric="jvm").get("nodes", {})
    worst = max((float(n["jvm"]["mem"]["heap_used_percent"]) for n in nodes.values()), default=0.0)
    warn = ctx.threshold("heap_percent", 85.0)
    return result("heap", worst, "%", warn, max(warn, 95.0), "JVM heap pressure: GC pauses and circuit breakers")


@CHECKS.check("disk")
def disk(ctx: HealthContext) -> CheckResult:
    nodes = ctx.conn.conn.nodes.stats(metric="fs").get("nodes", {})
    used = [100.0 * (1 - n["fs"]["total"]["available_in_bytes"] / n["fs"]["total"]["total_in_bytes"])
            for n in nodes.values() if n["fs"]["total"].get("total_in_bytes")]
    warn = ctx.threshold("disk_percent", 85.0)  # the default low watermark
    return result("disk", round(max(used, default=0.0), 1), "%", warn, max(warn, 95.0),
                  "past the disk watermark: shards stop being allocated, then indices go read-only")
