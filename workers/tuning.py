"""Tasks of the ``tuning`` queue: analyse, apply (safely, proven), revert one recorded change."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from engines.config import DatabaseConfig
from engines.errors import ConfigError
from engines.tuning import analyze, analyze_and_apply, refresh_view, revert, tuning_settings
from engines.tuning.base import TuningSettings
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

log = logging.getLogger("dbfleet.tasks")
Result = tuple[dict[str, Any], bool, str | None]
ANALYZE, APPLY, REVERT = "performance_tuning", "performance_tuning_apply", "performance_tuning_revert"
REFRESH = "performance_tuning_refresh"
REFRESH_ENTRY = "tuning_refresh:{}:{}.{}"  # redbeat entry of one applied materialized view: db, schema, view
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
    for change in report.changes:
        if change.kind == "create_mview" and change.status == "kept":
            change.evidence["beat_entry"] = schedule_refresh(db.id, change.target["schema"], change.target["view"],
                                                             change.evidence["refresh_schedule"])
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
    reverse = found[1].get("reverse") or {}
    if reverse.get("action") == "drop_mview":
        result["beat_entry_removed"] = unschedule_refresh(db.id, reverse["schema"], reverse["view"])
    return {"database_id": db.id, **result}, True, None


def _beat_app() -> Any:
    """A Celery app that only talks to this config's redbeat store (the worker's app may predate the config)."""
    from celery import Celery

    from workers.app import celery_settings

    beat = Celery("dbfleet-tuning-beat", set_as_current=False)
    beat.conf.update({k: v for k, v in celery_settings(runtime.config()).items()
                      if k.startswith("redbeat_") or k == "timezone"})
    return beat


def schedule_refresh(db_id: str, schema: str, view: str, cron: str) -> str:
    """Save the beat entry that refreshes an applied view on its schedule (tuning queue); its name."""
    from redbeat import RedBeatSchedulerEntry

    from beat_schedule import cron_schedule

    name = REFRESH_ENTRY.format(db_id, schema, view)
    RedBeatSchedulerEntry(name, "tuning.refresh_view", cron_schedule(cron), args=[db_id],
                          kwargs={"options": {"schema": schema, "view": view}}, options={"queue": "tuning"},
                          app=_beat_app()).save()
    return name


def refresh_entry(db_id: str, schema: str, view: str) -> Any:
    """The saved beat entry of one view, or None."""
    from redbeat import RedBeatSchedulerEntry

    beat = _beat_app()
    try:
        return RedBeatSchedulerEntry.from_key(beat.conf.redbeat_key_prefix + REFRESH_ENTRY.format(db_id, schema, view),
                                              app=beat)
    except KeyError:
        return None


def unschedule_refresh(db_id: str, schema: str, view: str) -> bool:
    """Remove a reverted view's beat entry; False when there was none."""
    entry = refresh_entry(db_id, schema, view)
    if entry is None:
        return False
    entry.delete()
    return True


def do_refresh(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Refresh one applied materialized view (``options.schema``, ``options.view``)."""
    if not options.get("schema") or not options.get("view"):
        raise ConfigError([("view", "name the materialized view: options schema and view")])
    try:
        result = refresh_view(db, _settings(db, {}), str(options["schema"]), str(options["view"]))
    except LookupError as exc:  # reverted or dropped by hand: the entry has nothing left to refresh
        return {"database_id": db.id, "error": str(exc)}, False, str(exc)
    return {"database_id": db.id, **result}, True, None


OPERATIONS = {ANALYZE: do_analyze, APPLY: do_apply, REVERT: do_revert, REFRESH: do_refresh}


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


@app.task(name="tuning.refresh_view", bind=True, base=ScriptTask, script_type=REFRESH)
def refresh_task(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY of one view an apply created (its beat entry runs this)."""
    return self.execute(database_id, options, do_refresh)
