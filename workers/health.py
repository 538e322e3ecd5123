"""Tasks of the ``health`` queue: a health check, then alert rules on its result."""

from __future__ import annotations

import json
import logging
from typing import Any

from engines.config import DatabaseConfig
from engines.health import run_health
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

log = logging.getLogger("dbfleet.tasks")


def _load_memory(db_id: str) -> dict[str, Any]:
    try:
        raw = runtime.cache().get(runtime.HEALTH_MEMORY_KEY.format(db_id))
    except Exception as exc:
        log.warning("cannot read the health memory of %s: %s", db_id, type(exc).__name__)
        return {}
    return json.loads(raw) if raw else {}


def _has_stored_rules() -> bool:
    """Rules added at run time (workers.monitoring.add_alert_rule) live in the alert store."""
    try:
        return bool(runtime.alert_store().rule_specs())
    except Exception as exc:
        log.warning("cannot read run-time alert rules: %s", type(exc).__name__)
        return False


def evaluate_alerts(db: DatabaseConfig, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the alert rules on a report; transitions go to the realtime feed. Never fails the check."""
    if not runtime.config().database_scripts.monitoring.alert_rules and not _has_stored_rules():
        return []
    try:
        transitions: list[dict[str, Any]] = runtime.evaluator().evaluate(report, db.tags)
    except Exception as exc:
        log.error("alert evaluation for %s failed: %s", db.id, type(exc).__name__)
        return []
    for t in transitions:
        runtime.publish(t)
    return transitions


def wal_archive(db: DatabaseConfig) -> Any:
    """The WAL archive of ``db`` in the default repository (the WAL health checks read it: engines/health/pg_wal.py)."""
    from engines.backup.engine import open_repository
    from engines.backup.wal.archive import WalArchive

    return WalArchive(open_repository(runtime.config()), db.id)


def _health(db: DatabaseConfig, options: dict[str, Any]) -> tuple[dict[str, Any], bool, str | None]:
    memory = _load_memory(db.id)
    report = run_health(db, memory=memory, deep=str(options.get("deep", True)).lower() not in ("0", "false", "no"),
                        context={"wal_archive": wal_archive})
    result = report.to_dict()
    runtime.remember(runtime.HEALTH_KEY, db.id, result, runtime.HEALTH_TTL)  # the exporter and the API read it
    runtime.remember(runtime.HEALTH_MEMORY_KEY, db.id, memory)  # counters and baselines for the next run
    runtime.publish({"type": "health", **result})
    result["alerts"] = evaluate_alerts(db, result)
    return result, result["status"] != "down", result["error"]


@app.task(name="health.check", bind=True, base=ScriptTask, script_type="health_check")
def check(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Health of one database (the kind's PgHero-style checks), then the alert rules on it."""
    return self.execute(database_id, options, _health)
