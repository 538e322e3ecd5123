"""Tasks of the ``tuning`` queue: analyse, apply (safely, proven), revert one recorded change."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from engines.config import DatabaseConfig
from engines.errors import ConfigError
from engines.tuning import analyze, analyze_and_apply, revert, tuning_settings
from engines.tuning.base import TuningSettings
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

log = logging.getLogger("dbfleet.tasks")
Result = tuple[dict[str, Any], bool, str | None]
ANALYZE, APPLY, REVERT = "performance_tuning", "performance_tuning_apply", "performance_tuning_revert"
MEMORY_KEY = "dbfleet:tuning-memory:{}"  # workload counters carried between analyses (deltas)


def _settings(db: DatabaseConfig, options: dict[str, Any]) -> TuningSettings:
    section = runtime.config().database_scripts.performance_tuning.model_dump()
    per_db = (db.options or {}).get("performance_tuning") or {}
    run = {k: v for k, v in options.items() if k not in ("now", "change_id")}
    return tuning_settings({**section, **per_db}, run)


def _memory(db_id: str) -> dict[str, Any]:
    try:
        raw = runtime.cache().get(MEMORY_KEY.format(db_id))
    except Exception as exc:
        log.warning("cannot read the tuning memory of %s: %s", db_id, type(exc).__name__)
        return {}
    return json.loads(raw) if raw else {}


def in_window(window: str | None, now: datetime) -> bool:
    """True when ``now`` (UTC) falls inside ``HH:MM-HH:MM`` (which may wrap midnight); no window: always."""
    if not window:
        return True
    start, end = window.split("-")
    t = now.strftime("%H:%M")
    return start <= t < end if start <= end else (t >= start or t < end)


def do_analyze(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Analyse ``db`` (read-only); workload deltas are measured from the previous analysis."""
    settings = _settings(db, options)
    window = runtime.config().database_scripts.performance_tuning.maintenance_window
    if settings.auto_apply and in_window(window, datetime.now(timezone.utc)):
        return do_apply(db, {**options, "now": True})  # auto_apply: scheduled analyses apply inside the window
    memory = _memory(db.id)
    report = analyze(db, settings, memory)
    runtime.remember(MEMORY_KEY, db.id, memory)
    return report.to_dict(), report.error is None, report.error


def do_apply(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Analyse, then apply the proven advice inside the maintenance window (or ``now``)."""
    window = runtime.config().database_scripts.performance_tuning.maintenance_window
    if not options.get("now") and not in_window(window, datetime.now(timezone.utc)):
        raise ConfigError([("maintenance_window", f"now is outside the maintenance window {window} (UTC): "
                            "wait for it or pass --now")])
    memory = _memory(db.id)
    report = analyze_and_apply(db, _settings(db, options), memory)
    runtime.remember(MEMORY_KEY, db.id, memory)
    failed = [c.change_id for c in report.changes if c.status == "failed"]
    error = f"changes failed: {', '.join(failed)}" if failed else report.error
    return report.to_dict(), not error, error


def find_change(change_id: str) -> tuple[str, dict[str, Any]] | None:
    """(database id, change) of a change recorded by an apply run."""
    for script in (APPLY, ANALYZE):  # an analysis with auto_apply applies too
        for run in runtime.history().query(script_type=script, limit=500):
            for change in (run.get("summary") or {}).get("changes") or ():
                if change.get("change_id") == change_id:
                    return str(run["database_id"]), change
    return None


def do_revert(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Reverse one recorded change of ``db``."""
    found = find_change(str(options.get("change_id") or ""))
    if found is None or found[0] != db.id:
        raise ConfigError([("change_id", f"no applied change {options.get('change_id')!r} of {db.id} in history "
                            "(dbfleet history --script performance_tuning_apply)")])
    result = revert(db, _settings(db, {}), found[1])
    return {"database_id": db.id, **result}, True, None


OPERATIONS = {ANALYZE: do_analyze, APPLY: do_apply, REVERT: do_revert}


@app.task(name="tuning.analyze", bind=True, base=ScriptTask, script_type=ANALYZE)
def analyze_task(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Index advice, index hygiene and settings advice for one database (read-only)."""
    return self.execute(database_id, options, do_analyze)


@app.task(name="tuning.apply", bind=True, base=ScriptTask, script_type=APPLY)
def apply_task(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Analyse, then build the proven indexes one by one, each kept only when the real planner agrees."""
    return self.execute(database_id, options, do_apply)


@app.task(name="tuning.revert", bind=True, base=ScriptTask, script_type=REVERT)
def revert_task(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reverse one change an apply run recorded (``options.change_id``)."""
    return self.execute(database_id, options, do_revert)
