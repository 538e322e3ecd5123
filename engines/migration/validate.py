"""Validation: the target's counts and checksums against what the batches' checkpoints recorded."""

from __future__ import annotations

from typing import Any

from engines.config import DatabaseConfig
from engines.migration.connections import connections
from engines.migration.model import MigrationPlan
from engines.tracing import traced


@traced("migration.validate", lambda plan, *a, **k: {"migration_id": plan.id})
def validate(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> dict[str, Any]:
    """Count and checksum every batch's range (or table) on the target against its checkpoint
    (``Target.validate``); ``ok`` False names the ranges that differ."""
    report: dict[str, Any] = {"migration_id": plan.id, "tables": [], "ok": True}
    with connections(source, target) as (src, tgt):
        return tgt.validate(plan, target, src, tgt.checkpoints(plan), report)
