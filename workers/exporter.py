"""Prometheus exporter: reads what workers cached; a scrape never opens database connections."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from engines.config import Config
from engines.monitoring.metrics import CUSTOM_HINT, HOST_METRICS
from workers import runtime

log = logging.getLogger("dbfleet.exporter")
STATUS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


class FleetCollector(Collector):
    """Database health from the worker cache, queue depths, script runs from history."""

    def __init__(self, cfg: Config, cache: Any, history: Any, alerts: Any = None) -> None:
        self.cfg, self.cache, self.history, self.alerts = cfg, cache, history, alerts

    def collect(self) -> Iterator[Any]:
        yield from self._databases()
        yield from self._backups()
        yield from self._audits()
        yield from self._queues()
        yield from self._runs()
        yield from self._tasks()
        yield from self._alerts()
        yield from self._dr()
        yield from self._wal()

    def _databases(self) -> Iterator[Any]:
        labels = ["database", "kind"]
        up = GaugeMetricFamily("dbfleet_database_up", "1 when the last health check reached the database", labels=labels)
        rt = GaugeMetricFamily("dbfleet_database_response_seconds", "Round trip of the last health check",
                               labels=labels)
        size = GaugeMetricFamily("dbfleet_database_size_bytes", "Database size seen by the last check", labels=labels)
        conns = GaugeMetricFamily("dbfleet_database_connections_percent", "Connections in use, percent of the limit",
                                  labels=labels)
        lag = GaugeMetricFamily("dbfleet_database_replication_lag_seconds", "Replication lag seen by the last check",
                                labels=labels)
        ts = GaugeMetricFamily("dbfleet_health_last_check_timestamp_seconds", "When the last health check ran",
                               labels=labels)
        value = GaugeMetricFamily("dbfleet_health_check_value", "Value of each health check (in the check's unit)",
                                  labels=[*labels, "check", "unit"])
        status = GaugeMetricFamily("dbfleet_health_check_status", "Status of each health check: 0 ok, 1 warning, "
                                   "2 critical, 3 unknown", labels=[*labels, "check"])
        custom = GaugeMetricFamily("dbfleet_custom_metric", "A metric the database declares (databases.<id>.metrics)",
                                   labels=[*labels, "metric", "unit"])
        host = GaugeMetricFamily("dbfleet_host_usage_percent", "CPU, memory and disk use of the database's host "
                                 "(host_metrics: node_exporter or psutil)", labels=[*labels, "resource"])
        direct = {"response_time": (rt, 0.001), "database_size": (size, 1.0), "connections": (conns, 1.0),
                  "replication_lag": (lag, 1.0)}
        for db_id, kind, report in self._cached(runtime.HEALTH_KEY):
            up.add_metric([db_id, kind], 0.0 if report["status"] == "down" else 1.0)
            ts.add_metric([db_id, kind], datetime.fromisoformat(report["checked_at"]).timestamp())
            for c in report["checks"]:
                status.add_metric([db_id, kind, c["check"]], float(STATUS_CODES.get(c["status"], 3)))
                v = c.get("value")
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                value.add_metric([db_id, kind, c["check"], c.get("unit") or ""], float(v))
                if c.get("hint") == CUSTOM_HINT:
                    custom.add_metric([db_id, kind, c["check"], c.get("unit") or ""], float(v))
                elif c["check"] in HOST_METRICS:
                    host.add_metric([db_id, kind, c["check"].removesuffix("_usage")], float(v))
                if c["check"] in direct and (c["check"] != "connections" or c.get("unit") == "%"):
                    family, scale = direct[c["check"]]
                    family.add_metric([db_id, kind], float(v) * scale)
        yield from (up, rt, size, conns, lag, ts, value, status, custom, host)

    def _cached(self, key: str) -> list[tuple[str, str, dict[str, Any]]]:
        keys = [key.format(i) for i in self.cfg.databases]
        try:
            raw = self.cache.mget(keys) if keys else []
        except Exception as exc:
            log.warning("cannot read the result cache: %s", type(exc).__name__)
            return []
        return [(db_id, db.kind, json.loads(blob)) for (db_id, db), blob in
                zip(self.cfg.databases.items(), raw, strict=True) if blob is not None]

    def _backups(self) -> Iterator[Any]:
        labels = ["database", "kind"]
        last = GaugeMetricFamily("dbfleet_backup_last_success_timestamp_seconds",
                                 "When the last successful backup finished", labels=labels)
        size = GaugeMetricFamily("dbfleet_backup_last_size_bytes", "Bytes dumped by the last backup", labels=labels)
        new = GaugeMetricFamily("dbfleet_backup_last_stored_bytes",
                                "Bytes the last backup added to the repository (after dedup, zstd)", labels=labels)
        took = GaugeMetricFamily("dbfleet_backup_last_duration_seconds", "Wall time of the last backup", labels=labels)
        for db_id, kind, b in self._cached(runtime.BACKUP_KEY):
            last.add_metric([db_id, kind], datetime.fromisoformat(b["finished_at"]).timestamp())
            size.add_metric([db_id, kind], float(b["total_bytes"]))
            new.add_metric([db_id, kind], float(b["stored_bytes"]))
            took.add_metric([db_id, kind], float(b["duration_seconds"]))
        rto = GaugeMetricFamily("dbfleet_restore_drill_rto_seconds", "Measured RTO of the last restore drill",
                                labels=labels)
        rpo = GaugeMetricFamily("dbfleet_restore_drill_rpo_seconds", "Backup age at the last restore drill",
                                labels=labels)
        ok = GaugeMetricFamily("dbfleet_restore_drill_success", "1 when the last restore drill passed", labels=labels)
        when = GaugeMetricFamily("dbfleet_restore_drill_timestamp_seconds", "When the last drill ran", labels=labels)
        for db_id, kind, d in self._cached(runtime.DRILL_KEY):
            rto.add_metric([db_id, kind], float(d["rto_seconds"]))
            rpo.add_metric([db_id, kind], float(d["rpo_seconds"]))
            ok.add_metric([db_id, kind], 1.0 if d["ok"] else 0.0)
            when.add_metric([db_id, kind], float(d["at"]))
        yield from (last, size, new, took, rto, rpo, ok, when)

    def _audits(self) -> Iterator[Any]:
        labels = ["database", "kind"]
        failing = GaugeMetricFamily("dbfleet_audit_findings", "Failing findings of the last security audit",
                                    labels=[*labels, "severity"])
        new = GaugeMetricFamily("dbfleet_audit_new_findings", "Findings of the last audit that failed for the "
                                "first time", labels=[*labels, "severity"])
        unknown = GaugeMetricFamily("dbfleet_audit_unknown_checks", "Checks the last audit could not evaluate",
                                    labels=labels)
        score = GaugeMetricFamily("dbfleet_audit_score_percent", "Severity-weighted share of passing checks",
                                  labels=labels)
        when = GaugeMetricFamily("dbfleet_audit_last_run_timestamp_seconds", "When the last audit ran",
                                 labels=labels)
        for db_id, kind, a in self._cached(runtime.AUDIT_KEY):
            for severity, n in a["failing"].items():
                failing.add_metric([db_id, kind, severity], float(n))
                new.add_metric([db_id, kind, severity], float(a["new_failing"].get(severity, 0)))
            unknown.add_metric([db_id, kind], float(a["unknown"]))
            score.add_metric([db_id, kind], float(a["score"]))
            when.add_metric([db_id, kind], datetime.fromisoformat(a["audited_at"]).timestamp())
        yield from (failing, new, unknown, score, when)

    def _queues(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("dbfleet_queue_depth", "Messages waiting in a queue", labels=["queue"])
        if self.cfg.fleet.broker_url.startswith(("redis://", "rediss://")):
            from workers.app import QUEUES
            from workers.status import redis_queue_depths

            try:
                for q, n in redis_queue_depths(self.cfg.fleet.broker_url, QUEUES).items():
                    depth.add_metric([q], float(n))
            except Exception as exc:
                log.warning("cannot read queue depths: %s", type(exc).__name__)
        yield depth

    def _runs(self) -> Iterator[Any]:
        runs = CounterMetricFamily("dbfleet_script_runs", "Script runs recorded in history",
                                   labels=["script", "status"])
        for (script, status), n in self.history.counts().items():
            runs.add_metric([script, status], float(n))
        yield runs


    def _tasks(self) -> Iterator[Any]:
        from workers.telemetry import BUCKETS, DURATION_KEY, TASKS_KEY, workers_online

        tasks = CounterMetricFamily("dbfleet_tasks", "Finished Celery tasks by queue, task and final state",
                                    labels=["queue", "task", "state"])
        durations = HistogramMetricFamily("dbfleet_task_duration_seconds", "Wall time of finished Celery tasks",
                                          labels=["queue", "task"])
        online = GaugeMetricFamily("dbfleet_workers_online", "Workers with a heartbeat in the last 30 s")
        try:
            counts = self.cache.hgetall(TASKS_KEY)
            buckets = self.cache.hgetall(DURATION_KEY)
            online.add_metric([], float(workers_online(self.cache)))
        except Exception as exc:
            log.warning("cannot read task telemetry: %s", type(exc).__name__)
            counts, buckets = {}, {}
        for key, n in counts.items():
            queue, task, state = key.decode().split("|")
            tasks.add_metric([queue, task, state], float(n))
        series: dict[tuple[str, str], dict[str, float]] = {}
        for key, n in buckets.items():
            queue, task, le = key.decode().rsplit("|", 2)
            series.setdefault((queue, task), {})[le] = float(n)
        for (queue, task), b in sorted(series.items()):
            bounds = [(str(le), b.get(str(le), 0.0)) for le in BUCKETS] + [("+Inf", b.get("+Inf", 0.0))]
            durations.add_metric([queue, task], bounds, sum_value=b.get("sum", 0.0))
        yield from (tasks, durations, online)

    def _alerts(self) -> Iterator[Any]:
        alerts = GaugeMetricFamily("dbfleet_alerts", "Pending and firing alerts", labels=["state", "severity"])
        try:
            rows = self.alerts.active() if self.alerts is not None else []
        except Exception as exc:
            log.warning("cannot read alerts: %s", type(exc).__name__)
            rows = []
        counts: dict[tuple[str, str], int] = {}
        for r in rows:
            counts[(r["state"], r["severity"])] = counts.get((r["state"], r["severity"]), 0) + 1
        for (state, severity), n in sorted(counts.items()):
            alerts.add_metric([state, severity], float(n))
        yield alerts


    def _dr(self) -> Iterator[Any]:
        """Each DR group's last observation (written by ``dr.observe`` to the coordination store)."""
        from engines.dr.coord import Coordinator
        from engines.dr.models import DRStatus
        from engines.dr.observe import metrics

        groups = self.cfg.database_scripts.disaster_recovery.all_groups()
        helps = {"dbfleet_dr_primary_up": "1 when the DR group's primary answered the last observation",
                 "dbfleet_dr_standby_streaming": "1 when the standby streams from the primary",
                 "dbfleet_dr_replay_lag_seconds": "Standby replay lag at the last observation",
                 "dbfleet_dr_replay_lag_bytes": "Standby replay lag in bytes at the last observation",
                 "dbfleet_dr_rpo_budget_ratio": "Replay lag over the group's RPO (above 1: the RPO would be missed)",
                 "dbfleet_dr_slot_retained_bytes": "WAL the standby's replication slot holds back",
                 "dbfleet_dr_archive_replay_lag_seconds": "Warm standby: how long archived WAL has waited unreplayed"}
        families = {name: GaugeMetricFamily(name, text, labels=["dr_group", "database"]) for name, text in helps.items()}
        store = Coordinator(self.cache) if groups else None
        for dr_id in groups:
            try:
                raw = store.last_status(dr_id) if store else None
                samples = metrics(DRStatus.model_validate(raw)) if raw else []
            except Exception as exc:  # one unreadable observation does not hide the others
                log.warning("DR status of %s unreadable: %s", dr_id, type(exc).__name__)
                continue
            for name, labels, value in samples:
                if name in families:
                    families[name].add_metric([labels["dr_group"], labels["database"]], value)
        yield from families.values()

    def _wal(self) -> Iterator[Any]:
        """PostgreSQL WAL archiving, from the WAL checks of the cached health reports (engines/health/pg_wal.py)."""
        labels = ["database", "kind"]
        specs = {"wal_archive_lag": ("dbfleet_wal_archive_lag_seconds", "Age of the oldest WAL segment still "
                                     "waiting for archive_command (0: none waits)"),
                 "wal_archive_last_segment_age": ("dbfleet_wal_archive_last_segment_age_seconds",
                                                  "Age of the newest WAL segment in the repository"),
                 "wal_archive_last_archived_age": ("dbfleet_wal_archive_last_archived_age_seconds",
                                                   "Seconds since the server last archived a WAL file (pg_stat_archiver)"),
                 "wal_archive_gaps": ("dbfleet_wal_archive_gap_segments", "WAL segments missing in the repository "
                                      "after a base backup"),
                 "replication_slot_wal": ("dbfleet_wal_slot_retained_bytes", "The most WAL a replication slot "
                                          "holds back"),
                 "wal_stream": ("dbfleet_wal_stream_silence_seconds", "Seconds since dbfleet wal stream last "
                                "replied to the server")}
        families = {check: GaugeMetricFamily(name, text, labels=labels) for check, (name, text) in specs.items()}
        failing = GaugeMetricFamily("dbfleet_wal_archive_failing", "1 while archive_command fails (the newest "
                                    "attempt failed)", labels=labels)
        stream_up = GaugeMetricFamily("dbfleet_wal_stream_up", "1 when dbfleet wal stream is connected and "
                                      "replying", labels=labels)
        for db_id, kind, report in self._cached(runtime.HEALTH_KEY):
            for c in report["checks"]:
                v, name = c.get("value"), c["check"]
                if name == "wal_archive_failures":
                    failing.add_metric([db_id, kind], 1.0 if c["status"] == "critical" else 0.0)
                if name == "wal_stream":
                    stream_up.add_metric([db_id, kind], 0.0 if c["status"] == "critical" else 1.0)
                if name in families and isinstance(v, (int, float)) and not isinstance(v, bool):
                    families[name].add_metric([db_id, kind], float(v))
        yield from (*families.values(), failing, stream_up)


def build_registry(cfg: Config | None = None) -> CollectorRegistry:
    """A registry holding only dbfleet's collector."""
    cfg = cfg or runtime.config()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(cfg, runtime.cache(), runtime.history(), runtime.alert_store()))
    return registry


def auth_middleware(app: Any, cfg: Config) -> Any:
    """Basic auth (exporter.user + password) and/or a bearer token (exporter.token_env) when configured; a
    configured credential that resolves empty is an error, never an open endpoint. Nothing configured: open
    (docs/security.md)."""
    import base64
    import secrets

    from engines.errors import ConfigError
    from engines.secrets import resolve_secret

    ec = cfg.fleet.exporter
    if not (ec.user or ec.token_env):
        log.warning("/metrics is served without authentication (set fleet.exporter.user and password_env)")
        return app
    accepted = set()
    if ec.user:
        password = resolve_secret("exporter", env=ec.password_env, file=ec.password_file)
        if not password:
            raise ConfigError([("fleet.exporter", "the basic-auth password is empty: set "
                                f"{ec.password_env or ec.password_file}")], cfg.source)
        accepted.add("Basic " + base64.b64encode(f"{ec.user}:{password}".encode()).decode())
    if ec.token_env:
        token = resolve_secret("exporter token", env=ec.token_env)
        if not token:
            raise ConfigError([("fleet.exporter", f"the bearer token in {ec.token_env} is empty")], cfg.source)
        accepted.add(f"Bearer {token}")

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        given = environ.get("HTTP_AUTHORIZATION", "")
        if any(secrets.compare_digest(given.encode(), a.encode()) for a in accepted):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                            ("WWW-Authenticate", 'Basic realm="dbfleet"')])
        return [b"authentication required\n"]

    return guarded


def serve(address: str, port: int) -> None:
    """Serve /metrics until interrupted (threaded, so a slow scrape never blocks the next)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    cfg = runtime.config()
    app = auth_middleware(make_wsgi_app(build_registry(cfg)), cfg)
    httpd = make_server(address, port, app, server_class=Server, handler_class=Quiet)
    log.info("exporter on http://%s:%s/metrics", address, port)
    httpd.serve_forever()
