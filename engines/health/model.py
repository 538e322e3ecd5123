"""What health checks produce: a verdict per check and a report per database (no imports of the checks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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


__all__ = ["CRITICAL", "OK", "UNKNOWN", "WARNING", "CheckResult", "HealthReport"]
