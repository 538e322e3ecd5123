"""Tasks of the ``migrations`` queue and the seed's Python API.

A run is ``chain(prepare, chord(group(lane...), finalize), validate)``: the batches still pending are
dealt into ``parallel_workers`` lanes (largest first, each to the lane with the fewest rows so far), each
lane a chain of copy_batch tasks, so at most
that many batches of one migration run at once whatever the fleet size. Tasks carry the migration id
and a batch id, never a database address or secret.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import chain, chord, group

from engines.config import DatabaseConfig
from engines.errors import ConfigError, DbfleetError, ScriptFailed
from engines.inline import inline_database
from engines.migration import engine
from engines.migration.model import MigrationPlan, MigrationType
from engines.migration.store import COMPLETED, FAILED, ROLLED_BACK, RUNNING, MigrationStore
from engines.secrets import scrub
from workers import runtime
from workers.app import app
from workers.manager import check_options

log = logging.getLogger("dbfleet.tasks")
DbRef = str | dict[str, Any]


def store() -> MigrationStore:
    """This process's migration store (one engine per history URL, not one per call)."""
    return _store(runtime.config().fleet.resolved_history())


@functools.lru_cache(maxsize=2)
def _store(url: str) -> MigrationStore:
    return MigrationStore(url)


def resolve(ref: DbRef) -> DatabaseConfig:
    """A registry id; or an inline config, only when fleet.allow_inline_databases is on and its secret
    references stay inside fleet.inline_secrets (checked here, in the caller and again on the worker)."""
    cfg = runtime.config()
    if isinstance(ref, str):
        return cfg.database(ref)
    if not isinstance(ref, dict):
        raise ConfigError([("", f"a database is a registry id or a mapping, not {type(ref).__name__}")],
                          "migration request")
    check_options({k: v for k, v in ref.items() if k not in ("password_env", "password_file", "passfile")})
    return inline_database(ref, cfg.fleet, list(cfg.databases))


def _dbs(plan: MigrationPlan) -> tuple[DatabaseConfig, DatabaseConfig]:
    return resolve(plan.source.get("_ref", plan.source)), resolve(plan.target.get("_ref", plan.target))


def _task_error(migration_id: str, what: str, exc: BaseException, fails_run: bool = True) -> ScriptFailed:
    """A scrubbed error; a failing prepare/finalize/validate marks the migration failed with it at once."""
    message = scrub(f"{what}: {type(exc).__name__}: {exc}".strip())
    log.error("migration %s: %s", migration_id, message)
    if fails_run:
        store().set_status(migration_id, FAILED, message)
    return ScriptFailed(message)


def _options(options: dict[str, Any]) -> engine.MigrationOptions:
    """The plan request's options (JSON from the broker) as MigrationOptions; base_id names the base plan."""
    fields = {k: v for k, v in options.items() if k != "base_id"}
    if options.get("base_id"):
        fields["base"] = store().plan(options["base_id"])
    return engine.MigrationOptions.of(**fields)


@contextmanager
def _step(migration_id: str, what: str, fails_run: bool = True) -> Iterator[None]:
    """Turn any failure of a step into a scrubbed ScriptFailed (failing the migration when ``fails_run``)."""
    try:
        yield
    except Exception as exc:
        raise _task_error(migration_id, what, exc, fails_run) from None


@app.task(name="migrations.plan", bind=True)
def plan_task(self: Any, source: DbRef, target: DbRef, options: dict[str, Any]) -> dict[str, Any]:
    """Discover the source, map types, split into batches; store and return the plan (writes nothing)."""
    src, tgt = resolve(source), resolve(target)
    try:
        plan = engine.plan_migration(src, tgt, _options(options))
    except DbfleetError as exc:
        raise ScriptFailed(scrub(str(exc))) from None
    plan.source["_ref"], plan.target["_ref"] = source, target
    store().save_plan(plan, src.id, tgt.id)
    return plan.to_dict()


@app.task(name="migrations.prepare", bind=True)
def prepare_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Create the target's schema; the migration is running from here."""
    plan = store().plan(migration_id)
    with _step(migration_id, "prepare"):
        plan = engine.prepare(plan, *_dbs(plan))
    store().save_plan(plan, None, None)
    store().set_status(migration_id, RUNNING)
    return {"migration_id": migration_id, "created": plan.created}


@app.task(name="migrations.copy_batch", bind=True)
def copy_batch_task(self: Any, migration_id: str, batch_id: int) -> dict[str, Any]:
    """Copy one batch (idempotent: a batch whose checkpoint exists in the target is skipped)."""
    plan = store().plan(migration_id)
    try:
        with _step(migration_id, f"batch {batch_id}", fails_run=False):
            result = engine.copy_batch(plan, batch_id, *_dbs(plan))
    except ScriptFailed as error:
        store().batch_failed(migration_id, batch_id, str(error))
        raise
    store().batch_done(migration_id, batch_id, int(result.get("rows", 0)), int(result.get("rejects", 0)),
                       float(result.get("seconds", 0.0)))
    return result


@app.task(name="migrations.finalize", bind=True)
def finalize_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Keys, indexes, constraints after every batch; the reject threshold."""
    plan = store().plan(migration_id)
    with _step(migration_id, "finalize"):
        return engine.finalize(plan, *_dbs(plan))


@app.task(name="migrations.validate", bind=True)
def validate_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Compare every range's target count and checksum with the source's; fail naming the ranges."""
    plan = store().plan(migration_id)
    if not plan.validation:
        store().set_status(migration_id, COMPLETED, report={"validation": "disabled"})
        return {"migration_id": migration_id, "validation": "disabled"}
    with _step(migration_id, "validate"):
        report = engine.validate(plan, *_dbs(plan))
    if not report["ok"]:
        bad = [f"{t['table']} ranges {[(m['from'], m['to']) for m in t['mismatched_ranges']]}"
               for t in report["tables"] if not t["ok"]]
        message = f"validation failed: {'; '.join(bad)}"
        store().set_status(migration_id, FAILED, message, report)
        raise ScriptFailed(message)
    store().set_status(migration_id, COMPLETED, report=report)
    return report


@app.task(name="migrations.mark_failed", bind=True)
def mark_failed(self: Any, migration_id: str) -> None:
    """Error callback of a run: the migration is failed, with the failing batch's cause."""
    info = store().get(migration_id) or {}
    if info.get("status") == FAILED and info.get("error"):
        return
    errors = store().batch_errors(migration_id)
    store().set_status(migration_id, FAILED, errors[0] if errors else "a step failed: see dbfleet history")


@app.task(name="migrations.rollback", bind=True)
def rollback_task(self: Any, migration_id: str) -> dict[str, Any]:
    """Undo what the migration created or changed on the target."""
    plan = store().plan(migration_id)
    with _step(migration_id, "rollback"):
        undone = engine.rollback(plan, *_dbs(plan))
    store().set_status(migration_id, ROLLED_BACK)
    return {"migration_id": migration_id, "undone": undone}


_apps: dict[int, Any] = {}


def celery_app() -> Any:
    """The Celery app of the config this process uses now (the module-level app keeps the config it was
    imported with; application code may point DBFLEET_CONFIG elsewhere later)."""
    from workers.app import create_app

    cfg = runtime.config()
    if id(cfg) not in _apps:
        _apps.clear()
        _apps[id(cfg)] = create_app(cfg)
    return _apps[id(cfg)]


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
    from celery.exceptions import TimeoutError as CeleryTimeout

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
    from workers.operation_refs import registry_ref

    source_config, target_config = (registry_ref(r, runtime.config()) for r in (source_config, target_config))
    migration_plan = await asyncio.to_thread(
        plan, source_config, target_config, type=MigrationType(migration_type).value, batch_size=batch_size,
        parallel_workers=parallel_workers, validation=validation_enabled, tables=tables_or_collections, **options)
    await asyncio.to_thread(run, migration_plan.id)
    return migration_plan, MigrationProgress(migration_plan.id)
