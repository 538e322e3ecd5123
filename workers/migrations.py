"""Tasks of the ``migrations`` queue and the seed's Python API.

A run is ``chain(prepare, chord(group(lane...), finalize), validate)``: the batches still pending are
dealt into ``parallel_workers`` lanes (largest first, each to the lane with the fewest rows so far), each
lane a chain of copy_batch tasks, so at most
that many batches of one migration run at once whatever the fleet size. Tasks carry the migration id
and a batch id, never a database address or secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from celery import chain, chord, group
from celery.exceptions import TimeoutError as CeleryTimeout

from engines.errors import ScriptFailed
from engines.migration.model import MigrationPlan, MigrationType
from engines.migration.store import COMPLETED, FAILED, ROLLED_BACK, RUNNING
from engines.secrets import scrub
from workers import migration_steps as steps
from workers import runtime
from workers.app import app
from workers.manager import check_options, current_app
from workers.operation_refs import registry_ref

log = logging.getLogger("dbfleet.tasks")
DbRef = steps.DbRef
store, resolve = steps.store, steps.resolve  # the seed's names (tests and application code use them)


@app.task(name="migrations.plan", bind=True)
def plan_task(self: Any, source: DbRef, target: DbRef, options: dict[str, Any]) -> dict[str, Any]:
    """Discover the source, map types, split into batches; store and return the plan (writes nothing)."""
    return steps.plan(source, target, options)


@app.task(name="migrations.prepare", bind=True)
def prepare_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Create the target's schema; the migration is running from here."""
    return steps.prepare(migration_id)


@app.task(name="migrations.copy_batch", bind=True)
def copy_batch_task(self: Any, migration_id: str, batch_id: int) -> dict[str, Any]:
    """Copy one batch (idempotent: a batch whose checkpoint exists in the target is skipped)."""
    return steps.copy_batch(migration_id, batch_id)


@app.task(name="migrations.finalize", bind=True)
def finalize_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Keys, indexes, constraints after every batch; the reject threshold."""
    return steps.finalize(migration_id)


@app.task(name="migrations.validate", bind=True)
def validate_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Compare every range's target count and checksum with the source's; fail naming the ranges."""
    return steps.validate(migration_id)


@app.task(name="migrations.mark_failed", bind=True)
def mark_failed(self: Any, migration_id: str) -> None:
    """Error callback of a run: the migration is failed, with the failing batch's cause."""
    steps.mark_failed(migration_id)


@app.task(name="migrations.rollback", bind=True)
def rollback_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Undo what the migration created or changed on the target; its progress starts over."""
    return steps.rollback(migration_id)


@app.task(name="migrations.retry_rejects", bind=True)
def retry_rejects_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Read the refused rows again from the fixed source, write them, finalize and validate again."""
    return steps.retry_rejects(migration_id)


def celery_app() -> Any:
    """The Celery app of the config this process uses now (``workers.manager.current_app``)."""
    return current_app()


def _sig(name: str, *args: Any) -> Any:
    return celery_app().signature(f"migrations.{name}", args=list(args), immutable=True)


def deal(plan: MigrationPlan, pending: list[int]) -> list[list[int]]:
    """Batch ids into ``parallel_workers`` lanes of about equal rows (by the tables' row estimates): the
    largest batches first, each to the lane with the fewest rows so far, so no lane ends long after the
    others on a table's small batches."""
    per_table: dict[str, int] = {}
    for b in plan.batches:
        per_table[b.table] = per_table.get(b.table, 0) + 1
    weight = {b.id: max(1, plan.table(b.table).rows_estimate) / per_table[b.table] for b in plan.batches}
    lanes: list[list[int]] = [[] for _ in range(plan.parallel_workers)]
    load = [0.0] * plan.parallel_workers
    for batch_id in sorted(pending, key=lambda i: (-weight[i], i)):
        lane = load.index(min(load))
        lanes[lane].append(batch_id)
        load[lane] += weight[batch_id]
    return lanes


def workflow(migration_id: str) -> Any:
    """chain(prepare, chord(group(lanes of copy_batch), finalize), validate) for the batches still pending."""
    plan = store().plan(migration_id)
    lanes = deal(plan, sorted(store().pending(migration_id)))
    pending = [b for lane in lanes for b in lane]
    header = group(chain(*(_sig("copy_batch", migration_id, b) for b in lane)) for lane in lanes if lane)
    steps = [_sig("prepare", migration_id)]
    steps.append(chord(header, _sig("finalize", migration_id)) if pending else _sig("finalize", migration_id))
    steps.append(_sig("validate", migration_id))
    return chain(*steps).on_error(_sig("mark_failed", migration_id))


@app.task(name="migrations.start", bind=True)
def start_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Send the run's workflow from a worker (clients then never hold the chain's results)."""
    store().set_status(migration_id, RUNNING)
    pending = len(store().pending(migration_id))
    workflow(migration_id).apply_async()
    return {"migration_id": migration_id, "pending_batches": pending}


def run(migration_id: str, timeout: float = 120) -> dict[str, Any]:
    """Start (or resume) a planned migration on the fleet; completed batches are skipped. Progress: the store."""
    store().plan(migration_id)  # unknown ids fail here, clearly
    result = celery_app().send_task("migrations.start", args=[migration_id])
    try:
        started: dict[str, Any] = result.get(timeout=timeout)
        return started
    except Exception as exc:
        if "Timeout" in type(exc).__name__:
            raise TimeoutError(f"migration {migration_id} not started after {timeout:.0f}s: is a worker consuming "
                               "the migrations queue?") from None
        raise ScriptFailed(scrub(str(exc))) from None


class MigrationProgress:
    """Progress of a running migration: ``snapshot()``, or ``await progress.wait()``."""

    def __init__(self, migration_id: str) -> None:
        self.migration_id = migration_id

    def snapshot(self) -> dict[str, Any]:
        return store().progress(self.migration_id)

    def wait_sync(self, timeout: float = 3600, poll: float = 0.5) -> dict[str, Any]:
        """Wait for the end (polling the status alone, cheap enough to poll often) and return the progress."""
        deadline = time.monotonic() + timeout
        while True:
            status = store().status(self.migration_id)
            if status is None or status in (COMPLETED, FAILED, ROLLED_BACK):
                return self.snapshot()  # an unknown id raises its clear error here
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration {self.migration_id} still {status} after {timeout:.0f}s")
            time.sleep(poll)

    async def wait(self, timeout: float = 3600, poll: float = 0.5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            snap = await asyncio.to_thread(self.snapshot)
            if snap["status"] in (COMPLETED, FAILED, ROLLED_BACK):
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration {self.migration_id} still {snap['status']} after {timeout:.0f}s")
            await asyncio.sleep(poll)


def plan(source: DbRef, target: DbRef, timeout: float = 600, **options: Any) -> MigrationPlan:
    """Plan on a worker of the migrations queue (it holds the secrets) and return the stored plan."""
    check_options(options)
    for ref in (source, target):  # refuse inline configs and secrets here, before anything reaches the broker
        if not isinstance(ref, str):
            resolve(ref)
    result = celery_app().send_task("migrations.plan", args=[source, target, options])
    try:
        return MigrationPlan.from_dict(result.get(timeout=timeout))
    except ScriptFailed:
        raise
    except CeleryTimeout:
        raise TimeoutError(f"no plan after {timeout:.0f}s: is a worker consuming the migrations queue? "
                           "(dbfleet worker --queues migrations; dbfleet status)") from None
    except Exception as exc:
        raise ScriptFailed(scrub(str(exc))) from None


async def migrate_database(source_config: DbRef, target_config: DbRef,
                           migration_type: MigrationType = MigrationType.FULL, batch_size: int = 1000,
                           parallel_workers: int = 4, validation_enabled: bool = True,
                           tables_or_collections: list[str] | None = None, **options: Any
                           ) -> tuple[MigrationPlan, MigrationProgress]:
    """The seed's API: plan (on a worker), start the run, return (plan, progress). Documented dicts
    (``{"type": "postgresql", "host": ..., "database": ...}``) resolve to the registry entry they name."""
    source_config, target_config = (registry_ref(r, runtime.config()) for r in (source_config, target_config))
    migration_plan = await asyncio.to_thread(
        plan, source_config, target_config, type=MigrationType(migration_type).value, batch_size=batch_size,
        parallel_workers=parallel_workers, validation=validation_enabled, tables=tables_or_collections, **options)
    await asyncio.to_thread(run, migration_plan.id)
    return migration_plan, MigrationProgress(migration_plan.id)
