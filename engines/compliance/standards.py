"""GDPR, PCI-DSS, HIPAA and SOX controls evaluated from PII discovery, the security audit and backup facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from engines.compliance.model import DiscoveryReport

PASS, FAIL, REVIEW, NA = "pass", "fail", "needs_review", "not_applicable"
RISKS = ("critical", "high", "medium", "low")
STANDARDS = ("gdpr", "pci_dss", "hipaa", "sox")
TRANSIT = ("pg.ssl", "pg.ssl_min_protocol_version", "pg.hba_remote_without_tls", "my.ssl", "my.require_secure_transport")
ACCESS = ("pg.rls_on_pii_tables", "pg.superusers", "pg.login_without_password", "pg.public_schema_create",
          "pg.hba_trust_host", "my.anonymous_users", "my.empty_passwords", "my.root_remote", "my.wildcard_hosts")
AUTH = ("pg.password_encryption", "pg.md5_passwords", "pg.hba_trust_host", "pg.hba_trust_local", "pg.hba_password",
        "pg.login_without_password", "my.empty_passwords", "my.native_password", "my.old_password_plugin")
LOGGING = ("pg.log_connections", "pg.log_disconnections", "pg.log_statement", "pg.pgaudit", "pg.logging_collector",
           "pg.log_line_prefix")
ADMIN = ("pg.superusers", "pg.hba_remote_superuser", "pg.login_without_password", "pg.server_file_roles",
         "my.root_remote", "my.anonymous_users", "my.grant_privilege", "my.super_privilege")
DRILL_MAX_AGE_DAYS = 31
BACKUP_MAX_AGE_DAYS = 2


@dataclass
class Control:
    """One evaluated control with its article / requirement id."""

    standard: str
    control_id: str
    requirement: str
    title: str
    status: str
    risk: str
    evidence: dict[str, Any] = field(default_factory=dict)
    recommendation: str = ""


@dataclass
class Evidence:
    """What the controls read: discovery, the security audit (its to_dict) and backup/trail facts."""

    discovery: DiscoveryReport
    audit: dict[str, Any] | None = None
    backup: dict[str, Any] = field(default_factory=dict)
    trail: dict[str, Any] = field(default_factory=dict)

    def audit_checks(self, ids: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        """(pass | fail | needs_review, evidence) over the audit checks ``ids`` that this kind has."""
        if not self.audit or self.audit.get("error"):
            why = (self.audit or {}).get("error") or f"no security audit for {self.discovery.kind}"
            return REVIEW, {"security_audit": why}
        seen = {f["check_id"]: f["status"] for f in self.audit.get("findings", []) if f["check_id"] in ids}
        if not seen:
            return REVIEW, {"security_audit": f"no {self.discovery.kind} check covers this control"}
        failing = sorted(c for c, s in seen.items() if s == "fail")
        unknown = sorted(c for c, s in seen.items() if s == "unknown")
        status = FAIL if failing else REVIEW if unknown else PASS
        return status, {"checks": seen, **({"failing": failing} if failing else {}),
                        **({"unknown": unknown} if unknown else {})}

    def pii(self, *cats: str) -> list[str]:
        """``table.column`` keys of PII findings in ``cats`` (any category when none given)."""
        return [f.key for f in self.discovery.pii() if not cats or f.category in cats]


def _backup_encryption(ev: Evidence) -> tuple[str, dict[str, Any]]:
    b = ev.backup
    if not b.get("backups"):
        return REVIEW, {"backups": 0, "note": "no backup recorded for this database"}
    return (PASS if b.get("encryption") else FAIL), {"encryption": bool(b.get("encryption")), "backups": b["backups"]}


def _drill(ev: Evidence) -> tuple[str, dict[str, Any]]:
    d = ev.backup.get("last_drill")
    if not d:
        return REVIEW, {"restore_drill": "none recorded"}
    fresh = d.get("age_days") is not None and d["age_days"] <= DRILL_MAX_AGE_DAYS
    return (PASS if d.get("ok") and fresh else FAIL), {"restore_drill": d}


def _retention(ev: Evidence) -> tuple[str, dict[str, Any]]:
    r = ev.backup.get("retention")
    return (PASS if r else FAIL), {"retention": r or "none configured: backups (and the PII in them) are kept forever"}


def _inventory(ev: Evidence) -> tuple[str, dict[str, Any]]:
    unknown = [f.key for f in ev.discovery.unknown()]
    counts = {c: len(k) for c, k in ev.discovery.categories().items()}
    if ev.discovery.error:
        return REVIEW, {"discovery_error": ev.discovery.error}
    return (REVIEW if unknown else PASS), {"pii_columns": counts, **({"not_scanned": unknown[:50]} if unknown else {})}


def _cards_in_clear(ev: Evidence) -> tuple[str, dict[str, Any]]:
    sampled = [f.key for f in ev.discovery.pii() if f.category == "card_number" and f.evidence.get("valid")]
    named = [k for k in ev.pii("card_number") if k not in sampled]
    if sampled:
        return FAIL, {"pan_in_clear": sampled}
    return (REVIEW if named else PASS), {"card_columns_by_name_only": named}


def _special(ev: Evidence) -> tuple[str, dict[str, Any]]:
    hits = ev.pii("health", "national_id", "free_text_with_pii")
    return (REVIEW if hits else PASS), {"special_or_free_text_columns": hits}


def _trail(ev: Evidence) -> tuple[str, dict[str, Any]]:
    if not ev.trail:
        return REVIEW, {"trail": "not verified"}
    return (PASS if ev.trail.get("ok") else FAIL), {"trail": ev.trail}


def _last_backup(ev: Evidence) -> tuple[str, dict[str, Any]]:
    age = ev.backup.get("last_backup_age_days")
    if age is None:
        return FAIL, {"last_backup": "none recorded"}
    drill, _ = _drill(ev)
    ok = age <= BACKUP_MAX_AGE_DAYS
    return (PASS if ok and drill == PASS else FAIL if not ok else REVIEW), {"last_backup_age_days": round(age, 2)}


def _combine(*parts: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    statuses = [p[0] for p in parts]
    status = FAIL if FAIL in statuses else REVIEW if REVIEW in statuses else PASS
    merged: dict[str, Any] = {}
    for _, e in parts:
        merged.update(e)
    return status, merged


Rule = Callable[[Evidence], tuple[str, dict[str, Any]]]
# (standard, control id, requirement, title, risk, applies-when categories (None: always), rule, recommendation)
CONTROLS: list[tuple[str, str, str, str, str, tuple[str, ...] | None, Rule, str]] = [
    ("gdpr", "gdpr.art30", "GDPR Art. 30", "Personal data inventoried (records of processing)", "medium", None,
     _inventory, "grant the scanning role SELECT on every table so each column can be classified"),
    ("gdpr", "gdpr.art32.transit", "GDPR Art. 32(1)(a)", "Personal data encrypted in transit", "high", (),
     lambda ev: ev.audit_checks(TRANSIT), "enable TLS on the server and require it (hostssl / require_secure_transport)"),
    ("gdpr", "gdpr.art32.backups", "GDPR Art. 32(1)(a)", "Backups holding personal data are encrypted", "high", (),
     _backup_encryption, "set database_scripts.backup.encryption: true and take a new backup"),
    ("gdpr", "gdpr.art32.access", "GDPR Art. 32(1)(b)", "Access to personal data is restricted", "high", (),
     lambda ev: ev.audit_checks(ACCESS), "fix the failing access checks of `dbfleet audit` (RLS on PII tables, "
     "no password-less or superfluous superuser logins)"),
    ("gdpr", "gdpr.art32.restore", "GDPR Art. 32(1)(c)", "Availability restorable: a recent restore drill passed",
     "medium", (), _drill, "schedule restore drills (backup.drill_schedule) and fix failing ones"),
    ("gdpr", "gdpr.art5.retention", "GDPR Art. 5(1)(e)", "Storage limitation: backup retention is bounded", "medium",
     (), _retention, "set database_scripts.backup.retention_days or a retention policy"),
    ("gdpr", "gdpr.art9", "GDPR Art. 9 / Art. 25", "Special categories and free-text PII minimised", "medium", (),
     _special, "review health / national-id / free-text columns: pseudonymise or move them out of shared tables"),
    ("pci_dss", "pci.3.4", "PCI-DSS 3.4", "Primary account numbers are unreadable where stored", "critical",
     ("card_number",), _cards_in_clear, "tokenise or encrypt PAN columns; mask staging copies with the `card` rule"),
    ("pci_dss", "pci.3.5", "PCI-DSS 3.5", "Keys protecting stored cardholder data are protected", "high",
     ("card_number",), _backup_encryption, "encrypt backups with a repository key held in a key file or env var"),
    ("pci_dss", "pci.8.3", "PCI-DSS 8.3", "Strong authentication for database users", "high", ("card_number",),
     lambda ev: ev.audit_checks(AUTH), "use scram-sha-256 / caching_sha2 passwords; no trust or empty-password logins"),
    ("pci_dss", "pci.10.2", "PCI-DSS 10.2", "Audit logs record access to cardholder data", "high", ("card_number",),
     lambda ev: ev.audit_checks(LOGGING), "enable connection and statement logging (or pgaudit) and ship the logs"),
    ("hipaa", "hipaa.164.312.a.2.iv", "HIPAA 164.312(a)(2)(iv)", "ePHI encrypted (backups at rest)", "high",
     ("health",), _backup_encryption, "encrypt backups of databases holding health data"),
    ("hipaa", "hipaa.164.312.b", "HIPAA 164.312(b)", "Audit controls record activity on ePHI", "high", ("health",),
     lambda ev: ev.audit_checks(LOGGING), "enable connection/statement logging or pgaudit on ePHI databases"),
    ("hipaa", "hipaa.164.312.e.1", "HIPAA 164.312(e)(1)", "Transmission security for ePHI", "high", ("health",),
     lambda ev: ev.audit_checks(TRANSIT), "require TLS for every remote connection"),
    ("hipaa", "hipaa.164.312.a.1", "HIPAA 164.312(a)(1)", "Access control on ePHI", "high", ("health",),
     lambda ev: ev.audit_checks(ACCESS), "restrict ePHI tables with grants and row-level security"),
    ("sox", "sox.itgc.access", "SOX ITGC access", "Privileged access is restricted and authenticated", "high", None,
     lambda ev: ev.audit_checks(ADMIN), "remove superfluous superusers and remote administrative logins"),
    ("sox", "sox.itgc.change_logging", "SOX ITGC change logging", "Changes are logged and the trail is intact",
     "high", None, lambda ev: _combine(ev.audit_checks(("pg.log_statement", "pg.pgaudit")), _trail(ev)),
     "log DDL (log_statement = ddl or pgaudit) and run `dbfleet compliance trail verify` regularly"),
    ("sox", "sox.itgc.backup", "SOX ITGC backup and recovery", "Recent backups exist and restores are tested",
     "medium", None, _last_backup, "schedule daily backups and monthly restore drills"),
]


def evaluate(ev: Evidence) -> list[Control]:
    """Every control of every standard; controls whose data is absent are ``not_applicable``."""
    out = []
    for std, cid, req, title, risk, applies, rule, fix in CONTROLS:
        if applies is not None and not ev.pii(*applies):
            what = ", ".join(applies) if applies else "personal data"
            out.append(Control(std, cid, req, title, NA, risk, {"scope": f"no {what} found"}))
            continue
        status, evidence = rule(ev)
        out.append(Control(std, cid, req, title, status, risk, evidence, fix if status != PASS else ""))
    return out


def summarize(controls: list[Control]) -> dict[str, dict[str, Any]]:
    """``standards_compliance``: per standard its status (compliant / non_compliant / needs_review) and controls."""
    out = {}
    for std in STANDARDS:
        mine = [c for c in controls if c.standard == std]
        statuses = {c.status for c in mine}
        status = "non_compliant" if FAIL in statuses else "needs_review" if REVIEW in statuses else "compliant"
        applicable = [c for c in mine if c.status != NA]
        out[std] = {"status": status, "controls": [asdict(c) for c in mine],
                    "applicable": bool(applicable), "failing": [c.control_id for c in mine if c.status == FAIL]}
    return out


def recommendations(controls: list[Control]) -> list[dict[str, Any]]:
    """Failing then needs-review controls' fixes, riskiest first, one per distinct fix."""
    todo = sorted((c for c in controls if c.status in (FAIL, REVIEW)),
                  key=lambda c: (RISKS.index(c.risk), c.status != FAIL, c.standard, c.control_id))
    out: dict[str, dict[str, Any]] = {}
    for c in todo:
        entry = out.setdefault(c.recommendation, {"risk": c.risk, "status": c.status, "recommendation":
                                                  c.recommendation, "controls": []})
        entry["controls"].append(f"{c.requirement} ({c.control_id})")
    return list(out.values())
