"""What an audit produces: findings, the report around them, and the diff against the previous run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low", "info")
PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
# points a failing finding costs in the score; unknown findings cost nothing but are counted
WEIGHTS = {"critical": 10, "high": 5, "medium": 3, "low": 1, "info": 0}
SCHEMA_VERSION = 1


@dataclass
class Finding:
    """One check's verdict on one database. ``evidence`` holds values seen, never a secret."""

    check_id: str
    title: str
    severity: str
    status: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str = ""
    cis: str | None = None
    reason: str | None = None  # why the status is unknown


@dataclass
class AuditReport:
    """Every finding of one audit run, with a score from 0 (all failing) to 100 (all passing)."""

    database_id: str
    kind: str
    server_version: str | None
    audited_at: str
    duration_ms: float
    findings: list[Finding]
    excluded: list[str] = field(default_factory=list)
    user: str | None = None
    error: str | None = None  # set when the database could not be audited at all
    diff: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def score(self) -> float:
        """100 × (weight of passing findings / weight of findings whose status is known)."""
        known = [f for f in self.findings if f.status != UNKNOWN]
        total = sum(WEIGHTS[f.severity] for f in known)
        lost = sum(WEIGHTS[f.severity] for f in known if f.status == FAIL)
        return round(100.0 * (total - lost) / total, 1) if total else 0.0

    def counts(self) -> dict[str, dict[str, int]]:
        """{status: {severity: n}} for every status and severity (zeros included)."""
        out = {s: dict.fromkeys(SEVERITIES, 0) for s in (PASS, FAIL, UNKNOWN)}
        for f in self.findings:
            out[f.status][f.severity] += 1
        return out

    def failing(self, at_least: str = "info") -> list[Finding]:
        """Failing findings of severity ``at_least`` or worse, worst first."""
        limit = SEVERITIES.index(at_least)
        bad = [f for f in self.findings if f.status == FAIL and SEVERITIES.index(f.severity) <= limit]
        return sorted(bad, key=lambda f: (SEVERITIES.index(f.severity), f.check_id))

    def finding(self, check_id: str) -> Finding | None:
        """The finding of one check id."""
        return next((f for f in self.findings if f.check_id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON schema (``schema_version`` changes when a field changes meaning)."""
        out = asdict(self)
        out["score"] = self.score
        out["counts"] = self.counts()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditReport:
        """Rebuild a report from :meth:`to_dict` output (e.g. a run stored in history)."""
        fields = {k: v for k, v in data.items() if k not in ("score", "counts")}
        fields["findings"] = [Finding(**f) for f in data.get("findings", [])]
        return cls(**fields)


def diff_findings(previous: list[dict[str, Any]] | None, current: list[Finding],
                  previous_at: str | None = None) -> dict[str, Any]:
    """Failing check ids that are new, fixed (failing before, passing now) or unchanged since ``previous``.

    A check that went from failing to unknown is neither fixed nor new: it is listed under ``unknown``.
    With no previous run every failing check is new. ``previous`` in the result says when the
    compared run happened (None: this is the first audit).
    """
    before = {f["check_id"]: f["status"] for f in previous or []}
    now = {f.check_id: f.status for f in current}
    new = sorted(c for c, s in now.items() if s == FAIL and before.get(c) != FAIL)
    fixed = sorted(c for c, s in before.items() if s == FAIL and now.get(c) == PASS)
    unchanged = sorted(c for c, s in now.items() if s == FAIL and before.get(c) == FAIL)
    unknown = sorted(c for c, s in before.items() if s == FAIL and now.get(c) in (UNKNOWN, None))
    return {"new": new, "fixed": fixed, "unchanged": unchanged, "unknown": unknown, "previous": previous_at}
