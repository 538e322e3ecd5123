"""Copying: one batch per call, into the target with its checkpoint (``Target.write_batch``)."""

from __future__ import annotations

import time
from typing import Any

from engines.config import DatabaseConfig
from engines.migration.connections import batch_connections
from engines.migration.model import MigrationPlan
from engines.tracing import traced


@traced("migration.copy_batch", lambda plan, batch_id, *a, **k: {"migration_id": plan.id, "batch_id": batch_id})
def copy_batch(plan: MigrationPlan, batch_id: int, source: DatabaseConfig, target: DatabaseConfig) -> dict[str, Any]:
    """Copy one batch atomically with its checkpoint; a batch already done is skipped."""
    batch = next(b for b in plan.batches if b.id == batch_id)
    table = plan.table(batch.table)
    started = time.perf_counter()
    with batch_connections(source, target, plan.lock_timeout) as (src, tgt):
        result = tgt.write_batch(plan, table, batch, src)
    if not result.get("skipped"):
        result["seconds"] = round(time.perf_counter() - started, 3)
    return result
