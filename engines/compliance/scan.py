"""The compliance scan: discovery + security audit + backup facts -> standards, recommendations, diff."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from engines.compliance.discovery import run_discovery
from engines.compliance.model import DiscoveryReport, diff_discoveries
from engines.compliance.standards import Evidence, evaluate, recommendations, summarize
from engines.config import Config, DatabaseConfig
from engines.history import SUCCEEDED, HistoryStore, as_utc

SCRIPT = "compliance_scan"
SCHEMA_VERSION = 1


def _age_days(started_at: str | None, now: datetime) -> float | None:
    if not started_at:
        return None
    return (now - as_utc(datetime.fromisoformat(started_at))).total_seconds() / 86400


def backup_facts(cfg: Config, history: HistoryStore, database_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Encryption and retention from the config; backups and the last restore drill from history."""
    now = now or datetime.now(timezone.utc)
    section = cfg.database_scripts.backup
    backups = history.query(script_type="backup", database_id=database_id, status=SUCCEEDED, limit=1000)
    drills = history.query(script_type="restore_drill", database_id=database_id, limit=1)
    retention: dict[str, Any] | None = None
    if section.retention_days or (section.retention and any(section.retention.model_dump().values())):
        retention = {"retention_days": section.retention_days,
                     "policy": section.retention.model_dump() if section.retention else None}
    last_drill = None
    if drills:
        d = drills[0]
        ok = d["status"] == SUCCEEDED and bool((d.get("summary") or {}).get("ok"))
        last_drill = {"ok": ok, "at": d["started_at"], "age_days": _age_days(d["started_at"], now),
                      "backup_id": (d.get("summary") or {}).get("backup_id")}
    return {"encryption": section.encryption, "retention": retention, "backups": len(backups),
            "last_backup_at": backups[0]["started_at"] if backups else None,
            "last_backup_age_days": _age_days(backups[0]["started_at"], now) if backups else None,
            "last_drill": last_drill}


def previous_scan(history: HistoryStore, database_id: str) -> dict[str, Any] | None:
    """The last successful compliance scan of ``database_id`` in history, if any."""
    for run in history.query(script_type=SCRIPT, database_id=database_id, status=SUCCEEDED, limit=20):
        summary: dict[str, Any] = run.get("summary") or {}
        if summary.get("discovery"):
            return summary
    return None


def _audit(db: DatabaseConfig, cfg: Config) -> dict[str, Any] | None:
    from engines.security import audit_settings, run_audit
    from engines.security.engine import AUDITORS

    if db.kind not in AUDITORS:
        return None
    section = cfg.database_scripts.security_audit.model_dump()
    return run_audit(db, audit_settings(db, section, {})).to_dict()


def scan_database(db: DatabaseConfig, cfg: Config, history: HistoryStore, settings: dict[str, Any] | None = None,
                  *, audit: dict[str, Any] | None = None, trail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scan ``db``: PII discovery, the security audit (run now unless given), controls of four standards."""
    settings = dict(settings or {})
    discovery = run_discovery(db, settings)
    previous = previous_scan(history, db.id)
    prev_disc = (previous or {}).get("discovery") or {}
    discovery.diff = diff_discoveries(prev_disc.get("findings") if previous else None, discovery.findings,
                                      prev_disc.get("scanned_at"))
    if audit is None and settings.get("security_audit", True):
        audit = _audit(db, cfg)
    evidence = Evidence(discovery, audit, backup_facts(cfg, history, db.id), trail or {})
    controls = evaluate(evidence)
    audit_summary = None
    if audit:
        audit_summary = {k: audit.get(k) for k in ("audited_at", "score", "error")}
    return {"schema_version": SCHEMA_VERSION, "database_id": db.id, "kind": db.kind,
            "scanned_at": discovery.scanned_at, "discovery": discovery.to_dict(),
            "standards_compliance": summarize(controls), "recommendations": recommendations(controls),
            "security_audit": audit_summary, "backup_facts": evidence.backup, "error": discovery.error}


def discovery_of(report: dict[str, Any]) -> DiscoveryReport:
    """The discovery part of a scan report as an object."""
    return DiscoveryReport.from_dict(report["discovery"])


def pii_tables(history: HistoryStore, database_id: str, min_confidence: float = 0.7) -> list[str]:
    """Tables the last compliance scan found personal data in (``users``, ``sales.orders``): what the
    security audit's ``pg.rls_on_pii_tables`` takes as its ``pii_tables`` option instead of guessing."""
    previous = previous_scan(history, database_id)
    if not previous:
        return []
    report = discovery_of(previous)
    return sorted({f.table for f in report.pii() if f.confidence >= min_confidence})
