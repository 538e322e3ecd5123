"""The steps of a migration as plain functions: the ``migrations`` queue's tasks call them on a worker, and
``dbfleet migrate ... --local`` calls them in the CLI's own process (no worker, no broker).

Every step takes a migration id (plans live in the migration store), resolves the two databases from the
registry of this process and turns any failure into a scrubbed ``ScriptFailed``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engines.config import DatabaseConfig
from engines.errors import ConfigError, DbfleetError, ScriptFailed, UnknownDatabaseError
from engines.inline import inline_database
from engines.migration import engine
from engines.migration.connections import close_pool
from engines.migration.model import MigrationPlan
from engines.migration.store import COMPLETED, FAILED, RUNNING, MigrationStore
from engines.secrets import scrub
from workers import runtime
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
    references stay inside fleet.inline_secrets (checked here, in the caller and again on the worker).
    An id the loaded registry lacks is looked up again in the config file when that file changed since it
    was loaded (an operator added the database while the worker ran)."""
    cfg = runtime.config()
    if isinstance(ref, str):
        try:
            return cfg.database(ref)
        except UnknownDatabaseError:
            if not runtime.reload_if_changed():
                raise
            return runtime.config().database(ref)
    if not isinstance(ref, dict):
        raise ConfigError([("", f"a database is a registry id or a mapping, not {type(ref).__name__}")],
                          "migration request")
    check_options({k: v for k, v in ref.items() if k not in ("password_env", "password_file", "passfile")})
    return inline_database(ref, cfg.fleet, list(cfg.databases))


def dbs(plan: MigrationPlan) -> tuple[DatabaseConfig, DatabaseConfig]:
    """The plan's source and target, resolved in this process."""
    return resolve(plan.source.get("_ref", plan.source)), resolve(plan.target.get("_ref", plan.target))


def task_error(migration_id: str, what: str, exc: BaseException, fails_run: bool = True) -> ScriptFailed:
    """A scrubbed error; a failing prepare/finalize/validate marks the migration failed with it at once."""
    message = scrub(f"{what}: {type(exc).__name__}: {exc}".strip())
    log.error("migration %s: %s", migration_id, message)
    if fails_run:
        store().set_status(migration_id, FAILED, message)
    return ScriptFailed(message)


@contextmanager
def step(migration_id: str, what: str, fails_run: bool = True) -> Iterator[None]:
    """Turn any failure of a step into a scrubbed ScriptFailed (failing the migration when ``fails_run``)."""
    try:
        yield
    except Exception as exc:
        raise task_error(migration_id, what, exc, fails_run) from None


def options_of(options: dict[str, Any]) -> engine.MigrationOptions:
    """The plan request's options (JSON from the broker) as MigrationOptions; base_id names the base plan."""
    fields = {k: v for k, v in options.items() if k != "base_id"}
    if options.get("base_id"):
        fields["base"] = store().plan(options["base_id"])
    return engine.MigrationOptions.of(**fields)


def plan(source: DbRef, target: DbRef, options: dict[str, Any]) -> dict[str, Any]:
    """Discover the source, map types, split into batches; store and return the plan (writes nothing)."""
    try:
        src, tgt = resolve(source), resolve(target)
        found = engine.plan_migration(src, tgt, options_of(options))
    except DbfleetError as exc:  # one message, as text: a re-raised typed error would be rebuilt from it
        raise ScriptFailed(scrub(str(exc))) from None
    found.source["_ref"], found.target["_ref"] = source, target
    store().save_plan(found, src.id, tgt.id)
    return found.to_dict()


def prepare(migration_id: str) -> dict[str, Any]:
    """Create the target's schema; the migration is running from here."""
    current = store().plan(migration_id)
    with step(migration_id, "prepare"):
        current = engine.prepare(current, *dbs(current))
    store().save_plan(current, None, None)
    store().set_status(migration_id, RUNNING)
    return {"migration_id": migration_id, "created": current.created}


def copy_batch(migration_id: str, batch_id: int) -> dict[str, Any]:
    """Copy one batch (idempotent: a batch whose checkpoint exists in the target is skipped)."""
    current = store().plan(migration_id)
    try:
        with step(migration_id, f"batch {batch_id}", fails_run=False):
            result = engine.copy_batch(current, batch_id, *dbs(current))
    except ScriptFailed as error:
        store().batch_failed(migration_id, batch_id, str(error))
        raise
    if not result.get("skipped"):
        store().batch_done(migration_id, batch_id, int(result.get("rows", 0)), int(result.get("rejects", 0)),
                           float(result.get("seconds", 0.0)), result.pop("rejected", None))
    else:  # a redelivered batch: the first copy's counts stand (its refused rows are recorded already)
        store().batch_done(migration_id, batch_id, int(result.get("rows", 0)), int(result.get("rejects", 0)),
                           float(result.get("seconds", 0.0)))
    return result


def finalize(migration_id: str) -> dict[str, Any]:
    """Keys, indexes, constraints after every batch; the reject threshold."""
    current = store().plan(migration_id)
    with step(migration_id, "finalize"):
        return engine.finalize(current, *dbs(current))


def validate(migration_id: str) -> dict[str, Any]:
    """Compare every range's target count and checksum with the source's; fail naming the ranges."""
    current = store().plan(migration_id)
    if not current.validation:
        store().set_status(migration_id, COMPLETED, report={"validation": "disabled"})
        return {"migration_id": migration_id, "validation": "disabled"}
    with step(migration_id, "validate"):
        report = engine.validate(current, *dbs(current))
    if not report["ok"]:
        bad = [f"{t['table']} ranges {[(m['from'], m['to']) for m in t['mismatched_ranges']]}"
               for t in report["tables"] if not t["ok"]]
        message = f"validation failed: {'; '.join(bad)}"
        store().set_status(migration_id, FAILED, message, report)
        raise ScriptFailed(message)
    store().set_status(migration_id, COMPLETED, report=report)
    return report


def mark_failed(migration_id: str) -> None:
    """A run's step failed: the migration is failed, with the failing batch's cause."""
    info = store().get(migration_id) or {}
    if info.get("status") == FAILED and info.get("error"):
        return
    errors = store().batch_errors(migration_id)
    store().set_status(migration_id, FAILED, errors[0] if errors else "a step failed: see dbfleet history")


def rollback(migration_id: str) -> dict[str, Any]:
    """Undo what the migration created or changed on the target; its progress starts over (``run`` again
    copies every batch, ``status`` shows no batch done and no validation)."""
    current = store().plan(migration_id)
    with step(migration_id, "rollback"):
        undone = engine.rollback(current, *dbs(current))
    current.created = []
    store().save_plan(current, None, None)
    store().reset(migration_id)
    return {"migration_id": migration_id, "undone": undone}


def retry_rejects(migration_id: str) -> dict[str, Any]:
    """Read the refused rows again from the (fixed) source by key and write them; then finalize and
    validate again. Returns the final progress (rows still refused stay listed)."""
    current = store().plan(migration_id)
    with step(migration_id, "retry-rejects", fails_run=False):  # nothing was retried: the status stays
        batches = engine.retry_rejects(current, *dbs(current))
    store().set_status(migration_id, RUNNING)
    try:
        for batch_id, counts in batches.items():
            store().batch_done(migration_id, batch_id, counts["rows"], counts["rejects"], 0.0, counts["rejected"])
        finalize(migration_id)
        validate(migration_id)
    except ScriptFailed:
        mark_failed(migration_id)
    retried = {str(b): {k: v for k, v in c.items() if k != "rejected"} for b, c in batches.items()}
    return {**store().progress(migration_id), "retried": retried}


def run_local(migration_id: str, on_batch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole run in this process, one batch after another (``--local``): prepare, copy the batches still
    pending, finalize, validate. Returns the final progress; a failing step leaves the migration failed."""
    store().plan(migration_id)  # an unknown id fails here, clearly
    store().set_status(migration_id, RUNNING)
    try:
        prepare(migration_id)
        for batch_id in sorted(store().pending(migration_id)):
            copy_batch(migration_id, batch_id)
            if on_batch is not None:
                on_batch(store().progress(migration_id))
        finalize(migration_id)
        validate(migration_id)
    except ScriptFailed:
        mark_failed(migration_id)
    except KeyboardInterrupt:
        store().set_status(migration_id, FAILED, "interrupted (Ctrl-C): resume it")
        raise
    finally:
        close_pool()  # the batches' pooled connections: this process is no worker, it ends soon
    return store().progress(migration_id)
