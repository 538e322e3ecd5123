"""Prometheus exporter: reads what workers cached; a scrape never opens database connections."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from engines.config import Config
from workers import runtime

log = logging.getLogger("dbfleet.exporter")


class FleetCollector(Collector):
    """Database health from the worker cache, queue depths, script runs from history."""

    def __init__(self, cfg: Config, cache: Any, history: Any) -> None:
        self.cfg, self.cache, self.history = cfg, cache, history

    def collect(self) -> Iterator[Any]:
        yield from self._databases()
        yield from self._backups()
        yield from self._audits()
        yield from self._queues()
        yield from self._runs()

    def _databases(self) -> Iterator[Any]:
        up = GaugeMetricFamily("dbfleet_database_up", "1 when the last health check reached the database",
                               labels=["database", "kind"])
        rt = GaugeMetricFamily("dbfleet_database_response_seconds", "Round trip of the last health check",
                               labels=["database", "kind"])
        size = GaugeMetricFamily("dbfleet_database_size_bytes", "Database size seen by the last check",
                                 labels=["database", "kind"])
        ts = GaugeMetricFamily("dbfleet_health_last_check_timestamp_seconds",
                               "When the last health check ran", labels=["database", "kind"])
        keys = [runtime.HEALTH_KEY.format(i) for i in self.cfg.databases]
        try:
            raw = self.cache.mget(keys) if keys else []
        except Exception as exc:
            log.warning("cannot read the health cache: %s", type(exc).__name__)
            raw = [None] * len(keys)
        for (db_id, db), blob in zip(self.cfg.databases.items(), raw, strict=True):
            if blob is None:
                continue
            report = json.loads(blob)
            labels = [db_id, db.kind]
            up.add_metric(labels, 0.0 if report["status"] == "down" else 1.0)
            from datetime import datetime

            ts.add_metric(labels, datetime.fromisoformat(report["checked_at"]).timestamp())
            for c in report["checks"]:
                if c["check"] == "response_time" and c["value"] is not None:
                    rt.add_metric(labels, c["value"] / 1000.0)
                if c["check"] == "database_size" and c["value"] is not None:
                    size.add_metric(labels, float(c["value"]))
        yield from (up, rt, size, ts)

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
            from datetime import datetime

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
        from datetime import datetime

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


def build_registry(cfg: Config | None = None) -> CollectorRegistry:
    """A registry holding only dbfleet's collector."""
    cfg = cfg or runtime.config()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(cfg, runtime.cache(), runtime.history()))
    return registry


def serve(address: str, port: int) -> None:
    """Serve /metrics until interrupted."""
    import time

    from prometheus_client import start_http_server

    start_http_server(port, addr=address, registry=build_registry())
    log.info("exporter on http://%s:%s/metrics", address, port)
    while True:
        time.sleep(3600)
