"""``execute_script(ScriptType.MIGRATION, source_id, {"target": id, ...})``: plan, start, wait, as one result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any

from celery import Celery

from engines.errors import ConfigError
from workers import migrations
from workers.operations import CONTEXT_KEY, OperationContext, OperationResult

_OPTIONS = {"type": "type", "batch_size": "batch_size", "parallel_workers": "parallel_workers",
            "validation": "validation", "tables": "tables", "if_exists": "if_exists", "create_target": "create_target",
            "soft_delete": "soft_delete", "watermark": "watermark", "max_rejects": "max_rejects"}


class MigrationExecution:
    """A migration started by the manager: ``wait()`` for the progress dict, or ``await`` for a result."""

    def __init__(self, source: str, options: dict[str, Any], context: OperationContext | None) -> None:
        self.source, self.options, self.context = source, options, context
        target = options.get("target")
        if not isinstance(target, str):
            raise ConfigError([("config.target", "name the target database's registry id")], "migration options")
        self.target: str = target

    def _run(self, timeout: float | None) -> tuple[str, dict[str, Any]]:
        plan_options = {_OPTIONS[k]: v for k, v in self.options.items() if k in _OPTIONS}
        plan = migrations.plan(self.source, self.target, **plan_options)
        migrations.run(plan.id)
        progress = migrations.MigrationProgress(plan.id)
        if not self.options.get("wait", True):
            return plan.id, progress.snapshot()
        return plan.id, progress.wait_sync(timeout or 3600)

    def wait(self, timeout: float | None = None, **_: Any) -> dict[str, Any]:
        """Plan, start and wait for the migration; its final progress."""
        return self._run(timeout)[1]

    def result(self, timeout: float | None = None) -> OperationResult:
        """The migration as an OperationResult (task_id is the migration id)."""
        started = time.time()
        migration_id, snap = self._run(timeout or (self.context.timeout if self.context else None))
        status = {"completed": "succeeded", "failed": "failed", "rolled_back": "failed"}.get(snap.get("status", ""),
                                                                                        "running")
        errors = [str(snap["error"])] if snap.get("error") else []
        return OperationResult("migration", self.source, status, task_id=migration_id, queue="migrations",
                               task="migrations.start", duration_seconds=round(time.time() - started, 3),
                               summary={k: snap[k] for k in ("status", "batches_done", "batches_total", "rows")
                                        if k in snap},
                               payload=snap, errors=errors, context=self.context,
                               options={k: v for k, v in self.options.items() if k != CONTEXT_KEY})

    def __await__(self) -> Generator[Any, None, OperationResult]:
        return asyncio.to_thread(self.result).__await__()


def start_migration(app: Celery, source: str, options: dict[str, Any],
                    context: OperationContext | None) -> MigrationExecution:
    """The awaitable run of a migration from ``source`` to ``options['target']``."""
    return MigrationExecution(source, options, context)
