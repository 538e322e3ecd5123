"""Tasks of the ``backups`` queue for PostgreSQL physical backups and point-in-time restores (docs/pitr.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engines.backup.engine import open_repository
from engines.backup.physical.backup import run_physical_backup
from engines.backup.physical.restore import pitr_restore
from engines.backup.physical.target import RecoveryTarget
from engines.config import Config, DatabaseConfig
from engines.errors import ConfigError, RestoreRefused
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

Result = tuple[dict[str, Any], bool, str | None]
PITR_OPTIONS = ("pitr", "lsn", "xid", "target_name", "latest", "immediate", "data_dir", "in_place", "timeline")
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "PGTZ")


def _postgres(db: DatabaseConfig) -> None:
    if db.kind != "postgresql":
        raise ConfigError([(f"databases.{db.id}.backup.method", f"physical backups are for PostgreSQL, not {db.kind}")])


def wants_physical(db: DatabaseConfig, options: dict[str, Any]) -> bool:
    """True when a backup run should be physical: ``--physical`` or ``backup.method: physical``."""
    physical = options.get("physical")
    if physical is None:
        return db.backup.method == "physical"
    return str(physical).strip().lower() in ("1", "true", "yes", "on")


def wants_pitr(db: DatabaseConfig, options: dict[str, Any]) -> bool:
    """True when a restore is physical: a PITR option was given, or the backup asked for is a base backup."""
    if any(options.get(k) for k in PITR_OPTIONS):
        return True
    if db.kind != "postgresql":
        return False
    from engines.backup.engine import find_backup
    from engines.backup.physical import is_physical
    from engines.errors import BackupNotFound

    try:
        repo = open_repository(runtime.config(), options.get("storage"))
        return is_physical(find_backup(repo, db.id, options.get("backup_id")))
    except BackupNotFound:
        return False


def do_physical_backup(db: DatabaseConfig, opts: dict[str, Any], progress: Any = None,
                       workdir: Path | None = None) -> Result:
    """A pg_basebackup base backup of ``db`` into the repository (created on first use)."""
    from workers.backups import _level

    _postgres(db)
    repo = open_repository(runtime.config(), opts.get("storage"), create=True)
    incremental = str(opts.get("incremental", db.backup.incremental)).lower() in ("1", "true", "yes", "on")
    result = run_physical_backup(repo, db, level=_level(opts), progress=progress, incremental=incremental,
                                 workdir=workdir)
    runtime.remember(runtime.BACKUP_KEY, db.id, {"finished_at": result["finished_at"], "kind": db.kind,
                                                 "method": "physical", "duration_seconds": result["duration_seconds"],
                                                 **result["stats"]})
    return result, True, None


def server_env(cfg: Config, storage: str | None) -> dict[str, str]:
    """The restored server's environment: what restore_command (dbfleet wal fetch) needs, nothing more."""
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("DBFLEET_")}
    _name, scfg = cfg.backup_storage(storage)
    for var in (scfg.key_env, *(v for k, v in (scfg.model_extra or {}).items() if k.endswith("_env"))):
        if isinstance(var, str) and var in os.environ:
            env[var] = os.environ[var]
    return env


def do_pitr_restore(db: DatabaseConfig, opts: dict[str, Any], progress: Any = None) -> Result:
    """Restore a base backup of ``db`` into ``data_dir`` and recover it to the target in ``opts``.

    ``data_dir`` must lie inside ``database_scripts.backup.restore_dirs`` or ``<state>/restores``.
    """
    from engines.backup.private import contained
    from workers.backups import _extra

    _postgres(db)
    in_place = str(opts.get("in_place", "")).lower() in ("1", "true", "yes", "on")
    if not opts.get("data_dir") and not in_place:
        raise RestoreRefused("a point-in-time restore needs --data-dir (a new directory), or --in-place to recover "
                             "over the cluster's own data directory (databases.<id>.backup.data_dir)")
    cfg = runtime.config()
    if opts.get("os_user"):  # a caller never picks which OS account the worker hands files to
        raise ConfigError([("os_user", "the OS user a restored server runs as comes from the config "
                                       "(database_scripts.backup.restore_os_user), not from a task option")])
    extra = _extra()
    data_dir = _in_place_dir(db, opts) if in_place else \
        contained(opts["data_dir"], [Path(p) for p in extra.get("restore_dirs") or []]
                  + [cfg.fleet.state_path() / "restores"], "data_dir")
    target = RecoveryTarget.from_options(opts)
    repo = open_repository(cfg, opts.get("storage"))
    port = int(db.port or 5432) if in_place else int(opts.get("port") or _free_port())
    result = pitr_restore(repo, db, target, data_dir, port,
                          backup_id=opts.get("backup_id"), storage=opts.get("storage"),
                          env=server_env(cfg, opts.get("storage")), os_user=extra.get("restore_os_user"),
                          timeout=float(opts.get("recovery_timeout", 3600)), progress=progress, in_place=in_place,
                          timeline=_timeline(opts))
    return result, True, None


def _timeline(opts: dict[str, Any]) -> int | None:
    """``--timeline N``: recover along timeline N instead of the newest one."""
    value = opts.get("timeline")
    if value in (None, ""):
        return None
    if not str(value).isdigit() or int(value) < 1:
        raise RestoreRefused(f"--timeline {value!r}: give a timeline number (1, 2, ...; dbfleet wal status shows them)")
    return int(value)


def _in_place_dir(db: DatabaseConfig, opts: dict[str, Any]) -> Path:
    """The cluster's own data directory: from the config only (a task option never picks what is moved aside)."""
    if not db.backup.data_dir:
        raise ConfigError([(f"databases.{db.id}.backup.data_dir", "--in-place needs the cluster's data directory "
                                                                   "on the worker's host in the config")])
    if opts.get("data_dir") and Path(opts["data_dir"]).resolve() != Path(db.backup.data_dir).resolve():
        raise RestoreRefused(f"--in-place restores into databases.{db.id}.backup.data_dir ({db.backup.data_dir}); "
                             "drop --data-dir, or restore a copy into --data-dir without --in-place")
    if opts.get("port"):
        raise RestoreRefused("--in-place keeps the cluster's own port; drop --port")
    return Path(db.backup.data_dir).resolve()


def do_pitr_drill(db: DatabaseConfig, opts: dict[str, Any], progress: Any = None) -> Result:
    """A restore drill by point-in-time recovery (target from ``opts``, default latest) on a scratch port; the
    scratch data directory lives in the first ``backup.restore_dirs`` (or ``<state>/restores``) and is removed."""
    import time
    from datetime import datetime, timezone

    from engines.backup.drill import pitr_drill
    from engines.backup.physical.restore import stop_server
    from workers.backups import _extra

    _postgres(db)
    cfg = runtime.config()
    extra = _extra()
    root = Path((extra.get("restore_dirs") or [cfg.fleet.state_path() / "restores"])[0])
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = root / f"drill-{db.id}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
    target = RecoveryTarget.from_options({k: v for k, v in opts.items() if k != "data_dir"})
    repo = open_repository(cfg, opts.get("storage"))

    def restore(data_dir: Path, port: int) -> dict[str, Any]:
        return pitr_restore(repo, db, target, data_dir, port, backup_id=opts.get("backup_id"),
                            storage=opts.get("storage"), env=server_env(cfg, opts.get("storage")),
                            os_user=extra.get("restore_os_user"), timeout=float(opts.get("recovery_timeout", 3600)),
                            progress=progress, timeline=_timeline(opts))

    report = pitr_drill(repo, db, target, scratch, int(opts.get("port") or _free_port()), restore=restore,
                        stop=stop_server)
    runtime.remember(runtime.DRILL_KEY, db.id, {k: report[k] for k in ("ok", "rto_seconds", "kind")}
                     | {"rpo_seconds": report["rpo_seconds"] or 0.0, "at": time.time()})
    return report, report["ok"], None if report["ok"] else "the recovered server did not answer"


def _free_port() -> int:
    from engines.embedded.redis import free_port

    return free_port()


@app.task(name="backups.physical", bind=True, base=ScriptTask, script_type="physical_backup")
def physical_backup(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """pg_basebackup of one PostgreSQL cluster into the repository."""
    from workers.backups import ProgressReporter

    return self.execute(database_id, options,
                        lambda db, o: do_physical_backup(db, o, ProgressReporter(self, "physical backup")))


@app.task(name="backups.pitr_restore", bind=True, base=ScriptTask, script_type="pitr_restore")
def pitr_restore_task(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Point-in-time restore into a new data directory on the worker's host."""
    from workers.backups import ProgressReporter

    return self.execute(database_id, options,
                        lambda db, o: do_pitr_restore(db, o, ProgressReporter(self, "pitr restore")))


OPERATIONS = {"physical_backup": do_physical_backup, "pitr_restore": do_pitr_restore,
              "pitr_drill": do_pitr_drill}
