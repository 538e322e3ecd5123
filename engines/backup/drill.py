"""Restore drills: prove the latest backup restores, and measure RTO and RPO while doing it (logical dumps:
row counts in a scratch target; PostgreSQL physical backups: a point-in-time recovery on a scratch port)."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engines.backup.engine import Progress, dumper_for, spooled
from engines.backup.repository import Repository
from engines.config import DatabaseConfig
from engines.tracing import traced


@traced("backup.drill", lambda repo, db, *a, **k: {"database_id": db.id})
def drill(repo: Repository, db: DatabaseConfig, *, backup_id: str | None = None, spool_dir: Path,
          progress: Progress | None = None) -> dict[str, Any]:
    """Restore into a scratch target, compare row counts with the manifest, drop the scratch target.

    ``rto_seconds`` is the measured time from "we need this backup" to "rows are back";
    ``rpo_seconds`` is the backup's age: the data a failure now would lose.
    """
    t0 = time.monotonic()
    with spooled(repo, db.id, backup_id, spool_dir, "drill", progress) as (manifest, files, tmp):
        restored = dumper_for(db, tmp).drill_counts(files, manifest)
    rto = time.monotonic() - t0
    finished = datetime.fromisoformat(manifest["finished_at"])
    expected: dict[str, int] = manifest["dump"]["row_counts"]
    exact = bool(manifest["dump"]["row_counts_exact"])
    mismatches = [{"table": t, "expected": n, "restored": restored.get(t)}
                  for t, n in sorted(expected.items()) if restored.get(t) != n]
    ok = not mismatches or not exact
    return {"ok": ok, "backup_id": manifest["backup_id"], "database_id": db.id, "kind": db.kind,
            "rto_seconds": round(rto, 3), "rpo_seconds": round((datetime.now(timezone.utc) - finished).total_seconds(), 1),
            "tables_compared": len(expected), "rows_expected": sum(expected.values()),
            "rows_restored": sum(v for t, v in restored.items() if t in expected),
            "row_counts_exact": exact, "mismatches": mismatches[:50],
            "warning": None if exact or not mismatches else
            "counts were taken next to (not inside) the dump's snapshot; differences under writes are expected"}


def pitr_drill(repo: Repository, db: DatabaseConfig, target: Any, scratch: Path, port: int, *,
               restore: Any, stop: Any) -> dict[str, Any]:
    """Point-in-time restore drill of a physical backup: recover into ``scratch`` on ``port``, measure, clean up.

    ``rto_seconds``: wall time of base backup restore plus WAL replay until the server is promoted.
    ``rpo_seconds``: the newest commit on the source when the drill started (``pg_last_committed_xact``, needs
    track_commit_timestamp; otherwise, or when the source is down, the drill's start: an upper bound) minus
    the newest commit the recovered server replayed: the transactions a real recovery now would lose.
    ``restore(scratch, port)`` runs the PITR restore, ``stop(scratch)`` stops the scratch server.
    """
    started = datetime.now(timezone.utc)
    newest, measured_by = _newest_commit(db)
    t0 = time.monotonic()
    try:
        result = restore(scratch, port)
        rto = time.monotonic() - t0
        recovered_at = result["reached"]["last_transaction_at"]
        ok = _answers(db.model_copy(update={"host": "127.0.0.1", "port": port, "dsn": None}))
    finally:
        if (scratch / "postmaster.pid").exists():
            stop(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    recovered = datetime.fromisoformat(recovered_at) if recovered_at else None
    reference = newest or started
    rpo = max(0.0, (reference - recovered).total_seconds()) if recovered else None
    return {"ok": ok, "backup_id": result["backup_id"], "database_id": db.id, "kind": db.kind, "method": "pitr",
            "target": result["target"], "rto_seconds": round(rto, 3),
            "rpo_seconds": None if rpo is None else round(rpo, 3), "rpo_measured_by": measured_by,
            "newest_committed_at": newest.isoformat() if newest else None,
            "newest_recovered_at": recovered_at, "reached": result["reached"], "wal": result["wal"]}


def _answers(restored: DatabaseConfig) -> bool:
    """The recovered server accepts a connection to the database's own dbname and runs a query."""
    from engines.connectors.postgres import PostgresConnector
    from engines.errors import DbfleetError

    try:
        with PostgresConnector(restored, restored.password()) as c:
            return bool(c.conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0])
    except DbfleetError:
        return False


def _newest_commit(db: DatabaseConfig) -> tuple[datetime | None, str]:
    """The source's newest commit time, and how it was found."""
    from engines.connectors.postgres import PostgresConnector
    from engines.errors import DbfleetError

    try:
        with PostgresConnector(db, db.password()) as c:
            row = c.conn.execute("SELECT CASE WHEN current_setting('track_commit_timestamp')::bool"
                                 " THEN (pg_last_committed_xact()).timestamp END").fetchone()
    except DbfleetError:
        return None, "the drill's start time (the source did not answer)"
    if row[0] is None:
        return None, "the drill's start time (track_commit_timestamp is off on the source)"
    return row[0], "the source's newest commit (pg_last_committed_xact)"
