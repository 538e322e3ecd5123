"""Tasks of the ``health`` queue."""

from __future__ import annotations

import json
import logging
from typing import Any

from engines.config import DatabaseConfig
from engines.health import run_basic_health
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

log = logging.getLogger("dbfleet.tasks")


def _health(db: DatabaseConfig, options: dict[str, Any]) -> tuple[dict[str, Any], bool, str | None]:
    report = run_basic_health(db).to_dict()
    try:  # the exporter reads this cache; a cache outage must not fail the check
        runtime.cache().set(runtime.HEALTH_KEY.format(db.id), json.dumps(report), ex=runtime.HEALTH_TTL)
    except Exception as exc:
        log.warning("cannot cache health of %s: %s", db.id, type(exc).__name__)
    return report, report["status"] != "down", report["error"]


@app.task(name="health.check", bind=True, base=ScriptTask, script_type="health_check")
def check(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Basic health of one database: reachability, response time, version, role, size."""
    return self.execute(database_id, options, _health)
