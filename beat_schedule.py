"""Turn the config's schedules into Celery beat entries on the right queues.

Static entries come from dbfleet.yaml: ``schedules:``, each database's ``schedules:``,
``database_scripts.backup.schedule`` / ``verify_schedule`` / ``drill_schedule`` (for every database)
and ``database_scripts.monitoring.interval_seconds`` (a health check per database) and
``database_scripts.security_audit.schedule`` (weekly by default, for every kind that has checks).
Runtime entries (``dbfleet schedule add``) live in Redis through celery-redbeat.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab, schedule

from engines.backup.engine import DUMPERS
from engines.config import Config
from engines.errors import UnknownScriptError
from engines.security.engine import AUDITORS
from workers.scripts import SCRIPTS, resolve


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
        for db_id in cfg.databases:
            out[f"health_check:{db_id}"] = entry(
                "health_check", db_id, schedule(monitoring.interval_seconds))
    backup = cfg.database_scripts.backup
    # a scheduled verify reads back a random 5% of the chunks: every chunk is re-read every few weeks
    for script, cron, opts in (("backup", backup.schedule, {}),
                               ("backup_verify", backup.verify_schedule, {"read_data": True, "subset": 5}),
                               ("restore_drill", backup.drill_schedule, {})):
        if backup.enabled and cron and script in SCRIPTS:
            for db_id, db in cfg.databases.items():
                if db.kind in DUMPERS:  # kinds without a backup engine (clickhouse) are not scheduled
                    out[f"{script}:{db_id}"] = entry(script, db_id, cron_schedule(cron), opts)
    audit = cfg.database_scripts.security_audit
    if audit.enabled and audit.schedule:
        for db_id, db in cfg.databases.items():
            if db.kind in AUDITORS:  # sqlite and clickhouse have no security checks
                out[f"security_audit:{db_id}"] = entry("security_audit", db_id, cron_schedule(audit.schedule))
    for db_id, db in cfg.databases.items():
        for script, cron in db.schedules.items():
            out[f"{script}:{db_id}:cron"] = entry(script, db_id, cron_schedule(cron))
    for name, sched in cfg.schedules.items():
        out[name] = entry(sched.script, sched.database, cron_schedule(sched.cron), sched.options)
    return out


__all__ = ["build_beat_schedule", "cron_schedule", "entry", "UnknownScriptError"]
