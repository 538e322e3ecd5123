"""The application API's pieces without servers: custom metrics in the rule language, host metric parsing,
per-script option tables, typed results."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from engines.config import parse_config
from engines.errors import ConfigError
from engines.monitoring.alerts import Evaluator, compile_rules
from engines.monitoring.store import AlertStore

CFG = """
databases:
  spotify_prod:
    kind: postgresql
    host: 127.0.0.1
    metrics:
      active_users: {sql: "SELECT count(*) FROM sessions", unit: number, timeout: 3}
    host_metrics: {node_exporter_url: "http://127.0.0.1:9100/metrics"}
database_scripts:
  monitoring:
    alert_channels: [log]
    alert_rules:
      - {name: playlist_db_load, expr: "cpu_usage > 75% AND active_users > 1000000"}
"""


def _report(cpu: float, users: float) -> dict:
    return {"database_id": "spotify_prod", "status": "up", "checks": [
        {"check": "cpu_usage", "status": "ok", "value": cpu, "unit": "%"},
        {"check": "active_users", "status": "ok", "value": users, "unit": "number", "hint": "custom metric"}]}


def test_the_documented_rule_parses_and_fires_on_custom_and_host_metrics(tmp_path: Path) -> None:
    cfg = parse_config(CFG)
    section = cfg.database_scripts.monitoring
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}")
    evaluator = Evaluator(store, compile_rules(section), clock=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert evaluator.evaluate(_report(40.0, 2_000_000)) == []
    fired = evaluator.evaluate(_report(90.0, 2_000_000))
    assert [(t["rule"], t["to"]) for t in fired] == [("playlist_db_load", "firing")]
    assert fired[0]["values"] == {"active_users": 2_000_000.0, "cpu_usage": 90.0}


def test_a_rule_on_an_undeclared_metric_is_refused_with_its_position() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'active_users'"):
        parse_config(CFG.replace("      active_users: {sql", "      other_users: {sql"))


def test_custom_metric_needs_exactly_one_source() -> None:
    bad = CFG.replace('{sql: "SELECT count(*) FROM sessions", unit: number, timeout: 3}',
                      '{sql: "SELECT 1", redis: "DBSIZE"}')
    with pytest.raises(ConfigError, match="exactly one of sql, redis, count"):
        parse_config(bad)


def test_host_thresholds_default_to_the_documented_80_85_90() -> None:
    db = parse_config(CFG).database("spotify_prod")
    assert (db.thresholds.cpu_percent, db.thresholds.memory_percent, db.thresholds.disk_percent) == (80, 85, 90)


def test_node_exporter_text_gives_cpu_memory_and_the_data_directory_filesystem() -> None:
    from engines.monitoring.host import _busy, _cpu_times, _disk, parse_text

    text = "\n".join([
        "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.",
        'node_cpu_seconds_total{cpu="0",mode="idle"} 900', 'node_cpu_seconds_total{cpu="0",mode="user"} 100',
        "node_memory_MemAvailable_bytes 2.5e+09", "node_memory_MemTotal_bytes 1e+10",
        'node_filesystem_size_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 1000',
        'node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 100',
        'node_filesystem_size_bytes{device="/dev/sdb1",fstype="ext4",mountpoint="/var/lib"} 1000',
        'node_filesystem_avail_bytes{device="/dev/sdb1",fstype="ext4",mountpoint="/var/lib"} 500'])
    samples = parse_text(text)
    assert _cpu_times(samples) == (900.0, 1000.0)
    assert _busy((900.0, 1000.0), (950.0, 1100.0)) == 50.0
    assert _disk(samples, "/var/lib/postgresql/15/main") == 50.0 and _disk(samples, "/srv") == 90.0


def test_every_script_refuses_unknown_keys_naming_them() -> None:
    from workers.scripts import SCRIPTS, check_keys

    for name in SCRIPTS:
        with pytest.raises(ConfigError, match=f"{name} does not accept 'bogus_key'"):
            check_keys(name, {"bogus_key": 1})


def test_tuning_dispatch_follows_auto_apply_and_dr_its_action() -> None:
    from workers.scripts import SCRIPTS

    assert SCRIPTS["performance_tuning"].task_for({}) == "tuning.analyze"
    assert SCRIPTS["performance_tuning"].task_for({"auto_apply": True}) == "tuning.apply"
    assert SCRIPTS["compliance_scan"].task_for({}) == "compliance.scan"
    assert SCRIPTS["disaster_recovery"].task_for({}) == "dr.observe"
    assert SCRIPTS["disaster_recovery"].task_for({"action": "drill"}) == "dr.drill"


def test_operation_result_is_json_and_reads_like_the_old_rows() -> None:
    import json

    from workers.operations import OperationContext, OperationResult

    row = {"id": "t1", "script_type": "backup", "database_id": "a", "status": "failed", "queue": "backups",
           "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:03+00:00",
           "options": {"context": {"who": "alice", "correlation_id": "c1"}}, "summary": None, "error": "boom",
           "worker": "w", "attempts": 1}
    result = OperationResult.from_history(row)
    assert result.duration_seconds == 3.0 and result.context == OperationContext(who="alice", correlation_id="c1")
    assert result["id"] == "t1" and result["error"] == "boom" and not result.ok
    assert json.loads(json.dumps(result.to_dict()))["context"]["who"] == "alice"


DOCUMENTED_BLOCK = """
databases:
  spotify: {kind: postgresql, host: db.internal, dbname: music, user: app}
database_scripts:
  monitoring: {enabled: true, interval_seconds: 30, prometheus_port: 9090, websocket_port: 8765}
  backup:
    schedule: "0 2 * * *"
    retention_days: 30
    storage: {type: s3, bucket: spotify-backups, encryption: true}
"""


def test_the_documented_block_loads_and_its_storage_mapping_is_the_default_target() -> None:
    cfg = parse_config(DOCUMENTED_BLOCK, environ={})
    name, target = cfg.backup_storage()
    assert name == "default" and target.type == "s3" and target.url == "s3://spotify-backups"
    assert cfg.database_scripts.backup.encryption is True
    assert cfg.database_scripts.monitoring.prometheus_port == 9090


def test_documented_env_vars_apply_below_dbfleet_overrides() -> None:
    env = {"SPOTIFY_DB_HOST": "10.1.2.3", "SPOTIFY_DB_PORT": "6543", "SPOTIFY_DB_PASSWORD": "not-read-here",
           "MONITORING_ENABLED": "false", "BACKUP_BUCKET": "other-bucket", "BACKUP_RETENTION_DAYS": "7",
           "DBFLEET_DATABASE_SCRIPTS__BACKUP__RETENTION_DAYS": "14"}
    cfg = parse_config(DOCUMENTED_BLOCK, environ=env)
    db = cfg.database("spotify")
    assert (db.host, db.port, db.password_env) == ("10.1.2.3", 6543, "SPOTIFY_DB_PASSWORD")
    assert "not-read-here" not in cfg.model_dump_json()  # a reference, never the value
    assert cfg.database_scripts.monitoring.enabled is False
    assert cfg.backup_storage()[1].url == "s3://other-bucket"
    assert cfg.database_scripts.backup.retention_days == 14  # DBFLEET_* wins over BACKUP_RETENTION_DAYS


def test_documented_database_dicts_resolve_to_the_registry_entry_they_name() -> None:
    from workers.operation_refs import registry_ref

    cfg = parse_config("databases:\n  spotify_prod: {kind: postgresql, host: db1, dbname: music, user: app}\n",
                       environ={})
    assert registry_ref({"type": "postgresql", "host": "db1", "database": "music"}, cfg) == "spotify_prod"
    assert registry_ref({"type": "postgres", "host": "db1", "port": 5432, "database": "music"}, cfg) == "spotify_prod"
    other = registry_ref({"type": "postgresql", "host": "db2", "database": "music"}, cfg)
    assert other == {"kind": "postgresql", "host": "db2", "dbname": "music"}  # inline: the allow-list rules apply
    with pytest.raises(ConfigError, match="not both"):
        registry_ref({"type": "postgresql", "kind": "postgresql", "host": "db1"}, cfg)


def test_migration_plan_body_options_are_honoured_and_unknown_ones_refused() -> None:
    from pydantic import ValidationError

    from workers.api import MigrationRequest

    body = MigrationRequest.model_validate({"source": "a", "target": "b", "options": {
        "batch_size": 500, "parallel_workers": 2, "validation_enabled": False, "tables_or_collections": ["t"]}})
    assert (body.batch_size, body.parallel_workers, body.validation, body.tables) == (500, 2, False, ["t"])
    with pytest.raises(ValidationError, match="unknown keys \\['bacth_size'\\]"):
        MigrationRequest.model_validate({"source": "a", "target": "b", "options": {"bacth_size": 5}})


def test_documented_monitoring_ports_serve_the_exporter_and_the_api() -> None:
    cfg = parse_config(DOCUMENTED_BLOCK, environ={})
    assert (cfg.fleet.exporter.port, cfg.fleet.api.port) == (9090, 8765)
    explicit = parse_config(DOCUMENTED_BLOCK + "fleet: {exporter: {port: 9999}}\n", environ={})
    assert explicit.fleet.exporter.port == 9999  # fleet.exporter.port, when set, wins


def test_manager_migration_options_reach_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """``execute_script(MIGRATION, config={...})`` passes the plan's options (if_exists, create_target,
    soft_delete ...) to the plan; a stand-in records the call instead of a worker (named as such)."""
    from workers import migrations, operation_migration

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def recording_plan(source: str, target: str, **options: object) -> None:  # stand-in for the worker round trip
        seen.update(options, source=source, target=target)
        raise Stop

    monkeypatch.setattr(migrations, "plan", recording_plan)
    run = operation_migration.MigrationExecution("src", {
        "target": "dst", "batch_size": 50, "if_exists": "truncate", "create_target": False, "soft_delete": "gone",
        "watermark": "updated_at", "type": "incremental", "wait": False}, None)
    with pytest.raises(Stop):
        run._run(1)
    assert seen == {"source": "src", "target": "dst", "batch_size": 50, "if_exists": "truncate",
                    "create_target": False, "soft_delete": "gone", "watermark": "updated_at", "type": "incremental"}
