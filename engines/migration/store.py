"""Migration control state in the history database: plans, status, per-batch progress.

The authoritative checkpoint of a batch lives in the target, written in the batch's own transaction;
this store mirrors it for progress (CLI, REST, WebSocket) without touching the target.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from engines.history import as_utc, sql_engine, utcnow
from engines.migration.model import MigrationPlan

PLANNED, RUNNING, FAILED, COMPLETED, ROLLED_BACK = "planned", "running", "failed", "completed", "rolled_back"


class _Base(DeclarativeBase):
    pass


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else as_utc(ts)


class Migration(_Base):
    __tablename__ = "dbfleet_migrations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_id: Mapped[str | None] = mapped_column(String(200))
    target_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MigrationBatch(_Base):
    __tablename__ = "dbfleet_migration_batches"
    migration_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    table_name: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    rejects: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MigrationReject(_Base):
    """A row the target refused: where it is (table, key) and why (column, reason), never its values."""

    __tablename__ = "dbfleet_migration_rejects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(String(64), index=True)
    batch_id: Mapped[int] = mapped_column(Integer)
    table_name: Mapped[str] = mapped_column(String(400))
    key: Mapped[str | None] = mapped_column(Text)
    column_name: Mapped[str | None] = mapped_column(String(400))
    reason: Mapped[str] = mapped_column(Text)


class MigrationStore:
    def __init__(self, url: str) -> None:
        self.engine = sql_engine(url)
        _Base.metadata.create_all(self.engine)

    def save_plan(self, plan: MigrationPlan, source_id: str | None, target_id: str | None) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(Migration, plan.id)
            if row is None:
                s.add(Migration(id=plan.id, status=PLANNED, plan=plan.to_dict(), source_id=source_id,
                                target_id=target_id, created_at=utcnow()))
            else:
                row.plan = plan.to_dict()
            for b in plan.batches:
                if s.get(MigrationBatch, (plan.id, b.id)) is None:
                    s.add(MigrationBatch(migration_id=plan.id, batch_id=b.id, table_name=b.table, status="pending"))

    def plan(self, migration_id: str) -> MigrationPlan:
        with Session(self.engine) as s:
            row = s.get(Migration, migration_id)
            if row is None:
                from engines.errors import DbfleetError

                raise DbfleetError(f"unknown migration id {migration_id!r} (dbfleet migrate list shows them)")
            return MigrationPlan.from_dict(row.plan)

    def get(self, migration_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as s:
            row = s.get(Migration, migration_id)
            if row is None:
                return None
            return {"id": row.id, "status": row.status, "error": row.error, "report": row.report,
                    "source": row.source_id, "target": row.target_id,
                    "created_at": _iso(row.created_at), "started_at": _iso(row.started_at),
                    "finished_at": _iso(row.finished_at)}

    def status(self, migration_id: str) -> str | None:
        """Only the status (what a waiting client polls: no plan, no batches loaded)."""
        with Session(self.engine) as s:
            return s.scalar(select(Migration.status).where(Migration.id == migration_id))

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            ids = [r.id for r in s.scalars(select(Migration).order_by(Migration.created_at.desc()).limit(limit))]
        return [x for x in (self.get(i) for i in ids) if x]

    def set_status(self, migration_id: str, status: str, error: str | None = None,
                   report: dict[str, Any] | None = None) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(Migration, migration_id)
            if row is None:
                return
            row.status, row.error = status, error
            if report is not None:
                row.report = report
            if status == RUNNING:
                row.started_at, row.finished_at = row.started_at or utcnow(), None
            elif status in (FAILED, COMPLETED, ROLLED_BACK):
                row.finished_at = utcnow()

    def batch_done(self, migration_id: str, batch_id: int, rows: int, rejects: int, seconds: float,
                   rejected: list[dict[str, Any]] | None = None) -> None:
        """A batch finished: its counts, and the rows the target refused (``rejected``: table, key, column,
        reason) replacing any recorded by an earlier run of the same batch."""
        self._batch(migration_id, batch_id, "done", rows=rows, rejects=rejects, seconds=seconds, error=None)
        if rejected is None:
            return
        with Session(self.engine) as s, s.begin():
            s.execute(delete(MigrationReject).where(MigrationReject.migration_id == migration_id,
                                                    MigrationReject.batch_id == batch_id))
            s.add_all(MigrationReject(migration_id=migration_id, batch_id=batch_id, table_name=r["table"],
                                      key=r.get("key"), column_name=r.get("column"), reason=r["reason"])
                      for r in rejected)

    def rejects(self, migration_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The rows the target refused, as recorded by the batches (key, column and reason; no values)."""
        with Session(self.engine) as s:
            return [{"batch": r.batch_id, "table": r.table_name, "key": r.key, "column": r.column_name,
                     "reason": r.reason} for r in s.scalars(
                select(MigrationReject).where(MigrationReject.migration_id == migration_id)
                .order_by(MigrationReject.batch_id, MigrationReject.id).limit(limit))]

    def reset(self, migration_id: str, batch_ids: list[int] | None = None, status: str = ROLLED_BACK) -> None:
        """Progress back to the start (``batch_ids``: only those batches): batches pending with no rows,
        rejects forgotten; the migration gets ``status``, with no error and no validation report."""
        with Session(self.engine) as s, s.begin():
            where = [MigrationBatch.migration_id == migration_id]
            rejected = [MigrationReject.migration_id == migration_id]
            if batch_ids is not None:
                where.append(MigrationBatch.batch_id.in_(batch_ids))
                rejected.append(MigrationReject.batch_id.in_(batch_ids))
            for b in s.scalars(select(MigrationBatch).where(*where)):
                b.status, b.rows, b.rejects, b.seconds, b.error, b.finished_at = "pending", 0, 0, 0.0, None, None
            s.execute(delete(MigrationReject).where(*rejected))
            row = s.get(Migration, migration_id)
            if row is not None:
                row.status, row.error, row.report = status, None, None
                row.started_at, row.finished_at = None, utcnow()

    def batch_failed(self, migration_id: str, batch_id: int, error: str) -> None:
        self._batch(migration_id, batch_id, "failed", error=error)

    def _batch(self, migration_id: str, batch_id: int, status: str, **fields: Any) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(MigrationBatch, (migration_id, batch_id))
            if row is not None:
                row.status, row.finished_at = status, utcnow()
                for k, v in fields.items():
                    setattr(row, k, v)

    def batch_errors(self, migration_id: str) -> list[str]:
        """The errors of the failed batches of a migration."""
        with Session(self.engine) as s:
            return [b.error for b in s.scalars(select(MigrationBatch).where(
                MigrationBatch.migration_id == migration_id, MigrationBatch.status == "failed")) if b.error]

    def pending(self, migration_id: str) -> list[int]:
        with Session(self.engine) as s:
            return [b.batch_id for b in s.scalars(select(MigrationBatch).where(
                MigrationBatch.migration_id == migration_id, MigrationBatch.status != "done"))]

    def progress(self, migration_id: str) -> dict[str, Any]:
        """Batches done/total, rows, rows/s, ETA, per table."""
        info = self.get(migration_id)
        if info is None:
            from engines.errors import DbfleetError

            raise DbfleetError(f"unknown migration id {migration_id!r}")
        with Session(self.engine) as s:
            batches = list(s.scalars(select(MigrationBatch).where(MigrationBatch.migration_id == migration_id)))
            mig = s.get(Migration, migration_id)
            estimates = {t["source"]: t["rows_estimate"] for t in (mig.plan["tables"] if mig else [])}
            started, end = (_aware(mig.started_at), _aware(mig.finished_at)) if mig else (None, None)
        tables: dict[str, dict[str, Any]] = {}
        for b in batches:
            t = tables.setdefault(b.table_name, {"table": b.table_name, "batches_done": 0, "batches_total": 0,
                                                 "rows": 0, "rejects": 0, "failed": 0,
                                                 "rows_estimate": estimates.get(b.table_name, 0)})
            t["batches_total"] += 1
            t["batches_done"] += b.status == "done"
            t["failed"] += b.status == "failed"
            t["rows"] += b.rows or 0
            t["rejects"] += b.rejects or 0
        done = sum(t["batches_done"] for t in tables.values())
        total = sum(t["batches_total"] for t in tables.values())
        rows = sum(t["rows"] for t in tables.values())
        end = end or utcnow()
        elapsed = (end - started).total_seconds() if started else 0.0
        rate = rows / elapsed if elapsed > 0 else 0.0
        eta = (elapsed / done * (total - done)) if done and total > done and info["status"] == RUNNING else None
        return {**info, "batches_done": done, "batches_total": total, "rows": rows,
                "rejects": sum(t["rejects"] for t in tables.values()), "rejected": self.rejects(migration_id),
                "rows_per_second": round(rate, 1), "elapsed_seconds": round(elapsed, 2),
                "eta_seconds": None if eta is None else round(eta, 1), "tables": list(tables.values())}


def _iso(ts: datetime | None) -> str | None:
    a = _aware(ts)
    return None if a is None else a.isoformat(timespec="seconds")
