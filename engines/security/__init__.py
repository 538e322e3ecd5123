"""Security audit engine: CIS-style checks over a normal, read-only connection."""

from engines.security.engine import AUDITORS, audit_settings, checks_for, run_audit
from engines.security.model import SEVERITIES, AuditReport, Finding, diff_findings

__all__ = ["AUDITORS", "SEVERITIES", "AuditReport", "Finding", "audit_settings", "checks_for", "diff_findings",
           "run_audit"]
