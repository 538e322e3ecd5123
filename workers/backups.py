"""Tasks of the ``backups`` queue: backup, verify, restore, drill, prune. Each is resolve -> engine -> JSON."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.signals import worker_ready

from engines.backup.check import verify
from engines.backup.drill import drill as run_drill
from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.engine import find_backup, open_repository, restore_backup, run_backup
from engines.backup.private import contained, sweep, task_dir
from engines.backup.prune import prune as run_prune
from engines.config import DatabaseConfig
from workers import runtime
from workers.app import app
from workers.common import ScriptTask
from workers.operation_options import RETENTION_KEY, backup_run_options, describe_backup, stored_retention_days

log = logging.getLogger("dbfleet.tasks")
Result = tuple[dict[str, Any], bool, str | None]
Progress = Callable[[int, int | None], None]


def _extra() -> dict[str, Any]:
    return runtime.config().database_scripts.backup.model_extra or {}


def spool_roots() -> list[Path]:
    """Where private task directories may live: ``backup.spool_dir`` (when set) and the state dir."""
    configured = _extra().get("spool_dir")
    return ([Path(configured)] if configured else []) + [runtime.config().fleet.state_path()]


def _workdir(options: dict[str, Any]) -> Path:
    """The base of this task's private directory: an option ``spool_dir`` must lie inside a configured one."""
    roots = spool_roots()
    path = contained(options["spool_dir"], roots, "spool_dir") if options.get("spool_dir") else roots[0]
    path.mkdir(parents=True, exist_ok=True)
    return path


def _restore_options(target_db: DatabaseConfig, opts: dict[str, Any]) -> RestoreOptions:
    """RestoreOptions with ``target_path`` kept inside the target's own directory or ``backup.restore_dirs``."""
    options = RestoreOptions.from_dict(opts)
    if options.target_path:
        roots = [Path(p) for p in _extra().get("restore_dirs") or []]
        if target_db.path:
            roots.append(Path(target_db.path).expanduser().resolve().parent)
        options.target_path = str(contained(options.target_path, roots, "target_path"))
    return options


def sweep_private_dirs() -> list[str]:
    """Remove what killed tasks left in the private directories (decrypted spools, passfiles)."""
    removed: list[str] = []
    for root in {*spool_roots(), runtime.config().fleet.state_path()}:
        removed += sweep(root)
    return removed


@worker_ready.connect
def _sweep_on_start(**_kw: Any) -> None:
    try:
        sweep_private_dirs()
    except Exception as exc:  # a worker starts even when the sweep cannot run; the next start retries
        log.warning("could not sweep private directories: %s", exc)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class ProgressReporter:
    """Publishes bytes/percent in the task state (for `dbfleet run --wait` and Flower), at most once a second."""

    def __init__(self, task: ScriptTask, phase: str) -> None:
        self.task, self.phase, self.last = task, phase, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 1.0 or not self.task.request.id:
            return
        self.last = now
        percent = min(99.0, 100.0 * done / total) if total else None
        self.task.update_state(state="PROGRESS", meta={"phase": self.phase, "bytes": done, "total": total,
                                                       "percent": percent})


def _level(options: dict[str, Any]) -> int | None:
    section = runtime.config().database_scripts.backup
    compression = options.get("compression", section.compression)
    if not _truthy(compression):
        return None
    return int(options.get("compression_level", section.compression_level))


def _task_id(task_id: str | None) -> str:
    return task_id or f"local-{uuid.uuid4()}"


def do_backup(db: DatabaseConfig, opts: dict[str, Any], progress: Progress | None = None,
              task_id: str | None = None) -> Result:
    """Back ``db`` up into the configured (or ``storage``) repository, creating it on first use."""
    from workers import physical  # PostgreSQL physical backups: --physical or backup.method: physical

    if physical.wants_physical(db, opts):
        with task_dir(_workdir(opts), _task_id(task_id)) as work:
            return physical.do_physical_backup(db, opts, progress, workdir=work)
    cfg = runtime.config()
    repo = open_repository(cfg, opts.get("storage"), create=True)
    run_options = backup_run_options(repo, opts, cfg.database_scripts.backup.backup_type)  # refuses contradictions
    if run_options.get("tables"):  # the dumpers pass it to pg_dump --table / mariadb-dump
        db = db.model_copy(update={"options": {**db.options, "backup_tables": run_options["tables"]}})
    with task_dir(_workdir(opts), _task_id(task_id)) as work:
        result = run_backup(repo, db, level=_level(opts), workdir=work, progress=progress, options=run_options)
    result = describe_backup(result, run_options)
    if run_options.get("retention_days"):  # a per-database policy, read by prune
        runtime.remember(RETENTION_KEY, db.id, {"retention_days": run_options["retention_days"]})
    runtime.remember(runtime.BACKUP_KEY, db.id, {"finished_at": result["finished_at"], "kind": db.kind,
                                          "duration_seconds": result["duration_seconds"], **result["stats"]})
    return result, True, None


def do_verify(db: DatabaseConfig, opts: dict[str, Any], progress: Progress | None = None,
              task_id: str | None = None) -> Result:
    """Verify ``db``'s backups; ``read_data`` re-reads chunks (``subset`` percent of them)."""
    repo = open_repository(runtime.config(), opts.get("storage"))
    report = verify(repo, db.id, opts.get("backup_id"), read_data=_truthy(opts.get("read_data", False)),
                    subset=float(str(opts.get("subset", 100)).rstrip("%")))
    error = None if report["ok"] else f"{report['problem_count']} problems; first: {report['problems'][0]['problem']}"
    return report, report["ok"], error


def do_restore(db: DatabaseConfig, opts: dict[str, Any], progress: Progress | None = None,
               task_id: str | None = None) -> Result:
    """Restore a backup of ``db`` into ``target`` (a database id; default: ``db`` itself)."""
    from workers import physical  # point-in-time restores into a new data directory

    if physical.wants_pitr(db, opts):
        return physical.do_pitr_restore(db, opts, progress)
    cfg = runtime.config()
    target_db = cfg.database(opts.get("target") or db.id)
    options = _restore_options(target_db, opts)
    repo = open_repository(cfg, opts.get("storage"))
    with task_dir(_workdir(opts), _task_id(task_id)) as work:
        result = restore_backup(repo, db, Target(target_db, target_db.password()), backup_id=opts.get("backup_id"),
                                options=options, spool_dir=work, progress=progress)
    manifest = find_backup(repo, db.id, result.get("backup_id") or opts.get("backup_id"))
    if manifest.get("options", {}).get("partial"):  # a backup of a table subset restores only those tables
        result |= {"partial": True, "tables": manifest["options"].get("tables")}
    return result, True, None


def do_drill(db: DatabaseConfig, opts: dict[str, Any], progress: Progress | None = None,
             task_id: str | None = None) -> Result:
    """Restore the latest backup into a scratch target, compare row counts, measure RTO and RPO."""
    from workers import physical  # a base backup: the drill is a point-in-time recovery on a scratch port

    if physical.wants_pitr(db, opts):
        return physical.do_pitr_drill(db, opts, progress)
    repo = open_repository(runtime.config(), opts.get("storage"))
    with task_dir(_workdir(opts), _task_id(task_id)) as work:
        report = run_drill(repo, db, backup_id=opts.get("backup_id"), spool_dir=work, progress=progress)
    runtime.remember(runtime.DRILL_KEY, db.id, {k: report[k] for k in ("ok", "rto_seconds", "rpo_seconds", "kind")}
              | {"at": time.time()})
    error = None if report["ok"] else f"row counts differ in {len(report['mismatches'])} tables"
    return report, report["ok"], error


def do_prune(db: DatabaseConfig, opts: dict[str, Any], progress: Progress | None = None,
             task_id: str | None = None) -> Result:
    """Apply retention to ``db``'s backups, then delete chunks nothing references."""
    section = runtime.config().database_scripts.backup
    repo = open_repository(runtime.config(), opts.get("storage"))
    days = stored_retention_days(db.id) or section.retention_days  # a backup run's retention_days wins
    result = run_prune(repo, section.retention, days, database_id=db.id,
                       dry_run=_truthy(opts.get("dry_run", False)), lock_wait=float(opts.get("lock_wait", 60)),
                       pitr_windows={i: d.backup.pitr_window for i, d in runtime.config().databases.items()})
    return result, True, None


# script name -> operation, for `dbfleet backups ... --local`
OPERATIONS: dict[str, Callable[..., Result]] = {"backup": do_backup, "backup_verify": do_verify, "restore": do_restore,
                                                "restore_drill": do_drill, "backup_prune": do_prune}


@app.task(name="backups.run", bind=True, base=ScriptTask, script_type="backup")
def backup(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dump one database into the repository (deduplicated, compressed, encrypted)."""
    return self.execute(database_id, options, lambda db, o: do_backup(db, o, ProgressReporter(self, "backup"),
                                                                  self.request.id))


@app.task(name="backups.verify", bind=True, base=ScriptTask, script_type="backup_verify")
def verify_backups(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a database's backups (structure; with read_data, every chunk's bytes)."""
    return self.execute(database_id, options, do_verify)


@app.task(name="backups.restore", bind=True, base=ScriptTask, script_type="restore")
def restore(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore a backup; corrupted backups are refused before the target is touched."""
    return self.execute(database_id, options, lambda db, o: do_restore(db, o, ProgressReporter(self, "restore"),
                                                                   self.request.id))


@app.task(name="backups.drill", bind=True, base=ScriptTask, script_type="restore_drill")
def drill(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore drill with measured RTO and RPO."""
    return self.execute(database_id, options, lambda db, o: do_drill(db, o, ProgressReporter(self, "drill"),
                                                                 self.request.id))


@app.task(name="backups.prune", bind=True, base=ScriptTask, script_type="backup_prune")
def prune(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Retention and garbage collection."""
    return self.execute(database_id, options, do_prune)
