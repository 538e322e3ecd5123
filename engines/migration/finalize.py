"""After the copy: every batch checkpointed, the target's schema completed, the reject threshold applied;
and rollback."""

from __future__ import annotations

from typing import Any

from engines.config import DatabaseConfig
from engines.migration.connections import connections
from engines.migration.model import MigrationFailed, MigrationPlan
from engines.tracing import traced


@traced("migration.finalize", lambda plan, *a, **k: {"migration_id": plan.id})
def finalize(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> dict[str, Any]:
    """After every batch: keys, secondary indexes and constraints on the tables the migration created,
    identity sequences, statistics, incremental watermarks (``Target.finalize``); the reject threshold."""
    with connections(source, target) as (_, tgt):
        cps = tgt.checkpoints(plan)
        missing = [b.id for b in plan.batches if b.id not in cps]
        if missing:
            raise MigrationFailed(f"migration {plan.id}: batches {missing[:10]} have no checkpoint; resume it")
        rejects = sum(c.get("rejects", 0) for c in cps.values())
        tgt.finalize(plan, target, cps)
    if rejects > plan.max_rejects:
        raise MigrationFailed(f"migration {plan.id}: {rejects} rows rejected, more than max_rejects "
                              f"{plan.max_rejects} (see dbfleet migrate status {plan.id} for the rejects)")
    return {"rows": sum(c["rows"] for c in cps.values()), "rejects": rejects}


@traced("migration.rollback", lambda plan, *a, **k: {"migration_id": plan.id})
def rollback(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> list[str]:
    """Drop the tables and types the migration created; restore tables it wrote into from their snapshots."""
    with connections(source, target) as (_, tgt):
        return tgt.rollback(plan)


def retry_rejects(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> dict[int, dict[str, Any]]:
    """Read the rows the target refused again from the (fixed) source, by key, and write them
    (``Target.retry_rejects``); batch id -> its new counts and the rows still refused."""
    with connections(source, target) as (src, tgt):
        return tgt.retry_rejects(plan, src)
