"""Run every check of a database's kind over one read-only connection and collect the findings.

Checks report into the report (the barman shape): a check that cannot look yields ``unknown`` with
the reason, a database that cannot be reached yields a report with ``error`` set; nothing raises
except bad input (a kind without checks, an exclude naming no check).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

from engines.config import DatabaseConfig
from engines.connectors import Connector, open_connector
from engines.errors import ConfigError, DbfleetError
from engines.kinds import kinds_with, load, supports
from engines.secrets import scrub
from engines.security.model import UNKNOWN, AuditReport, Finding
from engines.security.registry import Check, CheckSet, Unknowable

# the audited kinds (registry column ``auditor``), kept as a name for callers
AUDITORS = kinds_with("auditor")


def auditor(kind: str) -> ModuleType:
    """The check module of ``kind``; kinds without checks raise a ConfigError listing those with."""
    if not supports(kind, "auditor"):
        raise ConfigError([("kind", f"no security checks for {kind!r}; audited kinds: {', '.join(AUDITORS)}")])
    module: ModuleType = load(kind, "auditor")
    return module


def checks_for(kind: str) -> CheckSet:
    """Every check registered for ``kind``."""
    checks: CheckSet = auditor(kind).CHECKS
    return checks


def audit_settings(db: DatabaseConfig, section: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Merge ``database_scripts.security_audit``, the database's ``options.security_audit`` and run options.

    Lists of excluded check ids add up; other keys: the more specific source wins.
    """
    per_db = dict(db.options.get("security_audit") or {})
    merged = {**section, **per_db, **options}
    merged["exclude"] = sorted({*section.get("exclude", []), *per_db.get("exclude", []),
                                *options.get("exclude", [])})
    return merged


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}" if not isinstance(exc, Unknowable) else text)


def run_check(check: Check, probe: Any) -> Finding:
    """One check's finding; a check that cannot look is ``unknown`` with the reason."""
    base: dict[str, Any] = {"check_id": check.id, "title": check.title, "severity": check.severity, "cis": check.cis}
    try:
        v = check.run(probe)
    except Exception as exc:  # a missing privilege, a setting this version lacks, an old server
        return Finding(status=UNKNOWN, remediation=check.remediation, reason=_reason(exc), **base)
    return Finding(status=v.status, evidence=v.evidence, remediation=v.remediation or check.remediation, **base)


def run_audit(db: DatabaseConfig, settings: dict[str, Any] | None = None,
              factory: Callable[[DatabaseConfig], Connector] = open_connector) -> AuditReport:
    """Audit ``db`` read-only; ``settings`` as built by :func:`audit_settings`."""
    settings = dict(settings or {})
    module = auditor(db.kind)
    exclude = set(settings.get("exclude", []))
    unknown = sorted(exclude - set(module.CHECKS.checks))
    if unknown:
        raise ConfigError([("exclude", f"no {db.kind} check has id {', '.join(unknown)} "
                                       f"(dbfleet audit-checks {db.kind} lists them)")])
    started = time.perf_counter()
    findings: list[Finding] = []
    version = user = error = None
    try:
        with factory(db) as conn:
            probe = module.open_probe(conn, settings)
            version, user = str(probe.version), getattr(probe, "user", db.user)
            findings = [run_check(c, probe) for c in module.CHECKS if c.id not in exclude]
    except DbfleetError as exc:
        error = scrub(str(exc))
    except Exception as exc:  # a driver error before the first check: the database cannot be audited
        error = scrub(f"{db.kind} database {db.id!r}: {type(exc).__name__}: {exc}")
    return AuditReport(
        database_id=db.id, kind=db.kind, server_version=version, user=user,
        audited_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        findings=findings, excluded=sorted(exclude), error=error)
