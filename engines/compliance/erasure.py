"""Right to erasure: the subject's rows and every row depending on them (foreign keys), a plan, one
transaction per database, an erasure record without data, and the backups that still hold the subject."""

from __future__ import annotations

import abc
import hashlib
import hmac
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from engines.backup.retention import backup_time, plan
from engines.compliance.base import load
from engines.config import RetentionPolicy
from engines.errors import ConfigError

_SUBJECT = re.compile(r"^(?P<table>[^=]+)\.(?P<column>[^.=]+)=(?P<value>.+)$")
SIMULATE_DAYS = 800


@dataclass(frozen=True)
class Subject:
    """``users.id=42``: the row(s) naming the data subject."""

    table: str
    column: str
    value: str

    def digest(self, key: bytes) -> str:
        """An HMAC of the subject (recorded instead of the value itself)."""
        return hmac.new(key, f"{self.table}.{self.column}={self.value}".encode(), hashlib.sha256).hexdigest()[:24]


@dataclass(frozen=True)
class Link:
    """``compliance.erasure_links`` entry: rows of ``to`` in registry database ``database`` belong to the subject
    whose ``from`` column holds the same value (e.g. users.email -> crm: contacts.email)."""

    source_table: str
    source_column: str
    database: str
    target_table: str
    target_column: str


def parse_links(raw: list[Any]) -> list[Link]:
    """Validate ``erasure_links`` entries: ``{from: table.column, database: <id>, to: table.column}``."""
    out = []
    for i, entry in enumerate(raw or []):
        where = f"compliance.erasure_links[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"from", "database", "to"}:
            raise ConfigError([(where, "expected {from: table.column, database: <registry id>, to: table.column}")])
        ends = []
        for side in ("from", "to"):
            table, dot, column = str(entry[side]).rpartition(".")
            if not dot or not table or not column:
                raise ConfigError([(f"{where}.{side}", f"{entry[side]!r}: expected table.column")])
            ends.append((table, column))
        out.append(Link(ends[0][0], ends[0][1], str(entry["database"]), ends[1][0], ends[1][1]))
    return out


def parse_subject(text: str) -> Subject:
    """Parse ``table.column=value`` (``schema.table.column=value`` too)."""
    m = _SUBJECT.match(text.strip())
    if not m:
        raise ConfigError([("--subject", f"{text!r}: expected table.column=value, e.g. users.id=42")])
    return Subject(m["table"].strip(), m["column"].strip(), m["value"].strip())


@dataclass
class Step:
    """One table of the plan: how its rows hang off the subject, how many, what happens to them."""

    table: str
    via: str  # "subject" or "fk <constraint> -> <parent table>"
    rows: int
    action: str  # delete | anonymize | keep
    depth: int = 0
    rules: dict[str, str] = field(default_factory=dict)


class Eraser(abc.ABC):
    """Plans and performs an erasure on one database.

    Contract: ``plan`` only reads (counts rows by following foreign keys from the subject); ``execute`` applies
    the plan in ONE transaction (dependants first) and returns rows affected per table, or raises with nothing
    changed; it re-counts inside the transaction so what it does matches what it reports.
    """

    kind: ClassVar[str]

    def __init__(self, connector: Any, policies: dict[str, str], rules: dict[str, dict[str, str]]) -> None:
        self.connector, self.policies, self.rules = connector, policies, rules

    @abc.abstractmethod
    def plan(self, subject: Subject) -> list[Step]:
        """Every table holding rows of ``subject``, dependants first, with counts and actions (read-only)."""

    @abc.abstractmethod
    def execute(self, subject: Subject, steps: list[Step], masker: Any) -> dict[str, int]:
        """Apply ``steps`` in one transaction; rows affected per table."""

    @abc.abstractmethod
    def linked_values(self, subject: Subject, column: str) -> list[str]:
        """The distinct non-NULL values of ``column`` in the subject's rows (read-only): what a configured
        cross-database link (``compliance.erasure_links``) follows into another database."""


def eraser_class(kind: str) -> type[Eraser]:
    """The erasure class of ``kind``."""
    cls: type[Eraser] = load(kind, "eraser", "erasure")
    return cls


def check_plan(steps: list[Step], parents: dict[str, list[str]]) -> None:
    """Refuse plans that would break a foreign key: a kept/anonymised table whose parent rows are deleted."""
    action = {s.table: s.action for s in steps}
    bad = [f"{child} ({action[child]}) references {parent} (delete)" for child, ps in parents.items()
           for parent in ps if action.get(child) in ("keep", "anonymize") and action.get(parent) == "delete"]
    if bad:
        raise ConfigError([("compliance.erasure_policies", "; ".join(bad) + ": set the parent to anonymize or the "
                            "child to delete")])


def expiry(backup_ids: list[str], policy: RetentionPolicy | None, retention_days: int | None,
           now: datetime | None = None) -> dict[str, str | None]:
    """backup id -> the first day retention no longer keeps it (daily backups assumed from now on);
    None when no rule ever drops it within :data:`SIMULATE_DAYS` days."""
    now = now or datetime.now(timezone.utc)
    out: dict[str, str | None] = dict.fromkeys(backup_ids)
    if not backup_ids or (not retention_days and not (policy and any(policy.model_dump().values()))):
        return out
    ids = list(backup_ids)
    pending = set(backup_ids)
    for day in range(SIMULATE_DAYS + 1):
        moment = now + timedelta(days=day)
        if day:
            ids.append(moment.strftime("%Y%m%dT%H%M%S") + "000Z-sim")
        kept = plan(ids, policy, retention_days, now=moment)
        for b in [b for b in pending if b not in kept]:
            out[b] = moment.date().isoformat()
            pending.discard(b)
        if not pending:
            break
    return out


def backups_holding(backup_ids: list[str], erased_at: datetime, policy: RetentionPolicy | None,
                    retention_days: int | None) -> list[dict[str, Any]]:
    """Backups taken before the erasure (they may hold the subject) and when retention lets prune drop them."""
    before = [b for b in backup_ids if backup_time(b) <= erased_at]
    dates = expiry(before, policy, retention_days, erased_at)
    return [{"backup_id": b, "taken_at": backup_time(b).isoformat(timespec="seconds"),
             "expires": dates[b] or ("never (no retention rule)" if not (retention_days or policy)
                                     else f"kept beyond {SIMULATE_DAYS} days by the retention policy")}
            for b in before]


def plan_dict(steps: list[Step]) -> list[dict[str, Any]]:
    """The plan as JSON rows (no data: tables, links, counts, actions)."""
    return [asdict(s) for s in steps]
