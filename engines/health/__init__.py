"""Health checks: each check reports a CheckResult; a report collects them."""

from engines.health.basic import CheckResult, HealthReport, run_basic_health, run_health

__all__ = ["CheckResult", "HealthReport", "run_basic_health", "run_health"]
