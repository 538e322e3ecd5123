"""Tasks of the ``audits`` queue: the security audit. Resolve -> engine -> diff with the last run -> JSON."""

from __future__ import annotations

import logging
from typing import Any

from engines.compliance.scan import pii_tables
from engines.config import DatabaseConfig
from engines.history import SUCCEEDED
from engines.monitoring.alerts import AlertRule, alert_id
from engines.security import audit_settings, diff_findings, run_audit
from engines.security.model import FAIL, SEVERITIES
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

log = logging.getLogger("dbfleet.tasks")
Result = tuple[dict[str, Any], bool, str | None]
SCRIPT = "security_audit"


def previous_audit(database_id: str) -> dict[str, Any] | None:
    """The report of the last successful audit of ``database_id`` recorded in history, if any."""
    for run in runtime.history().query(script_type=SCRIPT, database_id=database_id, status=SUCCEEDED, limit=20):
        summary: dict[str, Any] = run.get("summary") or {}
        if summary.get("findings"):
            return summary
    return None


def _cache_summary(report: Any) -> None:
    """What the exporter shows: failing findings by severity, unknowns, score, when."""
    counts = report.counts()
    new = set((report.diff or {}).get("new", []))
    data = {"audited_at": report.audited_at, "kind": report.kind, "score": report.score,
            "failing": counts[FAIL], "unknown": sum(counts["unknown"].values()),
            "new_failing": {s: sum(1 for f in report.failing() if f.check_id in new and f.severity == s)
                            for s in SEVERITIES}}
    runtime.remember(runtime.AUDIT_KEY, report.database_id, data)


def do_audit(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Audit ``db``, compare with its previous audit, cache the summary for the exporter."""
    section = runtime.config().database_scripts.security_audit.model_dump()
    settings = audit_settings(db, section, options)
    scanned = pii_tables(runtime.history(), db.id)  # pg.rls_on_pii_tables: discovered PII, not column names
    if scanned and "pii_tables" not in settings:
        settings = {**settings, "pii_tables": scanned, "pii_source": "compliance scan"}
    report = run_audit(db, settings)
    if report.error:
        return report.to_dict(), False, report.error
    previous = previous_audit(db.id) or {}
    report.diff = diff_findings(previous.get("findings"), report.findings, previous.get("audited_at"))
    _cache_summary(report)
    _alert_on_critical(db, report)
    return report.to_dict(), True, None


def _alert_on_critical(db: DatabaseConfig, report: Any) -> None:
    """A new critical finding fires the ``security_audit_critical`` alert (the monitoring engine's channels,
    acknowledge, silences); it resolves when an audit has no failing critical finding."""
    new = [c for c in report.diff["new"] if (f := report.finding(c)) and f.severity == "critical"]
    failing = [f.check_id for f in report.failing("critical")]
    if new:
        log.warning("security audit of %s: new critical findings %s", db.id, ", ".join(new))
    section = runtime.config().database_scripts.monitoring
    rule = AlertRule.external("security_audit_critical", "a security audit found a new critical finding",
                              "critical", section)
    store = runtime.alert_store()
    firing = store.get(alert_id(rule.name, db.id))
    if not new and not (firing and firing["state"] in ("pending", "firing")):
        return
    try:
        transitions = runtime.evaluator().apply(db.id, [(rule, bool(failing), {"critical_findings": failing})])
    except Exception as exc:
        log.error("cannot raise the audit alert for %s: %s", db.id, type(exc).__name__)
        return
    for t in transitions:
        runtime.publish(t)



OPERATIONS = {SCRIPT: do_audit}


@app.task(name="audits.security", bind=True, base=ScriptTask, script_type=SCRIPT)
def security(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """CIS-style security audit of one database (read-only); the result includes the diff with the last run."""
    return self.execute(database_id, options, do_audit)
