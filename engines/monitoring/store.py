"""Alert and silence state in the history database (SQLite or PostgreSQL): survives restarts and is
shared by every worker and the API."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from engines.history import as_utc, sql_engine

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


DEFAULT_MAX_SILENCE = 7 * 86400.0


def silence_end(duration: str, now: datetime, max_seconds: float = DEFAULT_MAX_SILENCE) -> datetime:
    """When a silence of ``duration`` (``2h``, ``1d``) started ``now`` ends; ValueError when the duration is
    not one, not positive, or longer than ``max_seconds`` (monitoring.max_silence)."""
    from engines.monitoring.rules import parse_duration

    seconds = parse_duration(duration)
    if seconds <= 0:
        raise ValueError(f"a silence lasts a positive duration, not {duration!r}")
    if seconds > max_seconds:
        raise ValueError(f"a silence of {duration} is longer than the maximum {_days(max_seconds)} "
                         "(database_scripts.monitoring.max_silence)")
    return now + timedelta(seconds=seconds)


def _days(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class _Base(DeclarativeBase):
    pass


def _ts(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat(timespec="seconds")


class Alert(_Base):
    """One alert: a rule on a database. The id is stable across firings (rule + database)."""

    __tablename__ = "dbfleet_alerts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), index=True)
    database_id: Mapped[str] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    expr: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notifications: Mapped[int] = mapped_column(Integer, default=0)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    ack_comment: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        out = {c.name: getattr(self, c.name) for c in self.__table__.columns}
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = _ts(value)
        out["acknowledged"] = self.acknowledged_at is not None
        return out


class Silence(_Base):
    """Mute notifications of matching alerts until ``ends_at`` (matchers: rule and/or database)."""

    __tablename__ = "dbfleet_silences"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    rule: Mapped[str | None] = mapped_column(String(200))
    database_id: Mapped[str | None] = mapped_column(String(200))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)

    def matches(self, rule: str, database_id: str, now: datetime) -> bool:
        return as_utc(self.ends_at) > now and self.rule in (None, rule) and self.database_id in (None, database_id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rule": self.rule, "database_id": self.database_id, "ends_at": _ts(self.ends_at),
                "created_by": self.created_by, "comment": self.comment}


class StoredRule(_Base):
    """An alert rule added at run time (``add_alert_rule``): complete, so every process compiles it alike."""

    __tablename__ = "dbfleet_alert_rules"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # name, expr, units, severity, channels, for/repeat seconds
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(200))


class AlertStore:
    """Sessions over the alert tables; the engine does its state changes inside :meth:`session`."""

    def __init__(self, url: str) -> None:
        self.engine = sql_engine(url)
        _Base.metadata.create_all(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self.session() as s:
            row = s.get(Alert, alert_id)
            return row.to_dict() if row else None

    def active(self, database_id: str | None = None) -> list[dict[str, Any]]:
        """Pending and firing alerts, firing first."""
        stmt = select(Alert).where(Alert.state.in_([PENDING, FIRING]))
        if database_id:
            stmt = stmt.where(Alert.database_id == database_id)
        with self.session() as s:
            rows = [r.to_dict() for r in s.scalars(stmt)]
        return sorted(rows, key=lambda r: (r["state"] != FIRING, r["rule"], r["database_id"]))

    def acknowledge(self, alert_id: str, by: str | None, comment: str | None, now: datetime) -> dict[str, Any]:
        """Stop repeats of a pending or firing alert until it resolves. KeyError: no such alert;
        ValueError: it is not active."""
        with self.session() as s, s.begin():
            row = s.get(Alert, alert_id)
            if row is None:
                raise KeyError(alert_id)
            if row.state not in (PENDING, FIRING):
                raise ValueError(f"alert {alert_id} is {row.state}; only pending or firing alerts can be acknowledged")
            row.acknowledged_at, row.acknowledged_by, row.ack_comment = now, by, comment
            return row.to_dict()

    def silence(self, rule: str | None, database_id: str | None, ends_at: datetime, by: str | None = None,
                comment: str | None = None) -> dict[str, Any]:
        if not (rule or database_id):
            raise ValueError("a silence needs a rule or a database (or both)")
        with self.session() as s, s.begin():
            row = Silence(id=str(uuid.uuid4()), rule=rule, database_id=database_id, ends_at=ends_at,
                          created_by=by, comment=comment)
            s.add(row)
            return row.to_dict()

    def silences(self, now: datetime) -> list[Silence]:
        """Silences that have not expired."""
        with self.session() as s:
            return [x for x in s.scalars(select(Silence)) if as_utc(x.ends_at) > now]

    def save_rule(self, spec: dict[str, Any], now: datetime, by: str | None = None) -> None:
        """Add or replace a run-time rule (``spec`` as made by engines.monitoring.alerts.rule_spec)."""
        with self.session() as s, s.begin():
            row = s.get(StoredRule, spec["name"])
            if row is None:
                s.add(StoredRule(name=spec["name"], spec=spec, created_at=now, created_by=by))
            else:
                row.spec, row.created_at, row.created_by = spec, now, by

    def rule_specs(self) -> list[dict[str, Any]]:
        """Every run-time rule's spec, by name."""
        with self.session() as s:
            return [dict(r.spec) for r in s.scalars(select(StoredRule).order_by(StoredRule.name))]

    def delete_rule(self, name: str) -> bool:
        """Remove a run-time rule; False when there was none of that name."""
        with self.session() as s, s.begin():
            row = s.get(StoredRule, name)
            if row is not None:
                s.delete(row)
            return row is not None

    def close(self) -> None:
        self.engine.dispose()
