"""Rule evaluation on every health result: pending -> firing -> resolved, with repeats, silences and acks.

State lives in the :class:`AlertStore`, so a restarted worker carries on. One alert per (rule,
database): a rule that keeps holding is one alert, never a stream of duplicates. Notifications
produced by one evaluation are grouped per channel into one message.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from engines.config import AlertRuleConfig, MonitoringSection
from engines.history import as_utc
from engines.monitoring.metrics import from_report, known_metrics
from engines.monitoring.rules import Node, metric_names, parse, parse_duration
from engines.monitoring.store import FIRING, PENDING, RESOLVED, Alert, AlertStore

log = logging.getLogger("dbfleet.alerts")


@dataclass(frozen=True)
class AlertRule:
    """A compiled rule."""

    name: str
    expr: str
    node: Node | None  # None: the condition is computed by another engine (see external)
    for_seconds: float
    severity: str
    labels: dict[str, str]
    channels: list[str]
    repeat_seconds: float
    databases: list[str] | None = None
    tags: list[str] | None = None
    summary: str | None = None

    @classmethod
    def external(cls, name: str, description: str, severity: str, section: MonitoringSection) -> AlertRule:
        """A rule whose condition another engine computes (``description`` says what it means)."""
        return cls(name, description, None, 0.0, severity, {},
                   list(section.alert_channels), parse_duration(section.repeat_interval))

    def applies_to(self, database_id: str, tags: list[str]) -> bool:
        if self.databases is not None and database_id not in self.databases:
            return False
        return self.tags is None or bool(set(self.tags) & set(tags))


def compile_rules(section: MonitoringSection) -> list[AlertRule]:
    """The section's rules, parsed (the config loader has already reported any error with its position)."""
    metrics = known_metrics(section.custom_units())
    return [_compile(r, section, metrics) for r in section.alert_rules]


def _compile(r: AlertRuleConfig, section: MonitoringSection, metrics: dict[str, str]) -> AlertRule:
    return AlertRule(r.name, r.expr, parse(r.expr, metrics), parse_duration(r.for_), r.severity, dict(r.labels),
                     list(r.channels if r.channels is not None else section.alert_channels),
                     parse_duration(r.repeat_interval or section.repeat_interval), r.databases, r.tags, r.summary)


def rule_spec(r: AlertRuleConfig, section: MonitoringSection, units: dict[str, str]) -> dict[str, Any]:
    """A complete, JSON-able rule for the store: parsed now (RuleError here), with the units it needs."""
    node = parse(r.expr, units)
    return {"name": r.name, "expr": r.expr, "units": {m: units[m] for m in sorted(metric_names(node))},
            "for_seconds": parse_duration(r.for_), "severity": r.severity, "labels": dict(r.labels),
            "channels": list(r.channels if r.channels is not None else section.alert_channels),
            "repeat_seconds": parse_duration(r.repeat_interval or section.repeat_interval),
            "databases": r.databases, "tags": r.tags, "summary": r.summary}


def from_spec(spec: dict[str, Any]) -> AlertRule:
    """A stored rule, compiled."""
    return AlertRule(spec["name"], spec["expr"], parse(spec["expr"], spec["units"]), float(spec["for_seconds"]),
                     spec["severity"], dict(spec.get("labels") or {}), list(spec["channels"]),
                     float(spec["repeat_seconds"]), spec.get("databases"), spec.get("tags"), spec.get("summary"))


def alert_id(rule: str, database_id: str) -> str:
    """A short stable id for the API (``/alerts/{id}/acknowledge``)."""
    return hashlib.sha256(f"{rule}\0{database_id}".encode()).hexdigest()[:16]


@dataclass
class Notification:
    """What a channel sends: alerts that fired (or fired again) or resolved in one evaluation."""

    database_id: str
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "firing" if any(a["state"] == FIRING for a in self.alerts) else "resolved"


Notify = Callable[[dict[str, Notification]], Any]  # channel -> what to send; delivers them all


class Evaluator:
    """Evaluate rules against health reports; ``notify({channel: notification})`` delivers."""

    def __init__(self, store: AlertStore, rules: list[AlertRule], notify: Notify | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.store, self.rules, self.notify = store, rules, notify
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def evaluate(self, report: dict[str, Any], tags: list[str] | None = None) -> list[dict[str, Any]]:
        """Apply every rule to one health report; return the state transitions (for the realtime feed)."""
        db_id = report["database_id"]
        metrics = from_report(report)
        items = [(rule, rule.node.evaluate(metrics) is True,
                  {m: metrics.get(m) for m in sorted(metric_names(rule.node))})
                 for rule in self.all_rules() if rule.node is not None and rule.applies_to(db_id, tags or [])]
        return self.apply(db_id, items)

    def all_rules(self) -> list[AlertRule]:
        """The config's rules, then the run-time rules of the store (read each time: another process adds them)."""
        names = {r.name for r in self.rules}
        try:
            specs = self.store.rule_specs()
        except Exception as exc:  # the store is down: the config's rules still run
            log.warning("cannot read run-time alert rules: %s", type(exc).__name__)
            specs = []
        return self.rules + [from_spec(s) for s in specs if s["name"] not in names]

    def apply(self, db_id: str, items: list[tuple[AlertRule, bool, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Move each (rule, condition holds, values) alert of ``db_id`` one step and notify; also used for
        conditions computed elsewhere (a security audit's new critical findings)."""
        now = self.clock()
        silences = self.store.silences(now)
        transitions: list[dict[str, Any]] = []
        outgoing: dict[str, Notification] = {}
        with self.store.session() as s, s.begin():
            for rule, holds, values in items:
                row = s.get(Alert, alert_id(rule.name, db_id), with_for_update=True)
                before = row.state if row else None
                row, send = self._step(s, row, rule, db_id, holds, values, now)
                if row is not None and row.state != before:
                    transitions.append({"type": "alert", "id": row.id, "rule": rule.name, "database_id": db_id,
                                        "from": before, "to": row.state, "severity": rule.severity,
                                        "values": values, "at": now.isoformat(timespec="seconds")})
                muted = any(x.matches(rule.name, db_id, now) for x in silences)
                if send and row is not None and not muted:
                    row.last_notified_at, row.notifications = now, (row.notifications or 0) + 1
                    for channel in rule.channels:
                        outgoing.setdefault(channel, Notification(db_id)).alerts.append(
                            {**row.to_dict(), "summary": rule.summary or f"{rule.name}: {rule.expr}"})
        if outgoing and self.notify:
            self.notify(outgoing)
        return transitions

    def _step(self, s: Any, row: Alert | None, rule: AlertRule, db_id: str, holds: bool,
              values: dict[str, Any], now: datetime) -> tuple[Alert | None, bool]:
        """One transition of one alert; returns the row and whether to notify."""
        if not holds:
            if row is None or row.state == RESOLVED:
                return row, False
            if row.state == PENDING:  # never fired: forget it quietly
                s.delete(row)
                return None, False
            row.state, row.resolved_at, row.values = RESOLVED, now, values
            row.acknowledged_at = row.acknowledged_by = row.ack_comment = None
            return row, True
        if row is None:
            row = Alert(id=alert_id(rule.name, db_id), rule=rule.name, database_id=db_id, notifications=0)
            s.add(row)
        if row.state not in (PENDING, FIRING):
            row.state, row.active_since, row.fired_at, row.resolved_at = PENDING, now, None, None
            row.last_notified_at, row.notifications = None, 0
        row.severity, row.expr, row.labels, row.values = rule.severity, rule.expr, rule.labels, values
        if row.state == PENDING and now - as_utc(row.active_since or now) >= timedelta(seconds=rule.for_seconds):
            row.state, row.fired_at = FIRING, now
            return row, True
        if row.state == FIRING and row.acknowledged_at is None and row.last_notified_at is not None:
            return row, now - as_utc(row.last_notified_at) >= timedelta(seconds=rule.repeat_seconds)
        return row, row.state == FIRING and row.last_notified_at is None
