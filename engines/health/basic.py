"""Health reports: reachability, response time, version, role, size, then each kind's deep checks.

Checks report into a collector (the barman shape) instead of raising: a database that
cannot be reached yields a ``down`` report, not an exception.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from engines.config import DatabaseConfig
from engines.connectors import Connector, open_connector
from engines.errors import DbfleetError
from engines.secrets import scrub

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"


@dataclass
class CheckResult:
    """One check's verdict."""

    check: str
    status: str
    value: Any = None
    unit: str | None = None
    threshold: Any = None
    hint: str | None = None


@dataclass
class HealthReport:
    """A database's health at one moment: ``status`` is up, degraded or down."""

    database_id: str
    kind: str
    status: str
    checked_at: str
    duration_ms: float
    checks: list[CheckResult] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, name: str) -> CheckResult | None:
        """The result of one check by id."""
        return next((c for c in self.checks if c.check == name), None)


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


# kind -> module with CHECKS (a HealthChecks) for the deep checks; sqlite has none
DEEP = {
    "postgresql": "engines.health.postgres",
    "mysql": "engines.health.mysql",
    "redis": "engines.health.redis",
    "mongodb": "engines.health.mongodb",
    "elasticsearch": "engines.health.elasticsearch",
}


def _deep(conn: Connector, db: DatabaseConfig, memory: dict[str, Any]) -> list[CheckResult]:
    from engines.health.deep import HealthContext

    if db.kind not in DEEP:
        return []
    checks: list[CheckResult] = importlib.import_module(DEEP[db.kind]).CHECKS.run(HealthContext(conn, db, memory))
    return checks


def run_health(db: DatabaseConfig, factory: Callable[[DatabaseConfig], Connector] = open_connector,
               memory: dict[str, Any] | None = None, deep: bool = True) -> HealthReport:
    """Run the basic checks and (``deep``) the kind's own checks against ``db``; never raises for an unreachable
    server. ``memory`` carries counters and query baselines from the previous run and is updated in place."""
    started = time.perf_counter()
    checks: list[CheckResult] = []
    server: dict[str, Any] = {}
    error = None
    try:
        with factory(db) as conn:
            server = _collect(conn, db, checks)
            if deep:
                checks.extend(_deep(conn, db, memory if memory is not None else {}))
    except DbfleetError as exc:
        error = scrub(str(exc))
    except Exception as exc:  # a driver error we did not wrap: still a verdict, not a crash
        error = scrub(f"{db.kind} database {db.id!r}: {type(exc).__name__}: {exc}")
    if error:
        checks.insert(0, CheckResult("reachability", CRITICAL, False, hint=error))
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
