"""The monitoring facade for application code: which databases, how often, dashboard data, alert rules.

    await setup_monitoring([{"id": "spotify_prod"}, ...])
    await monitoring_engine.start_monitoring(interval_seconds=30)   # beat entries on the health queue
    dashboard = await monitoring_engine.get_dashboard_data()
    monitoring_engine.add_alert_rule(AlertRule(name=..., condition="cpu_usage > 75% AND active_users > 1000000",
                                               severity="warning", channels=["slack:database-team"]))

Databases are registry ids: a ``config`` given with one must match its registry entry (docs/security.md).
Rules added here are stored in the alert store and evaluated by every worker from their next check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engines.config import AlertRuleConfig
from engines.errors import ConfigError
from workers import runtime

log = logging.getLogger("dbfleet.monitoring")

ENTRY_PREFIX = "monitoring:"  # redbeat entries of start_monitoring
_CONNECTION_KEYS = {"type": "kind", "kind": "kind", "host": "host", "port": "port", "database": "dbname",
                    "dbname": "dbname", "user": "user"}
_MONITORING_KEYS = {"thresholds", "metrics", "host_metrics"}  # must equal the registry's when given


class AlertRule(BaseModel):
    """A rule in the rule language (engines/monitoring/rules.py) with where it notifies."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    condition: str = Field(min_length=1, max_length=2000)
    severity: str = "warning"
    channels: list[str] | None = None  # default: monitoring.alert_channels
    duration: str = "0s"  # how long the condition holds before the alert fires
    databases: list[str] | None = None
    description: str | None = None


def _async(value: Any) -> Any:
    """``value`` that can also be awaited (the facade's calls work with and without ``await``)."""

    class _Done(type(value)):  # type: ignore[misc]
        def __await__(self) -> Any:
            async def _v() -> Any:
                return value

            return _v().__await__()

    return _Done(value)


class MonitoringEngine:
    """The monitored databases of this application, their beat entries, dashboard data and rules."""

    def __init__(self) -> None:
        self.database_ids: list[str] = []

    def configure(self, databases: list[dict[str, Any] | str]) -> list[str]:
        """Set which registry databases are monitored; a given ``config`` must match the registry."""
        cfg = runtime.config()
        ids = []
        for i, item in enumerate(databases):
            db_id = item if isinstance(item, str) else item.get("id") if isinstance(item, dict) else None
            if not isinstance(db_id, str):
                raise ConfigError([(f"databases[{i}]", "expected {'id': <registry id>, 'config': {...}}")],
                                  "setup_monitoring")
            db = cfg.database(db_id)
            given = item.get("config") if isinstance(item, dict) else None
            _check_matches(db_id, db, given or {}, i)
            ids.append(db_id)
        self.database_ids = ids
        return ids

    def start_monitoring(self, interval_seconds: int = 30) -> Any:
        """One beat entry per monitored database: a health check every ``interval_seconds`` (health queue)."""
        from celery.schedules import schedule
        from redbeat import RedBeatSchedulerEntry

        if interval_seconds < 5:
            raise ConfigError([("interval_seconds", "at least 5 seconds")], "start_monitoring")
        if not self.database_ids:
            raise ConfigError([("databases", "nothing to monitor: call setup_monitoring([...]) first")],
                              "start_monitoring")
        app = _app()
        names = []
        for db_id in self.database_ids:
            entry = RedBeatSchedulerEntry(ENTRY_PREFIX + db_id, "health.check", schedule(interval_seconds),
                                          args=[db_id], kwargs={"options": {}}, options={"queue": "health"}, app=app)
            entry.save()
            names.append(entry.name)
        return _async(names)

    def stop_monitoring(self) -> Any:
        """Remove the beat entries start_monitoring made."""
        from redbeat import RedBeatSchedulerEntry

        app, removed = _app(), []
        for db_id in self.database_ids:
            try:
                RedBeatSchedulerEntry.from_key(app.conf.redbeat_key_prefix + ENTRY_PREFIX + db_id, app=app).delete()
                removed.append(ENTRY_PREFIX + db_id)
            except KeyError:
                continue
        return _async(removed)

    async def get_dashboard_data(self) -> dict[str, Any]:
        """Every monitored database's health, active alerts, last backups/drills with age and RTO (JSON)."""
        return await asyncio.to_thread(dashboard_data, self.database_ids or list(runtime.config().databases))

    _get_dashboard_data = get_dashboard_data

    def add_alert_rule(self, rule: AlertRule, by: str | None = None) -> dict[str, Any]:
        """Validate ``rule`` against the known metrics and channels and store it (it survives restarts)."""
        from engines.monitoring.alerts import rule_spec
        from engines.monitoring.metrics import known_metrics
        from engines.monitoring.rules import RuleError

        section = runtime.config().database_scripts.monitoring
        if any(r.name == rule.name for r in section.alert_rules):
            raise ConfigError([("name", f"{rule.name!r} is a rule of the config file; pick another name")],
                              "alert rule")
        try:
            conf = AlertRuleConfig.model_validate({
                "name": rule.name, "expr": rule.condition, "for": rule.duration, "severity": rule.severity,
                "channels": rule.channels, "databases": rule.databases, "summary": rule.description})
            for channel in conf.channels or section.alert_channels:
                section.check_channel(channel)
            spec = rule_spec(conf, section, known_metrics(section.custom_units()))
        except RuleError as exc:
            raise ConfigError([("condition", exc.caret())], "alert rule") from None
        except ValueError as exc:
            raise ConfigError([("", str(exc))], "alert rule") from None
        runtime.alert_store().save_rule(spec, datetime.now(timezone.utc), by)
        return _async(spec)

    def alert_rules(self) -> list[dict[str, Any]]:
        """The rules added at run time (the config's are in dbfleet.yaml)."""
        return list(runtime.alert_store().rule_specs())

    def remove_alert_rule(self, name: str) -> bool:
        """Delete a run-time rule."""
        return bool(runtime.alert_store().delete_rule(name))


def _check_matches(db_id: str, db: Any, given: dict[str, Any], i: int) -> None:
    problems = []
    for key, value in given.items():
        field = _CONNECTION_KEYS.get(key)
        if field is None and key not in _MONITORING_KEYS:
            problems.append((f"databases[{i}].config.{key}", "not a connection or monitoring key; secrets and "
                                                            "options live in dbfleet.yaml"))
            continue
        if field == "kind":
            from engines.kinds import KIND_ALIASES

            value = KIND_ALIASES.get(str(value).lower(), value)
        current = getattr(db, field or key)
        current = current.model_dump(exclude_unset=True) if hasattr(current, "model_dump") else current
        if field and str(current) != str(value) or not field and current != value:
            problems.append((f"databases[{i}].config.{key}", f"{value!r} differs from the registry entry "
                                                            f"{db_id!r}; monitoring reads the registry"))
    if problems:
        raise ConfigError(problems, "setup_monitoring")


def _app() -> Any:
    from workers.manager import current_app

    return current_app()


def _cached(keys: list[str], cache: Any = None) -> list[dict[str, Any] | None]:
    raw = (cache if cache is not None else runtime.cache()).mget(keys) if keys else []
    return [json.loads(b) if b else None for b in raw]


def dashboard_data(ids: list[str], cfg: Any = None, cache: Any = None, store: Any = None) -> dict[str, Any]:
    """The dashboard's JSON: health, alerts, backups and drills of ``ids`` (the API's ``/api/dashboard`` and
    the page at ``/`` show exactly this). ``cfg``, ``cache`` and ``store`` default to this process's."""
    from workers.operation_options import health_summary

    cfg, now = cfg or runtime.config(), time.time()
    health = _cached([runtime.HEALTH_KEY.format(i) for i in ids], cache)
    backups = _cached([runtime.BACKUP_KEY.format(i) for i in ids], cache)
    drills = _cached([runtime.DRILL_KEY.format(i) for i in ids], cache)
    databases: list[dict[str, Any]] = []
    for db_id, report, backup, drill in zip(ids, health, backups, drills, strict=True):
        databases.append({"id": db_id, "kind": cfg.databases[db_id].kind,
                          "health": health_summary(report) if report else None,
                          "last_backup": _aged(backup, "finished_at", now),
                          "last_drill": _aged(drill, "at", now)})
    alerts = [a for a in (store if store is not None else runtime.alert_store()).active() if a["database_id"] in ids]
    migrations = _migrations(set(ids))
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "databases": databases,
            "alerts": alerts, "migrations": migrations, "summary": {"databases": len(ids), "down": sum(
                1 for d in databases if d["health"] and d["health"]["status"] == "down"),
                "firing": sum(1 for a in alerts if a["state"] == "firing")}}


def _migrations(ids: set[str], limit: int = 10) -> list[dict[str, Any]]:
    """Recent migrations from or to ``ids``: status, and batches/rows progress while they run."""
    from workers.migrations import store

    try:
        recent = store().recent(limit)
    except Exception as exc:  # no migration store yet: the dashboard shows the rest
        log.warning("cannot read migrations: %s", type(exc).__name__)
        return []
    out = []
    for m in recent:
        if m["source"] not in ids and m["target"] not in ids:
            continue
        if m["status"] == "running":
            p = store().progress(m["id"])
            m = m | {k: p.get(k) for k in ("batches_done", "batches_total", "rows", "rows_per_second", "eta_seconds")}
        out.append({k: v for k, v in m.items() if k != "report"})
    return out


def _aged(entry: dict[str, Any] | None, key: str, now: float) -> dict[str, Any] | None:
    if not entry:
        return None
    at = entry.get(key)
    if isinstance(at, str):
        at = datetime.fromisoformat(at).timestamp()
    return {**entry, "age_seconds": round(now - float(at), 1) if at else None}


monitoring_engine = MonitoringEngine()


async def setup_monitoring(databases: list[dict[str, Any] | str]) -> MonitoringEngine:
    """Choose the monitored databases (registry ids, optionally with their config to check); returns the engine."""
    await asyncio.to_thread(monitoring_engine.configure, databases)
    return monitoring_engine


__all__ = ["AlertRule", "MonitoringEngine", "monitoring_engine", "setup_monitoring"]
