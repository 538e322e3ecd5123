"""Celery settings, routes and the beat schedule built from the config."""

from __future__ import annotations

import pytest
from celery.schedules import crontab, schedule

from beat_schedule import build_beat_schedule
from engines.config import parse_config
from engines.errors import ConfigError, UnknownScriptError
from workers.app import LONG_QUEUES, QUEUES, TIME_LIMITS, celery_settings, create_app
from workers.scripts import SCRIPTS, ScriptType, resolve

CFG = """
databases:
  music: {kind: pg, host: h, schedules: {health_check: "*/5 * * * *"}}
  cache: {kind: redis, host: h}
database_scripts:
  monitoring: {interval_seconds: 15}
schedules:
  nightly: {script: health-check, database: music, cron: "0 3 * * *", options: {verbose: true}}
"""


def test_reliability_defaults() -> None:
    s = celery_settings(parse_config(CFG))
    assert s["task_acks_late"] and s["task_reject_on_worker_lost"]
    assert s["worker_prefetch_multiplier"] == 1
    assert s["task_serializer"] == "json" and s["accept_content"] == ["json"]
    assert s["broker_transport_options"]["visibility_timeout"] > max(TIME_LIMITS.values())
    assert {q.name for q in s["task_queues"]} == set(QUEUES)
    assert LONG_QUEUES <= set(QUEUES)


def test_every_queue_has_a_route() -> None:
    s = celery_settings(parse_config(CFG))
    for q in QUEUES:
        assert s["task_routes"][f"{q}.*"] == {"queue": q}


def _queue_tasks(cfg_text: str) -> dict[str, object]:
    app = create_app(parse_config(cfg_text))
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.partition(".")[0] in QUEUES}


def test_every_registered_task_carries_the_time_limits_of_its_queue() -> None:
    tasks = _queue_tasks(CFG)
    assert {"health.check", "backups.run", "audits.security", "migrations.copy_batch"} <= set(tasks)
    for name, task in tasks.items():
        hard = TIME_LIMITS[name.partition(".")[0]]
        assert task.time_limit == hard, name  # was None: "<queue>.*" annotations never matched
        assert 0 < task.soft_time_limit < hard, name
        assert task.soft_time_limit == int(hard * 0.9), name


def test_every_dbfleet_task_is_named_after_its_queue_or_is_the_probe() -> None:
    app = create_app(parse_config(CFG))
    app.loader.import_default_modules()
    ours = {n for n in app.tasks if not n.startswith("celery.")}
    assert ours - set(_queue_tasks(CFG)) == {"fleet.probe"}  # a new task outside <queue>.<verb> gets no limit


def test_time_limit_override_applies_to_tasks_and_moves_visibility_timeout() -> None:
    text = "fleet:\n  time_limits: {backups: 200000, health: 3}\n"
    s = celery_settings(parse_config(text))
    assert s["broker_transport_options"]["visibility_timeout"] > 200000
    tasks = _queue_tasks(text)
    assert (tasks["backups.run"].soft_time_limit, tasks["backups.run"].time_limit) == (180000, 200000)
    assert (tasks["health.check"].soft_time_limit, tasks["health.check"].time_limit) == (2, 3)
    assert tasks["audits.security"].time_limit == TIME_LIMITS["audits"]


def test_a_soft_limit_can_be_set_apart_from_the_hard_one() -> None:
    tasks = _queue_tasks("fleet:\n  time_limits: {health: 8}\n  soft_time_limits: {health: 2}\n")
    assert (tasks["health.check"].soft_time_limit, tasks["health.check"].time_limit) == (2, 8)
    with pytest.raises(ConfigError, match="soft_time_limits.health: 9 s must be .* below the hard limit"):
        parse_config("fleet:\n  time_limits: {health: 8}\n  soft_time_limits: {health: 9}\n")


def test_time_limits_under_two_seconds_are_refused() -> None:
    with pytest.raises(ConfigError, match="fleet.time_limits.*at least 2 seconds"):
        parse_config("fleet:\n  time_limits: {health: 1}\n")


def test_every_task_gets_the_fleet_base_class_and_extra_modules_load() -> None:
    from workers.common import FleetTask

    app = create_app(parse_config("fleet:\n  extra_task_modules: [tests.unit.extra_tasks_for_app_test]\n"))
    app.loader.import_default_modules()
    assert "health.extra_for_app_test" in app.tasks
    assert all(isinstance(t, FleetTask) for t in app.tasks.values())
    assert app.tasks["health.extra_for_app_test"].time_limit == TIME_LIMITS["health"]


def test_beat_schedule_entries_land_on_their_queues() -> None:
    entries = build_beat_schedule(parse_config(CFG))
    assert set(entries) == {"health_check:music", "health_check:cache", "health_check:music:cron", "nightly",
                            "security_audit:music", "security_audit:cache",
                            "performance_tuning:music", "performance_tuning:cache"}
    tuning = entries["performance_tuning:music"]  # daily read-only analysis on the tuning queue
    assert tuning["options"] == {"queue": "tuning"} and tuning["task"] == "tuning.analyze"
    assert str(tuning["schedule"].hour) == "{4}"
    monitor = entries["health_check:music"]
    assert isinstance(monitor["schedule"], schedule) and monitor["schedule"].run_every.total_seconds() == 15
    assert monitor["options"] == {"queue": "health"} and monitor["args"] == ["music"]
    nightly = entries["nightly"]
    assert isinstance(nightly["schedule"], crontab) and nightly["kwargs"] == {"options": {"verbose": True}}
    assert str(nightly["schedule"].hour) == "{3}"


def test_tuning_analysis_is_scheduled_only_for_kinds_with_a_tuner() -> None:
    cfg = parse_config("databases:\n  a: {kind: pg, host: h}\n  f: {kind: sqlite, path: /tmp/x.db}\n"
                       "database_scripts:\n  performance_tuning: {analysis_interval: '30 1 * * 1'}\n")
    entries = build_beat_schedule(cfg)
    assert "performance_tuning:a" in entries and "performance_tuning:f" not in entries
    assert str(entries["performance_tuning:a"]["schedule"].minute) == "{30}"
    off = parse_config("databases:\n  a: {kind: pg, host: h}\ndatabase_scripts:\n  performance_tuning: {enabled: false}\n")
    assert not any(k.startswith("performance_tuning") for k in build_beat_schedule(off))


def test_unknown_script_in_schedule_is_reported() -> None:
    cfg = parse_config("databases:\n  a: {kind: pg, host: h}\n"
                       "schedules:\n  x: {script: defragment, database: a, cron: '0 1 * * *'}\n")
    with pytest.raises(UnknownScriptError, match="defragment.*available: .*health_check"):
        build_beat_schedule(cfg)


def test_script_names_resolve_in_every_spelling() -> None:
    for spelling in (ScriptType.HEALTH_CHECK, "health_check", "health-check", "HEALTH-CHECK"):
        assert resolve(spelling) == ("health_check", "health.check", "health")
    for _, (task, queue) in SCRIPTS.items():
        assert task.split(".")[0] == queue


def test_app_registers_tasks_with_names() -> None:
    app = create_app(parse_config(CFG))
    app.loader.import_default_modules()
    assert {"health.check", "fleet.probe"} <= set(app.tasks)
    assert app.conf.beat_scheduler == "redbeat.RedBeatScheduler"


def test_backup_schedules_become_beat_entries_on_the_backups_queue() -> None:
    cfg = parse_config(
        "databases:\n  music: {kind: pg, host: h}\n  olap: {kind: clickhouse, host: h}\n"
        "storage:\n  s: {type: filesystem, path: /b}\n"
        "database_scripts:\n  monitoring: {enabled: false}\n"
        "  backup: {schedule: '0 2 * * *', verify_schedule: '0 5 * * *', drill_schedule: '0 4 * * 0'}\n")
    skip = ("security_audit", "performance_tuning")
    entries = {k: v for k, v in build_beat_schedule(cfg).items() if not k.startswith(skip)}
    assert set(entries) == {f"{s}:{d}" for s in ("backup", "backup_verify", "restore_drill")
                            for d in ("music", "olap")}  # clickhouse has a dumper (engines/kinds.py)
    assert entries["backup:music"]["task"] == "backups.run"
    assert entries["restore_drill:music"]["task"] == "backups.drill"
    assert {e["options"]["queue"] for e in entries.values()} == {"backups"}
    assert entries["backup_verify:music"]["kwargs"] == {"options": {"read_data": True, "subset": 5}}
    assert str(entries["backup:music"]["schedule"]._orig_hour) == "2"


def test_backup_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="backup.storage: unknown storage target 'nope'"):
        parse_config("storage:\n  s: {type: filesystem, path: /b}\ndatabase_scripts:\n  backup: {storage: nope}\n")
    with pytest.raises(ConfigError, match="storage.s.type"):
        parse_config("storage:\n  s: {type: ftp}\n")
    with pytest.raises(ConfigError, match="retention.daily"):
        parse_config("database_scripts:\n  backup: {retention: {daily: -1}}\n")
    with pytest.raises(ConfigError, match="must not contain credentials"):
        parse_config("storage:\n  s: {type: s3, url: 's3://AKIA:secret@bucket/p'}\n")


def test_security_audits_are_weekly_on_the_audits_queue_for_kinds_with_checks() -> None:
    cfg = parse_config("databases:\n  music: {kind: pg, host: h}\n  lite: {kind: sqlite, path: /x.db}\n")
    entries = build_beat_schedule(cfg)
    audit = entries["security_audit:music"]
    assert audit["task"] == "audits.security" and audit["options"] == {"queue": "audits"}
    assert str(audit["schedule"].day_of_week) == "{0}" and "security_audit:lite" not in entries
    off = parse_config("databases:\n  music: {kind: pg, host: h}\n"
                       "database_scripts:\n  security_audit: {enabled: false}\n")
    assert not [k for k in build_beat_schedule(off) if k.startswith("security_audit")]
    with pytest.raises(ConfigError, match="security_audit"):
        parse_config("database_scripts:\n  security_audit: {schedule: 'weekly'}\n")
