"""Durable operation history (SQLAlchemy): SQLite in the state dir by default, PostgreSQL by URL."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from engines.secrets import scrub, touch_private

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"

# called after each committed write of a run row with (event, row as a dict): the compliance trail's hook
Recorder = Callable[[str, dict[str, Any]], None]


class _Base(DeclarativeBase):
    pass


class ScriptRun(_Base):
    """One run of one script; the Celery task id is the key, so a redelivery updates it."""

    __tablename__ = "dbfleet_script_runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    script_type: Mapped[str] = mapped_column(String(64), index=True)
    database_id: Mapped[str | None] = mapped_column(String(200), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    queue: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        out = {c.name: getattr(self, c.name) for c in self.__table__.columns}
        for key in ("started_at", "finished_at"):
            if out[key] is not None:
                out[key] = as_utc(out[key]).isoformat(timespec="seconds")
        return out


def as_utc(ts: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _safe(data: Any) -> Any:
    """Round-trip through JSON with every known secret scrubbed."""
    return json.loads(scrub(json.dumps(data, default=str)))


def sql_engine(url: str) -> Engine:
    """A SQLAlchemy engine for the history database (SQLite in WAL mode, or PostgreSQL by URL); the alert
    and migration stores share it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        touch_private(path)  # 0600 whatever the umask; SQLite gives -wal and -shm the same mode
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


class HistoryStore:
    """Record and query script runs. Safe to share between worker processes."""

    def __init__(self, url: str, recorder: Recorder | None = None) -> None:
        self.url = url
        self.engine = sql_engine(url)
        self.recorder = recorder
        _Base.metadata.create_all(self.engine)

    def _recorded(self, event: str, row: dict[str, Any] | None) -> None:
        """Hand a committed row to the recorder (the audit trail); its failure is logged, never raised."""
        if self.recorder is None or row is None:
            return
        try:
            self.recorder(event, row)
        except Exception as exc:
            logging.getLogger("dbfleet").warning("run %s not appended to the audit trail: %s", row.get("id"),
                                                 scrub(f"{type(exc).__name__}: {exc}"))

    def start(self, run_id: str, script_type: str, database_id: str | None,
              options: dict[str, Any] | None = None, queue: str | None = None,
              worker: str | None = None) -> None:
        """Record that a run started (a redelivered run bumps ``attempts``)."""
        with Session(self.engine) as s, s.begin():
            run = s.get(ScriptRun, run_id)
            if run is None:
                run = ScriptRun(id=run_id, script_type=script_type, database_id=database_id,
                                options=_safe(options or {}), queue=queue, worker=worker,
                                status=RUNNING, attempts=1, started_at=utcnow())
                s.add(run)
            else:
                run.attempts += 1
                run.status, run.worker, run.started_at = RUNNING, worker, utcnow()
                run.finished_at, run.error = None, None
            row = run.to_dict() if self.recorder else None
        self._recorded("start", row)

    def finish(self, run_id: str, status: str, summary: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        """Record the outcome of a run."""
        with Session(self.engine) as s, s.begin():
            run = s.get(ScriptRun, run_id)
            if run is None:
                return
            run.status, run.finished_at = status, utcnow()
            run.summary = _safe(summary) if summary is not None else None
            run.error = scrub(error) if error else None
            row = run.to_dict() if self.recorder else None
        self._recorded("finish", row)

    def record_failure(self, run_id: str, script_type: str, database_id: str | None, error: str,
                       queue: str | None = None, worker: str | None = None, attempts: int = 1) -> None:
        """Record a run as failed, whether or not it ever started (a task refused before it ran)."""
        with Session(self.engine) as s, s.begin():
            run = s.get(ScriptRun, run_id)
            if run is None:
                run = ScriptRun(id=run_id, script_type=script_type, database_id=database_id, options={},
                                queue=queue, worker=worker, started_at=utcnow())
                s.add(run)
            run.status, run.finished_at, run.error = FAILED, utcnow(), scrub(error)
            run.attempts = max(run.attempts or 0, attempts)
            row = run.to_dict() if self.recorder else None
        self._recorded("failure", row)

    def query(self, script_type: str | None = None, database_id: str | None = None,
              since: datetime | None = None, status: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        stmt = select(ScriptRun).order_by(ScriptRun.started_at.desc()).limit(limit)
        if script_type:
            stmt = stmt.where(ScriptRun.script_type == script_type)
        if database_id:
            stmt = stmt.where(ScriptRun.database_id == database_id)
        if since:
            stmt = stmt.where(ScriptRun.started_at >= since)
        if status:
            stmt = stmt.where(ScriptRun.status == status)
        with Session(self.engine) as s:
            return [r.to_dict() for r in s.scalars(stmt)]

    def get(self, run_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as s:
            run = s.get(ScriptRun, run_id)
            return run.to_dict() if run else None

    def counts(self) -> dict[tuple[str, str], int]:
        """Runs per (script type, status)."""
        stmt = select(ScriptRun.script_type, ScriptRun.status, func.count()).group_by(
            ScriptRun.script_type, ScriptRun.status)
        with Session(self.engine) as s:
            return {(script, status): int(n) for script, status, n in s.execute(stmt)}

    def close(self) -> None:
        self.engine.dispose()

