"""Migration operations, callable without Celery: plan, prepare, copy one batch, finalize, validate, rollback.

The Celery side (workers/migrations.py) runs them as chain(prepare, chord(group(copy_batch ...),
finalize), validate). Each function opens its own connections, so any worker can run any step. The
phases live in ``plan``, ``copy``, ``finalize`` and ``validate``; everything engine-specific in the
``base.Source`` / ``base.Target`` classes that ``registry`` names. This module gathers the API.
"""

from __future__ import annotations

from engines.migration.connections import batch_connections, connections
from engines.migration.copy import copy_batch
from engines.migration.finalize import finalize, retry_rejects, rollback
from engines.migration.model import MigrationFailed
from engines.migration.plan import MigrationOptions, new_id, plan_migration, prepare
from engines.migration.registry import SOURCES, TARGETS
from engines.migration.validate import validate

__all__ = ["SOURCES", "TARGETS", "MigrationFailed", "MigrationOptions", "batch_connections", "connections",
           "copy_batch", "finalize", "new_id", "plan_migration", "prepare", "retry_rejects", "rollback",
           "validate"]
