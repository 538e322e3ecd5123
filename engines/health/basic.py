"""Health reports: reachability, response time, version, role, size, then each kind's deep checks.

Checks report into a collector (the barman shape) instead of raising: a database that
cannot be reached yields a ``down`` report, not an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from engines.config import DatabaseConfig
from engines.connectors import Connector, open_connector
from engines.errors import DbfleetError
from engines.health.deep import HealthChecks, HealthContext
from engines.health.model import CRITICAL, OK, UNKNOWN, WARNING, CheckResult, HealthReport
from engines.kinds import get_kind, load
from engines.monitoring import custom as custom_metrics
from engines.monitoring import host as host_metrics
from engines.secrets import scrub


def _response_check(seconds: float, limit_ms: float) -> CheckResult:
    ms = round(seconds * 1000, 3)
    status = OK if ms <= limit_ms else WARNING
    hint = None if status == OK else "round trip slower than threshold: check load and network"
    return CheckResult("response_time", status, ms, "ms", limit_ms, hint)


def _collect(conn: Connector, db: DatabaseConfig, checks: list[CheckResult]) -> dict[str, Any]:
    elapsed = conn.ping()
    checks.append(CheckResult("reachability", OK, True))
    checks.append(_response_check(elapsed, db.thresholds.response_time_ms))
    info = conn.describe()
    checks.append(CheckResult("version", OK, info.version))
    checks.append(CheckResult("role", OK, info.role))
    checks.append(CheckResult("database_size", OK, info.size_bytes, "bytes"))
    return info.to_dict()


def _deep(conn: Connector, db: DatabaseConfig, memory: dict[str, Any],
          context: dict[str, Any] | None = None) -> list[CheckResult]:
    if get_kind(db.kind).health is None:  # the registry's ``health`` column: sqlite has basic checks only
        return []
    checks: HealthChecks = load(db.kind, "health")
    return checks.run(HealthContext(conn, db, memory, scratch=dict(context or {})))


def run_health(db: DatabaseConfig, factory: Callable[[DatabaseConfig], Connector] = open_connector,
               memory: dict[str, Any] | None = None, deep: bool = True,
               context: dict[str, Any] | None = None) -> HealthReport:
    """Run the basic checks and (``deep``) the kind's own checks against ``db``; never raises for an unreachable
    server. ``memory`` carries counters and query baselines from the previous run and is updated in place;
    ``context`` hands checks what the caller owns (``wal_archive``: opens a database's WAL archive)."""
    started = time.perf_counter()
    checks: list[CheckResult] = []
    server: dict[str, Any] = {}
    error = None
    try:
        with factory(db) as conn:
            server = _collect(conn, db, checks)
            if deep:
                checks.extend(_deep(conn, db, memory if memory is not None else {}, context))
            checks.extend(custom_metrics.collect(conn, db))  # the database's own metrics (docs/monitoring.md)
    except DbfleetError as exc:
        error = scrub(str(exc))
    except Exception as exc:  # a driver error we did not wrap: still a verdict, not a crash
        error = scrub(f"{db.kind} database {db.id!r}: {type(exc).__name__}: {exc}")
    if error:
        checks.insert(0, CheckResult("reachability", CRITICAL, False, hint=error))
    checks.extend(host_metrics.collect(db, memory if memory is not None else {}))
    worst = {c.status for c in checks}
    status = "down" if error else ("degraded" if worst & {WARNING, CRITICAL} else "up")
    return HealthReport(
        database_id=db.id, kind=db.kind, status=status,
        checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        checks=checks, server=server, error=error,
    )


def run_basic_health(db: DatabaseConfig,
                     factory: Callable[[DatabaseConfig], Connector] = open_connector) -> HealthReport:
    """Only the basic checks (reachability, response time, version, role, size)."""
    return run_health(db, factory, deep=False)


__all__ = ["CRITICAL", "OK", "UNKNOWN", "WARNING", "CheckResult", "HealthReport", "run_basic_health", "run_health"]
