"""Turn the config's schedules into Celery beat entries on the right queues.

Static entries come from dbfleet.yaml: ``schedules:``, each database's ``schedules:``,
``database_scripts.backup.schedule`` / ``verify_schedule`` / ``drill_schedule`` (for every database)
and ``database_scripts.monitoring.interval_seconds`` (a health check per database) and
``database_scripts.security_audit.schedule`` (weekly by default) and
``database_scripts.performance_tuning.analysis_interval`` (a read-only tuning analysis, daily by default) and
``database_scripts.disaster_recovery`` (each DR group observed every ``observe_interval_seconds``, drilled
on its ``drill_schedule``) and ``database_scripts.compliance.anchor_schedule`` (the audit trail's head
exported to the backup storage daily, when a trail key is configured).
Only what a database's kind supports (engines/kinds.py) is scheduled; an explicit schedule naming a
script its kind cannot run is a ConfigError.
Runtime entries (``dbfleet schedule add``) live in Redis through celery-redbeat.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab, schedule

from engines.config import Config
from engines.errors import ConfigError, UnknownScriptError
from engines.kinds import LABELS, kinds_with, supports
from engines.tuning import analysis_cron
from workers.scripts import SCRIPTS, resolve

# script -> the kinds-registry capability it needs (engines/kinds.py); a script not listed runs on any kind
NEEDS = {"health_check": "health", "backup": "dumper", "backup_verify": "dumper", "backup_prune": "dumper",
         "restore": "dumper", "restore_drill": "dumper", "security_audit": "auditor",
         "performance_tuning": "tuner", "performance_tuning_apply": "tuner", "performance_tuning_revert": "tuner",
         "performance_tuning_refresh": "tuner"}


def runs_on(script: str, kind: str) -> bool:
    """Whether ``script`` can run on a database of ``kind`` (the registry has what it needs)."""
    need = NEEDS.get(script)
    return need is None or supports(kind, need)


def _explicit(script: str, db_id: str, kind: str, where: str) -> None:
    name = resolve(script)[0]
    if not runs_on(name, kind):
        need = NEEDS[name]
        raise ConfigError([(where, f"{name} cannot run on {db_id!r}: {kind} has no {LABELS[need]} "
                                   f"(kinds with one: {', '.join(kinds_with(need))}; dbfleet kinds shows the matrix)")])


def cron_schedule(expr: str) -> crontab:
    """A five-field cron string as a Celery crontab."""
    minute, hour, dom, month, dow = expr.split()
    return crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)


def entry(script: str, database_id: str, when: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One beat entry for ``script`` on ``database_id``."""
    _, task, queue = resolve(script)
    return {"task": task, "schedule": when, "args": [database_id],
            "kwargs": {"options": options or {}}, "options": {"queue": queue}}


def build_beat_schedule(cfg: Config) -> dict[str, dict[str, Any]]:
    """All static beat entries, keyed by a stable name."""
    out: dict[str, dict[str, Any]] = {}
    monitoring = cfg.database_scripts.monitoring
    if monitoring.enabled and monitoring.interval_seconds > 0:
        for db_id, db in cfg.databases.items():
            if runs_on("health_check", db.kind):  # a kind without a connector cannot be checked
                out[f"health_check:{db_id}"] = entry("health_check", db_id, schedule(monitoring.interval_seconds))
    backup = cfg.database_scripts.backup
    # a scheduled verify reads back a random 5% of the chunks: every chunk is re-read every few weeks
    for script, cron, opts in (("backup", backup.schedule, {}),
                               ("backup_verify", backup.verify_schedule, {"read_data": True, "subset": 5}),
                               ("restore_drill", backup.drill_schedule, {})):
        if backup.enabled and cron and script in SCRIPTS:
            for db_id, db in cfg.databases.items():
                if runs_on(script, db.kind):  # kinds without a backup engine are not scheduled
                    out[f"{script}:{db_id}"] = entry(script, db_id, cron_schedule(cron), opts)
    audit = cfg.database_scripts.security_audit
    if audit.enabled and audit.schedule:
        for db_id, db in cfg.databases.items():
            if runs_on("security_audit", db.kind):  # kinds without security checks (sqlite, clickhouse)
                out[f"security_audit:{db_id}"] = entry("security_audit", db_id, cron_schedule(audit.schedule))
    tuning = cfg.database_scripts.performance_tuning
    if tuning.enabled and tuning.analysis_interval:
        for db_id, db in cfg.databases.items():
            if runs_on("performance_tuning", db.kind):  # read-only analysis; applying is its own decision
                out[f"performance_tuning:{db_id}"] = entry("performance_tuning", db_id,
                                                           cron_schedule(analysis_cron(tuning.analysis_interval)))
    dr = cfg.database_scripts.disaster_recovery
    for dr_id, group in (dr.all_groups() if dr.enabled else {}).items():
        # observe each DR group (lag vs RPO, automatic failover) and drill it on its own schedule, on the dr queue
        out[f"dr_observe:{dr_id}"] = entry("disaster_recovery", dr_id, schedule(group.observe_interval_seconds))
        if group.drill_schedule:
            out[f"dr_drill:{dr_id}"] = {**entry("disaster_recovery", dr_id, cron_schedule(group.drill_schedule)),
                                        "task": "dr.drill"}
    compliance = cfg.database_scripts.compliance
    if compliance.anchor_schedule and (compliance.trail_key_env or compliance.trail_key_file):
        # daily: the trail's head goes to the backup storage, where a later `trail verify` checks it
        out["compliance_trail_anchor"] = {"task": "compliance.export_anchor",
                                          "schedule": cron_schedule(compliance.anchor_schedule),
                                          "args": [], "kwargs": {}, "options": {"queue": "compliance"}}
    for db_id, db in cfg.databases.items():
        for script, cron in db.schedules.items():
            _explicit(script, db_id, db.kind, f"databases.{db_id}.schedules.{script}")
            out[f"{script}:{db_id}:cron"] = entry(script, db_id, cron_schedule(cron))
    for name, sched in cfg.schedules.items():
        if sched.database in cfg.databases:
            _explicit(sched.script, sched.database, cfg.databases[sched.database].kind, f"schedules.{name}")
        out[name] = entry(sched.script, sched.database, cron_schedule(sched.cron), sched.options)
    return out


__all__ = ["NEEDS", "build_beat_schedule", "cron_schedule", "entry", "runs_on", "UnknownScriptError"]
