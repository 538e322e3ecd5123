"""What discovery produces: column findings, the report around them, and the diff against the previous scan."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engines.errors import DbfleetError

CATEGORIES = ("email", "phone", "person_name", "card_number", "iban", "national_id", "dob", "address",
              "ip", "health", "free_text_with_pii")
PII, UNKNOWN, SUPPRESSED = "pii", "unknown", "suppressed"
# what a validator's success is called in evidence text ("47/50 sampled values valid IBANs")
NOUNS = {"email": "e-mail addresses", "phone": "phone numbers", "person_name": "person names",
         "card_number": "card numbers (Luhn + IIN)", "iban": "IBANs", "national_id": "national ids",
         "dob": "plausible birth dates", "address": "street addresses", "ip": "IP addresses",
         "health": "medical codes or terms", "free_text_with_pii": "texts embedding PII"}


@dataclass
class ColumnFinding:
    """One column's classification. ``evidence`` holds counts and signal names, never sampled values."""

    table: str
    column: str | None  # None: the whole table (e.g. no SELECT privilege on it)
    category: str | None
    confidence: float
    status: str = PII
    evidence: dict[str, Any] = field(default_factory=dict)
    source: str = "sample"  # name | sample | name+sample | comment
    reason: str | None = None  # why the status is unknown

    @property
    def key(self) -> str:
        """``table.column`` (the table alone for table-level findings)."""
        return f"{self.table}.{self.column}" if self.column else self.table


@dataclass
class DiscoveryReport:
    """Every PII finding of one discovery run over one database."""

    database_id: str
    kind: str
    scanned_at: str
    duration_ms: float
    tables_scanned: int
    columns_scanned: int
    findings: list[ColumnFinding]
    suppressed: list[ColumnFinding] = field(default_factory=list)
    sample_size: int = 0
    error: str | None = None
    diff: dict[str, Any] | None = None

    def pii(self) -> list[ColumnFinding]:
        """Findings with status ``pii``, most confident first."""
        return sorted((f for f in self.findings if f.status == PII), key=lambda f: (-f.confidence, f.key))

    def unknown(self) -> list[ColumnFinding]:
        """Findings discovery could not settle (no privilege, timeout)."""
        return [f for f in self.findings if f.status == UNKNOWN]

    def categories(self) -> dict[str, list[str]]:
        """category -> ``table.column`` keys holding it."""
        out: dict[str, list[str]] = {}
        for f in self.pii():
            out.setdefault(str(f.category), []).append(f.key)
        return out

    def tables_with(self, *categories: str) -> list[str]:
        """Tables holding a column of one of ``categories`` (every category when none is given)."""
        return sorted({f.table for f in self.pii() if not categories or f.category in categories})

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with findings by category."""
        out = asdict(self)
        out["categories"] = self.categories()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoveryReport:
        """Rebuild from :meth:`to_dict` output (a scan stored in history)."""
        fields = {k: v for k, v in data.items() if k != "categories"}
        fields["findings"] = [ColumnFinding(**f) for f in data.get("findings", [])]
        fields["suppressed"] = [ColumnFinding(**f) for f in data.get("suppressed", [])]
        return cls(**fields)


def diff_discoveries(previous: list[dict[str, Any]] | None, current: list[ColumnFinding],
                     previous_at: str | None = None) -> dict[str, Any]:
    """PII columns new, gone or re-classified since ``previous``; ``messages`` says it in words."""
    before = {_key(f): f.get("category") for f in previous or [] if f.get("status") == PII}
    now = {f.key: f.category for f in current if f.status == PII}
    new = sorted(k for k in now if k not in before)
    gone = sorted(k for k in before if k not in now)
    changed = sorted(k for k in now if k in before and before[k] != now[k])
    since = f" since the last scan ({previous_at})" if previous_at else ""
    messages = ([f"new PII column {k} ({now[k]}){since}" for k in new] if previous is not None else [])
    messages += [f"PII column {k} ({before[k]}) no longer found{since}" for k in gone]
    messages += [f"PII column {k} re-classified {before[k]} -> {now[k]}{since}" for k in changed]
    return {"new": new if previous is not None else [], "gone": gone, "changed": changed,
            "previous": previous_at, "messages": messages}


def _key(f: dict[str, Any]) -> str:
    return f"{f['table']}.{f['column']}" if f.get("column") else str(f["table"])


class ComplianceRefused(DbfleetError):
    """A compliance action refused before writing anything (prod without --i-know, a job already done, ...)."""
