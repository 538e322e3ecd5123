"""Restore drills: prove the latest backup restores, and measure RTO and RPO while doing it."""

from __future__ import annotations

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
