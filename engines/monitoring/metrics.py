"""The metrics rules can name: every health check's value, plus a few derived ones, with their units.

``avg_response_time`` and ``response_time`` are the health check's round trip in ms (the seed's name
and the check's name). Host CPU, memory and disk use (``cpu_usage``, ``memory_usage``, ``disk_usage``)
come from node_exporter or psutil when a database declares ``host_metrics`` (engines/monitoring/host.py);
Redis also reports ``cpu_usage`` from INFO. Databases add their own metrics (``metrics:``,
engines/monitoring/custom.py): rules name them like any other.
"""

from __future__ import annotations

from typing import Any

from engines.monitoring.rules import BYTES, NUMBER, PERCENT, TIME_MS, TIME_S

METRICS: dict[str, str] = {
    "up": NUMBER,                          # 1 reachable, 0 down
    "avg_response_time": TIME_MS, "response_time": TIME_MS,
    "database_size": BYTES, "largest_table": BYTES,
    "connections": PERCENT, "connected_clients": PERCENT,
    "long_running_queries": NUMBER, "idle_in_transaction": TIME_S, "blocked_queries": NUMBER,
    "cache_hit_ratio": PERCENT, "innodb_buffer_pool_hit_ratio": PERCENT,
    "replication_lag": TIME_S, "inactive_replication_slots": NUMBER,
    "transaction_id_age": PERCENT, "sequences": PERCENT, "dead_tuples": PERCENT, "invalid_indexes": NUMBER,
    "query_performance": PERCENT,          # worst regression vs baseline, percent
    "aborted_connections": NUMBER, "slow_queries": NUMBER,
    "memory": PERCENT, "evictions": NUMBER, "cpu_usage": PERCENT, "memory_usage": PERCENT, "disk_usage": PERCENT,
    "heap": PERCENT, "disk": PERCENT, "unassigned_shards": NUMBER,
    "critical_checks": NUMBER, "warning_checks": NUMBER, "unknown_checks": NUMBER,
}
ALIASES = {"avg_response_time": "response_time"}


def known_metrics(custom: dict[str, str] | None = None) -> dict[str, str]:
    """Metric name -> unit kind, with any custom metrics added."""
    return {**METRICS, **(custom or {})}


HOST_METRICS = ("cpu_usage", "memory_usage", "disk_usage")
CUSTOM_HINT = "custom metric"  # the hint of a custom metric's check: from_report takes its value as is


def host_metric_names() -> set[str]:
    """The metrics ``host_metrics`` adds to a database's health report."""
    return set(HOST_METRICS)


def from_report(report: dict[str, Any]) -> dict[str, float | None]:
    """Flat metric values from a health report (``HealthReport.to_dict()``); missing data is absent.
    Custom metrics (checks whose hint is ``custom metric``) count under their own names."""
    out: dict[str, float | None] = {"up": 0.0 if report.get("status") == "down" else 1.0}
    statuses = [c["status"] for c in report.get("checks", [])]
    for status in ("critical", "warning", "unknown"):
        out[f"{status}_checks"] = float(statuses.count(status))
    for c in report.get("checks", []):
        name, value = c["check"], c.get("value")
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and name not in METRICS and c.get("hint") == CUSTOM_HINT:
            out[name] = float(value)
        elif name in METRICS and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (METRICS[name] != PERCENT or c.get("unit") == "%"):
            out[name] = float(value)
    for alias, source in ALIASES.items():
        if source in out:
            out[alias] = out[source]
    return out
