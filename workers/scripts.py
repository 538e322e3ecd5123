"""Script types the fleet runs: one table from script name to Celery task and queue."""

from __future__ import annotations

from enum import Enum

from engines.errors import UnknownScriptError


class ScriptType(str, Enum):
    """Script types of the seed API; only those in SCRIPTS run in this version."""

    HEALTH_CHECK = "health_check"
    BACKUP = "backup"
    BACKUP_VERIFY = "backup_verify"
    BACKUP_PRUNE = "backup_prune"
    RESTORE = "restore"
    RESTORE_DRILL = "restore_drill"
    SECURITY_AUDIT = "security_audit"
    DISASTER_RECOVERY = "disaster_recovery"  # observe a DR group (by a member database id) and act on it


# script name -> (task name, queue). Each engine adds its row when it lands.
SCRIPTS: dict[str, tuple[str, str]] = {
    ScriptType.HEALTH_CHECK.value: ("health.check", "health"),
    ScriptType.BACKUP.value: ("backups.run", "backups"),
    ScriptType.BACKUP_VERIFY.value: ("backups.verify", "backups"),
    ScriptType.BACKUP_PRUNE.value: ("backups.prune", "backups"),
    ScriptType.RESTORE.value: ("backups.restore", "backups"),
    ScriptType.RESTORE_DRILL.value: ("backups.drill", "backups"),
    ScriptType.SECURITY_AUDIT.value: ("audits.security", "audits"),
    ScriptType.DISASTER_RECOVERY.value: ("dr.observe", "dr"),
}


def resolve(script: str | ScriptType) -> tuple[str, str, str]:
    """(script name, task name, queue) for a script given as enum, ``health_check`` or ``health-check``."""
    name = script.value if isinstance(script, ScriptType) else str(script).strip().lower().replace("-", "_")
    if name not in SCRIPTS:
        raise UnknownScriptError(str(script.value if isinstance(script, ScriptType) else script), list(SCRIPTS))
    task, queue = SCRIPTS[name]
    return name, task, queue
