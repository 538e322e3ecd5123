"""Script types the fleet runs: one table from script name to Celery task, queue and accepted options."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from engines.errors import ConfigError, UnknownScriptError


class ScriptType(str, Enum):
    """Every operation of the application API (``ScriptType.BACKUP`` or the string ``"backup"``)."""

    HEALTH_CHECK = "health_check"
    MONITORING = "monitoring"
    BACKUP = "backup"
    BACKUP_VERIFY = "backup_verify"
    BACKUP_PRUNE = "backup_prune"
    RESTORE = "restore"
    RESTORE_DRILL = "restore_drill"
    SECURITY_AUDIT = "security_audit"
    PERFORMANCE_TUNING = "performance_tuning"
    MIGRATION = "migration"
    COMPLIANCE_AUDIT = "compliance_scan"
    COMPLIANCE_ANONYMIZE = "compliance_anonymize"
    COMPLIANCE_ERASE = "compliance_erase"
    DISASTER_RECOVERY = "disaster_recovery"


@dataclass(frozen=True)
class Script:
    """One operation: its default task, queue and the option keys a caller may send."""

    task: str
    queue: str
    options: frozenset[str]
    engine: str = ""  # for NotAvailable: which engine brings the task

    def __iter__(self) -> Any:
        """``task, queue = SCRIPTS[name]`` (the table's previous shape)."""
        return iter((self.task, self.queue))

    def task_for(self, options: dict[str, Any]) -> str:
        """The task that runs these options (tuning applies with ``auto_apply``, DR has actions)."""
        if self.task == "tuning.analyze" and _truthy(options.get("auto_apply")):
            return "tuning.apply"
        if self.task == "dr.observe" and options.get("action"):
            return f"dr.{options['action']}"
        return self.task


_BACKUP = {"backup_type", "compression", "compression_level", "encryption", "storage", "cloud_storage", "tables",
           "retention_days", "spool_dir", "physical", "incremental"}
_PITR = {"pitr", "lsn", "xid", "target_name", "latest", "immediate", "data_dir", "port", "recovery_timeout"}
_RESTORE = {"backup_id", "target", "storage", "target_dbname", "target_path", "tables", "clean", "jobs",
            "no_owner", "globals", "spool_dir", *_PITR}
# tuning: the run options engines/tuning reads (TuningSettings) plus the task's own
_TUNING = {"auto_apply", "dry_run", "now", "only", "optimize_for", "min_cost_savings", "max_queries",
           "max_index_columns", "unused_index_min_days", "lock_timeout_ms", "statement_timeout_ms",
           "disk_headroom_factor", "host", "create_materialized_views", "partitioning_strategy",
           "optimization_targets", "verify"}  # apply_settings / apply_mviews are config-only (engines/tuning)
_COMPLIANCE_SCAN = {"sample_size", "min_confidence", "statement_timeout_seconds", "security_audit", "tables",
                    "sample_seed", "frameworks", "presidio"}
_COMPLIANCE_MASK = {"table", "rules", "batch_size", "i_know", "backup_id", "again", "dry_run", "throttle_seconds",
                    "copy_to", "tables", "validation"}  # copy_to: a masked copy into that database
_COMPLIANCE_ERASE = {"subject", "dry_run", "erasure_policies", "erasure_rules", "batch_size"}
_AUDIT = {"exclude", "fail_on", "expected_superusers", "allowed_createrole", "pii_tables", "checks"}
_HEALTH = {"detailed", "deep"}
DR_ACTIONS = ("observe", "failover", "switchover", "drill", "setup", "rejoin")

# script name -> Script. Each engine's queue is fixed here; its module registers the task.
SCRIPTS: dict[str, Script] = {
    ScriptType.HEALTH_CHECK.value: Script("health.check", "health", frozenset(_HEALTH)),
    ScriptType.MONITORING.value: Script("health.check", "health",
                                        frozenset(_HEALTH | {"metrics", "alert_thresholds"})),
    ScriptType.BACKUP.value: Script("backups.run", "backups", frozenset(_BACKUP)),
    ScriptType.BACKUP_VERIFY.value: Script("backups.verify", "backups",
                                           frozenset({"backup_id", "read_data", "subset", "storage"})),
    ScriptType.BACKUP_PRUNE.value: Script("backups.prune", "backups",
                                          frozenset({"dry_run", "lock_wait", "storage"})),
    ScriptType.RESTORE.value: Script("backups.restore", "backups", frozenset(_RESTORE)),
    ScriptType.RESTORE_DRILL.value: Script("backups.drill", "backups",
                                           frozenset({"backup_id", "storage", "spool_dir"})),
    ScriptType.SECURITY_AUDIT.value: Script("audits.security", "audits", frozenset(_AUDIT)),
    ScriptType.PERFORMANCE_TUNING.value: Script("tuning.analyze", "tuning", frozenset(_TUNING), "the tuning engine"),
    "performance_tuning_apply": Script("tuning.apply", "tuning", frozenset(_TUNING), "the tuning engine"),
    "performance_tuning_revert": Script("tuning.revert", "tuning", frozenset({"change_id"}), "the tuning engine"),
    "performance_tuning_refresh": Script("tuning.refresh_view", "tuning", frozenset({"schema", "view"}),
                                         "the tuning engine"),
    ScriptType.COMPLIANCE_AUDIT.value: Script("compliance.scan", "compliance", frozenset(_COMPLIANCE_SCAN),
                                              "the compliance engine"),
    ScriptType.COMPLIANCE_ANONYMIZE.value: Script("compliance.anonymize", "compliance", frozenset(_COMPLIANCE_MASK),
                                                  "the compliance engine"),
    ScriptType.COMPLIANCE_ERASE.value: Script("compliance.erase", "compliance", frozenset(_COMPLIANCE_ERASE),
                                              "the compliance engine"),
    ScriptType.DISASTER_RECOVERY.value: Script("dr.observe", "dr", frozenset({"action", "target", "dry_run", "force",
                                                                              "emergency", "reason", "rate"}),
                                               "the disaster recovery engine (issue: disaster recovery)"),
    ScriptType.MIGRATION.value: Script("migrations.plan", "migrations",
                                       frozenset({"target", "type", "batch_size", "parallel_workers", "validation",
                                                  "tables", "wait", "if_exists", "create_target", "soft_delete",
                                                  "watermark", "max_rejects"})),
}


# other spellings of a script (the documented ScriptType names)
ALIASES = {"compliance_audit": "compliance_scan"}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve(script: str | ScriptType) -> tuple[str, str, str]:
    """(script name, task name, queue) for a script given as enum, ``health_check`` or ``health-check``."""
    name = script_name(script)
    return name, SCRIPTS[name].task, SCRIPTS[name].queue


def script_name(script: str | ScriptType) -> str:
    """The table key of ``script``; UnknownScriptError lists the known ones."""
    name = script.value if isinstance(script, ScriptType) else str(script).strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in SCRIPTS:
        raise UnknownScriptError(str(script.value if isinstance(script, ScriptType) else script), list(SCRIPTS))
    return name


def check_keys(name: str, options: dict[str, Any], internal: frozenset[str] = frozenset()) -> None:
    """Refuse option keys the script does not read, naming them and the accepted ones."""
    allowed = SCRIPTS[name].options | internal
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError([(f"config.{k}", f"{name} does not accept {k!r} (accepted: {', '.join(sorted(allowed))})")
                           for k in unknown], f"{name} options")
    if name == ScriptType.DISASTER_RECOVERY.value and options.get("action") not in (None, *DR_ACTIONS):
        raise ConfigError([("config.action", f"expected one of {', '.join(DR_ACTIONS)}")], f"{name} options")
    if name == ScriptType.BACKUP.value and options.get("backup_type") not in (None, "full", "incremental"):
        raise ConfigError([("config.backup_type", "expected full or incremental")], f"{name} options")
